//! The filtered prompt (`ssh -t gw TARGET`) and line mode (`ssh gw TARGET < commands`): every
//! line parsed and decided like an exec, each allowed line its own pods/exec as the user.

use std::sync::Arc;

use jitsh_broker_policy::{MAX_LINE_BYTES, Mode, Policy};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::command::{self, Io};
use super::terminal::{Input, open, open_recording, reader, show};
use super::{Ctx, DENIED_STATUS};
use crate::audit::Event;
use crate::ids::CommandId;
use crate::intent::TargetSpec;
use crate::kube::exec::Tty;
use crate::lineedit::{Edit, Editor};
use crate::recording::Recorder;

/// `ssh [-t] USER@gw TARGET`: the filtered prompt (TTY) or line mode (commands on stdin).
pub(crate) async fn prompt(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    target: &TargetSpec,
    mut tty: Option<Tty>,
    mut resize: mpsc::Receiver<Tty>,
    read: russh::ChannelReadHalf,
) -> u32 {
    let opened = match open(ctx, cid, target, Policy::permit_shell, |_| {}, "shell").await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let (resolved, permit) = (&opened.resolved, &opened.permit);
    let mut ev = opened.ev.clone();
    let rec = match open_recording(
        ctx,
        resolved,
        permit.rule(),
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
    ev.tty = Some(tty.is_some());
    ev.recording = rec.as_ref().map(|r| r.path().display().to_string());
    if let Err(e) = ctx.gw.audit_first("shell.start", &ev) {
        ctx.say(&e.to_string()).await;
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
        // Approvers are told what waits for them.
        let waiting = ctx
            .gw
            .broker()
            .waiting_for(&ctx.gw.policy(), &crate::broker::principal(ctx.id));
        let waiting = if waiting > 0 {
            format!(
                "jitsh: {waiting} approval request(s) wait for you: 'ssh GATEWAY requests', then approve or deny.\r\n"
            )
        } else {
            String::new()
        };
        let banner = format!(
            "jitsh: filtered session on {}/{}/{} as {} (policy rule {}){}.\r\nEach line is checked against the policy and runs as its own command; type 'help' for what is allowed, 'exit' to leave.\r\n{waiting}",
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
                            Edit::Echo(c) => {
                                let mut buf = [0u8; 4];
                                ok = show(ctx, rec_ref, c.encode_utf8(&mut buf).as_bytes()).await;
                            }
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
                                    let _ = r.event("i", &format!("{}\r", ctx.gw.redactor().redact(&words).join(" ")));
                                }
                                lines += 1;
                                match run_line(ctx, &opened, &line, tty, &mut input, &mut resize, rec.clone(), true).await {
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
        // A line is at most MAX_LINE_BYTES (what the parser takes): a longer one is refused with
        // one line and skipped to its newline, so neither memory nor the scan grows with it.
        let mut pending: Vec<u8> = Vec::new();
        let mut eof = false;
        let mut skipping = false;
        while !eof {
            match input.recv().await {
                Some(Input::Data(bytes)) => pending.extend_from_slice(&bytes),
                Some(Input::Eof) | None => eof = true,
            }
            if skipping {
                match pending.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        pending.drain(..=i);
                        skipping = false;
                    }
                    None => {
                        pending.clear();
                        continue;
                    }
                }
            }
            if !pending.contains(&b'\n') && pending.len() > MAX_LINE_BYTES {
                ctx.say(&format!(
                    "refused: a line longer than {MAX_LINE_BYTES} bytes (nothing was run)"
                ))
                .await;
                last = DENIED_STATUS;
                pending.clear();
                skipping = true;
                continue;
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
                        &format!("{}\n", ctx.gw.redactor().redact(&words).join(" ")),
                    );
                }
                lines += 1;
                let mut none = mpsc::channel(1).1;
                match run_line(
                    ctx,
                    &opened,
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
    let end = Event {
        lines: Some(lines),
        ..ctx.event(cid)
    };
    ctx.gw.record("shell.end", &end);
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
#[expect(
    clippy::too_many_arguments,
    reason = "the line, its target, the terminal and both input queues"
)]
async fn run_line(
    ctx: &Ctx<'_>,
    opened: &super::terminal::Opened<jitsh_broker_policy::permit::Shell>,
    line: &str,
    tty: Option<Tty>,
    input: &mut mpsc::Receiver<Input>,
    resize: &mut mpsc::Receiver<Tty>,
    rec: Option<Arc<Recorder>>,
    interactive: bool,
) -> Step {
    let resolved = &opened.resolved;
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
            let policy = ctx.gw.policy();
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
    let cid = CommandId::new();
    let ev = Event {
        interactive: Some(true),
        ..ctx.target_event(&cid, resolved)
    };
    let place = format!("{}/{}", resolved.namespace, resolved.pod);
    let (parsed, ev) = match command::parse(ctx, ev, trimmed, &place, rec.as_ref()).await {
        Ok(x) => x,
        Err(code) => return Step::Ran(code),
    };
    let k = match ctx.impersonate(&cid) {
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
    let run = command::decided(
        ctx,
        &k,
        resolved,
        &parsed,
        ev,
        io,
        super::approval::Why::RUN,
    );
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
