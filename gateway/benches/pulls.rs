//! Throughput of large pulls, in one run on one machine: a file in a demo container pulled
//! through `jitsh serve --dev` with OpenSSH `scp` (SFTP, the default) and `scp -O` (legacy), and
//! the same bytes pulled with OpenSSH `scp` from a local Debian `sshd` on loopback (SFTP and
//! `-O`). Prints a table; nothing is asserted on times.
//!
//!     cargo bench -p jitsh-gateway --bench pulls [-- --runs 3 --size-mib 1024 --cipher chacha20-poly1305@openssh.com]
//!
//! Needs `/usr/sbin/sshd` (Debian's openssh-server) and root (sshd on a high port, logging in as
//! root with a throw-away key).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sha256(p: &Path) -> String {
    run(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("pulls: benchmark");
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench binaries without --bench: nothing to do then.
        return;
    }
    let runs: usize = arg("--runs", "3").parse().unwrap();
    let size_mib: u64 = arg("--size-mib", "1024").parse().unwrap();
    let cipher = arg("--cipher", "chacha20-poly1305@openssh.com");
    assert!(
        Path::new("/usr/sbin/sshd").exists(),
        "install openssh-server (apt-get install -y openssh-server)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dev_dir = tmp.path().join("dev");
    let out_dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };

    // The gateway (this build, release), with kube-sim in-process.
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitsh"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--dev-dir"])
        .arg(&dev_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for l in lines.by_ref() {
        if l.unwrap().contains("jitsh dev gateway ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let gateway = Killed(child);

    // The file, made in the container; the same bytes are a host file of kube-sim's state dir.
    let bytes = size_mib * 1024 * 1024;
    run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dev_dir.join("kubeconfig"))
        .args([
            "--context",
            "admin",
            "exec",
            "-n",
            "payments",
            "api-0",
            "-c",
            "app",
            "--",
        ])
        .args(["sh", "-c"])
        .arg(format!("head -c {bytes} /dev/urandom > /var/log/bench.bin")));
    let host_file = dev_dir.join("kube-sim/pods/payments/api-0/app/var/log/bench.bin");
    assert_eq!(
        std::fs::metadata(&host_file).map(|m| m.len()).ok(),
        Some(bytes),
        "{} is not the container's file",
        host_file.display()
    );
    let want = sha256(&host_file);

    // Debian's sshd on loopback, serving the same file.
    let sshd_dir = tmp.path().join("sshd");
    std::fs::create_dir_all(&sshd_dir).unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    for key in ["host_key", "user_key"] {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(sshd_dir.join(key)));
    }
    std::fs::copy(
        sshd_dir.join("user_key.pub"),
        sshd_dir.join("authorized_keys"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sshd_config = sshd_dir.join("sshd_config");
    std::fs::write(
        &sshd_config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp /usr/lib/openssh/sftp-server\nLogLevel ERROR\n",
            hk = sshd_dir.join("host_key").display(),
            pid = sshd_dir.join("sshd.pid").display(),
            ak = sshd_dir.join("authorized_keys").display(),
        ),
    )
    .unwrap();
    let sshd = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&sshd_config)
        .stderr(std::fs::File::create(sshd_dir.join("sshd.log")).unwrap())
        .spawn()
        .unwrap();
    let sshd = Killed(sshd);
    let user = run(Command::new("id").arg("-un")).trim().to_owned();
    let local_config = sshd_dir.join("ssh_config");
    std::fs::write(
        &local_config,
        format!(
            "Host local\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile /dev/null\n  StrictHostKeyChecking no\n  BatchMode yes\n  LogLevel ERROR\n",
            sshd_dir.join("user_key").display()
        ),
    )
    .unwrap();
    // sshd accepts once it listens (start-up wait only, not a measurement).
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "sshd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let gw_config = dev_dir.join("ssh_config");
    let gw_remote = "alice@jitsh:/payments/api-0/app/fs/var/log/bench.bin".to_owned();
    let local_remote = format!("local:{}", host_file.display());
    let methods: Vec<(&str, &Path, String, &[&str])> = vec![
        (
            "jitsh gateway, scp (SFTP)",
            &gw_config,
            gw_remote.clone(),
            &[],
        ),
        (
            "jitsh gateway, scp -O (legacy)",
            &gw_config,
            gw_remote,
            &["-O"],
        ),
        (
            "OpenSSH sshd, scp (SFTP)",
            &local_config,
            local_remote.clone(),
            &[],
        ),
        (
            "OpenSSH sshd, scp -O (legacy)",
            &local_config,
            local_remote,
            &["-O"],
        ),
    ];
    let target = out_dir.path().join("pulled.bin");
    let tick = run(Command::new("getconf").arg("CLK_TCK"))
        .trim()
        .parse::<f64>()
        .unwrap_or(100.0);
    let gateway_pid = gateway.0.id();
    let sshd_pid = sshd.0.id();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    let mut server_cpu: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    let mut client_cpu: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    // Rounds interleave the methods so drift on a shared machine hits them alike.
    for round in 0..runs {
        for (i, (name, config, remote, extra)) in methods.iter().enumerate() {
            let _ = std::fs::remove_file(&target);
            let server_pid = if i < 2 { gateway_pid } else { sshd_pid };
            let (s0, c0) = (cpu_of(server_pid, tick), children_cpu(tick));
            let t = Instant::now();
            run(Command::new("scp")
                .arg("-F")
                .arg(config)
                .args(["-q", "-o"])
                .arg(format!("Ciphers={cipher}"))
                .args(*extra)
                .arg(remote)
                .arg(&target));
            let secs = t.elapsed().as_secs_f64();
            // sshd reaps its per-connection children just after the client is done.
            std::thread::sleep(Duration::from_millis(300));
            server_cpu[i].push(cpu_of(server_pid, tick) - s0);
            client_cpu[i].push(children_cpu(tick) - c0);
            assert_eq!(sha256(&target), want, "{name}: corrupted");
            eprintln!("round {}: {name}: {secs:.2} s", round + 1);
            times[i].push(secs);
        }
    }
    let _ = std::fs::remove_file(&target);
    let _ = std::fs::remove_file(&host_file);

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let gib = size_mib as f64 / 1024.0;
    let mib = size_mib as f64;
    let rate = |i: usize| mib / best(&times[i]);
    println!(
        "\n{size_mib} MiB pulled, {runs} runs each, cipher {cipher}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| method | best s | median s | MiB/s (best) | vs OpenSSH, same protocol | server CPU s/GiB | client CPU s/GiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (i, (name, ..)) in methods.iter().enumerate() {
        let base = if i % 2 == 0 { rate(2) } else { rate(3) };
        println!(
            "| {name} | {:.2} | {:.2} | {:.0} | {:.2}× | {:.2} | {:.2} |",
            best(&times[i]),
            median(&times[i]),
            rate(i),
            rate(i) / base,
            median(&server_cpu[i]) / gib,
            median(&client_cpu[i]) / gib,
        );
    }
    println!(
        "(server CPU: the gateway process, which includes the in-process kube-sim API server and the\n container's reader, or sshd with its sftp-server/scp children; client CPU: scp and ssh)"
    );
}

/// User + system CPU seconds of `pid` and its reaped children (`/proc/PID/stat`).
fn cpu_of(pid: u32, tick: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime..cstime are fields 14..17.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / tick
}

/// CPU seconds of this process's reaped children (the scp runs and their ssh).
fn children_cpu(tick: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(13)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / tick
}
