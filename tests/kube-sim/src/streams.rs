//! WebSocket channel protocols for pods/exec, pods/attach and pods/portforward.
//!
//! Exec and attach speak `v5.channel.k8s.io` (preferred) and `v4.channel.k8s.io`: every binary
//! frame starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error/status as a JSON
//! `metav1.Status`, 4 terminal resize as JSON `{"Width":..,"Height":..}`); v5 adds the frame
//! `[255, channel]` that closes a channel (the client closes stdin with `[255, 0]`).
//! Port-forward speaks `v4.channel.k8s.io` framing: two channels per port (data `2*i`, error
//! `2*i+1`), and the first frame the server sends on each is the port number, little-endian.

use axum::extract::ws::WebSocket;

use crate::runtime::{ContainerRef, PodRef, Runtime};

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

/// Serves one pods/exec WebSocket until the command exits and its status was sent.
pub async fn serve_exec(
    ws: WebSocket,
    protocol: Protocol,
    runtime: Runtime,
    target: ContainerRef,
    options: ExecOptions,
) {
    let _ = (ws, protocol, runtime, target, options);
}

/// Serves one pods/attach WebSocket until the client leaves or the container exits.
pub async fn serve_attach(
    ws: WebSocket,
    protocol: Protocol,
    runtime: Runtime,
    target: ContainerRef,
    options: AttachOptions,
) {
    let _ = (ws, protocol, runtime, target, options);
}

/// Serves one pods/portforward WebSocket for `ports` (the `ports` query parameter, in order).
pub async fn serve_portforward(ws: WebSocket, protocol: Protocol, runtime: Runtime, pod: PodRef, ports: Vec<u16>) {
    let _ = (ws, protocol, runtime, pod, ports);
}
