//! The container runtime driven directly: sandbox views, exec, pty, logs, attach, ports, cleanup.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

mod runtime_support;

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kube_sim::runtime::{ContainerRef, ExecSpec, LogOptions, Runtime, SandboxMode, TerminalSize};
use runtime_support::*;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn app() -> ContainerRef {
    ContainerRef::new("payments", "api-0", "app")
}
fn toolbox() -> ContainerRef {
    ContainerRef::new("default", "toolbox", "toolbox")
}

/// Both modes when bubblewrap works here, else only the unsandboxed one.
fn modes() -> Vec<SandboxMode> {
    let mut modes = vec![SandboxMode::None];
    if bwrap_available() {
        modes.push(SandboxMode::Bubblewrap);
    } else {
        eprintln!("bubblewrap unavailable: sandboxed variants skipped");
    }
    modes
}

async fn collect(rt: &Runtime, c: &ContainerRef, options: LogOptions) -> String {
    let stream = rt
        .logs(&c.namespace, &c.pod, &c.container, options)
        .unwrap();
    let chunks: Vec<_> = stream.collect().await;
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_container_sees_only_its_own_files() {
    for mode in modes() {
        let (rt, _dir) = runtime(mode);
        start_demo(&rt).await;
        let out = exec(&rt, &app(), &["cat", "/var/log/app.log"], None).await;
        assert_eq!(out.exit.code, 0, "{mode:?}: {}", out.stderr());
        assert!(
            out.stdout().contains("INFO app: handled GET"),
            "{mode:?}: {}",
            out.stdout()
        );
        assert!(out.stdout().contains("ERROR app:"), "{mode:?}");

        let other = exec(&rt, &toolbox(), &["cat", "/var/log/app.log"], None).await;
        assert_ne!(
            other.exit.code, 0,
            "{mode:?}: toolbox must not see api-0's file"
        );
        assert!(other.stdout.is_empty());

        if mode == SandboxMode::None {
            rt.shutdown().await;
            continue;
        }
        // A file written in one container's /tmp is invisible to its sibling container.
        let w = exec(
            &rt,
            &app(),
            &["sh", "-c", "echo secret > /tmp/only-app"],
            None,
        )
        .await;
        assert_eq!(w.exit.code, 0, "{}", w.stderr());
        let r = exec(
            &rt,
            &ContainerRef::new("payments", "api-0", "sidecar"),
            &["cat", "/tmp/only-app"],
            None,
        )
        .await;
        assert_ne!(r.exit.code, 0, "{mode:?}: sidecar must not see app's /tmp");
        let r = exec(&rt, &app(), &["cat", "/tmp/only-app"], None).await;
        assert_eq!(r.stdout(), "secret\n");

        let worker = eventually("worker log lines", || async {
            let out = exec(
                &rt,
                &ContainerRef::new("payments", "worker-0", "worker"),
                &["cat", "/var/log/worker.log"],
                None,
            )
            .await;
            out.stdout().contains("INFO worker:").then_some(out)
        })
        .await;
        assert!(worker.stdout().contains("INFO worker:"), "{mode:?}");
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_has_pod_hostname_pid_namespace_and_readonly_usr() {
    if !bwrap_available() {
        eprintln!("bubblewrap unavailable: skipped");
        return;
    }
    let (rt, _dir) = runtime(SandboxMode::Bubblewrap);
    assert!(rt.is_sandboxed());
    start_demo(&rt).await;
    let out = exec(&rt, &app(), &["hostname"], None).await;
    assert_eq!(out.stdout().trim(), "api-0");
    let out = exec(&rt, &toolbox(), &["hostname"], None).await;
    assert_eq!(out.stdout().trim(), "toolbox");

    let ps = exec(&rt, &app(), &["ps", "aux"], None).await;
    assert_eq!(ps.exit.code, 0, "{}", ps.stderr());
    let lines: Vec<&str> = ps
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    // Own pid namespace: a handful of processes, not the host's.
    assert!(lines.len() < 15, "{}", ps.stdout());
    if rt.exec_shares_namespaces() {
        assert!(
            ps.stdout().contains("__kube-sim-container app"),
            "exec must see the main process: {}",
            ps.stdout()
        );
    }
    assert!(
        !ps.stdout().contains("worker"),
        "another pod's process is visible: {}",
        ps.stdout()
    );

    let w = exec(&rt, &app(), &["sh", "-c", "touch /usr/should-fail"], None).await;
    assert_ne!(w.exit.code, 0, "/usr must be read-only");
    let ls = exec(&rt, &app(), &["ls", "/"], None).await;
    assert!(
        ls.stdout().contains("usr") && !ls.stdout().contains("work"),
        "{}",
        ls.stdout()
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exit_codes_stderr_and_stdin_eof() {
    for mode in modes() {
        let (rt, _dir) = runtime(mode);
        start_demo(&rt).await;
        let out = exec(
            &rt,
            &app(),
            &["sh", "-c", "echo out; echo err >&2; exit 7"],
            None,
        )
        .await;
        assert_eq!(out.exit.code, 7);
        assert_eq!(out.stdout(), "out\n");
        assert_eq!(out.stderr(), "err\n");

        let missing = exec(&rt, &app(), &["no-such-command-here"], None).await;
        assert_ne!(missing.exit.code, 0);

        // 5 MiB through sha256sum: stdin EOF must reach the process for it to answer.
        let data: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let out = exec(&rt, &app(), &["sha256sum"], Some(&data)).await;
        assert_eq!(out.exit.code, 0, "{}", out.stderr());
        let expected = hex::encode(sha2::Sha256::digest(&data));
        assert_eq!(
            out.stdout().split_whitespace().next(),
            Some(expected.as_str())
        );
        rt.shutdown().await;
    }
}

async fn read_until(out: &mut kube_sim::runtime::ExecOutput, seen: &mut Vec<u8>, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = tokio::time::timeout_at(deadline, out.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(seen)))
            .unwrap();
        assert!(
            n > 0,
            "EOF before {needle:?}: {:?}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_shell_sees_resize() {
    for mode in modes() {
        let (rt, _dir) = runtime(mode);
        start_demo(&rt).await;
        let mut p = rt
            .exec(
                &app(),
                ExecSpec {
                    command: vec!["sh".to_owned()],
                    stdin: true,
                    tty: true,
                    terminal_size: Some(TerminalSize {
                        width: 80,
                        height: 24,
                    }),
                },
            )
            .await
            .unwrap();
        assert!(p.stderr.is_none());
        let mut stdin = p.stdin.take().unwrap();
        let mut out = p.stdout.take().unwrap();
        let resizer = p.resizer.take().unwrap();
        let mut seen = Vec::new();
        stdin
            .write_all(b"tty; stty size; echo A$((40+2))\n")
            .await
            .unwrap();
        read_until(&mut out, &mut seen, "A42").await;
        let text = String::from_utf8_lossy(&seen).into_owned();
        assert!(text.contains("24 80"), "{mode:?}: {text}");
        // Without nsenter (not root) a sandboxed exec gets a host terminal its /dev cannot name.
        if mode == SandboxMode::None || rt.exec_shares_namespaces() {
            assert!(
                text.contains("/dev/pts/"),
                "{mode:?}: not a terminal: {text}"
            );
        }

        resizer
            .resize(TerminalSize {
                width: 132,
                height: 50,
            })
            .unwrap();
        stdin
            .write_all(b"stty size; echo B$((40+3))\n")
            .await
            .unwrap();
        read_until(&mut out, &mut seen, "B43").await;
        assert!(
            String::from_utf8_lossy(&seen).contains("50 132"),
            "{mode:?}: {}",
            String::from_utf8_lossy(&seen)
        );

        stdin.write_all(b"exit 3\n").await.unwrap();
        let mut rest = Vec::new();
        out.read_to_end(&mut rest).await.unwrap();
        assert_eq!(p.wait().await.unwrap().code, 3);
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_timestamps_since_limit_and_follow() {
    let (rt, _dir) = runtime(SandboxMode::None);
    start_demo(&rt).await;
    let c = app();
    // The app writes a burst of 6 lines at start.
    let all = eventually("six log lines", || async {
        let all = collect(&rt, &c, LogOptions::default()).await;
        (all.lines().count() >= 6).then_some(all)
    })
    .await;
    assert!(all.contains("ERROR app:"));

    let tail = collect(
        &rt,
        &c,
        LogOptions {
            tail_lines: Some(3),
            timestamps: true,
            ..LogOptions::default()
        },
    )
    .await;
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 3, "{tail}");
    for line in &lines {
        let (ts, rest) = line.split_once(' ').unwrap();
        // RFC 3339, UTC, nine fractional digits.
        assert_eq!(ts.len(), "2026-01-02T03:04:05.123456789Z".len(), "{line}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
        assert!(all.contains(rest), "{rest} not in the log");
    }
    let tail0 = collect(
        &rt,
        &c,
        LogOptions {
            tail_lines: Some(0),
            ..LogOptions::default()
        },
    )
    .await;
    assert_eq!(tail0, "");

    let limited = collect(
        &rt,
        &c,
        LogOptions {
            limit_bytes: Some(10),
            ..LogOptions::default()
        },
    )
    .await;
    assert_eq!(limited.len(), 10);
    assert_eq!(limited, all[..10]);

    // since: lines older than the threshold are left out.
    let before = collect(&rt, &c, LogOptions::default()).await;
    let since = SystemTime::now();
    let attach = rt.attach(&c, true).await.unwrap();
    attach
        .stdin
        .as_ref()
        .unwrap()
        .write(b"after-the-threshold\n")
        .await
        .unwrap();
    let after = eventually("the stdin line in the log", || async {
        let s = collect(
            &rt,
            &c,
            LogOptions {
                since_time: Some(since),
                ..LogOptions::default()
            },
        )
        .await;
        s.contains("stdin: after-the-threshold").then_some(s)
    })
    .await;
    for old in before.lines() {
        assert!(!after.contains(old), "{old:?} is older than sinceTime");
    }
    let recent = collect(
        &rt,
        &c,
        LogOptions {
            since_seconds: Some(3600),
            ..LogOptions::default()
        },
    )
    .await;
    assert!(recent.contains(before.lines().next().unwrap()));

    // follow: a line written later arrives on an open stream.
    let mut follow = Box::pin(
        rt.logs(
            "payments",
            "api-0",
            "app",
            LogOptions {
                follow: true,
                tail_lines: Some(1),
                ..LogOptions::default()
            },
        )
        .unwrap(),
    );
    let first = follow.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    rt.write_stdin(&c, b"appended-later-42\n").await.unwrap();
    let mut got = String::new();
    while !got.contains("stdin: appended-later-42") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), follow.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The follow stream ends when the container stops.
    rt.stop_pod("payments", "api-0").await.unwrap();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), follow.next())
        .await
        .unwrap()
    {
        chunk.unwrap();
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_sees_output_and_feeds_stdin() {
    let (rt, _dir) = runtime(SandboxMode::None);
    start_demo(&rt).await;
    let mut attached = rt.attach(&app(), true).await.unwrap();
    attached
        .stdin
        .as_ref()
        .unwrap()
        .write(b"hello-attach\n")
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("stdin: hello-attach") {
        let (_, data) = tokio::time::timeout(Duration::from_secs(30), attached.output.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&data));
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_container_has_previous_log_and_status() {
    let (rt, _dir) = runtime(SandboxMode::None);
    let mut c = container("job", "busybox");
    c.command = Some(vec!["sh".into(), "-c".into(), "echo run-$$; exit 3".into()]);
    rt.start_pod(&pod("default", "crashy", vec![c]))
        .await
        .unwrap();
    let target = ContainerRef::new("default", "crashy", "job");
    let statuses = eventually("a restart", || async {
        let s = rt.container_statuses("default", "crashy").unwrap();
        (s[0].restart_count >= 1 && s[0].last_state.is_some()).then_some(s)
    })
    .await;
    let last = statuses[0]
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.exit_code, 3);
    let previous = collect(
        &rt,
        &target,
        LogOptions {
            previous: true,
            ..LogOptions::default()
        },
    )
    .await;
    assert!(previous.starts_with("run-"), "{previous}");

    // A container that never restarted has no previous log.
    start_demo(&rt).await;
    let err = rt
        .logs(
            "payments",
            "api-0",
            "app",
            LogOptions {
                previous: true,
                ..LogOptions::default()
            },
        )
        .err()
        .unwrap();
    assert_eq!(err.http_status(), 400);
    assert!(
        err.to_string()
            .contains("previous terminated container \"app\" in pod \"api-0\" not found")
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_connect_reaches_the_app_responder() {
    for mode in modes() {
        let (rt, _dir) = runtime(mode);
        start_demo(&rt).await;
        let mut conn = rt.connect_port("payments", "api-0", 8080).await.unwrap();
        assert!(conn.peer_addr().unwrap().ip().is_loopback());
        conn.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        conn.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("GET /ping"), "{body}");
        if mode == SandboxMode::Bubblewrap {
            assert!(
                body.contains("on api-0"),
                "hostname in the response: {body}"
            );
        }
        let err = rt
            .connect_port("payments", "api-0", 9999)
            .await
            .err()
            .unwrap();
        assert_eq!(err.http_status(), 400, "{err}");
        assert!(rt.connect_port("default", "nope", 8080).await.is_err());
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_for_unknown_targets_and_bad_pods() {
    let (rt, _dir) = runtime(SandboxMode::None);
    start_demo(&rt).await;
    let spec = ExecSpec {
        command: vec!["true".into()],
        ..ExecSpec::default()
    };
    let e = rt
        .exec(&ContainerRef::new("payments", "nope", "app"), spec.clone())
        .await
        .err()
        .unwrap();
    assert_eq!(e.http_status(), 404);
    let e = rt
        .exec(&ContainerRef::new("payments", "api-0", "nope"), spec)
        .await
        .err()
        .unwrap();
    assert_eq!(e.http_status(), 400);
    let e = rt.exec(&app(), ExecSpec::default()).await.err().unwrap();
    assert_eq!(e.http_status(), 400);
    let e = rt.start_pod(&demo_pods()[0]).await.err().unwrap();
    assert_eq!(e.http_status(), 409);
    let e = rt
        .start_pod(&pod(
            "default",
            "../evil",
            vec![container("a", "kube-sim/idle")],
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(e.http_status(), 422);
    let e = rt
        .start_pod(&pod("default", "noimage", vec![container("a", "nginx")]))
        .await
        .err()
        .unwrap();
    assert_eq!(e.http_status(), 422);
    let statuses = rt.container_statuses("payments", "api-0").unwrap();
    assert_eq!(statuses.len(), 2);
    assert!(
        statuses
            .iter()
            .all(|s| s.ready && s.state.as_ref().unwrap().running.is_some())
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_processes_survive_shutdown_or_drop() {
    for mode in modes() {
        let (rt, _dir) = runtime(mode);
        let marker = rt.instance_marker().to_owned();
        start_demo(&rt).await;
        // A long-running exec that is still going at shutdown.
        let _sleeper = rt
            .exec(
                &app(),
                ExecSpec {
                    command: vec!["sleep".into(), "1000".into()],
                    ..ExecSpec::default()
                },
            )
            .await
            .unwrap();
        eventually("the sleeper to start", || async {
            marked_processes(&marker)
                .iter()
                .any(|(_, c)| c.contains("sleep 1000"))
                .then_some(())
        })
        .await;
        assert!(
            marked_processes(&marker).len() >= 4,
            "{:?}",
            marked_processes(&marker)
        );
        rt.shutdown().await;
        eventually("every process to be gone after shutdown", || async {
            marked_processes(&marker).is_empty().then_some(())
        })
        .await;
        drop(_sleeper);

        // Dropping the last handle without shutdown kills everything too.
        let (rt, _dir2) = runtime(mode);
        let marker = rt.instance_marker().to_owned();
        start_demo(&rt).await;
        assert!(!marked_processes(&marker).is_empty());
        drop(rt);
        eventually("every process to be gone after drop", || async {
            marked_processes(&marker).is_empty().then_some(())
        })
        .await;
    }
}
