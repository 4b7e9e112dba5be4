//! Certificate authentication: the certs verifier, once per offered certificate, with its audit
//! event and failure counters.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use jitsh_certs::{Presented, VerifiedIdentity};
use russh::keys::Certificate;

use crate::audit::Event;
use crate::gateway::Gateway;
use crate::ids::SessionId;

/// Counts an authentication failure (metrics and the per-address window).
pub(super) fn auth_failed(gw: &Gateway, ip: IpAddr, code: &str) {
    gw.metrics().auth_failure(code);
    gw.limiter().auth_failed(ip);
}

/// Verifies a presented certificate for `user`; records `auth.accepted` or `auth.rejected`.
pub(super) fn certificate(
    gw: &Gateway,
    peer: SocketAddr,
    session_id: &SessionId,
    span: &tracing::Span,
    user: &str,
    certificate: &Certificate,
) -> Option<VerifiedIdentity> {
    let presented = Presented {
        certificate,
        username: user,
        peer: Some(peer.ip()),
        proven_key: certificate.public_key(),
        now: SystemTime::now(),
    };
    let ev = Event {
        session: Some(session_id.clone()),
        user: Some(user.to_owned()),
        source: Some(peer.to_string()),
        ..Event::default()
    };
    match gw.verifier().verify(&presented) {
        Ok(id) => {
            span.record("user", id.username());
            tracing::info!(parent: span, identity = id.identity(), "certificate accepted");
            // A failure here is reported when a command is attempted (fail closed then).
            let ev = Event {
                identity: Some(id.identity().to_owned()),
                groups: Some(id.groups().to_vec()),
                serial: Some(id.serial()),
                key_id: Some(id.key_id().to_owned()),
                ..ev
            };
            gw.record("auth.accepted", &ev);
            Some(id)
        }
        Err(r) => {
            tracing::info!(parent: span, user, code = r.code(), "certificate rejected: {r}");
            auth_failed(gw, peer.ip(), r.code());
            let ev = Event {
                reason: Some(r.to_string()),
                code: Some(r.code().to_owned()),
                ..ev
            };
            gw.record("auth.rejected", &ev);
            None
        }
    }
}

impl Drop for super::handler::Conn {
    fn drop(&mut self) {
        // A connection that leaves without trying to authenticate (connect, key exchange, go:
        // the DHEat pattern, or a pre-auth timeout) counts against its address like a failed
        // attempt, as sshd's PerSourcePenalties do; the lockout then refuses its next ones.
        let offered_plain = self
            .plain_key_user
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        if self.identity.is_none() && !self.rejected && !offered_plain {
            auth_failed(&self.gw, self.peer.ip(), "no_auth");
        }
    }
}
