//! The servers the exec bench starts: `jitsh serve --dev` and a private OpenSSH `sshd`, both on
//! 127.0.0.1 and both stopped on drop.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::{SSH, SSHD};

/// A child process stopped when dropped: SIGTERM (so `serve --dev` stops its containers),
/// then SIGKILL after five seconds.
struct Guard {
    child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `jitsh serve --dev` on 127.0.0.1.
pub struct DevGateway {
    /// The `--dev-dir`: ssh_config, kubeconfig, audit.jsonl.
    pub dir: PathBuf,
    proc: Guard,
}

impl DevGateway {
    /// Starts it in `base/dev` (log in `base/gateway.log`) and waits until it is ready.
    pub fn start(base: &Path) -> Result<Self> {
        std::fs::create_dir_all(base)?;
        let dir = base.join("dev");
        let log = base.join("gateway.log");
        let child = Command::new(env!("CARGO_BIN_EXE_jitsh"))
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--dev-dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting jitsh serve --dev")?;
        let mut proc = Guard { child };
        let out = proc.child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(out).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("jitsh dev gateway ready") => break,
                Some(Ok(_)) => {}
                _ => bail!(
                    "jitsh serve --dev exited before it was ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Ok(DevGateway { dir, proc })
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }
}

/// A private OpenSSH server on 127.0.0.1: own host key, own authorized_keys, root by key only.
///
/// `HOME` is set to an empty directory (`SetEnv`): Debian's bash sources `~/.bashrc` for commands
/// run by sshd, and a developer's rc files (pyenv init: +300 ms here) are not OpenSSH's cost.
pub struct Sshd {
    dir: PathBuf,
    port: u16,
    /// Where the bench puts the file `cat` reads.
    pub big_file: PathBuf,
    proc: Guard,
}

impl Sshd {
    /// Installs sshd if needed, writes keys and configs to `dir` and starts it on a free port.
    pub fn start(dir: &Path) -> Result<Self> {
        ensure_sshd_installed()?;
        std::fs::create_dir_all(dir.join("home"))?;
        for key in ["host_ed25519", "client_ed25519"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(dir.join(key))
                .status()
                .context("ssh-keygen")?;
            ensure!(ok.success(), "ssh-keygen {key}: {ok}");
        }
        std::fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let host_pub = std::fs::read_to_string(dir.join("host_ed25519.pub"))?;
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}"),
        )?;
        let d = dir.display();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_ed25519\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nPrintMotd no\n\
                 PrintLastLog no\nUseDNS no\nSetEnv HOME={d}/home\nLogLevel INFO\n"
            ),
        )?;
        std::fs::write(
            dir.join("ssh_config"),
            format!(
                "Host *\n  UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
                 IdentitiesOnly yes\n  IdentityAgent none\n  PreferredAuthentications publickey\n  BatchMode yes\n  LogLevel ERROR\n"
            ),
        )?;
        let log = dir.join("sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting sshd")?;
        let mut proc = Guard { child };
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = proc.child.try_wait()?;
            if exited.is_some() || Instant::now() > until {
                bail!(
                    "sshd did not start ({exited:?}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Sshd {
            big_file: dir.join("big.bin"),
            dir: dir.to_owned(),
            port,
            proc,
        })
    }

    /// `ssh -p PORT -i KEY root@127.0.0.1`, with the bench's known_hosts.
    pub fn client(&self, opts: &[&str]) -> Command {
        let mut c = Command::new(SSH);
        c.arg("-F")
            .arg(self.dir.join("ssh_config"))
            .args(opts)
            .args(["-p", &self.port.to_string(), "-i"])
            .arg(self.dir.join("client_ed25519"))
            .arg("root@127.0.0.1");
        c
    }

    /// [`Sshd::big_file`] as text.
    pub fn big_file_str(&self) -> &str {
        self.big_file.to_str().unwrap_or("/nonexistent")
    }

    /// The listening sshd's process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }
}

/// Installs Debian's openssh-server if `/usr/sbin/sshd` is missing; creates its privilege
/// separation directory.
fn ensure_sshd_installed() -> Result<()> {
    if !Path::new(SSHD).exists() {
        eprintln!("exec bench: {SSHD} missing, installing openssh-server with apt-get");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "openssh-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("apt-get")?;
        ensure!(ok.success(), "apt-get install openssh-server: {ok}");
    }
    std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
    Ok(())
}
