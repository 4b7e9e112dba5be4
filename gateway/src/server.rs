//! The russh server: certificate-only auth through the certs verifier, connection and session
//! limits, exec requests parsed, decided by broker-policy, audited, and run through
//! [`crate::exec`]; sessions end at the certificate's expiry, the policy's maximum, the idle
//! timeout or shutdown, each with a reason on the terminal.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use jitsh_broker_policy::{Action, Decision, Mode, Policy, Request, Subject, Target};
use jitsh_certs::{Presented, VerifiedIdentity, Verifier};
use prometheus_client::metrics::counter::Counter;
use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg};
use serde_json::json;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::admin::{Metrics, label};
use crate::audit::{AuditLog, Redactor};
use crate::config::LimitsConfig;
use crate::exec::{self, KubeAccess, Tty};
use crate::intent::{self, Intent, TargetSpec};

mod interactive;

/// Exit status of a command the policy denied.
pub const DENIED_STATUS: u32 = 126;
/// Exit status of a session the gateway ended (certificate expiry, limits, idle, shutdown).
pub const ENDED_STATUS: u32 = 255;

/// Settings that do not change while the gateway runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace when the target names none.
    pub default_namespace: String,
    /// Limits and timeouts.
    pub limits: LimitsConfig,
    /// Where recordings go.
    pub recordings: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Tracking {
    conns_by_ip: HashMap<IpAddr, usize>,
    failures_by_ip: HashMap<IpAddr, VecDeque<Instant>>,
    sessions: usize,
    sessions_by_user: HashMap<String, usize>,
}

/// Everything a connection needs.
#[derive(Debug)]
pub struct Gateway {
    /// Certificate verifier (swapped when the revocation file changes).
    pub verifier: arc_swap::ArcSwap<Verifier>,
    /// The policy (swapped when the policy file changes).
    pub policy: arc_swap::ArcSwap<Policy>,
    /// Audit log.
    pub audit: AuditLog,
    /// Kubernetes access.
    pub kube: KubeAccess,
    /// Settings.
    pub settings: Settings,
    /// Argv redaction for audit events.
    pub redactor: Redactor,
    /// Metrics.
    pub metrics: Metrics,
    track: Mutex<Tracking>,
    drained: tokio::sync::Notify,
    /// Woken when the revocation list changes, so running sessions re-check their certificate.
    pub(crate) revocations_changed: tokio::sync::Notify,
    stopping: CancellationToken,
    kill: CancellationToken,
}

impl Gateway {
    /// A gateway with nothing running.
    pub fn new(
        verifier: Verifier,
        policy: Policy,
        audit: AuditLog,
        kube: KubeAccess,
        settings: Settings,
        redactor: Redactor,
    ) -> Self {
        Gateway {
            verifier: arc_swap::ArcSwap::from_pointee(verifier),
            policy: arc_swap::ArcSwap::from_pointee(policy),
            audit,
            kube,
            settings,
            redactor,
            metrics: Metrics::default(),
            track: Mutex::new(Tracking::default()),
            drained: tokio::sync::Notify::new(),
            revocations_changed: tokio::sync::Notify::new(),
            stopping: CancellationToken::new(),
            kill: CancellationToken::new(),
        }
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.stopping.is_cancelled()
    }

    fn tracking(&self) -> std::sync::MutexGuard<'_, Tracking> {
        self.track
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a new connection from `ip`, or says why not.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, &'static str> {
        let l = &self.settings.limits;
        let mut t = self.tracking();
        if let Some(f) = t.failures_by_ip.get_mut(&ip) {
            let window = l.auth_failure_window;
            while f.front().is_some_and(|at| at.elapsed() > window) {
                f.pop_front();
            }
            if f.len() >= l.max_auth_failures_per_ip {
                return Err("auth-failures");
            }
        }
        let n = t.conns_by_ip.entry(ip).or_default();
        if *n >= l.max_connections_per_ip {
            return Err("connections-per-ip");
        }
        *n += 1;
        Ok(ConnGuard {
            gw: self.clone(),
            ip,
        })
    }

    fn auth_failed(&self, ip: IpAddr, code: &str) {
        self.metrics
            .auth_failures
            .get_or_create(&label("reason", code))
            .inc();
        let mut t = self.tracking();
        let f = t.failures_by_ip.entry(ip).or_default();
        f.push_back(Instant::now());
        while f.len() > self.settings.limits.max_auth_failures_per_ip {
            f.pop_front();
        }
    }

    /// Opens a session slot for `user`, or says why not.
    pub(crate) fn open_session(self: &Arc<Self>, user: &str) -> Result<SessionGuard, String> {
        if self.shutting_down() {
            return Err("refused: the gateway is shutting down".into());
        }
        let l = &self.settings.limits;
        let mut t = self.tracking();
        if t.sessions >= l.max_sessions {
            return Err(format!(
                "refused: the gateway is at its limit of {} sessions; try again shortly",
                l.max_sessions
            ));
        }
        let mine = t.sessions_by_user.entry(user.to_owned()).or_default();
        if *mine >= l.max_sessions_per_user {
            return Err(format!(
                "refused: you already have {} sessions open (the limit per user)",
                l.max_sessions_per_user
            ));
        }
        *mine += 1;
        t.sessions += 1;
        self.metrics.active_sessions.inc();
        Ok(SessionGuard {
            gw: self.clone(),
            user: user.to_owned(),
        })
    }

    async fn wait_drained(&self) {
        loop {
            let n = self.drained.notified();
            if self.tracking().sessions == 0 {
                return;
            }
            n.await;
        }
    }

    pub(crate) fn record(&self, kind: &str, fields: serde_json::Value) {
        if let Err(e) = self.audit.record(kind, fields) {
            tracing::error!("{e}");
        }
    }
}

struct ConnGuard {
    gw: Arc<Gateway>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut t = self.gw.tracking();
        if let Some(n) = t.conns_by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.conns_by_ip.remove(&self.ip);
            }
        }
    }
}

pub(crate) struct SessionGuard {
    gw: Arc<Gateway>,
    user: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        {
            let mut t = self.gw.tracking();
            t.sessions = t.sessions.saturating_sub(1);
            if let Some(n) = t.sessions_by_user.get_mut(&self.user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    t.sessions_by_user.remove(&self.user);
                }
            }
        }
        self.gw.metrics.active_sessions.dec();
        self.gw.drained.notify_waiters();
    }
}

/// The russh server configuration: modern algorithms only, certificate auth only, the host
/// certificate presented.
pub fn ssh_config(
    host_key: russh::keys::PrivateKey,
    host_certificate: Option<Certificate>,
    limits: &LimitsConfig,
) -> russh::server::Config {
    use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
    use std::borrow::Cow;
    let mut methods = russh::MethodSet::empty();
    methods.push(russh::MethodKind::PublicKey);
    let preferred = russh::Preferred {
        kex: Cow::Borrowed(&[
            russh::kex::MLKEM768X25519_SHA256,
            russh::kex::CURVE25519,
            russh::kex::CURVE25519_PRE_RFC_8731,
            russh::kex::EXTENSION_SUPPORT_AS_SERVER,
            russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        key: Cow::Borrowed(&[
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]),
        cipher: Cow::Borrowed(&[
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_256_GCM,
            russh::cipher::AES_128_GCM,
        ]),
        mac: Cow::Borrowed(&[russh::mac::HMAC_SHA512_ETM, russh::mac::HMAC_SHA256_ETM]),
        compression: Cow::Borrowed(&[russh::compression::NONE]),
        ..russh::Preferred::DEFAULT
    };
    russh::server::Config {
        methods,
        preferred,
        // Rejections take a constant 50 ms: `ssh -i KEY` offers the plain key before the
        // certificate, so this is paid on ordinary logins too.
        auth_rejection_time: Duration::from_millis(50),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        certificates: host_certificate.into_iter().collect(),
        // A backstop: sessions end on the gateway's own idle timer, with a message, first.
        inactivity_timeout: Some(limits.idle_timeout + Duration::from_secs(60)),
        max_auth_attempts: 6,
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 64 * 1024,
        channel_buffer_size: 256,
        ..Default::default()
    }
}

/// Accepts connections until `shutdown` resolves; then stops accepting, lets running sessions
/// finish for the configured grace period, ends the rest with a message, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the sessions we have.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let guard = match gw.admit(peer.ip()) {
            Ok(g) => g,
            Err(reason) => {
                gw.metrics
                    .connections_refused
                    .get_or_create(&label("reason", reason))
                    .inc();
                tracing::info!(%peer, reason, "connection refused");
                drop(stream);
                continue;
            }
        };
        gw.metrics.connections.inc();
        let _ = stream.set_nodelay(true);
        let authed = Arc::new(AtomicBool::new(false));
        let plain_key_user = Arc::new(Mutex::new(None));
        let session_id = new_id();
        let handler = Conn {
            gw: gw.clone(),
            peer,
            identity: None,
            channels: HashMap::new(),
            ptys: HashMap::new(),
            resize: HashMap::new(),
            session_id: session_id.clone(),
            authed: authed.clone(),
            plain_key_user: plain_key_user.clone(),
        };
        let config = config.clone();
        let pre_auth = gw.settings.limits.pre_auth_timeout;
        let gw = gw.clone();
        tokio::spawn(async move {
            let _guard = guard;
            connection(config, stream, handler, pre_auth, &authed).await;
            let plain = plain_key_user
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let (false, Some(user)) = (authed.load(Ordering::Relaxed), plain) {
                gw.auth_failed(peer.ip(), "plain_key");
                gw.record(
                    "auth.rejected",
                    json!({"session": session_id, "user": user, "source": peer.to_string(), "reason": "plain public keys are not accepted; a certificate is required", "code": "plain_key"}),
                );
            }
        });
    }
    drop(listener);
    gw.stopping.cancel();
    let grace = gw.settings.limits.shutdown_grace;
    gw.record(
        "gateway.stopping",
        json!({"active_sessions": gw.tracking().sessions, "grace_seconds": grace.as_secs()}),
    );
    let finished = tokio::time::timeout(grace, gw.wait_drained()).await.is_ok();
    gw.kill.cancel();
    if !finished {
        let _ = tokio::time::timeout(Duration::from_secs(3), gw.wait_drained()).await;
    }
    gw.record("gateway.stopped", json!({"sessions_cut": !finished}));
    Ok(())
}

/// A stream the gateway can cut: once `kill` is cancelled, reads and writes fail, so russh's
/// session task (which the gateway cannot abort) ends.
struct Killable<S> {
    inner: S,
    killed: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl<S> Killable<S> {
    fn check(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        self.killed.as_mut().poll(cx).is_ready().then(|| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed by the gateway",
            )
        })
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Killable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connection(
    config: Arc<russh::server::Config>,
    stream: tokio::net::TcpStream,
    handler: Conn,
    pre_auth: Duration,
    authed: &AtomicBool,
) {
    let peer = handler.peer;
    let kill = CancellationToken::new();
    let stream = Killable {
        inner: stream,
        killed: Box::pin(kill.clone().cancelled_owned()),
    };
    let running =
        match tokio::time::timeout(pre_auth, russh::server::run_stream(config, stream, handler))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no SSH identification within the pre-auth timeout");
                return;
            }
        };
    let handle = running.handle();
    tokio::pin!(running);
    let deadline = tokio::time::sleep(pre_auth);
    tokio::pin!(deadline);
    tokio::select! {
        _ = &mut running => {}
        () = &mut deadline => {
            if authed.load(Ordering::Relaxed) {
                let _ = running.await;
            } else {
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "authentication took too long".into(),
                        String::new(),
                    )
                    .await;
                if tokio::time::timeout(Duration::from_secs(1), &mut running)
                    .await
                    .is_err()
                {
                    kill.cancel();
                    let _ = running.await;
                }
            }
        }
    }
}

pub(crate) fn new_id() -> String {
    let b: [u8; 12] = rand::random();
    hex::encode(b)
}

struct Conn {
    gw: Arc<Gateway>,
    peer: SocketAddr,
    identity: Option<Arc<VerifiedIdentity>>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    ptys: HashMap<ChannelId, Tty>,
    resize: HashMap<ChannelId, tokio::sync::mpsc::Sender<Tty>>,
    session_id: String,
    authed: Arc<AtomicBool>,
    plain_key_user: Arc<Mutex<Option<String>>>,
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // `ssh -i KEY` offers the plain key before KEY-cert.pub: not a failure unless the
        // connection never authenticates (counted and audited when it ends).
        let mut u = self
            .plain_key_user
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *u = Some(user.to_owned());
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let presented = Presented {
            certificate,
            username: user,
            peer: Some(self.peer.ip()),
            proven_key: certificate.public_key(),
            now: SystemTime::now(),
        };
        match self.gw.verifier.load().verify(&presented) {
            Ok(id) => {
                // A failure here is reported when a command is attempted (fail closed then).
                self.gw.record(
                    "auth.accepted",
                    json!({"session": self.session_id, "user": user, "identity": id.identity(), "groups": id.groups(), "serial": id.serial(), "key_id": id.key_id(), "source": self.peer.to_string()}),
                );
                self.identity = Some(Arc::new(id));
                self.authed.store(true, Ordering::Relaxed);
                Ok(Auth::Accept)
            }
            Err(r) => {
                tracing::info!(peer = %self.peer, user, "certificate rejected: {r}");
                self.gw.auth_failed(self.peer.ip(), r.code());
                self.gw.record(
                    "auth.rejected",
                    json!({"session": self.session_id, "user": user, "source": self.peer.to_string(), "reason": r.to_string(), "code": r.code()}),
                );
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.ptys.insert(channel, tty(col_width, row_height));
        session.channel_success(channel)?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.resize.get(&channel) {
            let _ = tx.try_send(tty(col_width, row_height));
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        if let Some(ch) = self.channels.remove(&channel) {
            tokio::spawn(async move {
                let _ = ch
                    .extended_data_bytes(1, "jitsh: give a target and a command, e.g. 'ssh jitsh payments/api-0 -- ps aux', or 'ssh jitsh help'\r\n")
                    .await;
                let _ = ch.exit_status(2).await;
                let _ = ch.eof().await;
                let _ = ch.close().await;
            });
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(ch), Some(id)) = (self.channels.remove(&channel), self.identity.clone()) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let tty = self.ptys.get(&channel).copied();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        self.resize.insert(channel, tx);
        // A certificate's force-command replaces whatever the client asked for (as in sshd).
        let text = match id.force_command() {
            Some(fc) => Ok(fc.to_owned()),
            None => std::str::from_utf8(data)
                .map(str::to_owned)
                .map_err(|e| e.valid_up_to()),
        };
        let gw = self.gw.clone();
        let sid = self.session_id.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            let (read, write) = ch.split();
            let code = match gw.open_session(id.username()) {
                Err(msg) => {
                    say(&write, &msg).await;
                    1
                }
                Ok(_slot) => {
                    let clock = Arc::new(Clock::new(&gw, &id));
                    let ctx = Ctx {
                        merged: AtomicBool::new(false),
                        gw: &gw,
                        id: &id,
                        sid: &sid,
                        peer,
                        write: &write,
                        clock: &clock,
                    };
                    let run = async {
                        match &text {
                            Ok(t) => run_command(&ctx, t, tty, rx, read).await,
                            Err(at) => {
                                say(
                                    &write,
                                    &format!("refused: the command line is not UTF-8 (byte {at})"),
                                )
                                .await;
                                2
                            }
                        }
                    };
                    tokio::select! {
                        code = run => code,
                        reason = clock.expired(&gw, &id, &write) => {
                            let _ = write
                                .extended_data_bytes(1, format!("\r\njitsh: session closed: {reason}\r\n"))
                                .await;
                            gw.record(
                                "session.end",
                                json!({"session": sid, "identity": id.identity(), "user": id.username(), "reason": reason}),
                            );
                            ENDED_STATUS
                        }
                    }
                }
            };
            let _ = write.exit_status(code).await;
            let _ = write.eof().await;
            let _ = write.close().await;
        });
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only `sftp`: the read-only file tree (crate::files).
        let id = self.identity.clone();
        match (name, id, self.channels.remove(&channel)) {
            ("sftp", Some(id), Some(ch)) => {
                session.channel_success(channel)?;
                let sid = self.session_id.clone();
                crate::files::spawn_sftp(self.gw.clone(), id, sid, self.peer, ch);
            }
            (_, _, ch) => {
                if let Some(ch) = ch {
                    self.channels.insert(channel, ch);
                }
                session.channel_failure(channel)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Local forwarding reaches pods only, through the policy (crate::files::portforward);
        // without an identity the dropped reply refuses the channel.
        if let Some(id) = self.identity.clone() {
            let opening = crate::files::portforward::Opening {
                gw: self.gw.clone(),
                id,
                sid: self.session_id.clone(),
                peer: self.peer,
                host: host_to_connect.to_owned(),
                port: port_to_connect,
                originator: format!("{originator_address}:{originator_port}"),
            };
            crate::files::portforward::spawn(opening, channel, reply);
        }
        Ok(())
    }
}

fn tty(cols: u32, rows: u32) -> Tty {
    Tty {
        cols: u16::try_from(cols).unwrap_or(u16::MAX),
        rows: u16::try_from(rows).unwrap_or(u16::MAX),
    }
}

/// When a session must end: the certificate's expiry, the policy's maximum, the idle timeout.
pub(crate) struct Clock {
    started: Instant,
    /// Milliseconds since `started` of the last byte in either direction.
    last_activity: AtomicU64,
    limits: Mutex<(Instant, &'static str, Duration)>,
    changed: tokio::sync::Notify,
}

impl Clock {
    pub(crate) fn new(gw: &Gateway, id: &VerifiedIdentity) -> Self {
        let now = Instant::now();
        let left = id
            .valid_before()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Clock {
            started: now,
            last_activity: AtomicU64::new(0),
            limits: Mutex::new((
                now + left,
                "your certificate expired",
                gw.settings.limits.idle_timeout,
            )),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(ms, Ordering::Relaxed);
    }

    /// Applies the policy's limits (only ever shortens).
    pub(crate) fn tighten(&self, max_session: Duration, idle: Duration) {
        self.tighten_with(
            max_session,
            idle,
            "the policy's maximum session length was reached",
        );
    }

    /// Shortens the session to `max_session` from its start (with `why` as the reason) and
    /// the idle timeout to `idle`.
    fn tighten_with(&self, max_session: Duration, idle: Duration, why: &'static str) {
        let mut l = self
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let end = self.started + max_session;
        if end < l.0 {
            l.0 = end;
            l.1 = why;
        }
        l.2 = l.2.min(idle);
        drop(l);
        self.changed.notify_waiters();
    }

    /// Resolves with the reason when the session must end; one minute before a fixed end
    /// (certificate, grant, policy maximum) it writes a one-line warning to `write`.
    pub(crate) async fn expired(
        &self,
        gw: &Gateway,
        id: &VerifiedIdentity,
        write: &russh::ChannelWriteHalf<Msg>,
    ) -> String {
        self.expired_warning(gw, id, Some(write)).await
    }

    /// [`Clock::expired`] with the warning written only when there is a terminal to write it
    /// to (a forwarded TCP stream has none).
    pub(crate) async fn expired_warning(
        &self,
        gw: &Gateway,
        id: &VerifiedIdentity,
        write: Option<&russh::ChannelWriteHalf<Msg>>,
    ) -> String {
        const WARN: Duration = Duration::from_secs(60);
        let mut warned = false;
        loop {
            let changed = self.changed.notified();
            let revoked = gw.revocations_changed.notified();
            {
                let v = gw.verifier.load();
                let list = &v.config().revocations;
                if list.is_serial_revoked(id.serial()) || list.is_key_id_revoked(id.key_id()) {
                    return "your certificate was revoked".into();
                }
            }
            let (end, why, idle) = *self
                .limits
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let last =
                self.started + Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
            let now = Instant::now();
            if now >= end {
                return why.to_owned();
            }
            if now >= last + idle {
                return format!("idle for {}", humantime::format_duration(idle));
            }
            let warn_at = end.checked_sub(WARN).unwrap_or(now);
            if !warned && now >= warn_at && self.started + WARN < end {
                warned = true;
                let left = humantime::format_duration(Duration::from_secs((end - now).as_secs()));
                if let Some(write) = write {
                    let _ = write
                        .extended_data_bytes(
                            1,
                            format!("\r\njitsh: warning: this session ends in {left} ({why})\r\n"),
                        )
                        .await;
                }
            }
            let mut wake = end.min(last + idle);
            if !warned && warn_at > now {
                wake = wake.min(warn_at);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = changed => {}
                () = revoked => {}
                () = gw.kill.cancelled() => return "the gateway is shutting down".into(),
            }
        }
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

pub(crate) struct Ctx<'a> {
    /// Messages go to stdout, in order with everything else (a terminal session).
    pub(crate) merged: AtomicBool,
    pub(crate) gw: &'a Arc<Gateway>,
    pub(crate) id: &'a VerifiedIdentity,
    pub(crate) sid: &'a str,
    pub(crate) peer: SocketAddr,
    pub(crate) write: &'a russh::ChannelWriteHalf<Msg>,
    pub(crate) clock: &'a Arc<Clock>,
}

impl Ctx<'_> {
    /// One `jitsh: …` line for the user: on stderr, or in order on stdout in a terminal session.
    async fn say(&self, line: &str) {
        if self.merged.load(Ordering::Relaxed) {
            let _ = self
                .write
                .data_bytes(format!("jitsh: {line}\r\n").into_bytes())
                .await;
        } else {
            say(self.write, line).await;
        }
    }
    pub(crate) fn subject(&self) -> Subject {
        Subject {
            user: self.id.username().to_owned(),
            groups: self.id.groups().to_vec(),
        }
    }
    pub(crate) fn base_event(&self, cid: &str) -> serde_json::Value {
        json!({"session": self.sid, "command": cid, "identity": self.id.identity(), "user": self.id.username(), "groups": self.id.groups(), "serial": self.id.serial(), "key_id": self.id.key_id(), "source": self.peer.to_string()})
    }
    pub(crate) fn out(&self) -> Counted<impl AsyncWrite + Unpin + Send + 'static> {
        Counted {
            inner: self.write.make_writer(),
            clock: self.clock.clone(),
            bytes: self
                .gw
                .metrics
                .bytes
                .get_or_create(&label("direction", "out"))
                .clone(),
        }
    }
    fn err(&self) -> Counted<impl AsyncWrite + Unpin + Send + 'static> {
        Counted {
            inner: self.write.make_writer_ext(Some(1)),
            clock: self.clock.clone(),
            bytes: self
                .gw
                .metrics
                .bytes
                .get_or_create(&label("direction", "out"))
                .clone(),
        }
    }
    async fn print(&self, text: &str) {
        let _ = self.write.data_bytes(text.as_bytes().to_vec()).await;
    }
    /// A client as the user, and the target resolved through it (one line on failure).
    async fn resolve(
        &self,
        cid: &str,
        target: &TargetSpec,
    ) -> Result<(kube::Client, exec::Resolved), String> {
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| self.gw.settings.default_namespace.clone());
        let client = self
            .gw
            .kube
            .client_as(self.id, cid)
            .map_err(|e| e.to_string())?;
        let resolved = exec::resolve(
            &client,
            &namespace,
            &target.pod,
            target.container.as_deref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok((client, resolved))
    }
}

pub(crate) fn target_of(r: &exec::Resolved) -> Target {
    Target {
        namespace: r.namespace.clone(),
        pod: r.pod.clone(),
        labels: r.labels.clone(),
        container: r.container.clone(),
    }
}

pub(crate) async fn say(write: &russh::ChannelWriteHalf<Msg>, line: &str) {
    let _ = write
        .extended_data_bytes(1, format!("jitsh: {line}\r\n"))
        .await;
}

const HELP: &str = "\
jitsh — run policy-checked commands in Kubernetes pods as yourself.

  ssh USER@GATEWAY [namespace/]pod[/container] [--] COMMAND...   run one command
  ssh USER@GATEWAY pods [namespace]                              pods you can reach
  ssh USER@GATEWAY logs [namespace/]pod[/container] [-f] [--tail N] [--since 10m] [--previous] [--timestamps]
  ssh USER@GATEWAY whoami                                        identity, certificate, grants
  ssh USER@GATEWAY help                                          this text
  scp USER@GATEWAY:/namespace/pod/container/fs/PATH .             pull a file the policy allows (also scp -O)
  scp USER@GATEWAY:/namespace/pod/container/logs/current.log .    pull a pod log (previous.log: before the restart)
  sftp USER@GATEWAY                                               browse that read-only tree
  ssh -L 8080:pod.namespace:8080 USER@GATEWAY                     forward a port the policy allows

Command lines are parsed, not passed to a shell: quoting works, but ; & | > < $ ` and globs are
refused unless the policy allows pipelines. A denied command exits with status 126.
";

async fn run_command(
    ctx: &Ctx<'_>,
    text: &str,
    tty: Option<Tty>,
    resize: tokio::sync::mpsc::Receiver<Tty>,
    read: russh::ChannelReadHalf,
) -> u32 {
    let cid = new_id();
    let intent = match intent::parse(text) {
        Ok(i) => i,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return 2;
        }
    };
    match intent {
        Intent::Help => {
            ctx.print(HELP).await;
            0
        }
        Intent::Whoami => whoami(ctx).await,
        Intent::Pods { namespace } => pods(ctx, &cid, namespace).await,
        Intent::Logs { target, options } => logs(ctx, &cid, &target, &options).await,
        Intent::Exec { target, line } => {
            run_exec(ctx, &cid, &target, &line, tty, resize, read).await
        }
        Intent::ScpSource {
            paths,
            preserve,
            recursive,
        } => crate::files::scp::source(ctx, &cid, &paths, preserve, recursive, read).await,
        Intent::ScpSink => crate::files::scp::refuse_sink(ctx, &cid).await,
        Intent::Prompt { target } => {
            interactive::prompt(ctx, &cid, &target, tty, resize, read).await
        }
        Intent::BreakGlass {
            target,
            incident,
            reason,
        } => {
            let req = interactive::BreakGlassRequest {
                incident: incident.as_deref(),
                reason: reason.as_deref(),
            };
            interactive::break_glass(ctx, &cid, &target, req, tty, resize, read).await
        }
        Intent::Attach { target } => {
            interactive::attach(ctx, &cid, &target, tty, resize, read).await
        }
    }
}

async fn whoami(ctx: &Ctx<'_>) -> u32 {
    let id = ctx.id;
    let until = humantime::format_rfc3339_seconds(id.valid_before());
    let mut msg = format!(
        "identity: {}\nuser: {}\ngroups: {}\ncertificate: serial {}, key id {}, valid until {until}\n",
        id.identity(),
        id.username(),
        id.groups().join(","),
        id.serial(),
        id.key_id(),
    );
    let grants = ctx.gw.policy.load().grants(&ctx.subject());
    if grants.is_empty() {
        msg.push_str("policy: grants you nothing\n");
    }
    for g in grants {
        let modes: Vec<&str> = g.modes.iter().map(|m| m.as_str()).collect();
        msg.push_str(&format!(
            "policy rule {}: {} on namespace {}\n",
            g.rule,
            modes.join(", "),
            g.namespaces.join(", ")
        ));
        if !g.commands.is_empty() {
            msg.push_str(&format!("  commands: {}\n", g.commands.join(" | ")));
        }
        if !g.files.is_empty() {
            msg.push_str(&format!("  files: {}\n", g.files.join(", ")));
        }
        if !g.ports.is_empty() {
            let ports: Vec<String> = g.ports.iter().map(u16::to_string).collect();
            msg.push_str(&format!("  ports: {}\n", ports.join(", ")));
        }
    }
    ctx.print(&msg).await;
    0
}

async fn pods(ctx: &Ctx<'_>, cid: &str, namespace: Option<String>) -> u32 {
    let policy = ctx.gw.policy.load();
    let subject = ctx.subject();
    let namespaces: Vec<String> = match namespace {
        Some(ns) => vec![ns],
        None => {
            let mut v: Vec<String> = policy
                .grants(&subject)
                .into_iter()
                .flat_map(|g| g.namespaces)
                .filter(|n| n != "*")
                .collect();
            v.sort();
            v.dedup();
            if v.is_empty() {
                v.push(ctx.gw.settings.default_namespace.clone());
            }
            v
        }
    };
    let client = match ctx.gw.kube.client_as(ctx.id, cid) {
        Ok(c) => c,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return 1;
        }
    };
    let mut out = String::from("POD\tSTATUS\tCONTAINERS\tPOLICY\n");
    let mut failures = 0;
    for ns in &namespaces {
        match exec::list_pods(&client, ns).await {
            Ok(list) => {
                for (pod, phase, containers) in list {
                    let target = Target {
                        namespace: ns.clone(),
                        pod: pod.clone(),
                        labels: Default::default(),
                        container: containers.first().cloned().unwrap_or_default(),
                    };
                    let modes = granted_modes(&policy, &subject, &target);
                    out.push_str(&format!(
                        "{ns}/{pod}\t{phase}\t{}\t{}\n",
                        containers.join(","),
                        if modes.is_empty() {
                            "-".into()
                        } else {
                            modes.join(",")
                        }
                    ));
                }
            }
            Err(e) => {
                failures += 1;
                ctx.say(&format!("namespace {ns}: {e}")).await;
            }
        }
    }
    ctx.print(&out).await;
    if failures == namespaces.len() { 1 } else { 0 }
}

fn granted_modes(policy: &Policy, subject: &Subject, target: &Target) -> Vec<&'static str> {
    let mut modes = Vec::new();
    if !policy
        .allowed_summary(subject, target, Mode::Exec)
        .is_empty()
    {
        modes.push("exec");
    }
    for m in [
        Mode::Shell,
        Mode::Logs,
        Mode::Files,
        Mode::Attach,
        Mode::PortForward,
        Mode::BreakGlass,
    ] {
        let d = policy.decide(&Request {
            subject,
            target,
            mode: m,
            action: Action::Session,
        });
        if d.effect != jitsh_broker_policy::Effect::Deny {
            modes.push(m.as_str());
        }
    }
    modes
}

async fn logs(ctx: &Ctx<'_>, cid: &str, target: &TargetSpec, options: &intent::LogOptions) -> u32 {
    let (client, resolved) = match ctx.resolve(cid, target).await {
        Ok(x) => x,
        Err(e) => {
            ctx.say(&e).await;
            return 1;
        }
    };
    let tgt = target_of(&resolved);
    let decision = ctx.gw.policy.load().decide(&Request {
        subject: &ctx.subject(),
        target: &tgt,
        mode: Mode::Logs,
        action: Action::Session,
    });
    let mut ev = ctx.base_event(cid);
    ev["namespace"] = json!(resolved.namespace);
    ev["pod"] = json!(resolved.pod);
    ev["container"] = json!(resolved.container);
    ev["follow"] = json!(options.follow);
    let permit = match decision.permit() {
        Ok(p) => p,
        Err(d) => return deny(ctx, "logs.denied", ev, &d, &resolved).await,
    };
    ev["rule"] = json!(permit.rule());
    if let Err(e) = ctx.gw.audit.record("logs.allowed", ev.clone()) {
        ctx.say(&format!("refused: the audit log cannot be written ({e})"))
            .await;
        return 1;
    }
    ctx.clock
        .tighten(permit.limits().max_session, permit.limits().idle_timeout);
    let res = exec::stream_logs(&client, &resolved, options, ctx.out()).await;
    let code = match &res {
        Ok(bytes) => {
            ev["bytes"] = json!(bytes);
            0
        }
        Err(e) => {
            ctx.say(&e.to_string()).await;
            ev["error"] = json!(e.to_string());
            1
        }
    };
    ctx.gw.record("logs.end", ev);
    code
}

async fn deny(
    ctx: &Ctx<'_>,
    kind: &str,
    mut ev: serde_json::Value,
    d: &Decision,
    resolved: &exec::Resolved,
) -> u32 {
    ev["rule"] = json!(d.rule);
    ev["reasons"] = json!(d.reasons);
    ctx.gw.record(kind, ev);
    ctx.gw
        .metrics
        .commands
        .get_or_create(&label("decision", "deny"))
        .inc();
    let reasons = d.reasons.join("; ");
    let line = match &d.rule {
        // A refused construct: the parser's message says what and where; nothing ran.
        None if reasons.starts_with("refused:") => format!("{reasons} (nothing was run)"),
        None => format!(
            "denied: {reasons} on {}/{} (no policy rule grants it)",
            resolved.namespace, resolved.pod
        ),
        Some(rule) if reasons.contains(rule.as_str()) => format!("denied: {reasons}"),
        Some(rule) => format!(
            "denied: {reasons} on {}/{} (policy rule {rule})",
            resolved.namespace, resolved.pod
        ),
    };
    ctx.say(&line).await;
    DENIED_STATUS
}

async fn deny_unresolved(
    ctx: &Ctx<'_>,
    ev: serde_json::Value,
    d: &Decision,
    target: &TargetSpec,
) -> u32 {
    let resolved = exec::Resolved {
        namespace: target
            .namespace
            .clone()
            .unwrap_or_else(|| ctx.gw.settings.default_namespace.clone()),
        pod: target.pod.clone(),
        container: target.container.clone().unwrap_or_default(),
        labels: Default::default(),
    };
    deny(ctx, "command.denied", ev, d, &resolved).await
}

async fn run_exec(
    ctx: &Ctx<'_>,
    cid: &str,
    target: &TargetSpec,
    line: &str,
    tty: Option<Tty>,
    resize: tokio::sync::mpsc::Receiver<Tty>,
    mut read: russh::ChannelReadHalf,
) -> u32 {
    let gw = ctx.gw;
    let mut ev = ctx.base_event(cid);
    // A refused syntax is denied before anything reaches Kubernetes.
    let parsed = match jitsh_broker_policy::parse_command_line(line) {
        Ok(cl) => cl,
        Err(e) => {
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            ev["line"] = json!(gw.redactor.redact(&words).join(" "));
            ev["namespace"] = json!(
                target
                    .namespace
                    .as_deref()
                    .unwrap_or(&gw.settings.default_namespace)
            );
            ev["pod"] = json!(target.pod);
            let d = Decision::denied(format!("refused: {e}"));
            return deny_unresolved(ctx, ev, &d, target).await;
        }
    };
    let stages: Vec<Vec<String>> = parsed
        .stages()
        .iter()
        .map(|s| gw.redactor.redact(s))
        .collect();
    ev["argv"] = json!(stages.first());
    if stages.len() > 1 {
        ev["stages"] = json!(stages);
    }
    // The pod is looked up as the user (a get): the policy's targets depend on its labels and
    // default container.
    let (client, resolved) = match ctx.resolve(cid, target).await {
        Ok(x) => x,
        Err(e) => {
            ctx.say(&e).await;
            return 1;
        }
    };
    let (stdin_r, mut stdin_w) = tokio::io::duplex(256 * 1024);
    let clock = ctx.clock.clone();
    let bytes_in = gw
        .metrics
        .bytes
        .get_or_create(&label("direction", "in"))
        .clone();
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
    let code = command(ctx, &client, &resolved, &parsed, ev, io).await;
    pump.abort();
    code
}

/// How a decided command is connected.
struct Io<I> {
    tty: Option<Tty>,
    resize: Option<tokio::sync::mpsc::Receiver<Tty>>,
    stdin: I,
    rec: Option<Arc<crate::recording::Recorder>>,
}

/// Decides a parsed command line on a resolved target, audits, runs it, audits the exit.
async fn command<I>(
    ctx: &Ctx<'_>,
    client: &kube::Client,
    resolved: &exec::Resolved,
    parsed: &jitsh_broker_policy::CommandLine,
    mut ev: serde_json::Value,
    io: Io<I>,
) -> u32
where
    I: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let gw = ctx.gw;
    let tgt = target_of(resolved);
    ev["namespace"] = json!(resolved.namespace);
    ev["pod"] = json!(resolved.pod);
    ev["container"] = json!(resolved.container);
    let decision = gw.policy.load().decide(&Request {
        subject: &ctx.subject(),
        target: &tgt,
        mode: Mode::Exec,
        action: Action::Command(parsed),
    });
    let marker = |what: &str| {
        if let Some(r) = &io.rec {
            let argv: Vec<String> = parsed
                .stages()
                .iter()
                .map(|s| gw.redactor.redact(s).join(" "))
                .collect();
            let _ = r.event("m", &format!("{what}: {}", argv.join(" | ")));
        }
    };
    let permit = match decision.permit() {
        Ok(p) => p,
        Err(d) => {
            marker("denied");
            return deny(ctx, "command.denied", ev, &d, resolved).await;
        }
    };
    ev["rule"] = json!(permit.rule());
    if let Err(e) = gw.audit.record("command.allowed", ev.clone()) {
        gw.metrics
            .commands
            .get_or_create(&label("decision", "refused"))
            .inc();
        ctx.say(&format!("refused: the audit log cannot be written ({e})"))
            .await;
        return 1;
    }
    marker("allowed");
    gw.metrics
        .commands
        .get_or_create(&label("decision", "allow"))
        .inc();
    ctx.clock
        .tighten(permit.limits().max_session, permit.limits().idle_timeout);
    let started = Instant::now();
    let out = crate::recording::Recorded {
        inner: ctx.out(),
        rec: io.rec.clone(),
    };
    let err = crate::recording::Recorded {
        inner: ctx.err(),
        rec: io.rec.clone(),
    };
    let res = exec::run(
        client, ctx.id, &permit, resolved, io.tty, io.resize, io.stdin, out, err,
    )
    .await;
    gw.metrics
        .exec_seconds
        .observe(started.elapsed().as_secs_f64());
    let code = match res {
        Ok(c) => c,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            1
        }
    };
    ev["exit"] = json!(code);
    ev["duration_ms"] = json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    gw.record("command.exit", ev);
    code
}
