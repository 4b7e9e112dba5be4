//! One command line, the same for `ssh gw TARGET -- CMD` and for each line of the filtered
//! prompt: parse → resolve the target as the user → decide → audit (fail closed) → run with the
//! permit held on the session clock → the exit event.

use std::sync::Arc;
use std::time::Instant;

use jitsh_broker_policy::{CommandLine, Decision, Effect};
use russh::ChannelMsg;
use tokio::io::AsyncWriteExt;

use super::Ctx;
use super::approval::{self, Obtained, Why};
use crate::audit::Event;
use crate::ids::CommandId;
use crate::intent::TargetSpec;
use crate::kube::exec::Tty;
use crate::kube::{Impersonated, Resolved};
use crate::recording::Recorder;
use crate::telemetry::{Direction, Outcome};

/// The channel a one-shot command reads and resizes from.
pub(crate) struct Channel {
    pub(crate) tty: Option<Tty>,
    pub(crate) resize: tokio::sync::mpsc::Receiver<Tty>,
    pub(crate) read: russh::ChannelReadHalf,
}

/// How a decided command is connected.
pub(crate) struct Io<I> {
    pub(crate) tty: Option<Tty>,
    pub(crate) resize: Option<tokio::sync::mpsc::Receiver<Tty>>,
    pub(crate) stdin: I,
    pub(crate) rec: Option<Arc<Recorder>>,
}

/// Parses a command line; a refused syntax is denied (and audited) before anything reaches
/// Kubernetes. `Err` carries the status to exit with.
pub(crate) async fn parse(
    ctx: &Ctx<'_>,
    mut ev: Event,
    line: &str,
    place: &str,
    rec: Option<&Arc<Recorder>>,
) -> Result<(CommandLine, Event), u32> {
    match jitsh_broker_policy::parse_command_line(line) {
        Ok(cl) => {
            let stages: Vec<Vec<String>> = cl
                .stages()
                .iter()
                .map(|s| ctx.gw.redactor().redact(s))
                .collect();
            ev.argv = stages.first().cloned();
            if stages.len() > 1 {
                ev.stages = Some(stages);
            }
            Ok((cl, ev))
        }
        Err(e) => {
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            ev.line = Some(ctx.gw.redactor().redact(&words).join(" "));
            if let Some(r) = rec {
                let _ = r.event("m", &format!("refused: {e}"));
            }
            let d = Decision::refused_syntax(&e);
            Err(ctx.deny("command.denied", ev, &d, place).await)
        }
    }
}

/// `ssh gw TARGET -- CMD`: parses, resolves the pod as the user, and runs the line with the
/// channel's input as its stdin.
pub(crate) async fn one_shot(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    target: &TargetSpec,
    line: &str,
    why: Why<'_>,
    channel: Channel,
) -> u32 {
    let Channel {
        tty,
        resize,
        mut read,
    } = channel;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.gw.settings().default_namespace.clone());
    let ev = Event {
        namespace: Some(namespace.clone()),
        pod: Some(target.pod.clone()),
        ..ctx.event(cid)
    };
    let place = format!("{namespace}/{}", target.pod);
    let (parsed, ev) = match parse(ctx, ev, line, &place, None).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    // The pod is looked up as the user (a get): the policy's targets depend on its labels and
    // default container.
    let (k, resolved) = match ctx.resolve(cid, target).await {
        Ok(x) => x,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return 1;
        }
    };
    let (stdin_r, mut stdin_w) = tokio::io::duplex(256 * 1024);
    let clock = ctx.clock.clone();
    let bytes_in = ctx.bytes(Direction::In);
    let pump = tokio::spawn(async move {
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    clock.touch();
                    bytes_in.inc_by(data.len() as u64);
                    if stdin_w.write_all(&data).await.is_err() {
                        break;
                    }
                }
                ChannelMsg::Eof => break,
                _ => {}
            }
        }
        let _ = stdin_w.shutdown().await;
    });
    let io = Io {
        tty,
        resize: Some(resize),
        stdin: stdin_r,
        rec: None,
    };
    let code = decided(ctx, &k, &resolved, &parsed, ev, io, why).await;
    pump.abort();
    code
}

/// Resolves the line's path arguments in the container as the user: the line with each one
/// replaced by where it really leads (`None`: no path is a link), and `typed -> real` for each
/// link. Nothing to resolve, or a line no rule matches: unchanged (the decision says why).
async fn follow_links(
    ctx: &Ctx<'_>,
    k: &Impersonated,
    tgt: &jitsh_broker_policy::Target,
    parsed: &CommandLine,
) -> Result<(Option<CommandLine>, Vec<String>), crate::kube::KubeError> {
    let Some(rp) = ctx.gw.policy().permit_resolve(&ctx.subject(), tgt, parsed) else {
        return Ok((None, Vec::new()));
    };
    let real = crate::kube::exec::resolve_paths(k, &rp).await?;
    let mut stages = rp.decided().stages().to_vec();
    let mut links = Vec::new();
    for ((s, i, typed), r) in rp.paths().iter().zip(real) {
        if *typed != r {
            links.push(format!("{typed} -> {r}"));
            if let Some(a) = stages.get_mut(*s).and_then(|st| st.get_mut(*i)) {
                *a = r;
            }
        }
    }
    if links.is_empty() {
        return Ok((None, links));
    }
    Ok((Some(CommandLine::from_stages(stages)), links))
}

/// Decides a parsed line on a resolved target, audits, runs it, audits the exit.
pub(crate) async fn decided<I>(
    ctx: &Ctx<'_>,
    k: &Impersonated,
    resolved: &Resolved,
    parsed: &CommandLine,
    ev: Event,
    io: Io<I>,
    why: Why<'_>,
) -> u32
where
    I: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let gw = ctx.gw;
    let tgt = resolved.policy_target();
    let mut ev = Event {
        namespace: Some(resolved.namespace.clone()),
        pod: Some(resolved.pod.clone()),
        container: Some(resolved.container.clone()),
        ..ev
    };
    // Paths are decided where they lead in the container, not as typed: a symbolic link under
    // an allowed tree may point anywhere.
    let place = format!("{}/{}", resolved.namespace, resolved.pod);
    let (real, links) = match follow_links(ctx, k, &tgt, parsed).await {
        Ok(x) => x,
        Err(e) => {
            ev.error = Some(e.to_string());
            gw.record("command.refused", &ev);
            gw.metrics().command(Outcome::Refused);
            ctx.say(&e.to_string()).await;
            return 1;
        }
    };
    let parsed = real.as_ref().unwrap_or(parsed);
    if !links.is_empty() {
        let stages: Vec<Vec<String>> = parsed
            .stages()
            .iter()
            .map(|s| gw.redactor().redact(s))
            .collect();
        ev.argv = stages.first().cloned();
        ev.stages = (stages.len() > 1).then_some(stages);
        ev.links = Some(links.clone());
    }
    let decision = gw.policy().permit_exec(&ctx.subject(), &tgt, parsed);
    let marker = |what: &str| {
        if let Some(r) = &io.rec {
            let argv: Vec<String> = parsed
                .stages()
                .iter()
                .map(|s| gw.redactor().redact(s).join(" "))
                .collect();
            let _ = r.event("m", &format!("{what}: {}", argv.join(" | ")));
        }
    };
    let permit = match decision {
        Ok(p) if !why.explicit => p,
        Ok(p) => {
            ctx.say(&format!(
                "request: this command needs no approval on {place} (policy rule {}); run it directly",
                p.rule()
            ))
            .await;
            return 1;
        }
        Err(d) if d.effect() == Effect::NeedsApproval => {
            marker("needs approval");
            match approval::obtain(ctx, resolved, parsed, &d, &ev, why).await {
                Obtained::Run(p, id) => {
                    ev.request = Some(id);
                    *p
                }
                Obtained::Exit(code) => return code,
            }
        }
        Err(d) if !links.is_empty() => {
            marker("denied");
            let line = format!(
                "denied: {} in the container; {}",
                links
                    .iter()
                    .map(|l| l.replace(" -> ", " leads to "))
                    .collect::<Vec<_>>()
                    .join(", "),
                super::denial_line(&d, &place).trim_start_matches("denied: ")
            );
            return ctx.deny_saying("command.denied", ev, &d, &line).await;
        }
        Err(d) => {
            marker("denied");
            return ctx.deny("command.denied", ev, &d, &place).await;
        }
    };
    ev.rule = Some(permit.rule().to_owned());
    if let Err(e) = gw.audit_first("command.allowed", &ev) {
        gw.metrics().command(Outcome::Refused);
        ctx.say(&e.to_string()).await;
        return 1;
    }
    tracing::info!(rule = permit.rule(), "command allowed");
    marker("allowed");
    gw.metrics().command(Outcome::Allow);
    ctx.clock
        .tighten(permit.limits().max_session, permit.limits().idle_timeout);
    let _hold = ctx.clock.hold(&permit);
    let started = Instant::now();
    let streams = ctx.streams(io.tty, io.resize, io.stdin, io.rec.as_ref());
    let res = crate::kube::exec::run(k, &permit, streams).await;
    gw.metrics()
        .exec_seconds
        .observe(started.elapsed().as_secs_f64());
    let code = match res {
        Ok(c) => c,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            ev.error = Some(e.to_string());
            1
        }
    };
    ev.exit = Some(code);
    ev.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    gw.record("command.exit", &ev);
    code
}
