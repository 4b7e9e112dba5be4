//! `jitsh serve --config` against kube-sim in the test process: keys and certificates from the
//! real `ssh-keygen`, a configuration on ephemeral ports, the real `ssh`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::jsonl;

/// The `jitsh` binary under test.
pub const JITSH: &str = env!("CARGO_BIN_EXE_jitsh");

pub fn keygen(args: &[&str]) {
    let o = Command::new("ssh-keygen").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub struct Env {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
    _sim: kube_sim::RunningSim,
}

/// kube-sim in this process, CAs and keys from ssh-keygen, `policy` as policy.yaml; nothing
/// started yet.
pub fn env(policy: &str) -> Env {
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
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
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

/// A configuration on ephemeral ports (read back from the gateway's ready lines by [`start`]).
pub fn write_config(dir: &Path, extra_limits: &str) -> PathBuf {
    let cfg = format!(
        "listen: 127.0.0.1:0\n\
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
         admin: {{listen: 127.0.0.1:0}}\n"
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// The ssh_config for a gateway on `port`, trusting the host CA.
fn write_ssh_config(dir: &Path, name: &str, port: u16) {
    std::fs::write(
        dir.join(name),
        format!(
            "Host jitsh\n  HostName 127.0.0.1\n  Port {port}\n  HostKeyAlias jitsh\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n  IdentityAgent none\n  BatchMode yes\n  LogLevel ERROR\n",
            p(&dir.join("known_hosts"))
        ),
    )
    .unwrap();
}

/// A running `jitsh serve --config`, killed on drop.
pub struct Gw {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
    /// The SSH port it bound.
    pub ssh_port: u16,
    /// The admin port it bound (0 without an admin listener).
    pub admin: u16,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the gateway on `config`, waits for its ready line and writes `dir/ssh_config` for the
/// port it bound.
pub fn start(dir: &Path, config: &Path) -> Gw {
    start_as(dir, config, "ssh_config")
}

/// [`start`], writing the ssh_config for its port as `dir/ssh_config_name` (several gateways
/// side by side).
pub fn start_as(dir: &Path, config: &Path, ssh_config_name: &str) -> Gw {
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
    let port_of = |line: &str| -> u16 {
        line.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap()
    };
    std::thread::spawn(move || {
        let mut ssh = None;
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.starts_with("jitsh gateway listening on ") {
                ssh = Some(port_of(&line));
            }
            if let Some(port) = ssh
                && (line.starts_with("jitsh admin listening on ") || !line.starts_with("jitsh "))
            {
                let admin = if line.starts_with("jitsh admin") {
                    port_of(&line)
                } else {
                    0
                };
                let _ = tx.send((port, admin));
                ssh = None;
            }
            let mut g = s.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    let (ssh_port, admin) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("gateway did not start: {}", stderr.lock().unwrap()));
    write_ssh_config(dir, ssh_config_name, ssh_port);
    Gw {
        child,
        stderr,
        ssh_port,
        admin,
    }
}

pub fn ssh(dir: &Path, user: &str, cmd: &str) -> Output {
    ssh_cmd(dir, user, cmd).output().unwrap()
}

pub fn ssh_cmd(dir: &Path, user: &str, cmd: &str) -> Command {
    ssh_via(dir, "ssh_config", user, cmd)
}

/// [`ssh_cmd`] through the gateway whose ssh_config is `dir/ssh_config_name`.
pub fn ssh_via(dir: &Path, ssh_config_name: &str, user: &str, cmd: &str) -> Command {
    let mut c = Command::new("/usr/bin/ssh");
    c.arg("-F")
        .arg(dir.join(ssh_config_name))
        .arg("-i")
        .arg(dir.join(user))
        .arg(format!("{user}@jitsh"))
        .arg(cmd)
        .stdin(Stdio::null());
    c
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
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

pub fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn audit_events(dir: &Path) -> Vec<serde_json::Value> {
    jsonl(&dir.join("audit.jsonl"))
}
