//! End-to-end: `jitsh serve --dev` driven by the real OpenSSH client and kubectl.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{eventually, kube_audit, ssh, start_dev as start, text};

fn execs_in_kube_audit(dir: &Path) -> Vec<serde_json::Value> {
    kube_audit(dir, "exec")
}

#[test]
fn dev_gateway_end_to_end() {
    let dev = start();
    let d = &dev.dir;

    // cat matches the container's file (read afterwards through kubectl as admin; the log only grows).
    let o = ssh(d, "alice", "payments/api-0 -- cat /var/log/app.log", b"");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let k = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(d.join("kubeconfig"))
        .args([
            "--context",
            "admin",
            "exec",
            "-n",
            "payments",
            "api-0",
            "--",
            "cat",
            "/var/log/app.log",
        ])
        .output()
        .unwrap();
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    assert!(!o.stdout.is_empty());
    assert!(k.stdout.starts_with(&o.stdout));

    // no `--`
    let o = ssh(d, "alice", "payments/api-0 ps aux", b"");
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("PID"));

    // denied: reason, status 126, no exec reaches Kubernetes
    let before = execs_in_kube_audit(d).len();
    let o = ssh(d, "alice", "payments/api-0 -- rm -rf /", b"");
    assert_eq!(o.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&o.stderr).contains("denied: 'rm' is not allowed"));
    let o = ssh(
        d,
        "alice",
        "payments/api-0 -- cat /var/log/app.log; id",
        b"",
    );
    assert_eq!(o.status.code(), Some(126));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("uid="));
    assert_eq!(execs_in_kube_audit(d).len(), before);

    // RBAC refusals: one clear line
    let o = ssh(d, "alice", "default/toolbox -- ls", b"");
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("forbidden"));
    let o = ssh(d, "mallory", "payments/api-0 -- cat /var/log/app.log", b"");
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("forbidden"));

    // 30 MiB through sha256sum on stdin is byte-exact
    let mut data = vec![0u8; 30 * 1024 * 1024];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    let o = ssh(d, "alice", "payments/api-0 -- sha256sum", &data);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&want));

    // Kubernetes audit names alice and carries the gateway's command id
    let ours: Vec<serde_json::Value> = std::fs::read_to_string(d.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last_allowed = ours
        .iter()
        .rev()
        .find(|e| e["event"] == "command.allowed")
        .unwrap();
    let cid = last_allowed["command"].as_str().unwrap();
    let execs = execs_in_kube_audit(d);
    let k = execs
        .iter()
        .find(|e| e["auditID"] == cid)
        .expect("auditID = command id");
    assert_eq!(k["impersonatedUser"]["username"], "alice");

    // audit verify passes, then fails after a one-byte edit
    let verify = |p: &Path| {
        Command::new(env!("CARGO_BIN_EXE_jitsh"))
            .args(["audit", "verify"])
            .arg(p)
            .output()
            .unwrap()
    };
    let audit = d.join("audit.jsonl");
    assert!(verify(&audit).status.success());
    let copy = d.join("edited.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&copy, text.replacen("alice", "alicf", 1)).unwrap();
    assert_eq!(verify(&copy).status.code(), Some(1));

    // a plain key (no certificate) is refused
    let o = Command::new("/usr/bin/ssh")
        .arg("-F")
        .arg(d.join("ssh_config"))
        .args(["-o", "CertificateFile=/dev/null", "-i"])
        .arg(d.join("users/alice"))
        .args(["-o", "IdentitiesOnly=yes"])
        .arg("nobody@jitsh")
        .arg("whoami")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    // ... and audited once the connection ends
    eventually("the plain key refusal is audited", || {
        std::fs::read_to_string(&audit)
            .unwrap()
            .contains("\"code\":\"plain_key\"")
    });

    // unwritable audit sink → commands refused (fail closed)
    std::fs::remove_file(&audit).unwrap();
    std::os::unix::fs::symlink("/dev/full", &audit).unwrap();
    let before = execs_in_kube_audit(d).len();
    let o = ssh(d, "alice", "payments/api-0 -- ps aux", b"");
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("audit log cannot be written"));
    assert_eq!(execs_in_kube_audit(d).len(), before);
}

fn sign(dir: &Path, name: &str, validity: &str) -> PathBuf {
    let key = dir.join(format!("{name}-key"));
    let _ = std::fs::remove_file(&key);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(dir.join("user_ca"))
        .args(["-I", "alice", "-n", "alice", "-V", validity])
        .args(["-O", "extension:groups@jitsh.dev=oncall-payments"])
        .arg(dir.join(format!("{name}-key.pub")))
        .status()
        .unwrap();
    assert!(ok.success());
    key
}

fn ssh_with(dir: &Path, key: &Path, cmd: &str) -> Output {
    // Only the `Host jitsh` block: the `Match user alice` block would add alice's dev certificate.
    let full = std::fs::read_to_string(dir.join("ssh_config")).unwrap();
    let host_only = full.split("\nMatch ").next().unwrap();
    let cfg = dir.join("ssh_config.host-only");
    std::fs::write(&cfg, host_only).unwrap();
    Command::new("/usr/bin/ssh")
        .arg("-F")
        .arg(&cfg)
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("CertificateFile={}-cert.pub", key.display()))
        .arg("alice@jitsh")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn certificate_lifetimes() {
    let dev = start();
    let d = &dev.dir;
    // a fresh certificate from ssh-keygen works (positive control for the cases below)
    let good = sign(d, "good", "-1m:+10m");
    let o = ssh_with(d, &good, "whoami");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // a plain key (no certificate) for the same user is refused
    let plain = d.join("plain-key");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&plain)
            .status()
            .unwrap()
            .success()
    );
    let o = ssh_with(d, &plain, "whoami");
    assert_eq!(o.status.code(), Some(255));
    // an expired certificate is refused
    let expired = sign(d, "expired", "-10m:-2m");
    let o = ssh_with(d, &expired, "whoami");
    assert_eq!(o.status.code(), Some(255));
    // a certificate expiring during `sleep 60` ends the command with the reason
    let short = sign(d, "short", "-1m:+5s");
    let o = ssh_with(d, &short, "payments/api-0 -- sleep 60");
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("certificate expired"));
}

fn kubectl(dir: &Path, context: &str, args: &[&str]) -> Output {
    Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .args(["--context", context])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn gateway_words_and_large_output() {
    let dev = start();
    let d = &dev.dir;

    // whoami: identity, groups, certificate, and what the policy grants
    // What the gateway does not do says what to use instead (not "pod rsync not found").
    let o = ssh(d, "alice", "rsync --server -vlogDtpre.iLsfxC . /tmp/x", b"");
    assert_eq!(o.status.code(), Some(2));
    // Without a terminal, the gateway's lines end in a plain newline (no stray \r for scripts).
    assert!(!o.stderr.contains(&b'\r'), "{:?}", text(&o.stderr));
    let denied = ssh(d, "alice", "payments/api-0 -- rm -rf /", b"");
    assert_eq!(denied.status.code(), Some(126));
    assert!(
        !denied.stderr.contains(&b'\r'),
        "{:?}",
        text(&denied.stderr)
    );
    assert!(
        text(&o.stderr).contains("rsync is not supported through the gateway; use scp or sftp"),
        "{}",
        text(&o.stderr)
    );
    let o = ssh(d, "alice", "whoami", b"");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let w = text(&o.stdout);
    assert!(w.contains("user: alice"), "{w}");
    assert!(w.contains("groups: oncall-payments"), "{w}");
    assert!(
        w.contains("policy rule oncall-read: exec, shell, logs"),
        "{w}"
    );
    assert!(w.contains("tail [-n <int>] [-f] <path:/var/log/**>"), "{w}");
    let o = ssh(d, "mallory", "whoami", b"");
    assert!(text(&o.stdout).contains("policy rule mallory-cat: exec on namespace payments"));

    // help
    let o = ssh(d, "alice", "help", b"");
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("logs [namespace/]pod[/container]"));

    // pods: listed from the API as alice, with what the policy grants
    let o = ssh(d, "alice", "pods", b"");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let p = text(&o.stdout);
    assert!(p.contains("payments/api-0\tRunning\tapp"), "{p}");
    assert!(p.contains("payments/worker-0"), "{p}");
    assert!(
        p.lines()
            .any(|l| l.starts_with("payments/api-0") && l.contains("exec,shell,logs")),
        "{p}"
    );
    // RBAC: alice cannot list pods in default — one clear line, non-zero
    let o = ssh(d, "alice", "pods default", b"");
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("namespace default:") && e.contains("forbidden"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");

    // logs: pods/log as alice; the lines are the pod's
    let o = ssh(d, "alice", "logs payments/api-0 --tail 3", b"");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ours = text(&o.stdout);
    assert_eq!(ours.lines().count(), 3, "{ours}");
    let k = kubectl(d, "alice", &["logs", "-n", "payments", "api-0"]);
    assert!(k.status.success(), "{}", text(&k.stderr));
    let theirs = text(&k.stdout);
    for l in ours.lines() {
        assert!(theirs.contains(l), "{l:?} not in kubectl logs");
    }
    // -f: a line the app writes after we connect arrives (the demo app writes one a second)
    let mut follow = Command::new("/usr/bin/ssh")
        .arg("-F")
        .arg(d.join("ssh_config"))
        .args(["alice@jitsh", "logs payments/api-0 -f --tail 1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the tail line");
    let later = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a line written later");
    assert_ne!(first, later);
    let _ = follow.kill();
    let _ = follow.wait();
    let o = ssh(d, "alice", "logs payments/api-0 --tail nope", b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--tail wants a number"));
    // mallory: Kubernetes RBAC refuses her the pod; no pods/log request is made
    let logs_before = kube_audit(d, "log").len();
    let o = ssh(d, "mallory", "logs payments/api-0", b"");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("forbidden"));
    assert_eq!(kube_audit(d, "log").len(), logs_before);
    // unknown pod and container: one clear line
    let o = ssh(d, "alice", "payments/nope-0 -- date", b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("pod payments/nope-0 not found"));
    let o = ssh(d, "alice", "payments/api-0/nope -- date", b"");
    assert!(
        text(&o.stderr).contains("has no container 'nope' (has: app"),
        "{}",
        text(&o.stderr)
    );

    // audit: argv as parsed (quotes removed), secrets redacted
    let o = ssh(
        d,
        "alice",
        "payments/api-0 -- grep -c 'token=s3cr3t-value' /var/log/app.log",
        b"",
    );
    assert!(o.status.code().is_some());
    let audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    let ev: serde_json::Value = audit
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "command.allowed")
        .unwrap();
    assert_eq!(
        ev["argv"],
        serde_json::json!(["grep", "-c", "token=<redacted>", "/var/log/app.log"])
    );
    assert!(!audit.contains("s3cr3t-value"));

    // 100 MiB out through cat is byte-exact
    let mk = kubectl(
        d,
        "admin",
        &[
            "exec",
            "-n",
            "payments",
            "api-0",
            "--",
            "sh",
            "-c",
            "head -c 104857600 /dev/urandom > /var/log/big.bin && sha256sum /var/log/big.bin",
        ],
    );
    assert!(mk.status.success(), "{}", text(&mk.stderr));
    let want = text(&mk.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let o = ssh(d, "alice", "payments/api-0 -- cat /var/log/big.bin", b"");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(o.stdout.len(), 100 * 1024 * 1024);
    let got = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&o.stdout))
    };
    assert_eq!(got, want);
}
