//! End-to-end: per-command approval through `jitsh serve --dev` with the real `ssh` — alice's
//! `kill -TERM` waits, bob approves from another connection, the kill runs exactly once and the
//! sleep ends; her own approval is refused; a denial ends her wait with the reason; both audit
//! logs tell the story.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;
use common::{
    eventually, file, jsonl, kube_audit, spawn_logged, ssh, ssh_command, start_dev, text,
};

/// `ssh USER@jitsh CMD` in the background, output to files in `dir`.
fn spawn(dir: &Path, user: &str, cmd: &str, name: &str) -> Child {
    spawn_logged(ssh_command(dir, user, cmd), dir, name)
}

/// The pid of `sleep N` in api-0, seen by alice's `ps aux`.
fn pid_of_sleep(dir: &Path, n: &str) -> Option<String> {
    let o = ssh(dir, "alice", "payments/api-0 -- ps aux", b"");
    text(&o.stdout)
        .lines()
        .find(|l| l.ends_with(&format!("sleep {n}")))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
}

/// bob's view of the requests (`requests --json`).
fn requests(dir: &Path, user: &str, all: bool) -> Vec<serde_json::Value> {
    let cmd = if all {
        "requests --all --json"
    } else {
        "requests --json"
    };
    let o = ssh(dir, user, cmd, b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn pending_for(dir: &Path, summary: &str) -> Option<String> {
    requests(dir, "bob", false)
        .into_iter()
        .find(|r| r["summary"] == summary && r["state"] == "Pending")
        .map(|r| r["id"].as_str().unwrap().to_owned())
}

#[test]
fn kill_waits_for_bob_runs_exactly_once_and_a_denial_ends_the_wait() {
    let dev = start_dev();
    let d = &dev.dir;

    // alice starts a sleep she will want to end.
    let mut sleeper = spawn(d, "alice", "payments/api-0 -- sleep 300", "sleeper");
    let mut pid = None;
    eventually("the sleep runs in the pod", || {
        pid = pid_of_sleep(d, "300");
        pid.is_some()
    });
    let pid = pid.unwrap();
    let kill = format!("kill -TERM {pid}");

    // Her kill needs approval: it asks and waits.
    let mut waiter = spawn(d, "alice", &format!("payments/api-0 -- {kill}"), "kill");
    let mut id = None;
    eventually("bob sees the pending request", || {
        id = pending_for(d, &kill);
        id.is_some()
    });
    let id = id.unwrap();
    let asked = format!(
        "jitsh: approval needed: request {id} sent to payments-leads (0/1 approvals); waiting"
    );
    eventually("alice is told she waits", || {
        file(d, "kill.err").contains(&asked)
    });
    assert!(waiter.try_wait().unwrap().is_none(), "still waiting");
    // bob's filtered prompt and his whoami tell him a request waits for him (from the
    // gateway's watch of the requests, which follows the API server).
    let banner = || {
        let mut prompt = Command::new("/usr/bin/ssh")
            .arg("-F")
            .arg(d.join("ssh_config"))
            .args(["-tt", "bob@jitsh", "payments/api-0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut i = prompt.stdin.take().unwrap();
            // `exit`, then EOF: either ends the prompt.
            let _ = i.write_all(b"exit\r");
        }
        text(&prompt.wait_with_output().unwrap().stdout)
    };
    eventually("bob's banner counts the request", || {
        banner().contains("jitsh: 1 approval request(s) wait for you")
    });
    let whoami = text(&ssh(d, "bob", "whoami", b"").stdout);
    assert!(
        whoami.contains("approvals: 1 request(s) wait for you"),
        "{whoami}"
    );
    let alice_whoami = text(&ssh(d, "alice", "whoami", b"").stdout);
    assert!(
        !alice_whoami.contains("approvals:"),
        "her own request is not hers to approve"
    );
    // alice sees it as hers.
    let mine = requests(d, "alice", false);
    assert!(
        mine.iter()
            .any(|r| r["id"] == id.as_str() && r["requester"] == "alice")
    );

    // Nobody approves their own request; mallory is no approver; a made-up id is unknown.
    let own = ssh(d, "alice", &format!("approve {id}"), b"");
    assert_eq!(own.status.code(), Some(126));
    assert_eq!(
        text(&own.stderr),
        "jitsh: approve: you cannot approve your own request\n"
    );
    let other = ssh(d, "mallory", &format!("approve {id}"), b"");
    assert_eq!(other.status.code(), Some(126));
    assert!(text(&other.stderr).contains("only members of payments-leads may approve"));
    let unknown = ssh(d, "bob", "approve ar-nosuchthing", b"");
    assert_eq!(unknown.status.code(), Some(126));
    assert_eq!(
        text(&unknown.stderr),
        "jitsh: approve: no request ar-nosuchthing\n"
    );
    let junk = ssh(d, "bob", "approve ../../etc", b"");
    assert_eq!(junk.status.code(), Some(1));
    assert!(text(&junk.stderr).contains("request ids look like"));
    // A comment with a control character is refused before anything is written.
    let ctl = ssh(d, "bob", &format!("approve {id} --comment 'a\u{7}b'"), b"");
    assert_eq!(ctl.status.code(), Some(2));
    assert!(
        text(&ctl.stderr).contains("control character"),
        "{}",
        text(&ctl.stderr)
    );
    assert!(waiter.try_wait().unwrap().is_none(), "still waiting");

    // bob approves from his own connection: the kill runs, once, and the sleep ends.
    let ok = ssh(
        d,
        "bob",
        &format!("approve {id} --comment ok, go ahead"),
        b"",
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains(&format!(
        "approved request {id} (1/1): {kill} on payments/api-0/app by alice; alice may now run it once"
    )));
    let st = waiter.wait().unwrap();
    assert!(st.success(), "{}", file(d, "kill.err"));
    assert!(file(d, "kill.err").contains(&format!("request {id} approved (1/1); running it once")));
    let _ = sleeper.wait().unwrap();
    assert_eq!(pid_of_sleep(d, "300"), None, "the sleep ended");
    let again = ssh(d, "bob", &format!("approve {id}"), b"");
    assert_eq!(again.status.code(), Some(126));
    assert_eq!(
        text(&again.stderr),
        format!("jitsh: approve: request {id} is consumed, not pending\n")
    );
    let all = requests(d, "alice", true);
    let done = all.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(done["state"], "Consumed");
    assert_eq!(done["approvals"][0]["by"], "bob");
    assert_eq!(done["approvals"][0]["comment"], "ok, go ahead");

    // Both audit logs: the approval's story, and exactly one exec of the kill — as alice, with
    // the Audit-ID of the command that consumed the approval.
    let ours = jsonl(&d.join("audit.jsonl"));
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        ours.iter()
            .filter(|e| e["event"] == kind && e["request"] == id.as_str())
            .collect()
    };
    assert_eq!(of("approval.requested").len(), 1);
    assert_eq!(of("approval.approved").len(), 1);
    assert_eq!(of("approval.approved")[0]["user"], "bob");
    let consumed = of("approval.consumed");
    assert_eq!(consumed.len(), 1);
    let cmd = consumed[0]["command"].as_str().unwrap();
    let allowed = of("command.allowed");
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["command"], cmd);
    assert_eq!(
        allowed[0]["argv"],
        serde_json::json!(["kill", "-TERM", pid])
    );
    let kills: Vec<serde_json::Value> = kube_audit(d, "exec")
        .into_iter()
        .filter(|e| {
            e["requestURI"]
                .as_str()
                .unwrap_or_default()
                .contains("command=kill")
        })
        .collect();
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(kills[0]["auditID"], cmd);
    assert_eq!(kills[0]["impersonatedUser"]["username"], "alice");
    // The gateway wrote the AccessRequest as itself, with the commands' Audit-IDs.
    let writes: Vec<serde_json::Value> = jsonl(&d.join("kube-audit.jsonl"))
        .into_iter()
        .filter(|e| {
            e["objectRef"]["resource"] == "accessrequests"
                && e["verb"] != "list"
                && e["verb"] != "watch"
                && e["verb"] != "get"
        })
        .collect();
    assert!(!writes.is_empty());
    for w in &writes {
        assert_eq!(
            w["user"]["username"], "system:serviceaccount:jitsh:gateway",
            "{w}"
        );
        assert!(w["impersonatedUser"].is_null(), "{w}");
        assert_eq!(w["objectRef"]["namespace"], "jitsh");
    }
    assert!(
        writes
            .iter()
            .any(|w| w["auditID"] == cmd && w["objectRef"]["subresource"] == "status")
    );

    // An operator sees it with kubectl (server-side printer columns from the CRD).
    let kubectl = |args: &[&str]| {
        let o = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(d.join("kubeconfig"))
            .args(["--context", "admin"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "kubectl {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let table = kubectl(&["get", "accessrequests", "-A"]);
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAMESPACE",
            "NAME",
            "REQUESTER",
            "TARGET",
            "WHAT",
            "STATE",
            "APPROVALS",
            "EXPIRES",
            "AGE"
        ],
        "{table}"
    );
    let row = table.lines().find(|l| l.contains(&id)).unwrap();
    assert!(row.starts_with("jitsh "), "{row}");
    for cell in ["alice", "payments/api-0/app", "Consumed", "1/1"] {
        assert!(row.contains(cell), "{cell}: {row}");
    }
    let yaml = kubectl(&["get", "accessrequest", &id, "-n", "jitsh", "-o", "yaml"]);
    assert!(
        yaml.contains("by: bob") && yaml.contains("comment: ok, go ahead"),
        "{yaml}"
    );

    // The same kill again needs a new approval; bob denies it and alice's wait ends.
    let mut sleeper = spawn(d, "alice", "payments/api-0 -- sleep 301", "sleeper2");
    let mut pid = None;
    eventually("the second sleep runs", || {
        pid = pid_of_sleep(d, "301");
        pid.is_some()
    });
    let kill = format!("kill -TERM {}", pid.unwrap());
    let mut waiter = spawn(d, "alice", &format!("payments/api-0 -- {kill}"), "kill2");
    let mut id2 = None;
    eventually("a new request", || {
        id2 = pending_for(d, &kill);
        id2.is_some()
    });
    let id2 = id2.unwrap();
    assert_ne!(id2, id);
    let no_reason = ssh(d, "bob", &format!("deny {id2}"), b"");
    assert_eq!(no_reason.status.code(), Some(2));
    let long = "x".repeat(600);
    let too_long = ssh(d, "bob", &format!("deny {id2} --reason {long}"), b"");
    assert_eq!(too_long.status.code(), Some(2));
    assert_eq!(
        text(&too_long.stderr),
        "jitsh: deny: the reason is longer than 512 characters\n"
    );
    assert_eq!(
        requests(d, "bob", false)
            .iter()
            .find(|r| r["id"] == id2.as_str())
            .unwrap()["state"],
        "Pending",
        "a refused deny changes nothing"
    );
    let deny = ssh(
        d,
        "bob",
        &format!("deny {id2} --reason not during the freeze"),
        b"",
    );
    assert!(deny.status.success(), "{}", text(&deny.stderr));
    let st = waiter.wait().unwrap();
    assert_eq!(st.code(), Some(126));
    assert!(
        file(d, "kill2.err").contains(&format!(
            "jitsh: request {id2} was denied by bob: not during the freeze"
        )),
        "{}",
        file(d, "kill2.err")
    );
    assert!(
        pid_of_sleep(d, "301").is_some(),
        "the denied kill did not run"
    );
    let approve_denied = ssh(d, "bob", &format!("approve {id2}"), b"");
    assert_eq!(approve_denied.status.code(), Some(126));
    assert!(text(&approve_denied.stderr).contains("is denied, not pending"));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn a_grant_only_rule_works_only_under_its_grant_and_its_end_ends_the_session() {
    let dev = start_dev();
    let d = &dev.dir;
    let cat = "payments/api-0 -- cat /etc/hosts";
    let before = ssh(d, "alice", cat, b"");
    assert_eq!(before.status.code(), Some(126), "no grant, no cat");

    // alice asks for the grant and waits; her own approval is refused; bob's releases her.
    let mut waiter = spawn(
        d,
        "alice",
        "request --rule oncall-payments-config --for 10m --reason checking the resolver --wait",
        "grant",
    );
    let mut id = None;
    eventually("bob sees the grant request", || {
        id = pending_for(d, "grant oncall-payments-config for 10m");
        id.is_some()
    });
    let id = id.unwrap();
    let own = ssh(d, "alice", &format!("approve {id}"), b"");
    assert_eq!(own.status.code(), Some(126));
    let ok = ssh(d, "bob", &format!("approve {id}"), b"");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("alice holds the grant until"));
    assert!(waiter.wait().unwrap().success(), "{}", file(d, "grant.err"));
    assert!(file(d, "grant.err").contains(&format!(
        "grant {id} for policy rule oncall-payments-config is in force until"
    )));
    let whoami = text(&ssh(d, "alice", "whoami", b"").stdout);
    assert!(whoami.contains(&format!("policy rule oncall-payments-config: exec on namespace payments (granted by request {id})")), "{whoami}");

    // Now the rule is in effect for her: cat runs.
    eventually("the grant is in effect", || {
        ssh(d, "alice", cat, b"").status.success()
    });
    // A running session under the grant ends when bob revokes it — with the grant's name.
    let mut tail = spawn(d, "alice", "payments/api-0 -- tail -f /etc/hosts", "tail");
    eventually("tail runs", || file(d, "tail.out").contains("localhost"));
    let rv = ssh(d, "bob", &format!("revoke {id}"), b"");
    assert!(rv.status.success(), "{}", text(&rv.stderr));
    let st = tail.wait().unwrap();
    assert_eq!(st.code(), Some(255));
    assert!(
        file(d, "tail.err").contains(&format!(
            "jitsh: session closed: your grant {id} ended (revoked by bob)"
        )),
        "{}",
        file(d, "tail.err")
    );
    assert_eq!(
        ssh(d, "alice", cat, b"").status.code(),
        Some(126),
        "revoked: no cat"
    );

    // A short grant ends on its own, and with it the session it allowed.
    let o = ssh(
        d,
        "alice",
        "request --rule oncall-payments-config --for 4s --reason quick look",
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id2 = text(&o.stdout).split('\t').next().unwrap().to_owned();
    assert!(
        ssh(d, "bob", &format!("approve {id2}"), b"")
            .status
            .success()
    );
    eventually("the short grant is in effect", || {
        ssh(d, "alice", cat, b"").status.success()
    });
    let mut tail = spawn(d, "alice", "payments/api-0 -- tail -f /etc/hosts", "tail2");
    let st = tail.wait().unwrap();
    assert_eq!(st.code(), Some(255));
    let err = file(d, "tail2.err");
    assert!(
        err.contains(&format!(
            "jitsh: session closed: your grant {id2} ended (expired)"
        )),
        "{err}"
    );
    eventually("the expiry is audited", || {
        jsonl(&d.join("audit.jsonl"))
            .iter()
            .any(|e| e["event"] == "approval.expired" && e["request"] == id2.as_str())
    });
    let ours = jsonl(&d.join("audit.jsonl"));
    assert!(ours.iter().any(|e| e["event"] == "approval.revoked"
        && e["request"] == id.as_str()
        && e["user"] == "bob"));
    assert!(
        ours.iter()
            .any(|e| e["event"] == "session.end" && e["code"] == "grant-ended")
    );
    // A grant for a rule that is not grant-only, or that does not name you, is refused.
    let not_grant = ssh(d, "alice", "request --rule oncall-read --reason x", b"");
    assert_eq!(not_grant.status.code(), Some(126));
    assert!(text(&not_grant.stderr).contains("is not grant-only"));
    let not_named = ssh(
        d,
        "carol",
        "request --rule oncall-payments-config --reason x",
        b"",
    );
    assert_eq!(not_named.status.code(), Some(126));
    assert!(text(&not_named.stderr).contains("does not name you"));
}
