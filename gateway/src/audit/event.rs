//! The audit log's events as one typed record: every field an event may carry, each written
//! only when set. Events are built from a session's base ([`Event::base`]) and filled in by
//! field, never patched as JSON.

use serde::Serialize;

use crate::ids::{CommandId, SessionId};

macro_rules! event_fields {
    ($($(#[$m:meta])* $name:ident : $ty:ty),* $(,)?) => {
        /// One audit event's fields (the kind, time and chain are added when it is written).
        #[derive(Debug, Clone, Default, Serialize)]
        pub(crate) struct Event {
            $(
                $(#[$m])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub(crate) $name: Option<$ty>,
            )*
        }
    };
}

event_fields! {
    /// The connection.
    session: SessionId,
    /// The command (also the Kubernetes `Audit-ID`).
    command: CommandId,
    /// The file session a file operation belongs to.
    session_command: CommandId,
    /// The certificate's identity (key ID).
    identity: String,
    /// The SSH user.
    user: String,
    /// Groups.
    groups: Vec<String>,
    /// Certificate serial.
    serial: u64,
    /// Certificate key ID.
    key_id: String,
    /// The client's address.
    source: String,
    /// A rejection's or refusal's code.
    code: String,
    /// Why (a rejection, a session's end, a break-glass reason).
    reason: String,
    /// Namespace.
    namespace: String,
    /// Pod.
    pod: String,
    /// Container.
    container: String,
    /// The first stage's argv (redacted).
    argv: Vec<String>,
    /// Every stage's argv (redacted), for pipelines.
    stages: Vec<Vec<String>>,
    /// A line that did not parse (redacted words).
    line: String,
    /// Whether a command came from the filtered prompt.
    interactive: bool,
    /// The deciding rule.
    rule: String,
    /// The decision's reasons.
    reasons: Vec<String>,
    /// Exit status.
    exit: u32,
    /// Duration.
    duration_ms: u64,
    /// `logs -f`.
    follow: bool,
    /// Bytes relayed.
    bytes: u64,
    /// Bytes from the client to the pod.
    bytes_in: u64,
    /// Bytes from the pod to the client.
    bytes_out: u64,
    /// An error, as one line.
    error: String,
    /// Whether the session has a terminal.
    tty: bool,
    /// The recording's path.
    recording: String,
    /// Prompt lines read.
    lines: u64,
    /// Break-glass incident.
    incident: String,
    /// `critical` for break-glass.
    severity: String,
    /// When a grant ends.
    expires: String,
    /// A break-glass session owes a review.
    review_owed: bool,
    /// A notified webhook.
    url: String,
    /// Whether it answered 2xx.
    delivered: bool,
    /// Its answer.
    status: String,
    /// `sftp`, `scp`.
    via: String,
    /// A file operation.
    op: String,
    /// A file in the container (or the virtual path).
    file: String,
    /// The virtual path asked for.
    path: String,
    /// A file's size.
    size: u64,
    /// Readers restarted for seeks.
    restarts: u64,
    /// Whether a file was read to its end.
    complete: bool,
    /// A log (`current`, `previous`).
    log: String,
    /// Files opened (sftp, scp).
    files: u64,
    /// Files that failed (scp).
    #[serde(rename = "errors")]
    error_count: u32,
    /// Paths asked for (scp).
    paths: Vec<String>,
    /// A forward's destination as named.
    destination: String,
    /// A forward's originator.
    originator: String,
    /// A forwarded port.
    port: u16,
    /// The gateway's version.
    version: String,
    /// Sessions open at shutdown.
    active_sessions: usize,
    /// The drain's grace.
    grace_seconds: u64,
    /// Whether the drain cut sessions.
    sessions_cut: bool,
    /// Which file a reload read (`policy`, `revocations`).
    file_kind: String,
    /// A reload's result.
    result: String,
    /// A reload's errors.
    errors: Vec<String>,
    /// Path arguments that are symbolic links in the container: `typed -> resolved`.
    links: Vec<String>,
    /// An AccessRequest (approval) id.
    request: String,
    /// The identity that made the request.
    requester: String,
    /// The request's state after the event.
    state: String,
    /// Approvals recorded on it.
    approvals: u32,
    /// Approvals it needs.
    approvals_required: u32,
}
