//! `attach TARGET`: pods/attach to the container's main process as the user, recorded.

use std::time::Instant;

use jitsh_broker_policy::Policy;
use tokio::sync::mpsc;

use super::Ctx;
use super::terminal::{conclude, open, open_recording, pump_stdin, while_recorded};
use crate::ids::CommandId;
use crate::intent::TargetSpec;
use crate::kube::exec::Tty;

/// `attach TARGET`: pods/attach as the user, recorded.
pub(crate) async fn attach(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    target: &TargetSpec,
    tty: Option<Tty>,
    resize: mpsc::Receiver<Tty>,
    read: russh::ChannelReadHalf,
) -> u32 {
    let opened = match open(ctx, cid, target, Policy::permit_attach, |_| {}, "attach").await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let (resolved, permit) = (&opened.resolved, &opened.permit);
    let mut ev = opened.ev.clone();
    let rec = match open_recording(ctx, resolved, permit.rule(), "attach", tty, true) {
        Ok(r) => r,
        Err(line) => {
            ctx.say(&line).await;
            return 1;
        }
    };
    ev.recording = rec.as_ref().map(|r| r.path().display().to_string());
    if let Err(e) = ctx.gw.audit_first("attach.start", &ev) {
        ctx.say(&e.to_string()).await;
        return 1;
    }
    ctx.clock
        .tighten(permit.limits().max_session, permit.limits().idle_timeout);
    let started = Instant::now();
    let (stdin_r, mut pump) = pump_stdin(ctx, read, rec.clone());
    let streams = ctx.streams(tty, Some(resize), stdin_r, rec.as_ref());
    let res = while_recorded(
        ctx,
        &mut pump,
        crate::kube::exec::attach(&opened.k, permit, streams),
    )
    .await;
    pump.abort();
    conclude(ctx, res, rec.as_ref(), None, ev, started, "attach.end").await
}
