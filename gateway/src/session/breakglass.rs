//! `break-glass TARGET --incident ID --reason TEXT`: an unrestricted shell for a few, short,
//! recorded and loud (critical audit events, webhook notifications, a review owed).

use std::time::{Instant, SystemTime};

use jitsh_broker_policy::BreakGlassAsk;
use tokio::sync::mpsc;

use super::terminal::{conclude, open, open_recording, pump_stdin, while_recorded};
use super::{Ctx, EndReason};
use crate::audit::Event;
use crate::ids::CommandId;
use crate::intent::TargetSpec;
use crate::kube::exec::Tty;
use crate::telemetry::Outcome;

/// What the user gave for break-glass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakGlassRequest<'a> {
    pub(crate) incident: Option<&'a str>,
    pub(crate) reason: Option<&'a str>,
}

/// `break-glass TARGET --incident ID --reason TEXT`: an unrestricted shell for the grant's
/// duration, recorded, with critical audit events and webhook notifications.
pub(crate) async fn break_glass(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    target: &TargetSpec,
    req: BreakGlassRequest<'_>,
    tty: Option<Tty>,
    resize: mpsc::Receiver<Tty>,
    read: russh::ChannelReadHalf,
) -> u32 {
    let ask = BreakGlassAsk {
        incident: req.incident,
        reason: req.reason,
        certificate: ctx.id.break_glass().is_some(),
    };
    let given = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // The policy decides the facts (reason, incident, break-glass certificate) with the rule.
    let opened = match open(
        ctx,
        cid,
        target,
        |policy, subject, tgt| policy.permit_break_glass(subject, tgt, ask),
        |ev| {
            ev.incident = given(req.incident);
            ev.reason = given(req.reason);
            ev.severity = Some("critical".to_owned());
        },
        "breakglass",
    )
    .await
    {
        Ok(x) => x,
        Err(code) => return code,
    };
    let (resolved, permit) = (&opened.resolved, &opened.permit);
    let mut ev = opened.ev.clone();
    let (incident, reason) = (permit.incident(), permit.reason());
    let rec = match open_recording(ctx, resolved, permit.rule(), "break-glass", tty, true) {
        Ok(r) => r,
        Err(line) => {
            ctx.say(&line).await;
            return 1;
        }
    };
    let max = permit.limits().max_session;
    let until = SystemTime::now() + max;
    let until_text = humantime::format_rfc3339_seconds(until).to_string();
    ev.expires = Some(until_text.clone());
    ev.recording = rec.as_ref().map(|r| r.path().display().to_string());
    ev.review_owed = Some(true);
    if let Err(e) = ctx.gw.audit_first("breakglass.start", &ev) {
        ctx.say(&e.to_string()).await;
        return 1;
    }
    ctx.gw.metrics().command(Outcome::BreakGlass);
    notify(ctx, cid, permit.notify(), &ev).await;
    ctx.clock
        .tighten_with(max, permit.limits().idle_timeout, EndReason::GrantExpired);
    if let Some(r) = &rec {
        let _ = r.event(
            "m",
            &format!(
                "break-glass start: incident {} reason {}",
                incident.unwrap_or("-"),
                reason
            ),
        );
    }
    let eol = super::eol(ctx.tty);
    let banner = format!(
        "jitsh: BREAK-GLASS shell on {}/{}/{} for {} — incident {} — until {until_text}.{eol}jitsh: everything in this session is recorded and will be reviewed.{eol}",
        resolved.namespace,
        resolved.pod,
        resolved.container,
        ctx.id.username(),
        incident.unwrap_or("none"),
    );
    let _ = ctx
        .write
        .extended_data_bytes(1, banner.clone().into_bytes())
        .await;
    if let Some(r) = &rec {
        let _ = r.output(banner.as_bytes());
    }
    let started = Instant::now();
    let (stdin_r, mut pump) = pump_stdin(ctx, read, rec.clone());
    let streams = ctx.streams(tty, Some(resize), stdin_r, rec.as_ref());
    let res = while_recorded(
        ctx,
        &mut pump,
        crate::kube::exec::run_break_glass(&opened.k, permit, streams),
    )
    .await;
    pump.abort();
    conclude(
        ctx,
        res,
        rec.as_ref(),
        Some("break-glass end: review owed"),
        ev,
        started,
        "breakglass.end",
    )
    .await
}

/// POSTs the break-glass event to each webhook (5 s each); results are audited, failures do not
/// stop the session (the audit log already has the critical event).
async fn notify(ctx: &Ctx<'_>, cid: &CommandId, urls: &[String], ev: &Event) {
    #[derive(serde::Serialize)]
    struct Body<'e> {
        event: &'static str,
        #[serde(flatten)]
        fields: &'e Event,
    }
    let body = Body {
        event: "breakglass.start",
        fields: ev,
    };
    for url in urls {
        let (ok, detail) = crate::webhook::post(url, &body).await;
        let n = Event {
            url: Some(url.clone()),
            delivered: Some(ok),
            status: Some(detail),
            severity: Some("critical".to_owned()),
            ..ctx.event(cid)
        };
        ctx.gw.record("breakglass.notify", &n);
    }
}
