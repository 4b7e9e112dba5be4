//! The russh handler: translates callbacks and nothing more. Authentication goes to the certs
//! verifier once; each channel request goes to [`super::dispatch`], which runs the session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jitsh_certs::VerifiedIdentity;
use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};

use super::dispatch::{self, Conn as ConnInfo};
use crate::gateway::Gateway;
use crate::ids::SessionId;
use crate::kube::exec::Tty;

/// One connection's russh handler.
pub(super) struct Conn {
    gw: Arc<Gateway>,
    peer: SocketAddr,
    identity: Option<Arc<VerifiedIdentity>>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    ptys: HashMap<ChannelId, Tty>,
    resize: HashMap<ChannelId, tokio::sync::mpsc::Sender<Tty>>,
    session_id: SessionId,
    authed: Arc<AtomicBool>,
    plain_key_user: Arc<Mutex<Option<String>>>,
    /// The connection's span (russh runs the handler in a task of its own).
    span: tracing::Span,
}

impl Conn {
    pub(super) fn new(
        gw: Arc<Gateway>,
        peer: SocketAddr,
        session_id: SessionId,
        authed: Arc<AtomicBool>,
        plain_key_user: Arc<Mutex<Option<String>>>,
        span: tracing::Span,
    ) -> Self {
        Conn {
            gw,
            peer,
            identity: None,
            channels: HashMap::new(),
            ptys: HashMap::new(),
            resize: HashMap::new(),
            session_id,
            authed,
            plain_key_user,
            span,
        }
    }

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
        match super::auth::certificate(
            &self.gw,
            self.peer,
            &self.session_id,
            &self.span,
            user,
            certificate,
        ) {
            Some(id) => {
                self.identity = Some(Arc::new(id));
                self.authed.store(true, Ordering::Relaxed);
                Ok(Auth::Accept)
            }
            None => Ok(Auth::reject()),
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
        self.ptys
            .insert(channel, Tty::clamped(col_width, row_height));
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
            let _ = tx.try_send(Tty::clamped(col_width, row_height));
        }
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
        if let Some(ch) = self.channels.remove(&channel) {
            dispatch::no_target(ch, self.span.clone());
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
        dispatch::exec(self.info(id), ch, data, tty, rx);
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
        match (name, id, self.channels.remove(&channel)) {
            ("sftp", Some(id), Some(ch)) => {
                session.channel_success(channel)?;
                dispatch::sftp(self.info(id), ch);
                Ok(())
            }
            (_, _, ch) => {
                self.channels.extend(ch.map(|ch| (channel, ch)));
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
        if let Some(id) = self.identity.clone() {
            let originator = format!("{originator_address}:{originator_port}");
            dispatch::forward(
                self.info(id),
                channel,
                reply,
                host_to_connect,
                port_to_connect,
                originator,
            );
        }
        Ok(())
    }
}
