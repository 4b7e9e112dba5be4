//! Live sessions follow the policy: port-forwards are sessions (they take a slot and count toward
//! `maxSessionsPerUser`), and a policy edit that removes a grant ends the running `logs -f` and
//! port-forward it allowed, with the reason — on `serve --config` with kube-sim and the real
//! `ssh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::io::Read;
use std::process::{Child, Command, Stdio};

mod common;
use common::config::{audit_events, env, metric, ssh, start, write_config};
use common::{eventually, text};

const POLICY: &str = r#"apiVersion: jitsh.dev/v1alpha1
kind: Policy
rules:
  - name: oncall
    groups: [oncall-payments]
    targets: [{namespaces: [payments]}]
    modes: [exec, logs, port-forward]
    commands: ["date"]
    ports: [8080]
"#;

/// `ssh ARGS…` as alice, bounded by `timeout` (a session the gateway never ends is killed and
/// shows as status 137), stdin held open.
fn spawn(dir: &std::path::Path, args: &[&str]) -> Child {
    Command::new("timeout")
        .args(["-s", "KILL", "120", "/usr/bin/ssh", "-F"])
        .arg(dir.join("ssh_config"))
        .arg("-i")
        .arg(dir.join("alice"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn count(dir: &std::path::Path, kind: &str) -> usize {
    audit_events(dir)
        .iter()
        .filter(|e| e["event"] == kind)
        .count()
}

#[test]
fn forwards_are_sessions_and_a_removed_grant_ends_them() {
    let e = env(POLICY);
    let d = &e.dir;
    let config = write_config(d, "");
    let gw = start(d, &config);

    // A following log and a port-forward (ssh -W: a direct-tcpip channel), both left running.
    let mut logs = spawn(d, &["alice@jitsh", "logs payments/api-0 -f"]);
    let mut fwd = spawn(d, &["-W", "payments/api-0:8080", "alice@jitsh"]);
    eventually("the log is followed and the forward is open", || {
        count(d, "logs.allowed") == 1 && count(d, "portforward.allowed") == 1
    });

    // The forward holds a slot: with maxSessionsPerUser 2, a third session is refused.
    eventually("two sessions are counted", || {
        metric(gw.admin, "jitsh_active_sessions") >= 2.0
    });
    let o = ssh(d, "alice", "payments/api-0 -- date");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("you already have 2 sessions open"),
        "{}",
        text(&o.stderr)
    );

    // The grant goes: only exec is left. Both running sessions end, with the reason.
    std::fs::write(
        d.join("policy.yaml"),
        POLICY.replace("modes: [exec, logs, port-forward]", "modes: [exec]"),
    )
    .unwrap();
    let logs_status = logs.wait().unwrap();
    let mut logs_err = String::new();
    logs.stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs_err)
        .unwrap();
    assert_eq!(logs_status.code(), Some(255), "{logs_err}");
    assert!(
        logs_err.contains("jitsh: session closed: the policy no longer allows this ("),
        "{logs_err}"
    );
    let fwd_status = fwd.wait().unwrap();
    assert_ne!(
        fwd_status.code(),
        Some(137),
        "the forward outlived its grant"
    );

    let ends: Vec<serde_json::Value> = audit_events(d)
        .into_iter()
        .filter(|e| e["event"] == "session.end" && e["code"] == "policy-changed")
        .collect();
    for via in ["exec", "portforward"] {
        let end = ends
            .iter()
            .find(|e| e["via"] == via)
            .unwrap_or_else(|| panic!("no session.end for {via}: {ends:#?}"));
        assert!(
            end["reason"]
                .as_str()
                .unwrap()
                .starts_with("the policy no longer allows this ("),
            "{end}"
        );
        assert_eq!(end["user"], "alice");
    }
    // The slots are free again, and what is still granted still works.
    eventually("the slots are released", || {
        metric(gw.admin, "jitsh_active_sessions") == 0.0
    });
    let o = ssh(d, "alice", "payments/api-0 -- date");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}
