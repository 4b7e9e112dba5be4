//! WebSocket channel protocols for pods/exec, pods/attach and pods/portforward.
//!
//! Exec and attach speak `v5.channel.k8s.io` (preferred) and `v4.channel.k8s.io`: every binary
//! frame starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error/status as a JSON
//! `metav1.Status`, 4 terminal resize as JSON `{"Width":..,"Height":..}`); v5 adds the frame
//! `[255, channel]` that closes a channel (the client closes stdin with `[255, 0]`).
//! Port-forward speaks `v4.channel.k8s.io` framing: two channels per port (data `2*i`, error
//! `2*i+1`), and the first frame the server sends on each is the port number, little-endian.
//!
//! As the kubelet does, the server sends an empty frame on the lowest output channel first, the
//! exit status on channel 3 last (`Success`, or `Failure` / `NonZeroExitCode` with an `ExitCode`
//! cause), then closes with code 1000 (client-go treats a close without a code as an error).
//! Every direction is back-pressured: at most a few 32 KiB frames wait for the socket, and input
//! is written to the process before the next frame is read.
//!
//! The caller (the API server) authenticates, authorises, validates the target and query, picks
//! the subprotocol with [`negotiate_protocol`] / [`negotiate_portforward_protocol`] (answering
//! it in `Sec-WebSocket-Protocol`), upgrades, and hands the socket over.
//!
//! Not spoken: `channel.k8s.io` v1–v3, the `base64.channel.k8s.io` variants, SPDY, and the
//! SPDY-over-WebSocket tunnel (`SPDY/3.1+portforward.k8s.io`) that `kubectl port-forward` uses.
//! Differences from a real cluster: when an exec client goes away, its process is killed (a
//! real kubelet may leave it running); with a v4 client, which cannot close stdin except by
//! closing the socket, that means output after stdin EOF is lost, as with a real cluster.

mod portforward;
mod query;
mod remote;
#[cfg(test)]
mod tests;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

pub use portforward::serve_portforward;
pub use query::{
    QueryError, offered_protocols, parse_attach_query, parse_exec_query, parse_portforward_ports,
};
pub use remote::{serve_attach, serve_exec};

/// Channel numbers of the remote-command protocols.
pub mod channel {
    /// Client → process input.
    pub const STDIN: u8 = 0;
    /// Process standard output.
    pub const STDOUT: u8 = 1;
    /// Process standard error.
    pub const STDERR: u8 = 2;
    /// Error / final status (`metav1.Status` JSON in v4 and v5).
    pub const ERROR: u8 = 3;
    /// Terminal resize (`{"Width":..,"Height":..}`).
    pub const RESIZE: u8 = 4;
    /// v5 only: `[CLOSE, channel]` closes a channel.
    pub const CLOSE: u8 = 255;
}

/// A negotiated WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: v4 plus channel close (stdin EOF).
    V5Channel,
    /// `v4.channel.k8s.io`: status as `metav1.Status` on channel 3, resize on channel 4.
    V4Channel,
}

impl Protocol {
    /// The subprotocol name to answer in `Sec-WebSocket-Protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V5Channel => "v5.channel.k8s.io",
            Self::V4Channel => "v4.channel.k8s.io",
        }
    }
}

/// Picks the exec/attach subprotocol from the client's offer (each entry one protocol name;
/// split a comma-separated header first): `v5.channel.k8s.io`, else `v4.channel.k8s.io`.
pub fn negotiate_protocol(offered: &[&str]) -> Option<Protocol> {
    let has = |p: Protocol| offered.iter().any(|o| o.trim() == p.as_str());
    [Protocol::V5Channel, Protocol::V4Channel]
        .into_iter()
        .find(|p| has(*p))
}

/// Picks the port-forward subprotocol from the client's offer: `v4.channel.k8s.io` (what the
/// kubelet speaks for WebSocket port-forward; kube-rs offers v5 and v4 and gets v4).
pub fn negotiate_portforward_protocol(offered: &[&str]) -> Option<Protocol> {
    offered
        .iter()
        .any(|o| o.trim() == Protocol::V4Channel.as_str())
        .then_some(Protocol::V4Channel)
}

/// What to run for pods/exec (the query parameters `command`, `stdin`, `stdout`, `stderr`, `tty`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// argv of the command (never run through a shell).
    pub command: Vec<String>,
    /// Wire channel 0 to the process's stdin.
    pub stdin: bool,
    /// Send the process's stdout on channel 1.
    pub stdout: bool,
    /// Send the process's stderr on channel 2 (ignored with `tty`: a terminal has one output).
    pub stderr: bool,
    /// Run the command on a pseudo-terminal; channel 4 resizes it.
    pub tty: bool,
}

/// What to wire for pods/attach (the query parameters `stdin`, `stdout`, `stderr`, `tty`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Wire channel 0 to the container's main process's stdin.
    pub stdin: bool,
    /// Send the main process's stdout on channel 1.
    pub stdout: bool,
    /// Send the main process's stderr on channel 2.
    pub stderr: bool,
    /// Asked for a terminal (the simulated containers never allocate one; accepted and ignored).
    pub tty: bool,
}

/// How many frames may wait for the WebSocket writer; the bound is what gives back-pressure.
const OUTGOING_FRAMES: usize = 8;
/// Largest payload read from a process or socket per frame.
const CHUNK: usize = 32 * 1024;

/// A frame: the channel byte followed by the payload.
fn frame(channel: u8, payload: &[u8]) -> Message {
    let mut data = Vec::with_capacity(payload.len() + 1);
    data.push(channel);
    data.extend_from_slice(payload);
    Message::Binary(Bytes::from(data))
}

/// Splits the socket and starts the single writer task, fed through a bounded queue.
fn start_writer(
    ws: WebSocket,
) -> (
    mpsc::Sender<Message>,
    SplitStream<WebSocket>,
    tokio::task::JoinHandle<()>,
) {
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(OUTGOING_FRAMES);
    (tx, stream, tokio::spawn(write_loop(sink, rx)))
}

/// Sends queued frames until every sender is gone, then closes the socket normally (1000).
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Message>) {
    while let Some(message) = rx.recv().await {
        if sink.send(message).await.is_err() {
            return;
        }
    }
    // A normal-closure code: client-go treats a close without one (1005) as an error.
    let close = axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}
