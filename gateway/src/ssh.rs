//! The SSH transport: russh's configuration (modern algorithms, certificates only, the host
//! certificate), the accept loop with its per-address limits and pre-auth deadline, and the
//! shutdown drain. Each connection gets a [`handler::Conn`] that only translates russh's
//! callbacks; [`dispatch`] starts the sessions.

mod auth;
mod channels;
mod dispatch;
mod handler;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::keys::Certificate;
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audit::Event;
use crate::config::LimitsConfig;
use crate::gateway::Gateway;
use crate::ids::SessionId;

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
        let guard = match gw.limiter().admit(peer.ip()) {
            Ok(g) => g,
            Err(refusal) => {
                gw.metrics().refused(refusal.label());
                tracing::info!(%peer, reason = refusal.label(), "connection refused");
                drop(stream);
                continue;
            }
        };
        gw.metrics().connections.inc();
        let _ = stream.set_nodelay(true);
        let authed = Arc::new(std::sync::OnceLock::new());
        let plain_key_user = Arc::new(Mutex::new(None));
        let session_id = SessionId::new();
        let span = tracing::info_span!(
            "connection",
            session = %session_id,
            client_ip = %peer.ip(),
            user = tracing::field::Empty
        );
        let handler = handler::Conn {
            gw: gw.clone(),
            peer,
            identity: None,
            channels: channels::Channels::default(),
            session_id: session_id.clone(),
            authed: authed.clone(),
            plain_key_user: plain_key_user.clone(),
            rejected: false,
            span: span.clone(),
        };
        let config = config.clone();
        let pre_auth = gw.settings().limits.pre_auth_timeout;
        let gw = gw.clone();
        let task = async move {
            let _guard = guard;
            connection(&gw, peer, config, stream, handler, pre_auth, &authed).await;
            let plain = plain_key_user
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let (None, Some(user)) = (authed.get(), plain) {
                auth::auth_failed(&gw, peer.ip(), "plain_key");
                tracing::info!(user, "plain key refused: a certificate is required");
                let ev = Event {
                    session: Some(session_id),
                    user: Some(user),
                    source: Some(peer.to_string()),
                    reason: Some(
                        "plain public keys are not accepted; a certificate is required".into(),
                    ),
                    code: Some("plain_key".into()),
                    ..Event::default()
                };
                gw.record("auth.rejected", &ev);
            }
        };
        tokio::spawn(task.instrument(span));
    }
    drop(listener);
    gw.begin_stop();
    let grace = gw.settings().limits.shutdown_grace;
    let active = gw.limiter().sessions();
    tracing::info!(active_sessions = active, "stopping");
    gw.record(
        "gateway.stopping",
        &Event {
            active_sessions: Some(active),
            grace_seconds: Some(grace.as_secs()),
            ..Event::default()
        },
    );
    let finished = tokio::time::timeout(grace, gw.limiter().wait_drained())
        .await
        .is_ok();
    gw.kill_sessions();
    if !finished {
        let _ = tokio::time::timeout(Duration::from_secs(3), gw.limiter().wait_drained()).await;
    }
    gw.record(
        "gateway.stopped",
        &Event {
            sessions_cut: Some(!finished),
            ..Event::default()
        },
    );
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

/// One connection: the handshake within the pre-auth timeout, authentication within it too,
/// then until it ends — or its certificate is revoked, which ends it entirely.
async fn connection(
    gw: &Gateway,
    peer: std::net::SocketAddr,
    config: Arc<russh::server::Config>,
    stream: tokio::net::TcpStream,
    handler: handler::Conn,
    pre_auth: Duration,
    authed: &std::sync::OnceLock<Arc<jitsh_certs::VerifiedIdentity>>,
) {
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
    let mut changes = gw.changes();
    let mut authenticating = true;
    let why = loop {
        tokio::select! {
            _ = &mut running => return,
            () = &mut deadline, if authenticating => {
                if authed.get().is_none() {
                    break "authentication took too long";
                }
                authenticating = false;
            }
            r = changes.changed() => {
                if r.is_err() {
                    // The gateway is stopping; its shutdown path ends the sessions.
                    let _ = running.await;
                    return;
                }
                if authed
                    .get()
                    .is_some_and(|id| crate::session::revoked(gw, id.serial(), id.key_id()))
                {
                    // Its sessions end first, each with its line; then the connection.
                    tokio::select! {
                        _ = &mut running => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    tracing::info!(%peer, "connection closed: its certificate was revoked");
                    break "jitsh: your certificate was revoked";
                }
            }
        }
    };
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, why.into(), String::new())
        .await;
    if tokio::time::timeout(Duration::from_secs(1), &mut running)
        .await
        .is_err()
    {
        kill.cancel();
        let _ = running.await;
    }
}
