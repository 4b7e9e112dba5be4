//! End-to-end: `jitsh serve --config FILE` against kube-sim (started by the test, reached through
//! a kubeconfig as from outside a cluster), with keys and certificates made by the real
//! `ssh-keygen` and driven by the real `ssh`: invalid configurations, TTY and resize, the
//! policy's session maximum, idle timeout, session limits, policy and revocation hot reload,
//! the admin endpoints, and SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::config::{
    Env, Gw, JITSH, audit_events, env, http_get, keygen, metric, p, ssh, ssh_cmd, start,
    write_config,
};
use common::{eventually, text};

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

#[test]
fn invalid_configurations_are_refused_before_binding() {
    let e = env(POLICY);
    let d = &e.dir;
    let path = write_config(d, "");
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
        // Refused before binding: the ready line comes only after the listener is bound.
        assert!(
            !err.contains("listening on"),
            "case {i} bound a port: {err}"
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
    // --listen beside --config is an error, not silently ignored (the file's listen wins).
    let o = Command::new(JITSH)
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("cannot be used with '--listen"),
        "{}",
        text(&o.stderr)
    );
}

/// A configured gateway on kube-sim; the gateway is stopped before kube-sim.
struct Running {
    gw: Gw,
    e: Env,
}

fn running() -> Running {
    let e = env(POLICY);
    let config = write_config(&e.dir, "");
    let gw = start(&e.dir, &config);
    Running { gw, e }
}

#[test]
fn admin_endpoints_metrics_and_a_command() {
    let r = running();
    let d = &r.e.dir;
    let admin = r.gw.admin;

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
}

#[test]
fn a_terminal_and_its_resize_reach_the_command() {
    let r = running();
    let d = &r.e.dir;

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
}

#[test]
fn session_maximum_and_idle_timeout_end_sessions_with_the_reason() {
    let r = running();
    let d = &r.e.dir;

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
}

#[test]
fn the_per_user_session_limit_refuses_a_third() {
    let r = running();
    let d = &r.e.dir;
    let admin = r.gw.admin;

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
}

#[test]
fn policy_hot_reload_keeps_the_last_good_policy() {
    let r = running();
    let d = &r.e.dir;
    let admin = r.gw.admin;

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
        r.gw.stderr
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
}

#[test]
fn revocation_ends_running_sessions_and_refuses_new_ones() {
    let r = running();
    let d = &r.e.dir;
    let admin = r.gw.admin;

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
        r.gw.stderr.lock().unwrap()
    );
    assert_eq!(ssh(d, "bob", "whoami").status.code(), Some(0));
    std::fs::write(d.join("revoked"), "").unwrap();
    eventually("alice is accepted again", || {
        ssh(d, "alice", "whoami").status.code() == Some(0)
    });
}

#[test]
fn sigterm_drains_running_commands_and_exits_zero() {
    let mut r = running();
    let d = &r.e.dir;
    let admin = r.gw.admin;
    let ssh_port = r.gw.ssh_port;

    // SIGTERM: stop accepting, let alice's running command finish, exit 0
    let mut bob = ssh_cmd(d, "alice", "payments/api-0 -- sleep 3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("alice's session is running", || {
        metric(admin, "jitsh_active_sessions") >= 1.0
    });
    assert!(
        Command::new("kill")
            .args(["-TERM", &r.gw.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let b = bob.wait().unwrap();
    assert!(b.success(), "the running command was cut");
    let st = r.gw.child.wait().unwrap();
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
    let e = env(POLICY);
    let d = &e.dir;
    let config = write_config(d, ", maxAuthFailuresPerIp: 2, preAuthTimeout: 1s");
    let gw = start(d, &config);
    let (ssh_port, admin) = (gw.ssh_port, gw.admin);
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
    let e = env(POLICY);
    let d = &e.dir;
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .unwrap();
    let start_at = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = doc[start_at..].find("```").unwrap();
    let example = &doc[start_at..start_at + len];
    // the ports are the only change (ephemeral, read back from the ready lines)
    let cfg = example
        .replace("127.0.0.1:2222", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0");
    assert_ne!(cfg, example);
    let path = d.join("example.yaml");
    std::fs::write(&path, cfg).unwrap();
    let gw = start(d, &path);
    let admin = gw.admin;
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
