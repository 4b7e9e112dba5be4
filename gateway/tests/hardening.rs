//! What a client can do to the gateway, through the real `ssh`: a client that goes away frees
//! its slot and ends its command at once (20 disconnects used to lock a user out until the idle
//! timeout); one connection has at most 10 channels; X11 forwarding is refused out loud.
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
use common::{alice_with, eventually, jsonl, ssh, start_dev, text};

fn ssh_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("/usr/bin/ssh");
    c.arg("-F").arg(dir.join("ssh_config")).args(args);
    c
}

fn count(dir: &Path, what: impl Fn(&serde_json::Value) -> bool) -> usize {
    jsonl(&dir.join("audit.jsonl"))
        .iter()
        .filter(|e| what(e))
        .count()
}

#[test]
fn a_client_that_goes_away_frees_its_slot_at_once() {
    let dev = start_dev();
    let d = &dev.dir;
    // More disconnects than the per-user limit (20 in dev mode): each one's slot must be free
    // again before the next, or the last ones (and the check after them) are refused.
    for i in 1..=21 {
        let mut c: Child = ssh_cmd(d, &["alice@jitsh", "payments/api-0 -- sleep 300"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually("the sleep is allowed", || {
            count(d, |e| {
                e["event"] == "command.allowed" && e["argv"] == serde_json::json!(["sleep", "300"])
            }) == i
        });
        c.kill().unwrap();
        c.wait().unwrap();
        eventually("its session ends as the client's going", || {
            count(d, |e| {
                e["event"] == "session.end" && e["code"] == "client-gone"
            }) == i
        });
    }
    let o = ssh(d, "alice", "payments/api-0 -- date", b"");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn one_connection_has_at_most_ten_channels() {
    let dev = start_dev();
    let d = &dev.dir;
    let sock = dev.scratch().join("mux");
    let control = format!("ControlPath={}", sock.display());
    // A master connection (no channel of its own), then sessions multiplexed over it.
    let st = ssh_cmd(
        d,
        &[
            "-o",
            "ControlMaster=yes",
            "-o",
            &control,
            "-N",
            "-f",
            "alice@jitsh",
        ],
    )
    .stdin(Stdio::null())
    .status()
    .unwrap();
    assert!(st.success());
    // Port 1: a refused mux session must not fall back to a connection of its own.
    let run = |cmd: &str| {
        ssh_cmd(d, &["-o", &control, "-o", "Port=1", "alice@jitsh", cmd])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut held: Vec<Child> = (0..10)
        .map(|_| run("payments/api-0 -- sleep 300"))
        .collect();
    eventually("ten sessions on one connection", || {
        count(d, |e| e["event"] == "command.allowed") == 10
    });
    let eleventh = run("payments/api-0 -- date").wait_with_output().unwrap();
    assert_ne!(eleventh.status.code(), Some(0));
    assert!(
        text(&eleventh.stderr).contains("Session open refused by peer"),
        "{}",
        text(&eleventh.stderr)
    );
    assert_eq!(count(d, |e| e["event"] == "command.allowed"), 10);
    // A closed channel frees its place.
    let mut first = held.remove(0);
    first.kill().unwrap();
    first.wait().unwrap();
    eventually("a channel's place is free again", || {
        let o = run("payments/api-0 -- date").wait_with_output().unwrap();
        o.status.success()
    });
    for mut c in held {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let _ = ssh_cmd(d, &["-o", &control, "-O", "exit", "alice@jitsh"])
        .stderr(Stdio::null())
        .status();
}

#[test]
fn x11_forwarding_is_refused_out_loud() {
    let dev = start_dev();
    let d = &dev.dir;
    let o = ssh_cmd(d, &["-o", "LogLevel=INFO", "-Y", "alice@jitsh", "whoami"])
        .env("DISPLAY", "127.0.0.1:9")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("X11 forwarding request failed"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn permit_extensions_are_honoured() {
    let dev = start_dev();
    let d = &dev.dir;
    // `ssh -F CFG -o LogLevel=INFO ARGS…` with stdin closed: its status and stderr.
    let run = |cfg: &Path, args: &[&str]| {
        let o = Command::new("/usr/bin/ssh")
            .arg("-F")
            .arg(cfg)
            .args(["-o", "LogLevel=INFO"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (o.status.code(), text(&o.stderr))
    };
    let tty = ["-tt", "alice@jitsh", "payments/api-0 -- date"];
    let forward = ["-W", "payments/api-0:8080", "alice@jitsh"];
    // `-O clear`: no permit-pty, no permit-port-forwarding (nor agent, X11, user-rc).
    let cleared = alice_with(&dev, "cleared", &["clear"]);
    let (code, err) = run(&cleared, &tty);
    // OpenSSH treats a refused terminal it asked for explicitly as fatal.
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("PTY allocation request failed"), "{err}");
    let before = common::kube_audit(d, "portforward").len();
    let (code, err) = run(&cleared, &forward);
    assert_ne!(code, Some(0));
    assert!(err.contains("does not permit port forwarding"), "{err}");
    assert_eq!(common::kube_audit(d, "portforward").len(), before);
    // The same grants with the extensions: a terminal, and the forward reaches the pod.
    let permitted = alice_with(
        &dev,
        "permitted",
        &["clear", "permit-pty", "permit-port-forwarding"],
    );
    let (code, err) = run(&permitted, &tty);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("PTY allocation request failed"), "{err}");
    let mut w = Command::new("/usr/bin/ssh")
        .arg("-F")
        .arg(&permitted)
        .args(forward)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        w.stdin
            .take()
            .unwrap()
            .write_all(b"GET /p HTTP/1.0\r\n\r\n")
            .unwrap();
    }
    let o = w.wait_with_output().unwrap();
    assert!(
        text(&o.stdout).contains("kube-sim app on api-0: GET /p"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(common::kube_audit(d, "portforward").len(), before + 1);
}

#[test]
fn audit_logs_and_recordings_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dev = start_dev();
    let d = &dev.dir;
    // Line mode is recorded (the demo policy's rule says so).
    let o = ssh(d, "alice", "payments/api-0", b"date\n");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.join("audit.jsonl")), 0o600);
    assert_eq!(mode(&d.join("recordings")), 0o700);
    let recordings: Vec<_> = std::fs::read_dir(d.join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!recordings.is_empty());
    for r in recordings {
        assert_eq!(mode(&r), 0o600, "{}", r.display());
        // A name people can find: UTC time, user, target, session.
        let name = r.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with("20") && name.contains("Z_alice_payments-api-0_"),
            "{name}"
        );
    }
}

#[test]
fn an_unterminated_line_is_refused_once_and_the_next_line_runs() {
    let dev = start_dev();
    let d = &dev.dir;
    // 4 MiB without a newline, then a line that must still run.
    let mut input = vec![b'a'; 4 << 20];
    input.extend_from_slice(b"\ndate\n");
    let o = ssh(d, "alice", "payments/api-0", &input);
    let err = text(&o.stderr);
    assert_eq!(
        err.matches("refused: a line longer than 8192 bytes")
            .count(),
        1,
        "{err}"
    );
    assert!(text(&o.stdout).contains("UTC"), "{}", text(&o.stdout));
    // No audit event carries the long line.
    let audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    let longest = audit.lines().map(str::len).max().unwrap();
    assert!(longest < 16 * 1024, "an audit event of {longest} bytes");
}

#[test]
fn kubernetes_refusals_are_audited() {
    let dev = start_dev();
    let d = &dev.dir;
    let o = ssh(d, "mallory", "payments/api-0 -- cat /var/log/app.log", b"");
    assert_ne!(o.status.code(), Some(0));
    let o = ssh(d, "alice", "payments/no-such-pod -- date", b"");
    assert_ne!(o.status.code(), Some(0));
    let o = ssh(d, "alice", "kube-system/anything -- date", b"");
    assert_ne!(o.status.code(), Some(0));
    let refused: Vec<serde_json::Value> = jsonl(&d.join("audit.jsonl"))
        .into_iter()
        .filter(|e| e["event"] == "kube.refused")
        .collect();
    let find = |user: &str, pod: &str| {
        refused
            .iter()
            .find(|e| e["user"] == user && e["pod"] == pod)
            .unwrap_or_else(|| panic!("no kube.refused for {user} on {pod}: {refused:#?}"))
    };
    assert_eq!(find("mallory", "api-0")["status"], "403");
    assert_eq!(find("alice", "no-such-pod")["status"], "404");
    assert!(find("alice", "anything")["error"].is_string());
}

#[test]
fn a_revoked_certificate_ends_its_whole_connection() {
    use common::config::{env, start, write_config};
    let e = env(
        "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:\n  - name: oncall\n    groups: [oncall-payments]\n    targets: [{namespaces: [payments]}]\n    modes: [exec]\n    commands: [\"date\"]\n",
    );
    let d = &e.dir;
    let config = write_config(d, "");
    let _gw = start(d, &config);
    let sock = d.join("mux");
    let control = format!("ControlPath={}", sock.display());
    let alice = d.join("alice");
    let mux = |args: &[&str]| {
        let mut c = Command::new("/usr/bin/ssh");
        c.arg("-F")
            .arg(d.join("ssh_config"))
            .arg("-i")
            .arg(&alice)
            .args(["-o", &control])
            .args(args)
            .stdin(Stdio::null());
        c
    };
    let st = mux(&["-o", "ControlMaster=yes", "-N", "-f", "alice@jitsh"])
        .status()
        .unwrap();
    assert!(st.success());
    // Port 1: a mux client must not fall back to a connection of its own.
    let whoami = || {
        mux(&["-o", "Port=1", "alice@jitsh", "whoami"])
            .output()
            .unwrap()
    };
    let o = whoami();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::fs::write(d.join("revoked"), "key-id:alice@example.com\n").unwrap();
    eventually("the revoked connection is closed by the gateway", || {
        !mux(&["-O", "check", "alice@jitsh"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    let o = whoami();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

#[test]
fn connections_that_never_authenticate_count_against_their_address() {
    use std::io::{Read, Write};
    let dev = start_dev();
    let d = &dev.dir;
    let port: u16 = std::fs::read_to_string(d.join("ssh_config"))
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("Port "))
        .unwrap()
        .parse()
        .unwrap();
    // The DHEat pattern: connect, exchange versions, leave — as many as the lockout allows
    // (10 per minute in dev mode), each one counted when it ends.
    for _ in 0..10 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"SSH-2.0-probe\r\n").unwrap();
        let mut banner = [0u8; 8];
        s.read_exact(&mut banner).unwrap();
        assert_eq!(&banner, b"SSH-2.0-");
    }
    // Now the address is refused at the door, even with a good certificate.
    eventually("the address is locked out", || {
        ssh(d, "alice", "whoami", b"").status.code() == Some(255)
    });
}

#[test]
fn break_glass_ends_when_its_input_cannot_be_recorded() {
    use common::config::{env, start, write_config};
    use std::io::{BufRead, BufReader, Write};
    let e = env(
        "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:\n  - name: sre-break-glass\n    groups: [sre]\n    targets: [{namespaces: [payments]}]\n    modes: [break-glass]\n    breakGlass: {maxDuration: 10m}\n",
    );
    let d = &e.dir;
    let config = write_config(d, ", maxRecordingBytes: 4096");
    let _gw = start(d, &config);
    let mut c = Command::new("timeout")
        .args(["-s", "KILL", "120", "/usr/bin/ssh", "-F"])
        .arg(d.join("ssh_config"))
        .arg("-i")
        .arg(d.join("carol"))
        .args([
            "carol@jitsh",
            "break-glass payments/api-0 --incident INC-1 --reason 'recording test'",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let stdout = c.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    writeln!(stdin, "touch /var/log/recorded-mark; echo started").unwrap();
    let started = rx.iter().find(|l| l == "started").is_some();
    assert!(started, "the shell never answered");
    // One line bigger than what the recording may still hold: it cannot be recorded, so it
    // must not reach the shell.
    writeln!(
        stdin,
        "echo {}; touch /var/log/unrecorded-mark; echo MARK-$((40+2))",
        "x".repeat(5000)
    )
    .unwrap();
    let o = c.wait_with_output().unwrap();
    drop(stdin);
    let seen = reader.join().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(255), "{err}");
    assert!(err.contains("recording reached its limit"), "{err}");
    assert!(!seen.contains("MARK-42"), "an unrecorded line ran: {seen}");
    let ends: Vec<serde_json::Value> = jsonl(&d.join("audit.jsonl"))
        .into_iter()
        .filter(|e| e["event"] == "session.end" && e["code"] == "recording-failed")
        .collect();
    assert_eq!(ends.len(), 1, "{ends:#?}");
    // In the pod (as admin): the recorded line ran, the unrecorded one never did.
    let exists = |f: &str| {
        let o = Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(d.join("kubeconfig"))
            .args([
                "exec", "-n", "payments", "api-0", "-c", "app", "--", "ls", f,
            ])
            .output()
            .unwrap();
        o.status.success()
    };
    assert!(exists("/var/log/recorded-mark"));
    assert!(!exists("/var/log/unrecorded-mark"));
}

/// A symbolic link under an allowed tree does not lead out of it: path arguments are resolved
/// in the container (as the user) and the command is decided — and run — on where they lead.
#[test]
fn path_arguments_are_decided_where_their_links_lead() {
    let dev = start_dev();
    let d = &dev.dir;
    // The pod's /var is this directory (kube-sim's sandbox bind-mounts it).
    let log = d.join("kube-sim/pods/payments/api-0/app/var/log");
    std::os::unix::fs::symlink("/", log.join("rootfs")).unwrap();
    std::os::unix::fs::symlink("/var/log/app.log", log.join("current")).unwrap();

    // Out of the tree through a link: denied, saying where it leads; nothing read.
    for line in [
        "cat /var/log/rootfs/etc/passwd",
        "head -n 5 /var/log/rootfs/proc/1/environ",
        "grep -c root /var/log/rootfs/etc/passwd",
    ] {
        let o = ssh(d, "alice", &format!("payments/api-0 -- {line}"), b"");
        assert_eq!(o.status.code(), Some(126), "{line}");
        assert!(o.stdout.is_empty(), "{line}: nothing read");
        let err = text(&o.stderr);
        assert!(
            err.starts_with("jitsh: denied: /var/log/rootfs/") && err.contains(" leads to /"),
            "{line}: {err}"
        );
    }
    // Through a link that stays inside: allowed, and run on the resolved path (the argv that
    // was decided is the argv that ran) — in a pipeline too.
    let o = ssh(
        d,
        "alice",
        "payments/api-0 -- tail -n 1 /var/log/current",
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("app:"), "{}", text(&o.stdout));
    let o = ssh(
        d,
        "alice",
        "payments/api-0 -- grep -c INFO /var/log/current | wc -l",
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));

    let ours = jsonl(&d.join("audit.jsonl"));
    let allowed = ours
        .iter()
        .find(|e| e["event"] == "command.allowed" && e["argv"][0] == "tail")
        .unwrap();
    assert_eq!(
        allowed["argv"],
        serde_json::json!(["tail", "-n", "1", "/var/log/app.log"])
    );
    assert_eq!(
        allowed["links"],
        serde_json::json!(["/var/log/current -> /var/log/app.log"])
    );
    let denied = ours
        .iter()
        .find(|e| e["event"] == "command.denied" && e["argv"][0] == "cat")
        .unwrap();
    assert_eq!(
        denied["links"],
        serde_json::json!(["/var/log/rootfs/etc/passwd -> /etc/passwd"])
    );
    // Kubernetes saw the resolution (realpath, as alice, same Audit-ID) and then the tail of the
    // resolved path — never a read of /etc/passwd.
    let execs = common::kube_audit(d, "exec");
    let uri = |e: &serde_json::Value| e["requestURI"].as_str().unwrap_or_default().to_owned();
    let id = allowed["command"].as_str().unwrap();
    let mine: Vec<String> = execs
        .iter()
        .filter(|e| e["auditID"] == id)
        .map(uri)
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(
        mine[0].contains("command=realpath&command=-m&command=--&command=%2Fvar%2Flog%2Fcurrent"),
        "{mine:?}"
    );
    assert!(
        mine[1].contains("command=tail") && mine[1].contains("command=%2Fvar%2Flog%2Fapp.log"),
        "{mine:?}"
    );
    assert!(
        execs
            .iter()
            .all(|e| !(uri(e).contains("command=cat") && uri(e).contains("passwd"))),
        "no cat of passwd reached the pod"
    );
}
