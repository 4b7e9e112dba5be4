//! Gateway exec vs `kubectl exec` vs OpenSSH, measured in one run.
//!
//!     cargo bench -p jitsh-gateway --bench exec
//!
//! Starts `jitsh serve --dev` (kube-sim in-process) and a private OpenSSH `sshd` on 127.0.0.1,
//! then measures three paths to the same commands:
//!
//! - the gateway through the real `/usr/bin/ssh` (alice's dev certificate, demo policy),
//! - `kubectl exec` as alice straight against kube-sim (what the gateway replaces),
//! - `ssh root@127.0.0.1` to the private `sshd`, running the command locally — with OpenSSH's
//!   default key exchange, and again with the one the gateway negotiates (curve25519-sha256).
//!
//! Latency is the wall time from spawning the client to its exit for `true` (median and p90);
//! throughput is 1 GiB out through `cat` and 30 MiB in through `sha256sum` on stdin (MiB/s,
//! wall time including connection set-up). Every byte is checked by SHA-256; any failure on any
//! path ends the run with an error. Rounds are interleaved across paths so that noise on the
//! shared machine spreads over all of them. The result is a Markdown table on stdout; figures are
//! recorded in `docs/benchmarks.md`. `EXEC_BENCH_QUICK=1` (or running it without `--bench`, as
//! `cargo test --benches` does) runs each measurement a few times only, to check the harness.
#![allow(
    clippy::indexing_slicing,
    reason = "benchmark harness: an index out of range is a harness bug, reported by the panic"
)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

#[path = "exec/servers.rs"]
mod servers;

use servers::{DevGateway, Sshd};

const MIB: usize = 1024 * 1024;
const OUT_BYTES: usize = 1024 * MIB;
const IN_BYTES: usize = 30 * MIB;
/// The file `cat` reads, inside the pod's container.
const BIG_IN_POD: &str = "/var/log/big.bin";
const SSH: &str = "/usr/bin/ssh";
const KUBECTL: &str = "/usr/bin/kubectl";
const SSHD: &str = "/usr/sbin/sshd";

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only check the paths.
    let quick =
        std::env::var_os("EXEC_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench");
    let (rounds_latency, rounds_throughput) = if quick { (3, 1) } else { (100, 3) };
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let tmp = tempfile::tempdir().context("temp dir")?;
    let gateway = DevGateway::start(&tmp.path().join("gateway"))?;
    // The demo policy has no `true`; the dev gateway reloads its policy file, so add it there.
    allow_true(&gateway.dir)?;
    let sshd = Sshd::start(&tmp.path().join("sshd"))?;
    let env = Env {
        dev: gateway.dir.clone(),
        gateway_pid: gateway.pid(),
        sshd: &sshd,
    };

    eprintln!("exec bench: writing the 1 GiB file (pod and local) and checking it");
    let big = Arc::new(pseudo_random(OUT_BYTES, 0x6a69_7473_6862_656e));
    let big_sha = sha256_hex(&big);
    env.put_big_file(&big, &big_sha)?;
    let input = Arc::new(pseudo_random(IN_BYTES, 0x7374_6469_6e5f_3330));
    let input_sha = sha256_hex(&input);

    for via in Via::ALL {
        for _ in 0..2 {
            env.date(via, &mut Samples::default())
                .with_context(|| format!("warm-up, {}", via.name()))?;
        }
    }
    env.whoami(&mut Samples::default())?;

    eprintln!("exec bench: `true`, {rounds_latency} rounds");
    let mut date: [Samples; PATHS] = Default::default();
    let mut whoami = Samples::default();
    let mut gateway_runs = Vec::new();
    for _ in 0..rounds_latency {
        for via in Via::ALL {
            let r = env.date(via, &mut date[via as usize])?;
            if via == Via::Gateway {
                gateway_runs.push((r.started, r.ended));
            }
        }
        env.whoami(&mut whoami)?;
    }

    eprintln!("exec bench: 1 GiB out, {rounds_throughput} rounds");
    let mut out: [Samples; PATHS] = Default::default();
    for _ in 0..rounds_throughput {
        for via in Via::ALL {
            let r = env.measure(via, What::CatBig, None, &mut out[via as usize])?;
            ensure!(
                r.stdout.len() == OUT_BYTES && sha256_hex(&r.stdout) == big_sha,
                "{}: cat returned {} bytes that do not match the file",
                via.name(),
                r.stdout.len()
            );
        }
    }

    eprintln!("exec bench: 30 MiB in, {rounds_throughput} rounds");
    let mut into: [Samples; PATHS] = Default::default();
    for _ in 0..rounds_throughput {
        for via in Via::ALL {
            let r = env.measure(
                via,
                What::Sha256,
                Some(input.clone()),
                &mut into[via as usize],
            )?;
            let said = String::from_utf8_lossy(&r.stdout);
            ensure!(
                said.starts_with(&input_sha),
                "{}: sha256sum of the input said {said:?}, expected {input_sha}",
                via.name()
            );
        }
    }

    let phases = gateway_phases(&gateway.dir.join("audit.jsonl"), &gateway_runs)?;
    let load = [
        load_before,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
    ];
    print_report(&env, &load, &date, &whoami, &out, &into, &phases)?;
    Ok(())
}

/// Wall times of one measurement on one path, and the CPU time it cost in total.
#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    /// The serving process and its reaped children: jitsh (gateway, in-process kube-sim and the
    /// container processes) or sshd (and its session processes).
    server_cpu: Duration,
    /// The client: ssh or kubectl.
    client_cpu: Duration,
}

impl Samples {
    fn median_ms(&self) -> f64 {
        median(&self.wall.iter().map(ms).collect::<Vec<_>>())
    }

    fn p90_ms(&self) -> f64 {
        percentile(&self.wall.iter().map(ms).collect::<Vec<_>>(), 0.9)
    }
    fn p99_ms(&self) -> f64 {
        percentile(&self.wall.iter().map(ms).collect::<Vec<_>>(), 0.99)
    }

    fn rates(&self, bytes: usize) -> Vec<f64> {
        self.wall.iter().map(|w| mib_per_s(bytes, *w)).collect()
    }

    /// Mean CPU per run, in ms: (server, client).
    fn cpu_ms(&self) -> (f64, f64) {
        let n = self.wall.len().max(1) as f64;
        (
            self.server_cpu.as_secs_f64() * 1e3 / n,
            self.client_cpu.as_secs_f64() * 1e3 / n,
        )
    }
}

/// The three ways to run a command in "the box".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Gateway = 0,
    Kubectl = 1,
    OpenSsh = 2,
    /// OpenSSH with the key exchange the gateway negotiates (russh offers no sntrup761).
    OpenSshCurve25519 = 3,
}

const PATHS: usize = Via::ALL.len();

impl Via {
    const ALL: [Via; 4] = [
        Via::Gateway,
        Via::Kubectl,
        Via::OpenSsh,
        Via::OpenSshCurve25519,
    ];

    fn name(self) -> &'static str {
        match self {
            Via::Gateway => "gateway: `ssh` → jitsh → kube-sim (alice)",
            Via::Kubectl => "`kubectl exec` → kube-sim (alice)",
            Via::OpenSsh => "OpenSSH: `ssh` → `sshd`, local (root), default key exchange",
            Via::OpenSshCurve25519 => {
                "OpenSSH as above, `-o KexAlgorithms=curve25519-sha256` (the gateway's)"
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum What {
    Date,
    CatBig,
    Sha256,
}

/// Where the clients find their servers.
struct Env<'a> {
    dev: PathBuf,
    gateway_pid: u32,
    sshd: &'a Sshd,
}

/// One finished client process.
struct Run {
    wall: Duration,
    started: SystemTime,
    ended: SystemTime,
    stdout: Vec<u8>,
}

impl Env<'_> {
    fn command(&self, via: Via, what: What) -> Command {
        self.command_with(via, what, &[])
    }

    /// `ssh_opts` go before the destination of the two ssh paths.
    fn command_with(&self, via: Via, what: What, ssh_opts: &[&str]) -> Command {
        let argv: Vec<&str> = match what {
            What::Date => vec!["true"],
            What::CatBig => vec![
                "cat",
                match via {
                    Via::OpenSsh | Via::OpenSshCurve25519 => self.sshd.big_file_str(),
                    _ => BIG_IN_POD,
                },
            ],
            What::Sha256 => vec!["sha256sum"],
        };
        match via {
            Via::Gateway => {
                let mut c = Command::new(SSH);
                c.arg("-F")
                    .arg(self.dev.join("ssh_config"))
                    .args(ssh_opts)
                    .arg("alice@jitsh")
                    .arg(format!("payments/api-0 -- {}", argv.join(" ")));
                c
            }
            Via::Kubectl => {
                let mut c = self.kubectl("alice");
                c.arg("exec");
                if matches!(what, What::Sha256) {
                    c.arg("-i");
                }
                c.args(["-n", "payments", "api-0", "--"]).args(&argv);
                c
            }
            Via::OpenSsh | Via::OpenSshCurve25519 => {
                let mut opts = ssh_opts.to_vec();
                if via == Via::OpenSshCurve25519 {
                    opts.extend(["-o", "KexAlgorithms=curve25519-sha256"]);
                }
                let mut c = self.sshd.client(&opts);
                c.arg(argv.join(" "));
                c
            }
        }
    }

    fn kubectl(&self, context: &str) -> Command {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(self.dev.join("kubeconfig"))
            .args(["--context", context]);
        c
    }

    /// Runs one command on one path and adds its wall time and CPU time to `samples`.
    fn measure(
        &self,
        via: Via,
        what: What,
        stdin: Option<Arc<Vec<u8>>>,
        samples: &mut Samples,
    ) -> Result<Run> {
        let server = match via {
            Via::Gateway | Via::Kubectl => self.gateway_pid,
            Via::OpenSsh | Via::OpenSshCurve25519 => self.sshd.pid(),
        };
        timed(server, samples, || {
            let expected = match what {
                What::CatBig => OUT_BYTES,
                What::Date | What::Sha256 => 0,
            };
            run(self.command(via, what), stdin, expected, via.name())
        })
    }

    fn date(&self, via: Via, samples: &mut Samples) -> Result<Run> {
        let r = self.measure(via, What::Date, None, samples)?;
        let out = String::from_utf8_lossy(&r.stdout);
        ensure!(out.is_empty(), "{}: `true` printed {out:?}", via.name());
        Ok(r)
    }

    /// A gateway word that needs no Kubernetes call: SSH connection and certificate auth only.
    fn whoami(&self, samples: &mut Samples) -> Result<Run> {
        let mut c = Command::new(SSH);
        c.arg("-F")
            .arg(self.dev.join("ssh_config"))
            .args(["alice@jitsh", "whoami"]);
        let r = timed(self.gateway_pid, samples, || {
            run(c, None, 0, "gateway whoami")
        })?;
        let out = String::from_utf8_lossy(&r.stdout);
        ensure!(
            out.contains("user: alice"),
            "gateway whoami printed {out:?}"
        );
        Ok(r)
    }

    /// Writes `data` to the pod's `/var/log/big.bin` (as admin, unfiltered) and checks it there;
    /// writes the same bytes next to sshd.
    fn put_big_file(&self, data: &Arc<Vec<u8>>, sha: &str) -> Result<()> {
        let mut c = self.kubectl("admin");
        c.args(["exec", "-i", "-n", "payments", "api-0", "--", "sh", "-c"])
            .arg(format!("cat > {BIG_IN_POD}"));
        run(
            c,
            Some(data.clone()),
            0,
            "admin: write the big file into the pod",
        )?;
        let mut c = self.kubectl("admin");
        c.args([
            "exec",
            "-n",
            "payments",
            "api-0",
            "--",
            "sha256sum",
            BIG_IN_POD,
        ]);
        let r = run(c, None, 0, "admin: sha256sum of the big file in the pod")?;
        let said = String::from_utf8_lossy(&r.stdout);
        ensure!(
            said.starts_with(sha),
            "the pod's {BIG_IN_POD} has sha256 {said:?}, expected {sha}"
        );
        std::fs::write(&self.sshd.big_file, data.as_slice()).context("writing the local file")?;
        Ok(())
    }
}

/// Runs `f`, adding its wall time, `server`'s CPU time and this process's children's CPU time to
/// `samples`. Waits a little after the run so that the server has reaped its processes.
fn timed(server: u32, samples: &mut Samples, f: impl FnOnce() -> Result<Run>) -> Result<Run> {
    let s0 = cpu(&server.to_string())?;
    let c0 = cpu("self")?;
    let r = f()?;
    std::thread::sleep(Duration::from_millis(50));
    let s1 = cpu(&server.to_string())?;
    let c1 = cpu("self")?;
    samples.wall.push(r.wall);
    samples.server_cpu += (s1.own + s1.children).saturating_sub(s0.own + s0.children);
    samples.client_cpu += c1.children.saturating_sub(c0.children);
    Ok(r)
}

struct Cpu {
    own: Duration,
    children: Duration,
}

/// utime + stime, and cutime + cstime (children waited for), of `/proc/PID/stat`.
fn cpu(pid: &str) -> Result<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(") ").context("malformed /proc stat")?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11) // state … cmajflt; the fields from utime (14th) on
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(f.len() == 4, "malformed /proc stat");
    // USER_HZ is 100 on Linux.
    let ticks = |t: u64| Duration::from_millis(t * 10);
    Ok(Cpu {
        own: ticks(f[0] + f[1]),
        children: ticks(f[2] + f[3]),
    })
}

/// Runs `cmd` to completion, feeding `stdin` (else /dev/null); fails unless it exits 0.
/// `expected` bytes of output are allocated up front.
fn run(mut cmd: Command, stdin: Option<Arc<Vec<u8>>>, expected: usize, label: &str) -> Result<Run> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut stdout = Vec::with_capacity(expected + 1);
    let started = SystemTime::now();
    let t0 = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("{label}: spawn"))?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut w)) => Some(std::thread::spawn(move || w.write_all(&data))),
        _ => None,
    };
    let mut err = child.stderr.take().context("stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_end(&mut stdout)
        .with_context(|| format!("{label}: reading stdout"))?;
    let status = child.wait().with_context(|| format!("{label}: wait"))?;
    let wall = t0.elapsed();
    let ended = SystemTime::now();
    let stderr = err_reader.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr);
    ensure!(status.success(), "{label}: {status}; stderr: {stderr}");
    if let Some(w) = writer {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("{label}: writing stdin: {e}; stderr: {stderr}"),
            Err(_) => bail!("{label}: stdin writer panicked"),
        }
    }
    Ok(Run {
        wall,
        started,
        ended,
        stdout,
    })
}

/// Medians of the gateway's own timestamps for the `true` runs: where its time goes.
struct Phases {
    samples: usize,
    /// ssh start → `auth.accepted`.
    connect_ms: f64,
    /// `auth.accepted` → `command.allowed`.
    decide_ms: f64,
    /// `command.allowed` → `command.exit`.
    exec_ms: f64,
    /// `command.exit` → ssh exits.
    close_ms: f64,
}

fn gateway_phases(audit: &Path, runs: &[(SystemTime, SystemTime)]) -> Result<Phases> {
    use std::collections::HashMap;
    let parse = |v: &serde_json::Value| -> Option<SystemTime> {
        let s = v["time"].as_str()?;
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(t.into())
    };
    // session → (last auth.accepted, command.allowed, command.exit) for `true` commands
    let mut by_session: HashMap<String, [Option<SystemTime>; 3]> = HashMap::new();
    for line in std::fs::read_to_string(audit)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let slot = match v["event"].as_str() {
            Some("auth.accepted") => 0,
            Some("command.allowed") => 1,
            Some("command.exit") => 2,
            _ => continue,
        };
        let Some(session) = v["session"].as_str() else {
            continue;
        };
        by_session.entry(session.to_owned()).or_default()[slot] = parse(&v);
    }
    let ms =
        |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default().as_secs_f64() * 1e3;
    let mut cols: [Vec<f64>; 4] = Default::default();
    for (start, end) in runs {
        let found = by_session.values().find_map(|s| match *s {
            [Some(a), Some(b), Some(c)] if a >= *start && c <= *end => Some((a, b, c)),
            _ => None,
        });
        let (accepted, allowed, exited) =
            found.context("a gateway `true` run without its audit events")?;
        cols[0].push(ms(*start, accepted));
        cols[1].push(ms(accepted, allowed));
        cols[2].push(ms(allowed, exited));
        cols[3].push(ms(exited, *end));
    }
    Ok(Phases {
        samples: runs.len(),
        connect_ms: median(&cols[0]),
        decide_ms: median(&cols[1]),
        exec_ms: median(&cols[2]),
        close_ms: median(&cols[3]),
    })
}

fn print_report(
    env: &Env<'_>,
    load: &[String; 2],
    date: &[Samples; PATHS],
    whoami: &Samples,
    out: &[Samples; PATHS],
    into: &[Samples; PATHS],
    phases: &Phases,
) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "exec bench, {} UTC, {cores} cores, load average before {} / after {}",
        now.format(&time::format_description::well_known::Rfc3339)?,
        first3(&load[0]),
        first3(&load[1])
    );
    println!("ssh: {}", version(Command::new(SSH).arg("-V"))?);
    println!(
        "sshd: {}",
        version(Command::new("dpkg-query").args([
            "-W",
            "-f",
            "${Package} ${Version}",
            "openssh-server"
        ]))?
    );
    println!(
        "kubectl: {}",
        version(Command::new(KUBECTL).args(["version", "--client"]))?
            .lines()
            .next()
            .unwrap_or("")
    );
    for via in [Via::Gateway, Via::OpenSsh, Via::OpenSshCurve25519] {
        let cmd = env.command_with(via, What::Date, &["-v"]);
        println!("{}: {}", via.name(), negotiated(cmd)?);
    }
    println!();
    let n = date[0].wall.len();
    let m = out[0].wall.len();
    println!(
        "| path | `true` p50 (n={n}) | `true` p90 | `true` p99 | 1 GiB out, `cat` (median of {m}, min–max) | 30 MiB in, `sha256sum` (median of {m}, min–max) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for via in Via::ALL {
        let i = via as usize;
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |",
            via.name(),
            date[i].median_ms(),
            date[i].p90_ms(),
            date[i].p99_ms(),
            rate(&out[i].rates(OUT_BYTES)),
            rate(&into[i].rates(IN_BYTES)),
        );
    }
    println!(
        "| gateway `whoami` (SSH + certificate only, no Kubernetes call) | {:.1} ms | {:.1} ms | {:.1} ms | — | — |",
        whoami.median_ms(),
        whoami.p90_ms(),
        whoami.p99_ms()
    );
    println!();
    println!("| CPU per run, mean: server / client (ms) | `true` | 1 GiB out | 30 MiB in |");
    println!("| --- | ---: | ---: | ---: |");
    let cpu = |s: &Samples| {
        let (server, client) = s.cpu_ms();
        format!("{server:.0} / {client:.0}")
    };
    for via in Via::ALL {
        let i = via as usize;
        println!(
            "| {} | {} | {} | {} |",
            via.name(),
            cpu(&date[i]),
            cpu(&out[i]),
            cpu(&into[i])
        );
    }
    println!("| gateway `whoami` | {} | — | — |", cpu(whoami));
    println!();
    println!(
        "| gateway `true`, by the gateway's audit timestamps (median of {}) | ms |",
        phases.samples
    );
    println!("| --- | ---: |");
    println!(
        "| ssh start → certificate accepted (TCP, key exchange, auth, audit write) | {:.1} |",
        phases.connect_ms
    );
    println!(
        "| accepted → command allowed (channel, exec request, kube client, GET pod as alice, policy, audit write) | {:.1} |",
        phases.decide_ms
    );
    println!(
        "| allowed → exit recorded (pods/exec WebSocket, `true` in the container) | {:.1} |",
        phases.exec_ms
    );
    println!(
        "| exit recorded → ssh exits (audit write, exit-status, close) | {:.1} |",
        phases.close_ms
    );
    Ok(())
}

fn first3(loadavg: &str) -> String {
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn version(cmd: &mut Command) -> Result<String> {
    let o = cmd.output()?;
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    Ok(s.trim().to_owned())
}

/// The key exchange and cipher `ssh -v` reports for one run of `cmd` (an ssh with `-v`).
fn negotiated(mut cmd: Command) -> Result<String> {
    let o = cmd.stdin(Stdio::null()).output()?;
    ensure!(o.status.success(), "ssh -v: {}", o.status);
    let err = String::from_utf8_lossy(&o.stderr);
    let pick = |key: &str| {
        err.lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| "?".into())
    };
    Ok(format!(
        "kex {}, cipher {}",
        pick("kex: algorithm:"),
        pick("kex: server->client cipher:")
    ))
}

fn rate(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("{:.0} MiB/s ({lo:.0}–{hi:.0})", median(v))
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib_per_s(bytes: usize, wall: Duration) -> f64 {
    bytes as f64 / MIB as f64 / wall.as_secs_f64()
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile (`q` in 0..=1).
fn percentile(v: &[f64], q: f64) -> f64 {
    let s = sorted(v);
    let rank = (s.len() as f64 * q).ceil() as usize;
    s.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

/// Adds `true` to the dev gateway's demo policy and waits for the reload to be audited.
fn allow_true(dev: &std::path::Path) -> Result<()> {
    let path = dev.join("policy.yaml");
    let policy = std::fs::read_to_string(&path).context("reading the dev policy")?;
    let edited = policy.replacen(
        "      - \"date\"\n",
        "      - \"date\"\n      - \"true\"\n",
        1,
    );
    ensure!(
        edited != policy,
        "the demo policy no longer lists \"date\" where expected"
    );
    std::fs::write(&path, edited).context("writing the dev policy")?;
    let start = std::time::Instant::now();
    loop {
        let audit = std::fs::read_to_string(dev.join("audit.jsonl")).unwrap_or_default();
        if audit.contains("\"event\":\"policy.reload\"") && audit.contains("\"result\":\"ok\"") {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the dev gateway did not reload its policy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Incompressible, reproducible bytes (xorshift64*).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}
