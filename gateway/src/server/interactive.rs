//! Interactive sessions: the filtered prompt (every line parsed and decided like an exec, each
//! allowed line its own pods/exec as the user), break-glass (an unrestricted shell for a few,
//! with an incident and a reason, short, recorded and loud) and attach. All recorded.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jitsh_broker_policy::{Action, Mode, Permit, Request};
use russh::ChannelMsg;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Ctx, DENIED_STATUS, Io, Tty, command, deny, target_of};
use crate::admin::label;
use crate::exec;
use crate::intent::TargetSpec;
use crate::lineedit::{Edit, Editor};
use crate::recording::{Header, Recorded, Recorder};

/// The shell a break-glass session runs (argv, never user text).
pub const BREAK_GLASS_SHELL: &str = "/bin/sh";

enum Input {
    Data(Vec<u8>),
    Eof,
}

/// Reads the channel into a queue (marking activity), so keystrokes can go to the editor or to
/// a running command.
fn reader(ctx: &Ctx<'_>, mut read: russh::ChannelReadHalf) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(64);
    let clock = ctx.clock.clone();
    let bytes_in = ctx
        .gw
        .metrics
        .bytes
        .get_or_create(&label("direction", "in"))
        .clone();
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
async fn show(ctx: &Ctx<'_>, rec: Option<&Arc<Recorder>>, text: &[u8]) -> bool {
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
fn open_recording(
    ctx: &Ctx<'_>,
    resolved: &exec::Resolved,
    permit: &Permit,
    kind: &str,
    tty: Option<Tty>,
    required: bool,
) -> Result<Option<Arc<Recorder>>, String> {
    if !required {
        return Ok(None);
    }
    let Some(dir) = &ctx.gw.settings.recordings else {
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
            session: &format!("{}-{}", ctx.sid, crate::server::new_id()),
            user: ctx.id.username(),
            identity: ctx.id.identity(),
            target: &target,
            rule: permit.rule(),
            kind,
        },
    )
    .map(Some)
    .map_err(|e| format!("refused: {e}"))
}

/// Resolves the target and decides a session mode; on refusal the status to exit with.
async fn open(
    ctx: &Ctx<'_>,
    cid: &str,
    target: &TargetSpec,
    mode: Mode,
    kind: &str,
) -> Result<(kube::Client, exec::Resolved, Permit, serde_json::Value), u32> {
    let (client, resolved) = match ctx.resolve(cid, target).await {
        Ok(x) => x,
        Err(e) => {
            ctx.say(&e).await;
            return Err(1);
        }
    };
    let decision = ctx.gw.policy.load().decide(&Request {
        subject: &ctx.subject(),
        target: &target_of(&resolved),
        mode,
        action: Action::Session,
    });
    let mut ev = ctx.base_event(cid);
    ev["namespace"] = json!(resolved.namespace);
    ev["pod"] = json!(resolved.pod);
    ev["container"] = json!(resolved.container);
    match decision.permit() {
        Ok(p) => {
            ev["rule"] = json!(p.rule());
            Ok((client, resolved, p, ev))
        }
        Err(d) => Err(deny(ctx, &format!("{kind}.denied"), ev, &d, &resolved).await),
    }
}

fn audit_or_refuse(ctx: &Ctx<'_>, kind: &str, ev: serde_json::Value) -> Result<(), String> {
    ctx.gw
        .audit
        .record(kind, ev)
        .map_err(|e| format!("refused: the audit log cannot be written ({e})"))
}

/// `ssh [-t] USER@gw TARGET`: the filtered prompt (TTY) or line mode (commands on stdin).
pub(super) async fn prompt(
    ctx: &Ctx<'_>,
    cid: &str,
    target: &TargetSpec,
    mut tty: Option<Tty>,
    mut resize: mpsc::Receiver<Tty>,
    read: russh::ChannelReadHalf,
) -> u32 {
    let (_, resolved, permit, mut ev) = match open(ctx, cid, target, Mode::Shell, "shell").await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let rec = match open_recording(
        ctx,
        &resolved,
        &permit,
        "shell",
        tty,
        permit.limits().recording,
    ) {
        Ok(r) => r,
        Err(line) => {
            ctx.say(&line).await;
            return 1;
        }
    };
    ev["tty"] = json!(tty.is_some());
    ev["recording"] = json!(rec.as_ref().map(|r| r.path().display().to_string()));
    if let Err(line) = audit_or_refuse(ctx, "shell.start", ev.clone()) {
        ctx.say(&line).await;
        return 1;
    }
    ctx.clock
        .tighten(permit.limits().max_session, permit.limits().idle_timeout);
    ctx.merged
        .store(tty.is_some(), std::sync::atomic::Ordering::Relaxed);
    let mut input = reader(ctx, read);
    let prompt = format!(
        "{}@{}/{}:{}$ ",
        ctx.id.username(),
        resolved.namespace,
        resolved.pod,
        resolved.container
    );
    let rec_ref = rec.as_ref();
    let mut last = 0;
    let mut lines = 0u64;
    if tty.is_some() {
        let banner = format!(
            "jitsh: filtered session on {}/{}/{} as {} (policy rule {}){}.\r\nEach line is checked against the policy and runs as its own command; type 'help' for what is allowed, 'exit' to leave.\r\n",
            resolved.namespace,
            resolved.pod,
            resolved.container,
            ctx.id.username(),
            permit.rule(),
            if rec.is_some() {
                "; this session is recorded"
            } else {
                ""
            }
        );
        let mut editor = Editor::default();
        let mut ok = show(ctx, rec_ref, banner.as_bytes()).await
            && show(ctx, rec_ref, &editor.render(&prompt)).await;
        'session: while ok {
            tokio::select! {
                got = input.recv() => {
                    let Some(Input::Data(bytes)) = got else { break 'session };
                    for b in bytes {
                        match editor.feed(b) {
                            Edit::Nothing => {}
                            Edit::Redraw => ok = show(ctx, rec_ref, &editor.render(&prompt)).await,
                            Edit::Interrupt => {
                                ok = show(ctx, rec_ref, b"^C\r\n").await
                                    && show(ctx, rec_ref, &editor.render(&prompt)).await;
                            }
                            Edit::Eof => {
                                let _ = show(ctx, rec_ref, b"\r\n").await;
                                break 'session;
                            }
                            Edit::Submit(line) => {
                                if !show(ctx, rec_ref, b"\r\n").await {
                                    break 'session;
                                }
                                if let Some(r) = rec_ref {
                                    let words: Vec<String> = line.split(' ').map(str::to_owned).collect();
                                    let _ = r.event("i", &format!("{}\r", ctx.gw.redactor.redact(&words).join(" ")));
                                }
                                lines += 1;
                                match run_line(ctx, &resolved, &line, tty, &mut input, &mut resize, rec.clone(), true).await {
                                    Step::Exit => break 'session,
                                    Step::Ran(code) => last = code,
                                    Step::Skip => {}
                                }
                                ok = show(ctx, rec_ref, &editor.render(&prompt)).await;
                            }
                        }
                        if !ok {
                            break 'session;
                        }
                    }
                }
                Some(t) = resize.recv() => {
                    tty = Some(t);
                    if let Some(r) = rec_ref {
                        let _ = r.event("r", &format!("{}x{}", t.cols, t.rows));
                    }
                }
            }
        }
    } else {
        // Line mode: commands on stdin, one per line, in order; a denied line does not stop
        // the ones after it. Commands get no stdin of their own.
        let mut pending: Vec<u8> = Vec::new();
        let mut eof = false;
        while !eof {
            match input.recv().await {
                Some(Input::Data(bytes)) => pending.extend_from_slice(&bytes),
                Some(Input::Eof) | None => eof = true,
            }
            loop {
                let cut = match pending.iter().position(|b| *b == b'\n') {
                    Some(i) => i,
                    None if eof && !pending.is_empty() => pending.len(),
                    None => break,
                };
                let raw: Vec<u8> = pending.drain(..cut.min(pending.len())).collect();
                if !pending.is_empty() {
                    pending.remove(0);
                }
                let line = match String::from_utf8(raw) {
                    Ok(l) => l,
                    Err(_) => {
                        ctx.say("refused: the line is not UTF-8").await;
                        last = DENIED_STATUS;
                        continue;
                    }
                };
                let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
                if let Some(r) = rec_ref {
                    let words: Vec<String> = line.split(' ').map(str::to_owned).collect();
                    let _ = r.event(
                        "i",
                        &format!("{}\n", ctx.gw.redactor.redact(&words).join(" ")),
                    );
                }
                lines += 1;
                let mut none = mpsc::channel(1).1;
                match run_line(
                    ctx,
                    &resolved,
                    &line,
                    None,
                    &mut none,
                    &mut resize,
                    rec.clone(),
                    false,
                )
                .await
                {
                    Step::Exit => {
                        eof = true;
                        break;
                    }
                    Step::Ran(code) => last = code,
                    Step::Skip => {}
                }
            }
        }
    }
    let mut end = ctx.base_event(cid);
    end["lines"] = json!(lines);
    ctx.gw.record("shell.end", end);
    if let Some(r) = rec_ref {
        r.finish();
    }
    last
}

enum Step {
    Exit,
    Ran(u32),
    Skip,
}

/// Decides and runs one prompt line. While it runs, keystrokes go to the command (Ctrl-C
/// reaches it as on a terminal) and resizes to its terminal.
#[allow(clippy::too_many_arguments)]
async fn run_line(
    ctx: &Ctx<'_>,
    resolved: &exec::Resolved,
    line: &str,
    tty: Option<Tty>,
    input: &mut mpsc::Receiver<Input>,
    resize: &mut mpsc::Receiver<Tty>,
    rec: Option<Arc<Recorder>>,
    interactive: bool,
) -> Step {
    let nl = if interactive { "\r\n" } else { "\n" };
    let trimmed = line.trim();
    match trimmed {
        "" => return Step::Skip,
        "exit" | "logout" => return Step::Exit,
        "help" | "allowed" => {
            let mut text = format!(
                "Allowed on {}/{}/{} (anything else is refused; no shell is involved):{nl}",
                resolved.namespace, resolved.pod, resolved.container
            );
            let policy = ctx.gw.policy.load();
            let subject = ctx.subject();
            for g in policy.grants(&subject) {
                if g.namespaces
                    .iter()
                    .any(|n| n == "*" || *n == resolved.namespace)
                    && g.modes.contains(&Mode::Exec)
                {
                    for c in &g.commands {
                        text.push_str(&format!("  {c}{nl}"));
                    }
                }
            }
            text.push_str(&format!("  help, allowed, exit{nl}"));
            let _ = show(ctx, rec.as_ref(), text.as_bytes()).await;
            return Step::Skip;
        }
        _ => {}
    }
    let cid = crate::server::new_id();
    let mut ev = ctx.base_event(&cid);
    ev["interactive"] = json!(true);
    let parsed = match jitsh_broker_policy::parse_command_line(trimmed) {
        Ok(p) => p,
        Err(e) => {
            let words: Vec<String> = trimmed.split_whitespace().map(str::to_owned).collect();
            ev["line"] = json!(ctx.gw.redactor.redact(&words).join(" "));
            ev["namespace"] = json!(resolved.namespace);
            ev["pod"] = json!(resolved.pod);
            ev["container"] = json!(resolved.container);
            if let Some(r) = &rec {
                let _ = r.event("m", &format!("refused: {e}"));
            }
            let d = jitsh_broker_policy::Decision::denied(format!("refused: {e}"));
            return Step::Ran(deny(ctx, "command.denied", ev, &d, resolved).await);
        }
    };
    let stages: Vec<Vec<String>> = parsed
        .stages()
        .iter()
        .map(|s| ctx.gw.redactor.redact(s))
        .collect();
    ev["argv"] = json!(stages.first());
    if stages.len() > 1 {
        ev["stages"] = json!(stages);
    }
    let client = match ctx.gw.kube.client_as(ctx.id, &cid) {
        Ok(c) => c,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return Step::Ran(1);
        }
    };
    let (stdin_r, mut stdin_w) = tokio::io::duplex(64 * 1024);
    let (resize_tx, resize_rx) = mpsc::channel(8);
    let io = Io {
        tty,
        resize: tty.map(|_| resize_rx),
        stdin: stdin_r,
        rec: rec.clone(),
    };
    if !interactive {
        let _ = stdin_w.shutdown().await;
    }
    let run = command(ctx, &client, resolved, &parsed, ev, io);
    tokio::pin!(run);
    let mut input_open = interactive;
    let code = loop {
        tokio::select! {
            code = &mut run => break code,
            got = input.recv(), if input_open => match got {
                Some(Input::Data(bytes)) => {
                    if stdin_w.write_all(&bytes).await.is_err() {
                        input_open = false;
                    }
                }
                Some(Input::Eof) | None => {
                    input_open = false;
                    let _ = stdin_w.shutdown().await;
                }
            },
            Some(t) = resize.recv() => {
                if let Some(r) = &rec {
                    let _ = r.event("r", &format!("{}x{}", t.cols, t.rows));
                }
                let _ = resize_tx.try_send(t);
            }
        }
    };
    Step::Ran(code)
}

/// What the user gave for break-glass.
#[derive(Debug, Clone, Copy)]
pub(super) struct BreakGlassRequest<'a> {
    pub(super) incident: Option<&'a str>,
    pub(super) reason: Option<&'a str>,
}

/// `break-glass TARGET --incident ID --reason TEXT`: an unrestricted shell for the grant's
/// duration, recorded, with critical audit events and webhook notifications.
pub(super) async fn break_glass(
    ctx: &Ctx<'_>,
    cid: &str,
    target: &TargetSpec,
    req: BreakGlassRequest<'_>,
    tty: Option<Tty>,
    resize: mpsc::Receiver<Tty>,
    read: russh::ChannelReadHalf,
) -> u32 {
    let (client, resolved, permit, mut ev) =
        match open(ctx, cid, target, Mode::BreakGlass, "breakglass").await {
            Ok(x) => x,
            Err(code) => return code,
        };
    let policy = ctx.gw.policy.load();
    let Some(grant) = policy
        .rules()
        .iter()
        .find(|r| r.name() == permit.rule())
        .and_then(|r| r.break_glass())
        .cloned()
    else {
        ctx.say(&format!(
            "refused: rule {} grants break-glass without its settings",
            permit.rule()
        ))
        .await;
        return DENIED_STATUS;
    };
    let reason = req.reason.map(str::trim).filter(|r| !r.is_empty());
    let incident = req.incident.map(str::trim).filter(|r| !r.is_empty());
    let refusal = if reason.is_none() {
        Some("break-glass needs a reason: --reason \"what is broken\"".to_owned())
    } else if grant.incident_required && incident.is_none() {
        Some(format!(
            "rule {} requires an incident: --incident ID",
            permit.rule()
        ))
    } else if grant.certificate_required && ctx.id.break_glass().is_none() {
        Some(format!(
            "rule {} requires a break-glass certificate (extension break-glass@jitsh.dev)",
            permit.rule()
        ))
    } else {
        None
    };
    ev["incident"] = json!(incident);
    ev["reason"] = json!(reason);
    ev["severity"] = json!("critical");
    if let Some(why) = refusal {
        ev["reasons"] = json!([why]);
        ctx.gw.record("breakglass.denied", ev);
        ctx.say(&format!("refused: {why}")).await;
        return DENIED_STATUS;
    }
    let rec = match open_recording(ctx, &resolved, &permit, "break-glass", tty, true) {
        Ok(r) => r,
        Err(line) => {
            ctx.say(&line).await;
            return 1;
        }
    };
    let until = SystemTime::now() + grant.max_duration;
    let until_text = humantime::format_rfc3339_seconds(until).to_string();
    ev["expires"] = json!(until_text);
    ev["recording"] = json!(rec.as_ref().map(|r| r.path().display().to_string()));
    ev["review_owed"] = json!(true);
    if let Err(line) = audit_or_refuse(ctx, "breakglass.start", ev.clone()) {
        ctx.say(&line).await;
        return 1;
    }
    ctx.gw
        .metrics
        .commands
        .get_or_create(&label("decision", "break-glass"))
        .inc();
    notify(ctx, &grant.notify, &ev).await;
    ctx.clock.tighten_with(
        grant.max_duration,
        permit.limits().idle_timeout,
        "the break-glass grant expired",
    );
    if let Some(r) = &rec {
        let _ = r.event(
            "m",
            &format!(
                "break-glass start: incident {} reason {}",
                incident.unwrap_or("-"),
                reason.unwrap_or("-")
            ),
        );
    }
    let banner = format!(
        "jitsh: BREAK-GLASS shell on {}/{}/{} for {} — incident {} — until {until_text}.\r\njitsh: everything in this session is recorded and will be reviewed.\r\n",
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
    let (stdin_r, pump) = pump_stdin(ctx, read, rec.clone());
    let shell = vec![BREAK_GLASS_SHELL.to_owned()];
    let res = exec::run_break_glass(
        &client,
        &permit,
        &shell,
        &resolved,
        tty,
        Some(resize),
        stdin_r,
        Recorded {
            inner: ctx.out(),
            rec: rec.clone(),
        },
        Recorded {
            inner: ctx.err(),
            rec: rec.clone(),
        },
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

/// Ends a shell or attach session: the exit status (a Kubernetes error as one line), the
/// recording's last marker and sync, and the end event.
async fn conclude(
    ctx: &Ctx<'_>,
    res: Result<u32, exec::KubeError>,
    rec: Option<&Arc<Recorder>>,
    marker: Option<&str>,
    mut ev: serde_json::Value,
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
    ev["exit"] = json!(code);
    ev["duration_ms"] = json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    ctx.gw.record(kind, ev);
    code
}

/// Copies the channel's input to a pipe for a shell or attach, recording it as `i` events.
fn pump_stdin(
    ctx: &Ctx<'_>,
    read: russh::ChannelReadHalf,
    rec: Option<Arc<Recorder>>,
) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>) {
    let (stdin_r, mut stdin_w) = tokio::io::duplex(64 * 1024);
    let mut input = reader(ctx, read);
    let pump = tokio::spawn(async move {
        while let Some(Input::Data(bytes)) = input.recv().await {
            if let Some(r) = &rec {
                let _ = r.event("i", &String::from_utf8_lossy(&bytes));
            }
            if stdin_w.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = stdin_w.shutdown().await;
    });
    (stdin_r, pump)
}

/// POSTs the break-glass event to each webhook (5 s each); results are audited, failures do not
/// stop the session (the audit log already has the critical event).
async fn notify(ctx: &Ctx<'_>, urls: &[String], ev: &serde_json::Value) {
    if urls.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("break-glass notification client: {e}");
            return;
        }
    };
    let mut body = ev.clone();
    body["event"] = json!("breakglass.start");
    for url in urls {
        let result = client.post(url).json(&body).send().await;
        let (ok, detail) = match result {
            Ok(r) => (r.status().is_success(), r.status().to_string()),
            Err(e) => (false, e.to_string()),
        };
        let mut n = ctx.base_event(ev["command"].as_str().unwrap_or_default());
        n["url"] = json!(url);
        n["delivered"] = json!(ok);
        n["status"] = json!(detail);
        n["severity"] = json!("critical");
        ctx.gw.record("breakglass.notify", n);
    }
}

/// `attach TARGET`: pods/attach as the user, recorded.
pub(super) async fn attach(
    ctx: &Ctx<'_>,
    cid: &str,
    target: &TargetSpec,
    tty: Option<Tty>,
    resize: mpsc::Receiver<Tty>,
    read: russh::ChannelReadHalf,
) -> u32 {
    let (client, resolved, permit, mut ev) =
        match open(ctx, cid, target, Mode::Attach, "attach").await {
            Ok(x) => x,
            Err(code) => return code,
        };
    let rec = match open_recording(ctx, &resolved, &permit, "attach", tty, true) {
        Ok(r) => r,
        Err(line) => {
            ctx.say(&line).await;
            return 1;
        }
    };
    ev["recording"] = json!(rec.as_ref().map(|r| r.path().display().to_string()));
    if let Err(line) = audit_or_refuse(ctx, "attach.start", ev.clone()) {
        ctx.say(&line).await;
        return 1;
    }
    ctx.clock
        .tighten(permit.limits().max_session, permit.limits().idle_timeout);
    let started = Instant::now();
    let (stdin_r, pump) = pump_stdin(ctx, read, rec.clone());
    let res = exec::attach(
        &client,
        &permit,
        &resolved,
        tty,
        Some(resize),
        stdin_r,
        Recorded {
            inner: ctx.out(),
            rec: rec.clone(),
        },
        Recorded {
            inner: ctx.err(),
            rec: rec.clone(),
        },
    )
    .await;
    pump.abort();
    conclude(ctx, res, rec.as_ref(), None, ev, started, "attach.end").await
}
