//! Starts a session for each channel request, in its own task, through the one lifecycle
//! ([`crate::session`]): a slot, the clock, the work raced against it, the ending. The exec
//! string becomes an [`Intent`] here and goes to the word, command, prompt or file code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use jitsh_certs::VerifiedIdentity;
use russh::Channel;
use russh::server::{ChannelOpenHandle, Msg};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::gateway::Gateway;
use crate::ids::{CommandId, SessionId};
use crate::intent::{self, Intent};
use crate::kube::exec::Tty;
use crate::session::{self, Ctx, Live, approval, attach, breakglass, command, prompt, words};

/// What every session of one connection shares.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) gw: Arc<Gateway>,
    pub(super) id: Arc<VerifiedIdentity>,
    pub(super) sid: SessionId,
    pub(super) peer: SocketAddr,
    /// The connection's span (`session`, `client_ip`, `user`).
    pub(super) span: tracing::Span,
}

impl Conn {
    fn ctx<'a>(
        &'a self,
        live: &'a Live,
        write: &'a session::Writer,
        via: &'static str,
        tty: bool,
    ) -> Ctx<'a> {
        Ctx {
            merged: AtomicBool::new(false),
            gw: &self.gw,
            id: &self.id,
            sid: &self.sid,
            peer: self.peer,
            write,
            clock: live.clock(),
            gone: live.gone(),
            via,
            tty,
        }
    }
}

/// A shell request with no target: one line of usage.
pub(super) fn no_target(ch: Channel<Msg>, tty: bool, span: tracing::Span) {
    tokio::spawn(
        async move {
            let (_read, write) = ch.split();
            session::say(
                &write,
                "give a target and a command, e.g. 'ssh jitsh payments/api-0 -- ps aux', or 'ssh jitsh help'",
                tty,
            )
            .await;
            session::close(&write, 2).await;
        }
        .instrument(span),
    );
}

/// An exec request: the exec string (or the certificate's force-command) as an intent.
pub(super) fn exec(
    conn: Conn,
    ch: Channel<Msg>,
    data: &[u8],
    tty: Option<Tty>,
    resize: tokio::sync::mpsc::Receiver<Tty>,
    gone: CancellationToken,
) {
    // A certificate's force-command replaces whatever the client asked for (as in sshd).
    let text = match conn.id.force_command() {
        Some(fc) => Ok(fc.to_owned()),
        None => std::str::from_utf8(data)
            .map(str::to_owned)
            .map_err(|e| e.valid_up_to()),
    };
    let span = conn.span.clone();
    tokio::spawn(
        session(
            conn,
            ch,
            gone,
            "exec",
            tty.is_some(),
            async move |ctx, read| match &text {
                Ok(t) => route(ctx, t, tty, resize, read).await,
                Err(at) => {
                    ctx.say(&format!(
                        "refused: the command line is not UTF-8 (byte {at})"
                    ))
                    .await;
                    2
                }
            },
        )
        .instrument(span),
    );
}

/// One session on a channel: a slot (or the one line saying why not), the work raced against
/// the session's clock, then exit-status, EOF and close — whatever the client's stdin is doing.
async fn session(
    conn: Conn,
    ch: Channel<Msg>,
    gone: CancellationToken,
    via: &'static str,
    tty: bool,
    work: impl AsyncFnOnce(&Ctx<'_>, russh::ChannelReadHalf) -> u32,
) {
    let (read, write) = ch.split();
    let code = match Live::open(&conn.gw, &conn.id, gone) {
        Err(msg) => {
            session::say(&write, &msg, tty).await;
            1
        }
        Ok(live) => {
            let ctx = conn.ctx(&live, &write, via, tty);
            ctx.until_end(work(&ctx, read)).await
        }
    };
    session::close(&write, code).await;
}

/// The `sftp` subsystem: the read-only file tree, as one session.
pub(super) fn sftp(conn: Conn, ch: Channel<Msg>, gone: CancellationToken) {
    let span = conn.span.clone();
    tokio::spawn(
        session(conn, ch, gone, "sftp", false, async |ctx, read| {
            crate::files::sftp_session(ctx, read).await
        })
        .instrument(span),
    );
}

/// A `direct-tcpip` channel: a port-forward to a pod, as one session (it takes a slot, counts
/// toward both session limits and drains on shutdown).
pub(super) fn forward(
    conn: Conn,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    host: &str,
    port: u32,
    originator: String,
    gone: CancellationToken,
) {
    let host = host.to_owned();
    let span = conn.span.clone();
    tokio::spawn(
        async move {
            let live = match Live::open(&conn.gw, &conn.id, gone) {
                Ok(l) => l,
                Err(msg) => {
                    crate::files::portforward::refuse(reply, &msg).await;
                    return;
                }
            };
            // The channel's writer exists only once it is accepted; the forward owns it.
            crate::files::portforward::run(
                &conn.gw,
                &conn.id,
                &conn.sid,
                conn.peer,
                &live,
                crate::files::portforward::Asked {
                    host,
                    port,
                    originator,
                },
                channel,
                reply,
            )
            .await;
        }
        .instrument(span),
    );
}

/// Sends the exec string where it belongs.
async fn route(
    ctx: &Ctx<'_>,
    text: &str,
    tty: Option<Tty>,
    resize: tokio::sync::mpsc::Receiver<Tty>,
    read: russh::ChannelReadHalf,
) -> u32 {
    let cid = CommandId::new();
    let span = tracing::info_span!("command", command_id = %cid);
    async {
        let intent = match intent::parse(text) {
            Ok(i) => i,
            Err(e) => {
                ctx.say(&e.to_string()).await;
                return 2;
            }
        };
        match intent {
            Intent::Help => {
                ctx.print(words::HELP).await;
                0
            }
            Intent::Whoami => words::whoami(ctx).await,
            Intent::Pods { namespace } => words::pods(ctx, &cid, namespace).await,
            Intent::Logs { target, options } => words::logs(ctx, &cid, &target, &options).await,
            Intent::Exec { target, line } => {
                let ch = command::Channel { tty, resize, read };
                command::one_shot(ctx, &cid, &target, &line, approval::Why::RUN, ch).await
            }
            Intent::Request {
                target,
                reason,
                incident,
                wait,
                line,
            } => {
                let why = approval::Why::asked(&reason, incident.as_deref(), wait);
                let ch = command::Channel { tty, resize, read };
                approval::request(ctx, &cid, &target, &line, why, ch).await
            }
            Intent::Grant {
                rule,
                duration,
                reason,
                incident,
                wait,
            } => {
                let why = approval::Why::asked(&reason, incident.as_deref(), wait);
                approval::grant(ctx, &cid, &rule, duration, why).await
            }
            Intent::Requests { all, json } => approval::list(ctx, &cid, all, json).await,
            Intent::Approve { id, comment } => {
                approval::approve(ctx, &cid, &id, comment.as_deref()).await
            }
            Intent::Deny { id, reason } => approval::deny(ctx, &cid, &id, &reason).await,
            Intent::Revoke { id } => approval::revoke(ctx, &cid, &id).await,
            Intent::ScpSource {
                paths,
                preserve,
                recursive,
            } => crate::files::scp::source(ctx, &cid, &paths, preserve, recursive, read).await,
            Intent::ScpSink => crate::files::scp::refuse_sink(ctx, &cid).await,
            Intent::Prompt { target } => {
                prompt::prompt(ctx, &cid, &target, tty, resize, read).await
            }
            Intent::BreakGlass {
                target,
                incident,
                reason,
            } => {
                let req = breakglass::BreakGlassRequest {
                    incident: incident.as_deref(),
                    reason: reason.as_deref(),
                };
                breakglass::break_glass(ctx, &cid, &target, req, tty, resize, read).await
            }
            Intent::Attach { target } => {
                attach::attach(ctx, &cid, &target, tty, resize, read).await
            }
        }
    }
    .instrument(span)
    .await
}
