//! End-to-end: `jitsh serve --config FILE` against kube-sim (started by the test, reached through
//! a kubeconfig as from outside a cluster), with keys and certificates made by the real
//! `ssh-keygen` and driven by the real `ssh`: invalid configurations, TTY and resize, the
//! policy's session maximum, idle timeout, session limits, policy and revocation hot reload,
//! the admin endpoints, and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{eventually, jsonl, text};

const JITSH: &str = env!("CARGO_BIN_EXE_jitsh");

fn keygen(args: &[&str]) {
    let o = Command::new("ssh-keygen").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const POLICY: &str = r#"apiVersion: jitsh.dev/v1alpha1
kind: Policy
rules:
  - name: oncall
    groups: [oncall-payments]
    targets: [{namespaces: [payments]}]
    modes: [exec]
    commands: ["date", "sleep <int>", "sh -c <word>", "cat <path:/var/log/**>"]
  - name: leads-short-idle
    groups: [payments-leads]
    targets: [{namespaces: [payments]}]
    modes: [exec]
    commands: ["sleep <int>"]
    limits: {idleTimeout: 2s}
  - name: sre-short
    groups: [sre]
    targets: [{namespaces: [payments]}]
    modes: [exec]
    commands: ["sleep <int>"]
    limits: {maxSession: 3s}
"#;

struct Env {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
    _sim: kube_sim::RunningSim,
}

/// kube-sim in this process, CAs and keys from ssh-keygen, a config file; nothing started yet.
fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt
        .block_on(
            kube_sim::SimBuilder::new()
                .fixture(kube_sim::Fixture::Demo)
                .audit_log(dir.join("kube-audit.jsonl"))
                .container_exe(JITSH)
                .state_dir(dir.join("kube-sim"))
                .start(),
        )
        .unwrap();
    sim.write_kubeconfig(&dir.join("kubeconfig")).unwrap();
    for k in ["user_ca", "host_ca", "host_key"] {
        keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            k,
            "-f",
            p(&dir.join(k)),
        ]);
    }
    keygen(&[
        "-q",
        "-s",
        p(&dir.join("host_ca")),
        "-I",
        "gateway",
        "-h",
        "-n",
        "jitsh,127.0.0.1",
        "-V",
        "-1m:+1h",
        p(&dir.join("host_key.pub")),
    ]);
    for (user, group) in [
        ("alice", "oncall-payments"),
        ("bob", "payments-leads"),
        ("carol", "sre"),
    ] {
        let key = dir.join(user);
        keygen(&["-q", "-t", "ed25519", "-N", "", "-f", p(&key)]);
        keygen(&[
            "-q",
            "-s",
            p(&dir.join("user_ca")),
            "-I",
            &format!("{user}@example.com"),
            "-n",
            user,
            "-V",
            "-1m:+1h",
            "-O",
            &format!("extension:groups@jitsh.dev={group}"),
            p(&dir.join(format!("{user}.pub"))),
        ]);
    }
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    std::fs::write(dir.join("revoked"), "# nothing revoked yet\n").unwrap();
    std::fs::write(
        dir.join("known_hosts"),
        format!(
            "@cert-authority * {}",
            std::fs::read_to_string(dir.join("host_ca.pub")).unwrap()
        ),
    )
    .unwrap();
    Env {
        dir,
        _tmp: tmp,
        _rt: rt,
        _sim: sim,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, extra_limits: &str) -> (PathBuf, u16, u16) {
    let (ssh, admin) = (free_port(), free_port());
    let cfg = format!(
        "listen: 127.0.0.1:{ssh}\n\
         hostKey: host_key\n\
         hostCertificate: host_key-cert.pub\n\
         trustedUserCAs: [user_ca.pub]\n\
         revocations: revoked\n\
         policy: policy.yaml\n\
         kubernetes: {{kubeconfig: kubeconfig, context: gateway}}\n\
         defaultNamespace: payments\n\
         audit: {{file: audit.jsonl}}\n\
         recordings: recordings\n\
         reloadInterval: 200ms\n\
         limits: {{maxSessionsPerUser: 2, shutdownGrace: 20s{extra_limits}}}\n\
         admin: {{listen: 127.0.0.1:{admin}}}\n"
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, cfg).unwrap();
    std::fs::write(
        dir.join("ssh_config"),
        format!(
            "Host jitsh\n  HostName 127.0.0.1\n  Port {ssh}\n  HostKeyAlias jitsh\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n  IdentityAgent none\n  BatchMode yes\n  LogLevel ERROR\n",
            p(&dir.join("known_hosts"))
        ),
    )
    .unwrap();
    (path, ssh, admin)
}

struct Gw {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path) -> Gw {
    let mut child = Command::new(JITSH)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("jitsh gateway listening") {
                let _ = tx.send(());
            }
            let mut g = s.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("gateway did not start: {}", stderr.lock().unwrap()));
    Gw { child, stderr }
}

fn ssh(dir: &Path, user: &str, cmd: &str) -> Output {
    ssh_cmd(dir, user, cmd).output().unwrap()
}

fn ssh_cmd(dir: &Path, user: &str, cmd: &str) -> Command {
    let mut c = Command::new("/usr/bin/ssh");
    c.arg("-F")
        .arg(dir.join("ssh_config"))
        .arg("-i")
        .arg(dir.join(user))
        .arg(format!("{user}@jitsh"))
        .arg(cmd)
        .stdin(Stdio::null());
    c
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn audit_events(dir: &Path) -> Vec<serde_json::Value> {
    jsonl(&dir.join("audit.jsonl"))
}

#[test]
fn invalid_configurations_are_refused_before_binding() {
    let e = env();
    let d = &e.dir;
    let (path, port, _) = write_config(d, "");
    let good = std::fs::read_to_string(&path).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (format!("{good}bogusKey: 1\n"), "bogusKey"),
        (
            good.replace("hostKey: host_key", "hostKey: missing_key"),
            "hostKey:",
        ),
        (
            good.replace("hostKey: host_key", "hostKey: user_ca.pub"),
            "hostKey: not an OpenSSH private key",
        ),
        (
            good.replace("maxSessionsPerUser: 2", "maxSessionsPerUser: 0"),
            "limits.maxSessionsPerUser: must be at least 1",
        ),
        (
            good.replace("trustedUserCAs: [user_ca.pub]", "trustedUserCAs: []"),
            "trustedUserCAs: at least one",
        ),
        (
            good.replace("audit: {file: audit.jsonl}", "audit: {stdout: false}"),
            "audit: needs a file",
        ),
        (
            good.lines()
                .map(|l| {
                    if l.starts_with("admin:") {
                        "admin: {listen: x}"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
            "admin",
        ),
        (
            good.replace("shutdownGrace: 20s", "shutdownGrace: soon"),
            "shutdownGrace",
        ),
    ];
    for (i, (text_, want)) in cases.iter().enumerate() {
        let cfg = d.join(format!("bad-{i}.yaml"));
        std::fs::write(&cfg, text_).unwrap();
        let o = Command::new(JITSH)
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "case {i}: {err}");
        assert!(err.contains(want), "case {i}: want {want:?} in {err}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "case {i} bound the port"
        );
    }
    // two problems at once are both named
    std::fs::write(d.join("policy.yaml"), "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules: [{name: x, groups: [g], targets: [{namespaces: [n]}], modes: [exec], commands: ['ls [']}]\n").unwrap();
    let cfg = d.join("bad-two.yaml");
    std::fs::write(
        &cfg,
        good.replace("hostKey: host_key", "hostKey: missing_key"),
    )
    .unwrap();
    let o = Command::new(JITSH)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(err.contains("hostKey:") && err.contains("policy:"), "{err}");
}

#[test]
fn configured_gateway_end_to_end() {
    let e = env();
    let d = &e.dir;
    let (config, ssh_port, admin) = write_config(d, "");
    let gw = start(&config);

    // admin endpoints
    assert_eq!(http_get(admin, "/healthz").0, 200);
    let (code, body) = http_get(admin, "/readyz");
    assert_eq!(code, 200, "{body}");

    // a command as alice through the kubeconfig connection
    let o = ssh(d, "alice", "payments/api-0 -- date");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!o.stdout.is_empty());
    let o = ssh(d, "alice", "payments/api-0 -- ps aux");
    assert_eq!(o.status.code(), Some(126));
    assert!(metric(admin, "jitsh_commands_total{decision=\"allow\"}") >= 1.0);
    assert!(metric(admin, "jitsh_commands_total{decision=\"deny\"}") >= 1.0);
    assert!(metric(admin, "jitsh_bytes_total{direction=\"out\"}") > 0.0);
    assert!(metric(admin, "jitsh_exec_duration_seconds_count") >= 1.0);

    // TTY: the command gets a terminal, and a resize from the client reaches it
    let session = format!("jitsh-test-{}", std::process::id());
    let out = d.join("tty.out");
    let cmd = format!(
        "/usr/bin/ssh -F {} -i {} -tt alice@jitsh payments/api-0 -- sh -c \"'stty size; sleep 3; stty size'\" > {} 2>&1",
        p(&d.join("ssh_config")),
        p(&d.join("alice")),
        p(&out)
    );
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &session])
            .args(args)
            .status()
            .unwrap()
    };
    let t = Command::new("tmux")
        .args([
            "-L",
            &session,
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "100",
            "-y",
            "30",
            &cmd,
        ])
        .status()
        .unwrap();
    assert!(t.success());
    eventually("the first stty size", || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(" 100")
    });
    tmux(&["resize-window", "-t", &session, "-x", "120", "-y", "40"]);
    eventually("the second stty size after a resize", || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(" 120")
    });
    tmux(&["kill-server"]);

    // the policy's maximum session length ends carol's sleep with the reason
    let o = ssh(d, "carol", "payments/api-0 -- sleep 60");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        text(&o.stderr).contains("maximum session length"),
        "{}",
        text(&o.stderr)
    );
    // the policy's idle timeout ends bob's silent sleep with the reason
    let o = ssh(d, "bob", "payments/api-0 -- sleep 60");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        text(&o.stderr).contains("idle for 2s"),
        "{}",
        text(&o.stderr)
    );

    // per-user session limit (2): the third concurrent session is refused with the reason
    let mut running: Vec<Child> = (0..2)
        .map(|_| {
            ssh_cmd(d, "alice", "payments/api-0 -- sleep 5")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    eventually("two active sessions", || {
        metric(admin, "jitsh_active_sessions") >= 2.0
    });
    let o = ssh(d, "alice", "payments/api-0 -- date");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("you already have 2 sessions open"),
        "{}",
        text(&o.stderr)
    );
    for c in running.iter_mut() {
        assert!(c.wait().unwrap().success());
    }

    // policy hot reload: ps aux becomes allowed; a broken file keeps the last good policy
    std::fs::write(
        d.join("policy.yaml"),
        POLICY.replace("\"date\",", "\"date\", \"ps aux\","),
    )
    .unwrap();
    eventually("the new policy allows ps aux", || {
        ssh(d, "alice", "payments/api-0 -- ps aux").status.code() == Some(0)
    });
    std::fs::write(d.join("policy.yaml"), "rules: [oops\n").unwrap();
    eventually("the bad policy is reported", || {
        audit_events(d)
            .iter()
            .any(|e| e["event"] == "policy.reload" && e["result"] == "error")
    });
    assert!(
        gw.stderr
            .lock()
            .unwrap()
            .contains("keeping the last good policy")
    );
    assert_eq!(
        ssh(d, "alice", "payments/api-0 -- ps aux").status.code(),
        Some(0)
    );
    assert!(
        metric(
            admin,
            "jitsh_reloads_total{file=\"policy\",result=\"error\"}"
        ) >= 1.0
    );

    // revocation reload: alice's certificate by key id — a running session ends, new ones fail
    let mut long = ssh_cmd(d, "alice", "payments/api-0 -- sleep 30")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("alice's long session is running", || {
        metric(admin, "jitsh_active_sessions") >= 1.0
    });
    std::fs::write(d.join("revoked"), "key-id:alice@example.com\n").unwrap();
    let mut err = String::new();
    long.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(long.wait().unwrap().code(), Some(255));
    assert!(
        err.contains("session closed: your certificate was revoked"),
        "{err}"
    );
    eventually("alice is refused after revocation", || {
        ssh(d, "alice", "whoami").status.code() == Some(255)
    });
    assert!(
        metric(
            admin,
            "jitsh_auth_failures_total{reason=\"revoked_key_id\"}"
        ) >= 1.0,
        "{}\n{}",
        http_get(admin, "/metrics").1,
        gw.stderr.lock().unwrap()
    );
    assert_eq!(ssh(d, "bob", "whoami").status.code(), Some(0));
    std::fs::write(d.join("revoked"), "").unwrap();
    eventually("alice is accepted again", || {
        ssh(d, "alice", "whoami").status.code() == Some(0)
    });

    // SIGTERM: stop accepting, let alice's running command finish, exit 0
    let mut bob = ssh_cmd(d, "alice", "payments/api-0 -- sleep 3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("alice's session is running", || {
        metric(admin, "jitsh_active_sessions") >= 1.0
    });
    let mut gw = gw;
    assert!(
        Command::new("kill")
            .args(["-TERM", &gw.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let b = bob.wait().unwrap();
    assert!(b.success(), "the running command was cut");
    let st = gw.child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(std::net::TcpStream::connect(("127.0.0.1", ssh_port)).is_err());
    let ev = audit_events(d);
    assert!(ev.iter().any(|e| e["event"] == "gateway.stopping"));
    let stopped = ev.iter().find(|e| e["event"] == "gateway.stopped").unwrap();
    assert_eq!(stopped["sessions_cut"], false);
    let v = Command::new(JITSH)
        .args(["audit", "verify"])
        .arg(d.join("audit.jsonl"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v.stderr));
}

#[test]
fn per_ip_auth_failure_limit_and_pre_auth_timeout() {
    let e = env();
    let d = &e.dir;
    let (config, ssh_port, admin) =
        write_config(d, ", maxAuthFailuresPerIp: 2, preAuthTimeout: 1s");
    let _gw = start(&config);
    // a connection that identifies itself but never authenticates is closed (pre-auth timeout)
    let mut s = std::net::TcpStream::connect(("127.0.0.1", ssh_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    let mut buf = Vec::new();
    let r = s.read_to_end(&mut buf);
    assert!(r.is_ok(), "the gateway did not close the connection: {r:?}");
    assert!(
        buf.starts_with(b"SSH-2.0-"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(metric(admin, "jitsh_connections_total"), 1.0);
    // a certificate from a CA the gateway does not trust, twice
    keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        p(&d.join("rogue_ca")),
    ]);
    keygen(&["-q", "-t", "ed25519", "-N", "", "-f", p(&d.join("eve"))]);
    keygen(&[
        "-q",
        "-s",
        p(&d.join("rogue_ca")),
        "-I",
        "eve",
        "-n",
        "alice",
        "-V",
        "-1m:+1h",
        p(&d.join("eve.pub")),
    ]);
    for _ in 0..2 {
        let o = ssh(d, "eve", "whoami");
        assert_eq!(o.status.code(), Some(255));
    }
    // (the first connection already counts twice: `ssh -i` offers eve's plain key too)
    assert!(metric(admin, "jitsh_auth_failures_total{reason=\"untrusted_ca\"}") >= 1.0);
    // now even a good certificate from that address is refused for the rest of the window
    let o = ssh(d, "alice", "whoami");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        metric(
            admin,
            "jitsh_connections_refused_total{reason=\"auth-failures\"}"
        ) >= 1.0
    );
    let audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"code\":\"untrusted_ca\""));
}

#[test]
fn the_documented_example_runs() {
    let e = env();
    let d = &e.dir;
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .unwrap();
    let start_at = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = doc[start_at..].find("```").unwrap();
    let example = &doc[start_at..start_at + len];
    // the ports are the only change
    let (ssh_port, admin) = (free_port(), free_port());
    let cfg = example
        .replace("127.0.0.1:2222", &format!("127.0.0.1:{ssh_port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"));
    assert_ne!(cfg, example);
    let path = d.join("example.yaml");
    std::fs::write(&path, cfg).unwrap();
    let (_, _, _) = write_config(d, "");
    let ssh_config = std::fs::read_to_string(d.join("ssh_config")).unwrap();
    let port_line = ssh_config
        .lines()
        .find(|l| l.trim_start().starts_with("Port "))
        .unwrap()
        .to_owned();
    std::fs::write(
        d.join("ssh_config"),
        ssh_config.replace(&port_line, &format!("  Port {ssh_port}")),
    )
    .unwrap();
    let _gw = start(&path);
    let o = ssh(d, "alice", "payments/api-0 -- date");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(http_get(admin, "/readyz").0, 200);
    assert!(
        std::fs::read_to_string(d.join("audit.jsonl"))
            .unwrap()
            .contains("command.allowed")
    );
    // a certificate's force-command replaces the requested command
    keygen(&[
        "-q",
        "-s",
        p(&d.join("user_ca")),
        "-I",
        "alice@example.com",
        "-n",
        "alice",
        "-V",
        "-1m:+1h",
        "-O",
        "extension:groups@jitsh.dev=oncall-payments",
        "-O",
        "force-command=whoami",
        p(&d.join("alice.pub")),
    ]);
    let o = ssh(d, "alice", "payments/api-0 -- date");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("identity: alice@example.com"),
        "{}",
        text(&o.stdout)
    );
}
