//! pods/exec and pods/attach as the user: a decided command's stages joined by the gateway, a
//! break-glass shell, and attach to the container's main process.

use jitsh_broker_policy::{AttachPermit, BreakGlassPermit, ExecPermit, ResolvePermit, Target};
use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::remote::{self, Open, Remote};
use super::{Impersonated, KubeError, exit_code};

/// What a command's stdin is read from.
pub trait Input: AsyncRead + Unpin + Send + 'static {}
impl<T: AsyncRead + Unpin + Send + 'static> Input for T {}

/// Where a command's stdout or stderr goes.
pub trait Output: AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncWrite + Unpin + Send + 'static> Output for T {}

/// How a command is connected: the terminal (if any), its resizes, and the three streams.
pub struct Streams<I, O, E> {
    /// The terminal the client asked for.
    pub tty: Option<Tty>,
    /// Terminal size changes.
    pub resize: Option<tokio::sync::mpsc::Receiver<Tty>>,
    /// Standard input.
    pub stdin: I,
    /// Standard output.
    pub stdout: O,
    /// Standard error.
    pub stderr: E,
}

/// Copies with 256 KiB reads (tokio's `copy` reads 8 KiB at a time, which becomes 8 KiB SSH
/// packets and twice the client's CPU for bulk output).
async fn copy_large<R, W>(r: &mut R, w: &mut W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, r);
    tokio::io::copy_buf(&mut reader, w).await
}

/// Sends the initial terminal size, then forwards each resize until either side closes.
async fn forward_resizes(
    size: Tty,
    mut rx: tokio::sync::mpsc::Receiver<Tty>,
    tx: tokio::sync::mpsc::Sender<kube::api::TerminalSize>,
) -> tokio::task::JoinHandle<()> {
    let ts = |t: Tty| kube::api::TerminalSize {
        width: t.cols,
        height: t.rows,
    };
    let _ = tx.send(ts(size)).await;
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            if tx.send(ts(t)).await.is_err() {
                break;
            }
        }
    })
}

/// Terminal request of the SSH channel.
#[derive(Debug, Clone, Copy)]
pub struct Tty {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl Tty {
    /// A size from the SSH request's 32-bit fields (clamped).
    pub fn clamped(cols: u32, rows: u32) -> Tty {
        Tty {
            cols: u16::try_from(cols).unwrap_or(u16::MAX),
            rows: u16::try_from(rows).unwrap_or(u16::MAX),
        }
    }
}

/// Runs each stage the permit decided as one exec on the permit's container, joined by the
/// gateway; returns the last stage's exit status.
pub async fn run<I: Input, O: Output, E: Output>(
    k: &Impersonated,
    permit: &ExecPermit,
    io: Streams<I, O, E>,
) -> Result<u32, KubeError> {
    run_stages(k, permit.stages(), permit.target(), io).await
}

/// The most `realpath` may print for one command line's paths.
const MAX_RESOLVED: usize = 1024 * 1024;

/// Resolves the permit's path arguments in its container as the user (`realpath -m`, so missing
/// files are fine and every symbolic link is followed): one canonical path per argument, in order.
pub async fn resolve_paths(
    k: &Impersonated,
    permit: &ResolvePermit,
) -> Result<Vec<String>, KubeError> {
    let target = permit.target();
    let mut argv: Vec<String> = ["realpath", "-m", "--"].map(str::to_owned).to_vec();
    argv.extend(permit.paths().iter().map(|(_, _, p)| p.clone()));
    let ap = remote::output_only(&target.container, 64 * 1024, 4096);
    let how = Open::Exec(argv);
    let mut p = remote::open(&k.client, &target.namespace, &target.pod, how, &ap).await?;
    let read_all = |r: Option<tokio::io::DuplexStream>, limit: usize| async move {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        if let Some(r) = r {
            let _ = r
                .take(u64::try_from(limit).unwrap_or(u64::MAX))
                .read_to_end(&mut out)
                .await;
        }
        out
    };
    let (out, err) = tokio::join!(
        read_all(p.stdout.take(), MAX_RESOLVED),
        read_all(p.stderr.take(), 4096)
    );
    let code = match p.status.take() {
        Some(s) => s.await.map_or(1, |st| exit_code(&st)),
        None => 1,
    };
    p.join().await;
    let why = |what: String| {
        KubeError::Resolve(format!(
            "refused: the command's paths could not be checked for symbolic links in the container ({what})"
        ))
    };
    if code != 0 {
        let line = String::from_utf8_lossy(&err)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        return Err(why(if line.is_empty() {
            format!("realpath exited with {code}")
        } else {
            line
        }));
    }
    let text = String::from_utf8(out).map_err(|_| why("realpath printed no UTF-8".into()))?;
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.len() != permit.paths().len() || lines.iter().any(|l| !l.starts_with('/')) {
        return Err(why("unexpected realpath output".into()));
    }
    Ok(lines)
}

/// The shell a break-glass session runs (argv, never user text).
pub const BREAK_GLASS_SHELL: &str = "/bin/sh";

/// Runs a break-glass shell ([`BREAK_GLASS_SHELL`], not user text) under a break-glass permit.
pub async fn run_break_glass<I: Input, O: Output, E: Output>(
    k: &Impersonated,
    permit: &BreakGlassPermit,
    io: Streams<I, O, E>,
) -> Result<u32, KubeError> {
    let shell = [vec![BREAK_GLASS_SHELL.to_owned()]];
    run_stages(k, &shell, permit.target(), io).await
}

/// Attaches to the permit's container's main process (pods/attach) as the client's user.
pub async fn attach<I: Input, O: Output, E: Output>(
    k: &Impersonated,
    permit: &AttachPermit,
    io: Streams<I, O, E>,
) -> Result<u32, KubeError> {
    let target = permit.target();
    let Streams {
        tty,
        resize,
        mut stdin,
        mut stdout,
        mut stderr,
    } = io;
    let api = k.api::<Pod>(&target.namespace);
    // The main process's terminal and stdin exist only when its spec asks for them; attach
    // follows the spec so it works on ordinary containers (output only).
    let pod = api.get(&target.pod).await?;
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == target.container));
    let with_stdin = spec.and_then(|c| c.stdin).unwrap_or(false);
    let with_tty = tty.is_some() && spec.and_then(|c| c.tty).unwrap_or(false);
    let ap = AttachParams {
        container: Some(target.container.clone()),
        stdin: with_stdin,
        stdout: true,
        stderr: !with_tty,
        tty: with_tty,
        max_stdin_buf_size: Some(256 * 1024),
        max_stdout_buf_size: Some(256 * 1024),
        max_stderr_buf_size: Some(256 * 1024),
    };
    let mut p = remote::open(&k.client, &target.namespace, &target.pod, Open::Attach, &ap).await?;
    let mut tasks = Vec::new();
    if let Some(mut w) = p.stdin.take() {
        tasks.push(tokio::spawn(async move {
            let _ = copy_large(&mut stdin, &mut w).await;
            let _ = w.shutdown().await;
        }));
    }
    if let (Some(size), Some(rx), Some(tx)) = (tty, resize, p.resize.take()) {
        tasks.push(forward_resizes(size, rx, tx).await);
    }
    let err_task = p.stderr.take().map(|mut e| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut e, &mut stderr).await;
            let _ = stderr.flush().await;
        })
    });
    if let Some(mut out) = p.stdout.take() {
        let _ = copy_large(&mut out, &mut stdout).await;
    }
    let _ = stdout.flush().await;
    if let Some(t) = err_task {
        let _ = t.await;
    }
    for t in tasks {
        t.abort();
    }
    let code = match p.status.take() {
        Some(s) => s.await.map_or(0, |st| exit_code(&st)),
        None => 0,
    };
    p.join().await;
    Ok(code)
}

async fn run_stages<I: Input, O: Output, E: Output>(
    k: &Impersonated,
    stages: &[Vec<String>],
    target: &Target,
    io: Streams<I, O, E>,
) -> Result<u32, KubeError> {
    let Streams {
        tty,
        resize,
        stdin,
        mut stdout,
        mut stderr,
    } = io;
    let mut procs: Vec<Remote> = Vec::with_capacity(stages.len());
    for argv in stages {
        let ap = AttachParams {
            container: Some(target.container.clone()),
            stdin: true,
            stdout: true,
            stderr: tty.is_none(),
            tty: tty.is_some() && stages.len() == 1,
            max_stdin_buf_size: Some(256 * 1024),
            max_stdout_buf_size: Some(256 * 1024),
            max_stderr_buf_size: Some(256 * 1024),
        };
        let how = Open::Exec(argv.clone());
        procs.push(remote::open(&k.client, &target.namespace, &target.pod, how, &ap).await?);
    }
    let mut tasks = Vec::new();
    // stdin → first stage
    let mut stdin = stdin;
    if let Some(mut w) = procs.first_mut().and_then(|p| p.stdin.take()) {
        tasks.push(tokio::spawn(async move {
            let _ = copy_large(&mut stdin, &mut w).await;
            let _ = w.shutdown().await;
        }));
    }
    if let (Some(size), Some(rx)) = (tty, resize)
        && let Some(tx) = procs.first_mut().and_then(|p| p.resize.take())
    {
        tasks.push(forward_resizes(size, rx, tx).await);
    }
    // stage i stdout → stage i+1 stdin
    let mut rest = procs.as_mut_slice();
    while let [this, next, ..] = rest {
        let (r, w) = (this.stdout.take(), next.stdin.take());
        rest = rest.get_mut(1..).unwrap_or_default();
        if let (Some(mut r), Some(mut w)) = (r, w) {
            tasks.push(tokio::spawn(async move {
                let _ = copy_large(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }));
        }
    }
    let mut errs = Vec::new();
    for p in procs.iter_mut() {
        if let Some(e) = p.stderr.take() {
            errs.push(e);
        }
    }
    let err_task = tokio::spawn(async move {
        for mut e in errs {
            let _ = tokio::io::copy(&mut e, &mut stderr).await;
        }
        let _ = stderr.flush().await;
    });
    let last = procs
        .last_mut()
        .ok_or(KubeError::MissingStream("command"))?;
    let status = last.status.take();
    if let Some(mut out) = last.stdout.take() {
        let _ = copy_large(&mut out, &mut stdout).await;
    }
    let _ = stdout.flush().await;
    let code = match status {
        Some(s) => match s.await {
            Ok(st) => exit_code(&st),
            Err(_) => 1,
        },
        None => 1,
    };
    let _ = err_task.await;
    for t in tasks {
        t.abort();
    }
    for p in procs {
        p.join().await;
    }
    Ok(code)
}
