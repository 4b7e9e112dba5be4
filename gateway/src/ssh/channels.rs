//! One connection's channels: those waiting for their request, their terminals and resize
//! senders, and each one's "the client has gone" token — with the cap on how many may be open.

use std::collections::HashMap;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelId};
use tokio_util::sync::CancellationToken;

use crate::kube::exec::Tty;

/// Channels one connection may have open at once (sshd's `MaxSessions` default). Each may hold
/// at most the SSH library's channel buffer of unread data, so this bounds a connection's
/// memory.
pub(super) const MAX_CHANNELS: usize = 10;

/// The channels of one connection.
#[derive(Default)]
pub(super) struct Channels {
    /// Opened, waiting for their request (exec, shell, subsystem).
    waiting: HashMap<ChannelId, Channel<Msg>>,
    ptys: HashMap<ChannelId, Tty>,
    resize: HashMap<ChannelId, tokio::sync::mpsc::Sender<Tty>>,
    /// Cancelled when the client closes the channel or the connection ends (on drop). Its
    /// size is the number of open channels.
    gone: HashMap<ChannelId, CancellationToken>,
}

impl Channels {
    /// Counts a new channel in; `None` when [`MAX_CHANNELS`] are open.
    pub(super) fn admit(&mut self, channel: ChannelId) -> Option<CancellationToken> {
        (self.gone.len() < MAX_CHANNELS).then(|| {
            let t = CancellationToken::new();
            self.gone.insert(channel, t.clone());
            t
        })
    }

    /// A session channel, admitted and waiting for its request; `false` over the cap.
    pub(super) fn open(&mut self, channel: Channel<Msg>) -> bool {
        let admitted = self.admit(channel.id()).is_some();
        if admitted {
            self.waiting.insert(channel.id(), channel);
        }
        admitted
    }

    /// Takes a waiting channel for its request.
    pub(super) fn take(&mut self, channel: ChannelId) -> Option<Channel<Msg>> {
        self.waiting.remove(&channel)
    }

    /// Puts back a channel whose request was refused (it may ask again).
    pub(super) fn put_back(&mut self, channel: Option<Channel<Msg>>) {
        if let Some(ch) = channel {
            self.waiting.insert(ch.id(), ch);
        }
    }

    /// Records the terminal a channel asked for.
    pub(super) fn pty(&mut self, channel: ChannelId, tty: Tty) {
        self.ptys.insert(channel, tty);
    }

    /// Whether the channel asked for a terminal.
    pub(super) fn has_pty(&self, channel: ChannelId) -> bool {
        self.ptys.contains_key(&channel)
    }

    /// The terminal a channel asked for, and the receiver of its resizes.
    pub(super) fn terminal(
        &mut self,
        channel: ChannelId,
    ) -> (Option<Tty>, tokio::sync::mpsc::Receiver<Tty>) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        self.resize.insert(channel, tx);
        (self.ptys.get(&channel).copied(), rx)
    }

    /// Passes a resize on to the channel's session.
    pub(super) fn resize(&self, channel: ChannelId, tty: Tty) {
        if let Some(tx) = self.resize.get(&channel) {
            let _ = tx.try_send(tty);
        }
    }

    /// The channel's "the client has gone" token.
    pub(super) fn gone(&self, channel: ChannelId) -> CancellationToken {
        self.gone.get(&channel).cloned().unwrap_or_default()
    }

    /// The client closed the channel: its session ends, its slot in the count is free.
    pub(super) fn closed(&mut self, channel: ChannelId) {
        if let Some(t) = self.gone.remove(&channel) {
            t.cancel();
        }
        self.waiting.remove(&channel);
        self.ptys.remove(&channel);
        self.resize.remove(&channel);
    }
}

impl Drop for Channels {
    fn drop(&mut self) {
        // The connection is over: every session on it ends now.
        for t in self.gone.values() {
            t.cancel();
        }
    }
}

/// Refuses a channel over [`MAX_CHANNELS`] (OpenSSH prints the reason after "open failed").
pub(super) async fn refuse(reply: ChannelOpenHandle) {
    crate::files::portforward::refuse(
        reply,
        &format!("refused: at most {MAX_CHANNELS} channels per connection"),
    )
    .await;
}
