//! What the terminal sessions (prompt, break-glass, attach) share: the input queue, output to
//! the terminal and the recording, opening a session mode, the recording, the ending.

use std::sync::Arc;
use std::time::Instant;

use jitsh_broker_policy::{Decision, Permit, Policy, Subject, Target, permit::Kind};
use russh::ChannelMsg;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Ctx;
use crate::audit::Event;
use crate::ids::CommandId;
use crate::intent::TargetSpec;
use crate::kube::exec::Tty;
use crate::kube::{Impersonated, KubeError, Resolved};
use crate::recording::{Header, Recorder};

/// What the client sent.
pub(crate) enum Input {
    /// Bytes.
    Data(Vec<u8>),
    /// The client's EOF.
    Eof,
}

/// Reads the channel into a queue (marking activity), so keystrokes can go to the editor or to
/// a running command.
pub(crate) fn reader(ctx: &Ctx<'_>, mut read: russh::ChannelReadHalf) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(64);
    let clock = ctx.clock.clone();
    let bytes_in = ctx.bytes(crate::telemetry::Direction::In);
    tokio::spawn(async move {
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    clock.touch();
                    bytes_in.inc_by(data.len() as u64);
                    if tx.send(Input::Data(data.to_vec())).await.is_err() {
                        return;
                    }
                }
                ChannelMsg::Eof => break,
                _ => {}
            }
        }
        let _ = tx.send(Input::Eof).await;
    });
    rx
}

/// Writes to the user's terminal and the recording.
pub(crate) async fn show(ctx: &Ctx<'_>, rec: Option<&Arc<Recorder>>, text: &[u8]) -> bool {
    if let Some(r) = rec
        && r.output(text).is_err()
    {
        return false;
    }
    ctx.clock.touch();
    ctx.write.data_bytes(text.to_vec()).await.is_ok()
}

/// Opens the recording the policy (or the kind of session) requires; `Err` carries the line
/// that refuses the session.
pub(crate) fn open_recording(
    ctx: &Ctx<'_>,
    resolved: &Resolved,
    rule: &str,
    kind: &str,
    tty: Option<Tty>,
    required: bool,
) -> Result<Option<Arc<Recorder>>, String> {
    if !required {
        return Ok(None);
    }
    let Some(dir) = &ctx.gw.settings().recordings else {
        return Err(
            "refused: this session must be recorded and the gateway has no recordings directory"
                .into(),
        );
    };
    let t = tty.unwrap_or(Tty { cols: 80, rows: 24 });
    let target = format!(
        "{}/{}/{}",
        resolved.namespace, resolved.pod, resolved.container
    );
    Recorder::create(
        dir,
        &Header {
            cols: t.cols,
            rows: t.rows,
            session: &format!("{}-{}", ctx.sid, crate::ids::fresh()),
            user: ctx.id.username(),
            identity: ctx.id.identity(),
            target: &target,
            rule,
            kind,
        },
        ctx.gw.settings().limits.max_recording_bytes,
    )
    .map(Some)
    .map_err(|e| format!("refused: {e}"))
}

/// A session mode decided on a resolved target, its permit held on the session clock.
pub(crate) struct Opened<K> {
    pub(crate) k: Impersonated,
    pub(crate) resolved: Resolved,
    pub(crate) permit: Permit<K>,
    pub(crate) ev: Event,
    _hold: super::Hold,
}

/// Resolves the target and decides a session mode with `decide` (one of the policy's
/// `permit_*`); `facts` annotates the events (`kind` names them). On refusal, the status to
/// exit with.
pub(crate) async fn open<K: Kind>(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    target: &TargetSpec,
    decide: impl FnOnce(&Policy, &Subject, &Target) -> Result<Permit<K>, Decision>,
    facts: impl FnOnce(&mut Event),
    kind: &str,
) -> Result<Opened<K>, u32> {
    let (k, resolved) = match ctx.resolve(cid, target).await {
        Ok(x) => x,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return Err(1);
        }
    };
    let decision = decide(&ctx.gw.policy(), &ctx.subject(), &resolved.policy_target());
    let mut ev = ctx.target_event(cid, &resolved);
    facts(&mut ev);
    let place = format!("{}/{}", resolved.namespace, resolved.pod);
    match decision {
        Ok(permit) => {
            ev.rule = Some(permit.rule().to_owned());
            let hold = ctx.clock.hold(&permit);
            Ok(Opened {
                k,
                resolved,
                permit,
                ev,
                _hold: hold,
            })
        }
        Err(d) => Err(ctx.deny(&format!("{kind}.denied"), ev, &d, &place).await),
    }
}

/// Ends a shell or attach session: the exit status (a Kubernetes error as one line), the
/// recording's last marker and sync, and the end event.
pub(crate) async fn conclude(
    ctx: &Ctx<'_>,
    res: Result<u32, KubeError>,
    rec: Option<&Arc<Recorder>>,
    marker: Option<&str>,
    mut ev: Event,
    started: Instant,
    kind: &str,
) -> u32 {
    let code = match res {
        Ok(c) => c,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            1
        }
    };
    if let Some(r) = rec {
        if let Some(m) = marker {
            let _ = r.event("m", m);
        }
        r.finish();
    }
    ev.exit = Some(code);
    ev.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    ctx.gw.record(kind, &ev);
    code
}

/// Copies the channel's input to a pipe for a shell or attach, recording it as `i` events. The
/// task ends with the reason if an input cannot be recorded: nothing unrecorded reaches the pod.
pub(crate) fn pump_stdin(
    ctx: &Ctx<'_>,
    read: russh::ChannelReadHalf,
    rec: Option<Arc<Recorder>>,
) -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<Option<String>>,
) {
    let (stdin_r, mut stdin_w) = tokio::io::duplex(64 * 1024);
    let mut input = reader(ctx, read);
    let pump = tokio::spawn(async move {
        while let Some(Input::Data(bytes)) = input.recv().await {
            if let Some(r) = &rec
                && let Err(e) = r.event("i", &String::from_utf8_lossy(&bytes))
            {
                return Some(e.to_string());
            }
            if stdin_w.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = stdin_w.shutdown().await;
        None
    });
    (stdin_r, pump)
}

/// Runs a recorded shell or attach until it ends, or until its input cannot be recorded — then
/// the session ends at once with that reason (a shell must not run what the recording misses).
pub(crate) async fn while_recorded(
    ctx: &Ctx<'_>,
    pump: &mut tokio::task::JoinHandle<Option<String>>,
    work: impl Future<Output = Result<u32, KubeError>>,
) -> Result<u32, KubeError> {
    tokio::select! {
        res = work => res,
        Ok(Some(why)) = pump => {
            ctx.ended(&super::EndReason::RecordingFailed(why)).await;
            Ok(super::ENDED_STATUS)
        }
    }
}
