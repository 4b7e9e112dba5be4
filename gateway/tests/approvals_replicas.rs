//! End-to-end: approvals across gateway replicas. Two (and a third, with a short expiry)
//! `jitsh serve --config` processes against one kube-sim share every request through the
//! Kubernetes API: a request made on A and approved on B (N=2: two distinct approvers) releases
//! the client waiting on A; a gateway restarted mid-wait picks the request up again; approvals at
//! the same moment both count; a deny racing an approve leaves one consistent state; an expired
//! request cannot be approved; revocation; a webhook receiver sees each kind of notification.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

mod common;
use common::config::{env, ssh_via, start_as, write_config};
use common::{eventually, file, jsonl, spawn_logged, text};

const POLICY: &str = "apiVersion: jitsh.dev/v1alpha1
kind: Policy
rules:
  - name: ops
    groups: [oncall-payments, payments-leads, sre]
    targets: [{namespaces: [payments]}]
    modes: [exec]
    commands: ['ps aux', 'sleep <int>']
    approvalRequired: ['kill -TERM <int>']
    approval: {approvers: 2, from: [payments-leads, sre]}
  - name: config
    groups: [oncall-payments]
    targets: [{namespaces: [payments]}]
    modes: [exec]
    requiresGrant: true
    commands: ['tail -f <path:/etc/**>']
    approval: {approvers: 1, from: [payments-leads]}
";

/// An HTTP receiver on 127.0.0.1: every POSTed JSON body, in order.
fn receiver() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                g.lock().unwrap().push(v);
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, got)
}

fn config(dir: &Path, name: &str, audit: &str, broker: &str) -> std::path::PathBuf {
    let base = std::fs::read_to_string(write_config(dir, "")).unwrap();
    let text = base.replace("audit.jsonl", audit) + &format!("broker: {{{broker}}}\n");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(dir: &Path, via: &str, user: &str, cmd: &str) -> std::process::Output {
    ssh_via(dir, via, user, cmd).output().unwrap()
}

fn spawn(dir: &Path, via: &str, user: &str, cmd: &str, name: &str) -> Child {
    spawn_logged(ssh_via(dir, via, user, cmd), dir, name)
}

/// alice starts `sleep N` through A and asks A to kill it: the sleeper, the kill line and the
/// waiting kill.
fn sleep_then_kill(dir: &Path, n: &str, name: &str) -> (Child, String, Child) {
    let sleeper = spawn(
        dir,
        "ssh_a",
        "alice",
        &format!("payments/api-0 -- sleep {n}"),
        &format!("{name}-sleep"),
    );
    let mut pid = None;
    eventually("the sleep runs", || {
        pid = sleep_pid(dir, n);
        pid.is_some()
    });
    let kill = format!("kill -TERM {}", pid.unwrap());
    let waiter = spawn(
        dir,
        "ssh_a",
        "alice",
        &format!("payments/api-0 -- {kill}"),
        name,
    );
    (sleeper, kill, waiter)
}

fn requests(dir: &Path, via: &str, user: &str) -> Vec<serde_json::Value> {
    let o = run(dir, via, user, "requests --all --json");
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn request(dir: &Path, id: &str) -> serde_json::Value {
    requests(dir, "ssh_b", "bob")
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no request {id}"))
}

fn pending(dir: &Path, summary: &str) -> Vec<String> {
    requests(dir, "ssh_b", "bob")
        .into_iter()
        .filter(|r| r["summary"] == summary && r["state"] == "Pending")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn sleep_pid(dir: &Path, n: &str) -> Option<String> {
    let o = run(dir, "ssh_a", "alice", "payments/api-0 -- ps aux");
    text(&o.stdout)
        .lines()
        .find(|l| l.ends_with(&format!("sleep {n}")))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
}

/// Runs two commands at the same moment; their outputs.
fn at_once(mut a: Command, mut b: Command) -> (Output, Output) {
    let spawn = |c: &mut Command| {
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&mut a), spawn(&mut b));
    (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
}

/// A `request ... -- CMD` (no wait) on `via`: its id.
fn ask(dir: &Path, via: &str, cmd: &str) -> String {
    let o = run(
        dir,
        via,
        "alice",
        &format!("request payments/api-0 --reason testing replicas -- {cmd}"),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout).split('\t').next().unwrap().to_owned()
}

#[test]
fn replicas_share_requests_through_the_api() {
    let e = env(POLICY);
    let d = &e.dir;
    let (hook, hooks) = receiver();
    let notify = format!("notify: [http://127.0.0.1:{hook}/hook]");
    let cfg_a = config(d, "a.yaml", "audit.jsonl", &format!("wait: 90s, {notify}"));
    let cfg_b = config(
        d,
        "b.yaml",
        "audit-b.jsonl",
        &format!("wait: 90s, {notify}"),
    );
    let cfg_c = config(
        d,
        "c.yaml",
        "audit-c.jsonl",
        &format!("pendingFor: 2s, {notify}"),
    );
    let mut gw_a = start_as(d, &cfg_a, "ssh_a");
    let _gw_b = start_as(d, &cfg_b, "ssh_b");

    // A kill asked for on A, approved by two distinct approvers on B, runs on A.
    let (mut sleeper, kill, mut waiter) = sleep_then_kill(d, "300", "k1");
    let mut ids = Vec::new();
    eventually("B sees A's request", || {
        ids = pending(d, &kill);
        !ids.is_empty()
    });
    let id = ids[0].clone();
    let first = run(d, "ssh_b", "bob", &format!("approve {id}"));
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("(1/2)"),
        "{}",
        text(&first.stdout)
    );
    assert!(text(&first.stdout).contains("more approvals are needed"));
    let twice = run(d, "ssh_b", "bob", &format!("approve {id}"));
    assert_eq!(twice.status.code(), Some(126));
    assert_eq!(
        text(&twice.stderr),
        format!("jitsh: approve: you already approved request {id}\n")
    );
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "one approval of two: still waiting"
    );
    let second = run(d, "ssh_b", "carol", &format!("approve {id}"));
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(text(&second.stdout).contains("(2/2)"));
    assert!(waiter.wait().unwrap().success(), "{}", file(d, "k1.err"));
    let _ = sleeper.wait();
    assert_eq!(sleep_pid(d, "300"), None, "the kill ran");
    assert_eq!(request(d, &id)["state"], "Consumed");

    // A gateway restarted mid-wait: the request lives in the API, so the same command picks it
    // up again, and it runs once approved.
    let (mut sleeper, kill, mut waiter) = sleep_then_kill(d, "301", "k2");
    eventually("the second request", || !pending(d, &kill).is_empty());
    let _ = gw_a.child.kill();
    let _ = gw_a.child.wait();
    let _ = waiter.wait();
    let _ = sleeper.wait();
    // The restarted gateway is asked for the identical command: it finds the open request.
    let gw_a2 = start_as(d, &cfg_a, "ssh_a");
    let mut waiter = spawn(
        d,
        "ssh_a",
        "alice",
        &format!("payments/api-0 -- {kill}"),
        "k3",
    );
    eventually("the restarted gateway waits on the same request", || {
        file(d, "k3.err").contains("still waiting at")
    });
    let again = pending(d, &kill);
    assert_eq!(
        again.len(),
        1,
        "no second request for the identical command: {again:?}"
    );
    let id2 = again[0].clone();
    // Two approvers at the same moment: both count.
    let (b, c) = at_once(
        ssh_via(d, "ssh_b", "bob", &format!("approve {id2}")),
        ssh_via(d, "ssh_b", "carol", &format!("approve {id2}")),
    );
    assert!(
        b.status.success() && c.status.success(),
        "{} {}",
        text(&b.stderr),
        text(&c.stderr)
    );
    let _ = waiter.wait();
    let r = request(d, &id2);
    assert_eq!(r["approvals"].as_array().unwrap().len(), 2, "{r}");
    // (Whether the sleep outlived its gateway is the runtime's business: the kill ran, once.)
    assert_eq!(r["state"], "Consumed", "{r}");
    assert!(
        file(d, "k3.err").contains("running it once"),
        "{}",
        file(d, "k3.err")
    );

    // A deny racing an approve: one consistent outcome.
    let id3 = ask(d, "ssh_a", "kill -TERM 4242");
    let (b, c) = at_once(
        ssh_via(d, "ssh_b", "bob", &format!("approve {id3}")),
        ssh_via(d, "ssh_a", "carol", &format!("deny {id3} --reason no")),
    );
    assert!(
        c.status.success(),
        "the deny of a pending request succeeds: {}",
        text(&c.stderr)
    );
    let r = request(d, &id3);
    assert_eq!(r["state"], "Denied");
    let bob_counted = r["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["by"] == "bob");
    assert_eq!(
        bob_counted,
        b.status.success(),
        "bob's approval is recorded exactly when it succeeded: {r} / {}",
        text(&b.stderr)
    );

    // Revocation: alice withdraws her own request; it can no longer be approved.
    let id4 = ask(d, "ssh_b", "kill -TERM 4343");
    let rv = run(d, "ssh_a", "alice", &format!("revoke {id4}"));
    assert!(rv.status.success(), "{}", text(&rv.stderr));
    let late = run(d, "ssh_b", "bob", &format!("approve {id4}"));
    assert_eq!(late.status.code(), Some(126));
    assert!(text(&late.stderr).contains("is revoked, not pending"));

    // An expired request cannot be approved: made on C (pendingFor 2s), approved on B too late.
    let gw_c = start_as(d, &cfg_c, "ssh_c");
    let id5 = ask(d, "ssh_c", "kill -TERM 4444");
    eventually("the request's time runs out", || {
        let r = request(d, &id5);
        r["state"] == "Expired"
    });
    let expired = run(d, "ssh_b", "bob", &format!("approve {id5}"));
    assert_eq!(expired.status.code(), Some(126));
    assert_eq!(
        text(&expired.stderr),
        format!("jitsh: approve: request {id5} is expired, not pending\n")
    );
    drop(gw_c);

    // A grant approved on B is in effect on A; revoked on B, it ends A's session.
    let o = run(
        d,
        "ssh_a",
        "alice",
        "request --rule config --for 10m --reason replicas",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let gid = text(&o.stdout).split('\t').next().unwrap().to_owned();
    assert!(
        run(d, "ssh_b", "bob", &format!("approve {gid}"))
            .status
            .success()
    );
    let mut tail = None;
    eventually("the grant is in effect on A", || {
        let mut t = spawn(
            d,
            "ssh_a",
            "alice",
            "payments/api-0 -- tail -f /etc/hosts",
            "gt",
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        if t.try_wait().unwrap().is_none() {
            tail = Some(t);
            true
        } else {
            false
        }
    });
    let mut tail = tail.unwrap();
    eventually("tail runs", || file(d, "gt.out").contains("localhost"));
    assert!(
        run(d, "ssh_b", "bob", &format!("revoke {gid}"))
            .status
            .success()
    );
    assert_eq!(tail.wait().unwrap().code(), Some(255));
    assert!(
        file(d, "gt.err").contains(&format!("your grant {gid} ended (revoked by bob)")),
        "{}",
        file(d, "gt.err")
    );

    // Each replica's audit log has its own side; the webhook (A's) saw A's changes, with text.
    let a = jsonl(&d.join("audit.jsonl"));
    let b_log = jsonl(&d.join("audit-b.jsonl"));
    assert!(
        a.iter()
            .any(|e| e["event"] == "approval.requested" && e["request"] == id.as_str())
    );
    assert!(b_log.iter().any(|e| e["event"] == "approval.approved"
        && e["request"] == id.as_str()
        && e["user"] == "carol"));
    assert!(
        a.iter()
            .any(|e| e["event"] == "approval.consumed" && e["request"] == id.as_str())
    );
    eventually("the webhook got every kind of notification", || {
        let got = hooks.lock().unwrap();
        [
            "approval.requested",
            "approval.approved",
            "approval.denied",
            "approval.expired",
            "approval.revoked",
            "approval.consumed",
        ]
        .iter()
        .all(|k| got.iter().any(|h| h["event"] == *k))
    });
    let got = hooks.lock().unwrap().clone();
    let requested = got
        .iter()
        .find(|h| h["event"] == "approval.requested" && h["request"] == id.as_str())
        .unwrap();
    assert_eq!(
        requested["text"],
        format!(
            "alice asks to run `{}` on payments/api-0/app (request {id}, reason: asked for by running the command); 2 approval(s) needed from payments-leads, sre: ssh GATEWAY approve {id}",
            request(d, &id)["summary"].as_str().unwrap()
        )
    );
    assert!(got.iter().any(|h| {
        h["event"] == "approval.revoked"
            && h["text"]
                .as_str()
                .unwrap()
                .starts_with("alice revoked request")
    }));
    assert!(
        a.iter()
            .any(|e| e["event"] == "approval.notify" && e["delivered"] == true)
    );
    drop(gw_a2);
}
