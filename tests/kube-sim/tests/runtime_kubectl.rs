//! The stream protocols driven by the real kubectl through the real kube-sim API server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

mod runtime_support;

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube_sim::runtime::SandboxMode;
use runtime_support::*;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KUBECTL: &str = "/usr/bin/kubectl";

struct Sim {
    sim: kube_sim::RunningSim,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

/// The real kube-sim API server (TLS, RBAC), driven by kubectl with the `admin` context.
async fn sim() -> Option<Sim> {
    if !Path::new(KUBECTL).exists() {
        eprintln!("{KUBECTL} missing: skipped");
        return None;
    }
    let mode = if bwrap_available() {
        SandboxMode::Bubblewrap
    } else {
        SandboxMode::None
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = kube_sim::SimBuilder::new()
        .container_exe(container_exe())
        .state_dir(dir.path().join("state"))
        .sandbox(mode)
        .start()
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    Some(Sim {
        sim,
        kubeconfig,
        dir,
    })
}

impl Sim {
    fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        cmd
    }
    async fn stop(self) {
        self.sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_output_stdin_eof_and_exit_code() {
    let Some(s) = sim().await else { return };
    let out = s
        .kubectl()
        .args([
            "exec",
            "-n",
            "payments",
            "api-0",
            "-c",
            "app",
            "--",
            "cat",
            "/var/log/app.log",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("INFO app: handled GET"));

    let out = s
        .kubectl()
        .args([
            "exec",
            "-n",
            "payments",
            "api-0",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "echo bye >&2; exit 7",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bye"));

    // 50 MiB through sha256sum: kubectl closes stdin (v5) and waits for the digest.
    let input = s.dir.path().join("input.bin");
    let mut hasher = sha2::Sha256::new();
    {
        let mut f = std::io::BufWriter::new(File::create(&input).unwrap());
        let mut chunk = vec![0u8; 1 << 20];
        for i in 0..50u32 {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = (j as u32).wrapping_mul(31).wrapping_add(i) as u8;
            }
            hasher.update(&chunk);
            f.write_all(&chunk).unwrap();
        }
    }
    let expected = hex::encode(hasher.finalize());
    let out = s
        .kubectl()
        .args([
            "exec",
            "-i",
            "-n",
            "payments",
            "api-0",
            "-c",
            "app",
            "--",
            "sha256sum",
        ])
        .stdin(Stdio::from(File::open(&input).unwrap()))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server (in this process) streamed the 50 MiB: its peak memory stays far below that.
    let hwm_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        hwm_kib < 40 * 1024,
        "peak RSS {hwm_kib} KiB: the stream was buffered"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next(),
        Some(expected.as_str())
    );
    s.stop().await;
}

fn set_size(fd: &OwnedFd, cols: u16, rows: u16) {
    rustix::termios::tcsetwinsize(
        fd,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
}

async fn read_until(out: &mut tokio::net::unix::pipe::Receiver, seen: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(30), out.read(&mut buf))
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
async fn kubectl_exec_it_shell_sees_resize() {
    let Some(s) = sim().await else { return };
    use rustix::pty::OpenptFlags;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let slave =
        rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    set_size(&master, 80, 24);
    // kubectl runs on the terminal's slave side, as its controlling terminal.
    let mut cmd = tokio::process::Command::new("/usr/bin/setsid");
    cmd.args([
        "--ctty", "--wait", KUBECTL, "exec", "-it", "-n", "payments", "api-0", "-c", "app", "--",
        "sh",
    ])
    .env("KUBECONFIG", &s.kubeconfig)
    .env("HOME", s.dir.path())
    .env("TERM", "xterm")
    .stdin(Stdio::from(slave.try_clone().unwrap()))
    .stdout(Stdio::from(slave.try_clone().unwrap()))
    .stderr(Stdio::from(slave))
    .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    rustix::io::ioctl_fionbio(&master, true).unwrap();
    let resize_fd = master.try_clone().unwrap();
    let mut out = tokio::net::unix::pipe::Receiver::from_file_unchecked(File::from(
        master.try_clone().unwrap(),
    ))
    .unwrap();
    let mut input =
        tokio::net::unix::pipe::Sender::from_file_unchecked(File::from(master)).unwrap();
    let mut seen = Vec::new();

    input
        .write_all(b"stty size; echo A$((40+2))\r")
        .await
        .unwrap();
    read_until(&mut out, &mut seen, "A42").await;
    assert!(
        String::from_utf8_lossy(&seen).contains("24 80"),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    // The terminal grows; kubectl sends the new size on the resize channel.
    set_size(&resize_fd, 120, 40);
    let mut attempt = 0;
    while !String::from_utf8_lossy(&seen).contains("40 120") {
        attempt += 1;
        assert!(
            attempt < 300,
            "no resize seen: {}",
            String::from_utf8_lossy(&seen)
        );
        input
            .write_all(format!("stty size; echo B$((100+{attempt}))\r").as_bytes())
            .await
            .unwrap();
        read_until(&mut out, &mut seen, &format!("B{}", 100 + attempt)).await;
    }
    input.write_all(b"exit 4\r").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(4));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_tail_timestamps_and_follow() {
    let Some(s) = sim().await else { return };
    let c = kube_sim::runtime::ContainerRef::new("payments", "api-0", "app");
    let out = s
        .kubectl()
        .args([
            "logs",
            "-n",
            "payments",
            "api-0",
            "-c",
            "app",
            "--tail=3",
            "--timestamps",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .all(|l| l.split_once(' ').unwrap().0.ends_with('Z')),
        "{text}"
    );

    let mut follow = s
        .kubectl()
        .args([
            "logs", "-f", "-n", "payments", "api-0", "-c", "app", "--tail=1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // One line first (the tail), then a line written after kubectl connected.
    while !seen.contains(&b'\n') {
        let n = stdout.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    s.sim
        .runtime()
        .write_stdin(&c, b"written-after-connect\n")
        .await
        .unwrap();
    while !String::from_utf8_lossy(&seen).contains("stdin: written-after-connect") {
        let n = tokio::time::timeout(Duration::from_secs(30), stdout.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    follow.kill().await.unwrap();
    s.stop().await;
}
