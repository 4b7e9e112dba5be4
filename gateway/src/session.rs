//! One session lifecycle for every kind (exec, prompt, words, sftp/scp, port-forward, attach,
//! break-glass, logs): a slot → the clock → the work, raced against the clock → the end event →
//! exit-status, EOF and close. The pieces below ([`command`], [`words`], [`prompt`], …) run
//! inside it with a [`Ctx`].

pub(crate) mod approval;
pub(crate) mod attach;
pub(crate) mod breakglass;
pub(crate) mod command;
pub(crate) mod deadline;
pub(crate) mod prompt;
pub(crate) mod terminal;
pub(crate) mod words;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use jitsh_broker_policy::{Decision, Subject};
use jitsh_certs::VerifiedIdentity;
use prometheus_client::metrics::counter::Counter;
use russh::server::Msg;
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

use crate::audit::Event;
use crate::gateway::Gateway;
use crate::ids::{CommandId, SessionId};
use crate::intent::TargetSpec;
use crate::kube::{Impersonated, KubeError, Resolved};
use crate::limits::SessionSlot;
use crate::telemetry::{Direction, Outcome};
pub(crate) use deadline::{Clock, EndReason, Hold, revoked};

/// How long a session whose client has gone may take to finish on its own.
const GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Exit status of a command the policy denied.
pub(crate) const DENIED_STATUS: u32 = 126;
/// Exit status of a session the gateway ended (certificate expiry, limits, idle, shutdown).
pub(crate) const ENDED_STATUS: u32 = 255;

/// The channel's writing half.
pub(crate) type Writer = russh::ChannelWriteHalf<Msg>;

/// A running session: its slot, its clock, and the token that says its client went away.
pub(crate) struct Live {
    _slot: SessionSlot,
    clock: Arc<Clock>,
    gone: CancellationToken,
}

impl Live {
    /// Takes a slot for the identity's user, or says why not (one line for the user).
    /// `gone` is cancelled when the client closes the channel or the connection drops.
    pub(crate) fn open(
        gw: &Gateway,
        id: &VerifiedIdentity,
        gone: CancellationToken,
    ) -> Result<Live, String> {
        if deadline::revoked(gw, id.serial(), id.key_id()) {
            return Err(EndReason::Revoked.to_string());
        }
        let slot = gw
            .limiter()
            .open_session(id.username(), gw.shutting_down())
            .map_err(|r| r.to_string())?;
        Ok(Live {
            _slot: slot,
            clock: Clock::new(gw, id),
            gone,
        })
    }

    /// Cancelled when the client has gone (channel closed, connection dropped).
    pub(crate) fn gone(&self) -> &CancellationToken {
        &self.gone
    }

    /// The session's clock.
    pub(crate) fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }
}

/// Everything one session's code needs.
pub(crate) struct Ctx<'a> {
    /// Messages go to stdout, in order with everything else (a terminal session).
    pub(crate) merged: AtomicBool,
    pub(crate) gw: &'a Arc<Gateway>,
    pub(crate) id: &'a VerifiedIdentity,
    pub(crate) sid: &'a SessionId,
    pub(crate) peer: SocketAddr,
    pub(crate) write: &'a Writer,
    pub(crate) clock: &'a Arc<Clock>,
    /// Cancelled when the client has gone: the session ends at once, and what it started in
    /// the pod with it.
    pub(crate) gone: &'a CancellationToken,
    /// `exec`, `sftp`, `portforward`: named in the end event.
    pub(crate) via: &'static str,
    /// The channel has a terminal: lines end in `\r\n` (raw mode), else in `\n`.
    pub(crate) tty: bool,
}

/// Ends the channel as sshd does: exit status, EOF, close.
pub(crate) async fn close(write: &Writer, code: u32) {
    let _ = write.exit_status(code).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

/// One `jitsh: …` line on stderr.
/// The end of a line the client sees: `\r\n` on a terminal (raw mode), `\n` without one.
pub(crate) fn eol(tty: bool) -> &'static str {
    if tty { "\r\n" } else { "\n" }
}

/// One `jitsh: …` line on stderr (`tty`: the channel has a terminal).
pub(crate) async fn say(write: &Writer, line: &str, tty: bool) {
    let _ = write
        .extended_data_bytes(1, format!("jitsh: {line}{}", eol(tty)))
        .await;
}

impl Ctx<'_> {
    /// Runs `work` until it finishes or the session must end (then `Err` with the reason,
    /// `work` dropped — which ends what it started in the pod).
    pub(crate) async fn race<T>(&self, work: impl Future<Output = T>) -> Result<T, EndReason> {
        let write = self.write;
        let terminal = self.via != "portforward";
        let (lead, end) = if self.tty {
            ("\r\n", "\r\n")
        } else {
            ("", "\n")
        };
        let warn = |line: String| async move {
            if terminal {
                let _ = write
                    .extended_data_bytes(1, format!("{lead}jitsh: {line}{end}"))
                    .await;
            }
        };
        // A client that has gone ends the session — after a moment, so work that ends with the
        // channel anyway (a transfer, its end event) still finishes. sftp and forwards read
        // their channel to its end themselves, and a client's close is their normal end.
        let gone = async {
            if self.via == "exec" {
                self.gone.cancelled().await;
                tokio::time::sleep(GONE_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            out = work => Ok(out),
            reason = self.clock.expired(self.gw, warn) => Err(reason),
            () = gone => Err(EndReason::ClientGone),
        }
    }

    /// Runs `work` to its exit status, or ends the session with its reason: one line for the
    /// user, a `session.end` event, [`ENDED_STATUS`].
    pub(crate) async fn until_end(&self, work: impl Future<Output = u32>) -> u32 {
        match self.race(work).await {
            Ok(code) => code,
            Err(reason) => {
                self.ended(&reason).await;
                ENDED_STATUS
            }
        }
    }

    /// Says why the session ended and records `session.end`.
    pub(crate) async fn ended(&self, reason: &EndReason) {
        if self.via != "portforward" {
            let _ = self
                .write
                .extended_data_bytes(
                    1,
                    format!(
                        "{}jitsh: session closed: {reason}{}",
                        if self.tty { "\r\n" } else { "" },
                        eol(self.tty)
                    ),
                )
                .await;
        }
        tracing::info!(reason = %reason, label = reason.label(), "session ended by the gateway");
        let ev = Event {
            reason: Some(reason.to_string()),
            code: Some(reason.label().to_owned()),
            via: Some(self.via.to_owned()),
            ..self.identity_event()
        };
        self.gw.record("session.end", &ev);
    }

    /// One `jitsh: …` line for the user: on stderr, or in order on stdout in a terminal session.
    pub(crate) async fn say(&self, line: &str) {
        if self.merged.load(Ordering::Relaxed) {
            let _ = self
                .write
                .data_bytes(format!("jitsh: {line}{}", eol(self.tty)).into_bytes())
                .await;
        } else {
            say(self.write, line, self.tty).await;
        }
    }

    /// A status line that redraws in place on a terminal (`""` clears it).
    pub(crate) async fn status(&self, line: &str) {
        let text = if line.is_empty() {
            "\r\x1b[K".to_owned()
        } else {
            format!("\rjitsh: {line}\x1b[K")
        };
        if self.merged.load(Ordering::Relaxed) {
            let _ = self.write.data_bytes(text.into_bytes()).await;
        } else {
            let _ = self.write.extended_data_bytes(1, text.into_bytes()).await;
        }
    }

    /// Text on stdout.
    pub(crate) async fn print(&self, text: &str) {
        let _ = self.write.data_bytes(text.as_bytes().to_vec()).await;
    }

    /// Who asks, as the policy sees it.
    pub(crate) fn subject(&self) -> Subject {
        let who = crate::broker::principal(self.id);
        let grants = self
            .gw
            .broker()
            .held(&self.gw.policy(), &who)
            .into_iter()
            .map(|(rule, _)| rule)
            .collect();
        Subject {
            grants,
            ..who.subject
        }
    }

    /// The session and identity fields every event carries.
    pub(crate) fn identity_event(&self) -> Event {
        Event {
            session: Some(self.sid.clone()),
            identity: Some(self.id.identity().to_owned()),
            user: Some(self.id.username().to_owned()),
            groups: Some(self.id.groups().to_vec()),
            serial: Some(self.id.serial()),
            key_id: Some(self.id.key_id().to_owned()),
            source: Some(self.peer.to_string()),
            ..Event::default()
        }
    }

    /// [`Ctx::identity_event`] for one command.
    pub(crate) fn event(&self, cid: &CommandId) -> Event {
        Event {
            command: Some(cid.clone()),
            ..self.identity_event()
        }
    }

    /// [`Ctx::event`] on a resolved target.
    pub(crate) fn target_event(&self, cid: &CommandId, r: &Resolved) -> Event {
        Event {
            namespace: Some(r.namespace.clone()),
            pod: Some(r.pod.clone()),
            container: Some(r.container.clone()),
            ..self.event(cid)
        }
    }

    /// A command's streams: `stdin`, and the channel's stdout and stderr — counted, marking
    /// activity, and copied into the recording when there is one.
    pub(crate) fn streams<I>(
        &self,
        tty: Option<crate::kube::exec::Tty>,
        resize: Option<tokio::sync::mpsc::Receiver<crate::kube::exec::Tty>>,
        stdin: I,
        rec: Option<&Arc<crate::recording::Recorder>>,
    ) -> crate::kube::exec::Streams<
        I,
        impl AsyncWrite + Unpin + Send + 'static,
        impl AsyncWrite + Unpin + Send + 'static,
    > {
        crate::kube::exec::Streams {
            tty,
            resize,
            stdin,
            stdout: crate::recording::Recorded {
                inner: self.out(),
                rec: rec.cloned(),
            },
            stderr: crate::recording::Recorded {
                inner: self.err(),
                rec: rec.cloned(),
            },
        }
    }

    /// Stdout for a command: counted, marking activity.
    pub(crate) fn out(&self) -> Counted<impl AsyncWrite + Unpin + Send + 'static> {
        self.counted(self.write.make_writer())
    }

    /// Stderr for a command: counted, marking activity.
    pub(crate) fn err(&self) -> Counted<impl AsyncWrite + Unpin + Send + 'static> {
        self.counted(self.write.make_writer_ext(Some(1)))
    }

    fn counted<W>(&self, inner: W) -> Counted<W> {
        Counted {
            inner,
            clock: self.clock.clone(),
            bytes: self.bytes(Direction::Out),
        }
    }

    /// The byte counter for a direction.
    pub(crate) fn bytes(&self, direction: Direction) -> Counter {
        self.gw.metrics().bytes(direction)
    }

    /// A client acting as the user for one command (its id is the `Audit-ID`).
    pub(crate) fn impersonate(&self, cid: &CommandId) -> Result<Impersonated, KubeError> {
        self.gw.kube().impersonate(self.id, cid.as_str())
    }

    /// A client as the user, and the target resolved through it.
    pub(crate) async fn resolve(
        &self,
        cid: &CommandId,
        target: &TargetSpec,
    ) -> Result<(Impersonated, Resolved), KubeError> {
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| self.gw.settings().default_namespace.clone());
        let looked_up = async {
            let k = self.impersonate(cid)?;
            let resolved = crate::kube::pods::resolve(
                &k,
                &namespace,
                &target.pod,
                target.container.as_deref(),
            )
            .await?;
            Ok((k, resolved))
        };
        let res: Result<_, KubeError> = looked_up.await;
        if let Err(e) = &res {
            // Kubernetes' answer (403, 404, unreachable) is evidence too: audited and counted.
            let ev = Event {
                namespace: Some(namespace.clone()),
                pod: Some(target.pod.clone()),
                container: target.container.clone(),
                error: Some(e.to_string()),
                code: Some(e.label().to_owned()),
                status: e.status().map(|s| s.to_string()),
                ..self.event(cid)
            };
            self.gw.record("kube.refused", &ev);
            self.gw.metrics().command(Outcome::KubeRefused);
            tracing::info!(code = e.label(), "kubernetes refused: {e}");
        }
        res
    }

    /// Records a denial (`kind`), counts it and tells the user why in one line; the status to
    /// exit with.
    pub(crate) async fn deny(&self, kind: &str, ev: Event, d: &Decision, place: &str) -> u32 {
        self.deny_saying(kind, ev, d, &denial_line(d, place)).await
    }

    /// [`Ctx::deny`] with the line to show.
    pub(crate) async fn deny_saying(
        &self,
        kind: &str,
        mut ev: Event,
        d: &Decision,
        line: &str,
    ) -> u32 {
        ev.rule = d.rule().map(str::to_owned);
        ev.reasons = Some(d.reasons().to_vec());
        self.gw.record(kind, &ev);
        self.gw.metrics().command(Outcome::Deny);
        tracing::info!(kind, rule = d.rule().unwrap_or("-"), "denied");
        self.say(line).await;
        DENIED_STATUS
    }
}

/// The one line a denial shows.
pub(crate) fn denial_line(d: &Decision, place: &str) -> String {
    let reasons = d.reasons().join("; ");
    match d.rule() {
        // A refused construct: the parser's message says what and where; nothing ran.
        None if d.is_refused_syntax() => format!("{reasons} (nothing was run)"),
        // The rule applies; the request lacks what it requires (the reason says what to add).
        Some(_) if d.is_unmet_requirement() => format!("refused: {reasons}"),
        None => format!("denied: {reasons} on {place} (no policy rule grants it)"),
        Some(_) if d.reasons_name_rule() => format!("denied: {reasons}"),
        Some(rule) => format!("denied: {reasons} on {place} (policy rule {rule})"),
    }
}

/// A writer that counts bytes and marks activity.
pub(crate) struct Counted<W> {
    inner: W,
    clock: Arc<Clock>,
    bytes: Counter,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.clock.touch();
            self.bytes.inc_by(n as u64);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
