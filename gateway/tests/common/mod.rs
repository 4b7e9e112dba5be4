//! What the gateway's end-to-end tests share: starting `jitsh serve --dev`, driving the real
//! `ssh`, waiting for state, reading JSON-lines logs.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

pub mod config;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `jitsh serve --dev`, killed on drop.
pub struct Dev {
    child: Child,
    /// The dev dir (ssh_config, kubeconfig, audit logs, recordings).
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Dev {
    /// A scratch directory beside the dev dir, removed with it.
    pub fn scratch(&self) -> &Path {
        self._tmp.path()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `jitsh serve --dev` on an ephemeral loopback port and waits until it is ready.
pub fn start_dev() -> Dev {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitsh"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--dev-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = lines
            .next()
            .expect("serve --dev exited before ready")
            .unwrap();
        if l.contains("jitsh dev gateway ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Dev {
        child,
        dir,
        _tmp: tmp,
    }
}

/// `ssh -F DIR/ssh_config USER@jitsh CMD` with `stdin` written from a thread (so large inputs
/// and outputs cannot deadlock).
pub fn ssh(dir: &Path, user: &str, cmd: &str, stdin: &[u8]) -> Output {
    let mut c = ssh_command(dir, user, cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    let data = stdin.to_vec();
    let w = std::thread::spawn(move || {
        let _ = i.write_all(&data);
    });
    let o = c.wait_with_output().unwrap();
    w.join().unwrap();
    o
}

/// `ssh -F DIR/ssh_config USER@jitsh CMD`, not started.
pub fn ssh_command(dir: &Path, user: &str, cmd: &str) -> Command {
    let mut c = Command::new("/usr/bin/ssh");
    c.arg("-F")
        .arg(dir.join("ssh_config"))
        .arg(format!("{user}@jitsh"))
        .arg(cmd);
    c
}

/// Starts `cmd` in the background with no stdin, its stdout and stderr in `DIR/NAME.out` and
/// `DIR/NAME.err` (read them with [`file`]).
pub fn spawn_logged(mut cmd: Command, dir: &Path, name: &str) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap()
}

/// A file in `dir` as text (empty when it is missing).
pub fn file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Lossy text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits (up to 90 s: these machines are slow; this is not a timing assertion) for `cond`.
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_showing(what, cond, String::new);
}

/// [`eventually`], and on failure shows what `show` returns (a screen, a log).
pub fn eventually_showing(what: &str, mut cond: impl FnMut() -> bool, show: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never happened: {what}\n{}",
            show()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON objects of a JSON-lines file (missing file: none).
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// kube-sim's audit events for one pod subresource (`exec`, `log`, `attach`, …).
pub fn kube_audit(dir: &Path, subresource: &str) -> Vec<serde_json::Value> {
    jsonl(&dir.join("kube-audit.jsonl"))
        .into_iter()
        .filter(|v| v["objectRef"]["subresource"] == subresource)
        .collect()
}

/// An ssh_config for a key of alice's certified by the dev CA with `opts` (ssh-keygen's `-O`).
pub fn alice_with(dev: &Dev, name: &str, opts: &[&str]) -> std::path::PathBuf {
    let d = &dev.dir;
    let key = dev.scratch().join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let mut sign = Command::new("ssh-keygen");
    sign.args(["-q", "-s"])
        .arg(d.join("user_ca"))
        .args(["-I", "alice", "-n", "alice", "-V", "-1m:+10m"]);
    for o in opts {
        sign.args(["-O", o]);
    }
    let ok = sign
        .args(["-O", "extension:groups@jitsh.dev=oncall-payments"])
        .arg(key.with_extension("pub"))
        .status()
        .unwrap();
    assert!(ok.success());
    // Only the `Host jitsh` block: the `Match user alice` block would add alice's own certificate.
    let full = std::fs::read_to_string(d.join("ssh_config")).unwrap();
    let cfg = dev.scratch().join(format!("{name}.ssh_config"));
    std::fs::write(
        &cfg,
        format!(
            "{}\n  IdentityFile {}\n  CertificateFile {}-cert.pub\n",
            full.split("\nMatch ").next().unwrap(),
            key.display(),
            key.display()
        ),
    )
    .unwrap();
    cfg
}
