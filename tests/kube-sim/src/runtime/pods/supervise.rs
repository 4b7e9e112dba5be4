//! The life of a container's main process: start, log pump, exit, restart.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::sync::{oneshot, watch};

use super::{Container, Ctx, Instance, PIPE_GRACE, READY_TIMEOUT, Restart, Terminated};
use crate::runtime::logs::{LogWriter, OutputStream};
use crate::runtime::{RuntimeError, kill_group};

/// The first child of the bwrap process: pid 1 of the container's pid namespace. Returned once
/// that init has forked the container's command, i.e. once the sandbox is set up (root, mounts,
/// hostname): joining its namespaces earlier would see a half-built container.
pub(super) async fn sandbox_init_pid(bwrap_pid: u32, child: &mut Child) -> Option<u32> {
    let first_child = |pid: u32| async move {
        let path = format!("/proc/{pid}/task/{pid}/children");
        tokio::fs::read_to_string(&path)
            .await
            .ok()
            .and_then(|text| {
                text.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u32>().ok())
            })
    };
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if let Some(init) = first_child(bwrap_pid).await
            && first_child(init).await.is_some()
        {
            return Some(init);
        }
        if !matches!(child.try_wait(), Ok(None)) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Runs a container: starts its main process, pumps its output into the log, restarts it per
/// the pod's restart policy, until stopped.
pub(super) async fn supervise(
    ctx: Arc<Ctx>,
    c: Arc<Container>,
    ready: oneshot::Sender<Result<(), RuntimeError>>,
) {
    let mut ready = Some(ready);
    let mut stop = c.stop.subscribe();
    let mut backoff = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            break;
        }
        let (instance, child, writer) = match c.start_instance(&ctx).await {
            Ok(started) => started,
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                } else {
                    tracing::warn!(container = ?c.cref, error = %e, "restarting container failed");
                }
                break;
            }
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        let terminated = run_instance(&instance, child, writer, stop.clone()).await;
        let restart = match c.restart {
            Restart::Always => true,
            Restart::OnFailure => terminated.exit_code != 0,
            Restart::Never => false,
        };
        if let Ok(mut live) = c.live.lock() {
            live.current = None;
            live.terminated = Some(terminated);
        }
        if !restart || *stop.borrow() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
        if let Ok(mut live) = c.live.lock() {
            live.last_terminated = live.terminated.take();
            live.restart_count += 1;
        }
    }
}

/// Pumps one instance's stdout/stderr into its log until it exits (or is stopped).
async fn run_instance(
    instance: &Instance,
    mut child: Child,
    mut writer: LogWriter,
    mut stop: watch::Receiver<bool>,
) -> Terminated {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; 32 * 1024];
    let mut err_buf = vec![0u8; 32 * 1024];
    let mut status = None;
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut killed = false;
    while stdout.is_some() || stderr.is_some() || status.is_none() {
        tokio::select! {
            r = read_opt(&mut stdout, &mut out_buf), if stdout.is_some() => match r {
                Ok(n) if n > 0 => {
                    if let Some(data) = out_buf.get(..n) { let _ = writer.write_chunk(OutputStream::Stdout, data); }
                }
                _ => stdout = None,
            },
            r = read_opt(&mut stderr, &mut err_buf), if stderr.is_some() => match r {
                Ok(n) if n > 0 => {
                    if let Some(data) = err_buf.get(..n) { let _ = writer.write_chunk(OutputStream::Stderr, data); }
                }
                _ => stderr = None,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                // Whatever is left of the process group goes too (pipes close).
                if let Some(pid) = instance.host_pid { kill_group(pid); }
                grace = Some(Box::pin(tokio::time::sleep(PIPE_GRACE)));
            },
            _ = stop.wait_for(|s| *s), if status.is_none() && !killed => {
                killed = true;
                if let Some(pid) = instance.host_pid { kill_group(pid); }
                let _ = child.start_kill();
            },
            () = async { if let Some(g) = grace.as_mut() { g.await } }, if grace.is_some() => break,
        }
    }
    writer.close();
    if let Some(stdin) = instance.stdin.lock().await.take() {
        drop(stdin);
    }
    let exit = match status {
        Some(Ok(s)) => crate::runtime::exec::exit_of(s),
        _ => crate::runtime::ExecExit {
            code: 137,
            signal: Some(9),
        },
    };
    Terminated {
        exit_code: exit.code,
        signal: exit.signal,
        started_at: instance.started_at,
        finished_at: SystemTime::now(),
    }
}

async fn read_opt<R: tokio::io::AsyncRead + Unpin>(
    r: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => Ok(0),
    }
}
