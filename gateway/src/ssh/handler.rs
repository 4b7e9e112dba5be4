//! The russh handler: translates callbacks and nothing more. Authentication goes to the certs
//! verifier once; each channel request goes to [`super::dispatch`], which runs the session.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use jitsh_certs::VerifiedIdentity;
use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};

use super::channels::Channels;
use super::dispatch::{self, Conn as ConnInfo};
use crate::gateway::Gateway;
use crate::ids::SessionId;
use crate::kube::exec::Tty;

/// One connection's russh handler.
pub(super) struct Conn {
    pub(super) gw: Arc<Gateway>,
    pub(super) peer: SocketAddr,
    /// Set once a certificate is verified.
    pub(super) identity: Option<Arc<VerifiedIdentity>>,
    pub(super) channels: Channels,
    pub(super) session_id: SessionId,
    /// The verified identity, shared with the connection's task (which ends the connection
    /// when the certificate is revoked).
    pub(super) authed: Arc<std::sync::OnceLock<Arc<VerifiedIdentity>>>,
    pub(super) plain_key_user: Arc<Mutex<Option<String>>>,
    /// A certificate was offered and refused (already counted against the address).
    pub(super) rejected: bool,
    /// The connection's span (russh runs the handler in a task of its own).
    pub(super) span: tracing::Span,
}

impl Conn {
    fn info(&self, id: Arc<VerifiedIdentity>) -> ConnInfo {
        ConnInfo {
            gw: self.gw.clone(),
            id,
            sid: self.session_id.clone(),
            peer: self.peer,
            span: self.span.clone(),
        }
    }
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
        *self
            .plain_key_user
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(user.to_owned());
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let Some(id) = super::auth::certificate(
            &self.gw,
            self.peer,
            &self.session_id,
            &self.span,
            user,
            certificate,
        ) else {
            self.rejected = true;
            return Ok(Auth::reject());
        };
        let id = Arc::new(id);
        let _ = self.authed.set(id.clone());
        self.identity = Some(id);
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.open(channel) {
            reply.accept().await;
        } else {
            super::channels::refuse(reply).await;
        }
        Ok(())
    }

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
        // As sshd: no terminal for a certificate without `permit-pty`.
        if !self.identity.as_ref().is_some_and(|id| id.permits_pty()) {
            return session.channel_failure(channel);
        }
        self.channels
            .pty(channel, Tty::clamped(col_width, row_height));
        session.channel_success(channel)
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
        self.channels
            .resize(channel, Tty::clamped(col_width, row_height));
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.closed(channel);
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Refused out loud: with no answer the client believes X11 was accepted.
        session.channel_failure(channel)?;
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
        if let Some(ch) = self.channels.take(channel) {
            let tty = self.channels.has_pty(channel);
            dispatch::no_target(ch, tty, self.span.clone());
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(ch), Some(id)) = (self.channels.take(channel), self.identity.clone()) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let (tty, rx) = self.channels.terminal(channel);
        let gone = self.channels.gone(channel);
        dispatch::exec(self.info(id), ch, data, tty, rx, gone);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only `sftp`: the read-only file tree.
        let id = self.identity.clone();
        match (name, id, self.channels.take(channel)) {
            ("sftp", Some(id), Some(ch)) => {
                session.channel_success(channel)?;
                dispatch::sftp(self.info(id), ch, self.channels.gone(channel));
                Ok(())
            }
            (_, _, ch) => {
                self.channels.put_back(ch);
                Ok(session.channel_failure(channel)?)
            }
        }
    }

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
        // Without an identity the dropped reply refuses the channel.
        let Some(gone) = self.channels.admit(channel.id()) else {
            super::channels::refuse(reply).await;
            return Ok(());
        };
        if let Some(id) = self.identity.clone() {
            let originator = format!("{originator_address}:{originator_port}");
            dispatch::forward(
                self.info(id),
                channel,
                reply,
                host_to_connect,
                port_to_connect,
                originator,
                gone,
            );
        }
        Ok(())
    }
}
