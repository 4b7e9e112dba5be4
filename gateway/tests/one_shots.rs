//! No command is ever lost: 2,000 one-shot commands through the real `ssh`, each with its stdin
//! held open (as `ssh host cmd` from a script or a terminal has), at bounded concurrency. Every
//! one must end with its exit status, and the audit log must hold one `command.exit` for each
//! command that was allowed. A count, not a time: a command that never ends is killed by
//! `timeout` and counted as lost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{jsonl, start_dev, text};

/// Runs one command with stdin open until the process exits; returns (status, stdout, stderr).
fn one(dir: &Path, cmd: &str) -> (Option<i32>, String, String) {
    let mut c = Command::new("timeout")
        .args(["-s", "KILL", "120", "/usr/bin/ssh", "-F"])
        .arg(dir.join("ssh_config"))
        .arg("alice@jitsh")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held, never written or closed, until the client has exited.
    let stdin = c.stdin.take();
    let o = c.wait_with_output().unwrap();
    drop(stdin);
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

#[test]
fn two_thousand_one_shots_all_end() {
    const TOTAL: usize = 2_000;
    const WORKERS: usize = 6;
    let dev = start_dev();
    let d = dev.dir.clone();
    // Mostly exec (the path that lost commands), with gateway words and denials mixed in: every
    // kind must end without waiting for the client's stdin.
    let kinds: [(&str, i32, &str); 4] = [
        ("payments/api-0 -- cat /var/log/app.log", 0, "ERROR"),
        ("payments/api-0 -- ps aux", 0, "PID"),
        ("whoami", 0, "alice"),
        ("payments/api-0 -- rm -rf /", 126, ""),
    ];
    let next = AtomicUsize::new(0);
    let lost = AtomicUsize::new(0);
    let wrong = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= TOTAL {
                        break;
                    }
                    // Three in four are execs.
                    let (cmd, want, out) = match i % 8 {
                        0 => kinds[2],
                        1 => kinds[3],
                        n if n % 2 == 0 => kinds[0],
                        _ => kinds[1],
                    };
                    let (code, stdout, stderr) = one(&d, cmd);
                    match code {
                        Some(c) if c == want && stdout.contains(out) => {}
                        None | Some(137) => {
                            lost.fetch_add(1, Ordering::SeqCst);
                            eprintln!("lost: {cmd}");
                        }
                        Some(c) => {
                            wrong.fetch_add(1, Ordering::SeqCst);
                            eprintln!("{cmd}: status {c}, stdout {stdout:?}, stderr {stderr:?}");
                        }
                    }
                }
            });
        }
    });
    assert_eq!(lost.load(Ordering::SeqCst), 0, "commands that never ended");
    assert_eq!(
        wrong.load(Ordering::SeqCst),
        0,
        "commands with a wrong result"
    );
    let audit = jsonl(&d.join("audit.jsonl"));
    let count = |kind: &str| audit.iter().filter(|e| e["event"] == kind).count();
    let execs = (0..TOTAL).filter(|i| i % 8 >= 2).count();
    assert_eq!(count("command.allowed"), execs);
    assert_eq!(count("command.exit"), execs);
    assert_eq!(
        count("command.denied"),
        (0..TOTAL).filter(|i| i % 8 == 1).count()
    );
}
