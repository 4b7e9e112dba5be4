//! End-to-end: interactive sessions against `jitsh serve --dev` with the real `ssh` — the filtered
//! prompt under a real terminal (tmux), line mode, break-glass with a webhook receiver, attach,
//! recordings, and "nothing reaches a pod without a decision".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{eventually, eventually_showing, jsonl, ssh, start_dev as start, text};

/// Every exec kube-sim recorded has a `command.allowed` (or break-glass start) event with the
/// same id in the gateway's audit log: nothing reaches a pod without a decision.
fn every_exec_was_decided(dir: &Path) {
    let ours = jsonl(&dir.join("audit.jsonl"));
    let allowed: Vec<&str> = ours
        .iter()
        .filter(|e| {
            e["event"] == "command.allowed"
                || e["event"] == "breakglass.start"
                || e["event"] == "attach.start"
        })
        .filter_map(|e| e["command"].as_str())
        .collect();
    let execs: Vec<serde_json::Value> = jsonl(&dir.join("kube-audit.jsonl"))
        .into_iter()
        .filter(|e| {
            e["objectRef"]["subresource"] == "exec" || e["objectRef"]["subresource"] == "attach"
        })
        .filter(|e| e["impersonatedUser"]["username"].is_string())
        .collect();
    assert!(!execs.is_empty());
    for e in &execs {
        let id = e["auditID"].as_str().unwrap();
        assert!(
            allowed.contains(&id),
            "exec {id} has no allow decision: {e}"
        );
    }
}

struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(dir: &Path, cmd: &str) -> Tmux {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("jitsh-sessions-{}-{n}", std::process::id());
        let full = format!("{cmd}; echo SSH-EXIT=$?; sleep 120");
        let ok = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "40",
            ])
            .arg(full)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(ok.success());
        let _ = Command::new("tmux")
            .args(["-L", &socket, "set-option", "-g", "status", "off"])
            .status();
        Tmux { socket }
    }
    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t"])
            .args(keys)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "capture-pane",
                "-p",
                "-S",
                "-2000",
                "-t",
                "t",
            ])
            .output()
            .unwrap();
        text(&o.stdout)
    }
    fn wait_for(&self, what: &str) {
        eventually_showing(
            &format!("the screen shows {what:?}"),
            || self.screen().contains(what),
            || self.screen(),
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn filtered_prompt_under_a_terminal() {
    let dev = start();
    let d = &dev.dir;
    let cfg = d.join("ssh_config");
    let t = Tmux::new(
        d,
        &format!(
            "/usr/bin/ssh -F {} -tt alice@jitsh payments/api-0",
            cfg.display()
        ),
    );
    let prompt = "alice@payments/api-0:app$"; // capture-pane drops the trailing space
    t.wait_for("filtered session on payments/api-0/app as alice");
    t.wait_for(prompt);
    // Each step waits for the next prompt: keys typed while a command runs go to that command.
    let line = |keys: &[&str], expect: &str| {
        let before = t.screen().matches(prompt).count();
        t.keys(keys);
        eventually_showing(
            &format!("a new prompt after {keys:?} with {expect:?}"),
            || {
                let screen = t.screen();
                screen.matches(prompt).count() > before && screen.contains(expect)
            },
            || t.screen(),
        );
    };
    let runs = |program: &str, event: &str| {
        jsonl(&d.join("audit.jsonl"))
            .iter()
            .filter(|e| e["event"] == event && e["argv"][0] == program)
            .count()
    };
    // an allowed line, a denied one, a refused construct
    line(&["ps aux", "Enter"], "PID");
    line(&["rm -rf /", "Enter"], "denied: 'rm' is not allowed");
    line(&["cat /var/log/app.log; id", "Enter"], "refused:");
    // help lists what the policy allows here
    line(
        &["help", "Enter"],
        "tail [-n <int>] [-f] <path:/var/log/**>",
    );
    // line editing: type, go left, insert; Ctrl-A and Ctrl-E
    line(&["dte", "Left", "Left", "a", "Enter"], "UTC");
    line(&["s aux", "C-a", "p", "C-e", "Enter"], "PID");
    assert_eq!(runs("ps", "command.exit"), 2);
    // Ctrl-C interrupts a running command (a sleep 300 that would otherwise hold the prompt)
    t.keys(&["sleep 300", "Enter"]);
    eventually("the sleep started", || {
        runs("sleep", "command.allowed") == 1
    });
    // The terminal turns Ctrl-C into SIGINT for its foreground process: wait until the sleep
    // really runs in the pod (seen by `ps` as admin), or the key would find no one to signal.
    eventually("the sleep runs in the pod", || {
        let o = Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(d.join("kubeconfig"))
            .args([
                "exec", "-n", "payments", "api-0", "-c", "app", "--", "ps", "-eo", "args",
            ])
            .output()
            .unwrap();
        text(&o.stdout).lines().any(|l| l.trim() == "sleep 300")
    });
    line(&["C-c"], "sleep 300");
    assert_eq!(runs("sleep", "command.exit"), 1);
    line(&["wc -l /var/log/app.log", "Enter"], "/var/log/app.log");
    // history: Up recalls the last line
    line(&["Up", "Enter"], "/var/log/app.log");
    assert_eq!(runs("wc", "command.exit"), 2);
    // Ctrl-D leaves
    t.keys(&["C-d"]);
    t.wait_for("SSH-EXIT=0");

    // the recording: asciicast v2 with the typed input, the output and the decisions
    let rec = std::fs::read_dir(d.join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cast"))
        .expect("a recording");
    let cast = std::fs::read_to_string(&rec).unwrap();
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 120);
    assert_eq!(header["jitsh"]["user"], "alice");
    assert_eq!(header["jitsh"]["rule"], "oncall-read");
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let has = |code: &str, needle: &str| {
        events
            .iter()
            .any(|e| e[1] == code && e[2].as_str().unwrap().contains(needle))
    };
    assert!(has("i", "ps aux"));
    assert!(has("o", "PID"));
    assert!(has("m", "denied: rm -rf /"));
    assert!(has("m", "allowed: ps aux"));
    let mut last = 0.0;
    for e in &events {
        let t = e[0].as_f64().unwrap();
        assert!(t >= last);
        last = t;
    }
    let audit = jsonl(&d.join("audit.jsonl"));
    let start = audit.iter().find(|e| e["event"] == "shell.start").unwrap();
    let sid = start["session"].as_str().unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "command.denied" && e["session"] == sid)
    );
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "shell.end" && e["session"] == sid)
    );
    every_exec_was_decided(d);
}

#[test]
fn typing_a_long_line_is_recorded_once_not_redrawn_per_key() {
    let dev = start();
    let d = &dev.dir;
    let t = Tmux::new(
        d,
        &format!(
            "/usr/bin/ssh -F {} -tt alice@jitsh payments/api-0",
            d.join("ssh_config").display()
        ),
    );
    t.wait_for("alice@payments/api-0:app$");
    let long = "x".repeat(4000);
    t.keys(&["-l", &long]);
    t.keys(&["Enter"]);
    t.wait_for("denied:");
    t.keys(&["exit", "Enter"]);
    t.wait_for("SSH-EXIT=");
    let rec = std::fs::read_dir(d.join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cast"))
        .expect("a recording");
    // Each key typed at the end of the line is echoed (one small event), not the whole line
    // redrawn: 4,000 keys used to record some 8 MB.
    let size = std::fs::metadata(&rec).unwrap().len();
    assert!(size < 400 * 1024, "{size} bytes recorded for 4,000 keys");
    let cast = std::fs::read_to_string(&rec).unwrap();
    assert!(cast.contains(&long), "the submitted line is recorded");
}

#[test]
fn line_mode_break_glass_and_attach() {
    let dev = start();
    let d = &dev.dir;

    // line mode: in order; a denied line does not stop the ones after it
    let o = ssh(
        d,
        "alice",
        "payments/api-0",
        b"ps aux\nrm x\nwc -l /var/log/app.log\n",
    );
    let out = text(&o.stdout);
    assert!(out.contains("PID"), "{out}");
    assert!(out.contains("/var/log/app.log"), "{out}");
    assert!(out.find("PID").unwrap() < out.find("/var/log/app.log").unwrap());
    assert!(
        text(&o.stderr).contains("denied: 'rm' is not allowed"),
        "{}",
        text(&o.stderr)
    );
    // mallory has no shell mode
    let o = ssh(d, "mallory", "payments/api-0", b"cat /var/log/app.log\n");
    assert_ne!(o.status.code(), Some(0));

    // a webhook receiver, and a short break-glass grant that notifies it
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    let received = std::thread::spawn(move || {
        let (mut s, _) = hook.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let t = text(&buf);
            if let Some((head, body)) = t.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                    return (head.to_owned(), body.to_owned());
                }
            }
            if n == 0 {
                panic!("webhook connection closed early");
            }
        }
    });
    let policy = std::fs::read_to_string(d.join("policy.yaml")).unwrap();
    let short = policy.replace(
        "      maxDuration: 30m\n      incidentRequired: true",
        &format!("      maxDuration: 6s\n      incidentRequired: true\n      notify: [\"http://127.0.0.1:{hook_port}/hooks/break-glass\"]"),
    );
    assert_ne!(short, policy);
    std::fs::write(d.join("policy.yaml"), short).unwrap();
    eventually("the policy reload", || {
        jsonl(&d.join("audit.jsonl"))
            .iter()
            .any(|e| e["event"] == "policy.reload" && e["result"] == "ok")
    });

    // carol with an incident and a reason gets a real shell
    let bg = "break-glass payments/api-0 --incident INC-42 --reason 'db down'";
    let o = ssh(d, "carol", bg, b"echo $((6*7))\nexit\n");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "42");
    let err = text(&o.stderr);
    assert!(
        err.contains("BREAK-GLASS shell on payments/api-0/app for carol")
            && err.contains("recorded"),
        "{err}"
    );
    let (head, body) = received.join().unwrap();
    assert!(head.starts_with("POST /hooks/break-glass"), "{head}");
    let note: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(note["incident"], "INC-42");
    assert_eq!(note["user"], "carol");
    assert_eq!(note["event"], "breakglass.start");
    // refused: alice (no grant), carol without a reason, carol without an incident
    let o = ssh(d, "alice", bg, b"id\n");
    assert_eq!(o.status.code(), Some(126));
    let o = ssh(
        d,
        "carol",
        "break-glass payments/api-0 --incident INC-42",
        b"id\n",
    );
    assert_eq!(o.status.code(), Some(126));
    assert!(text(&o.stderr).contains("needs a reason"));
    let o = ssh(
        d,
        "carol",
        "break-glass payments/api-0 --reason 'db down'",
        b"id\n",
    );
    assert_eq!(o.status.code(), Some(126));
    assert!(text(&o.stderr).contains("requires an incident"));
    // the session ends at the grant's expiry (6 s), with the reason
    let o = ssh(d, "carol", bg, b"sleep 60\n");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        text(&o.stderr).contains("the break-glass grant expired"),
        "{}",
        text(&o.stderr)
    );
    // critical audit events with the incident, and the recording
    let audit = jsonl(&d.join("audit.jsonl"));
    let start = audit
        .iter()
        .find(|e| e["event"] == "breakglass.start")
        .unwrap();
    assert_eq!(start["severity"], "critical");
    assert_eq!(start["incident"], "INC-42");
    assert_eq!(start["review_owed"], true);
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "breakglass.end" && e["incident"] == "INC-42")
    );
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "breakglass.notify" && e["delivered"] == true)
    );
    let cast = std::fs::read_to_string(start["recording"].as_str().unwrap()).unwrap();
    assert!(cast.contains("echo $((6*7))") && cast.contains("42") && cast.contains("review owed"));

    // attach (carol's sre rule grants it): output of the main process, recorded
    let mut a = Command::new("/usr/bin/ssh")
        .arg("-F")
        .arg(d.join("ssh_config"))
        .args(["carol@jitsh", "attach payments/api-0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let audit_has_attach = || {
        jsonl(&d.join("audit.jsonl"))
            .iter()
            .any(|e| e["event"] == "attach.start")
    };
    eventually("attach started", audit_has_attach);
    let _ = a.kill();
    let _ = a.wait();
    // alice has no attach mode
    let o = ssh(d, "alice", "attach payments/api-0", b"");
    assert_eq!(o.status.code(), Some(126));

    every_exec_was_decided(d);
}
