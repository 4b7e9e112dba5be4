//! Log and file pulls and port-forward: the SFTP subsystem and the legacy scp source over one
//! read-only virtual tree ([`tree`]), and `direct-tcpip` channels to pods/portforward.
//!
//! Every open is decided by the policy (`files` globs for container files, `logs` for pod logs),
//! audited before the first byte moves (`file.open`, fail closed) and after the last
//! (`file.read` with the byte count); file contents come from pods/exec of a fixed reader
//! ([`reader`]) as the user, streamed with bounded buffers. The server module hooks in only
//! through `subsystem_request`, `channel_open_direct_tcpip` and the `scp -f` / `scp -t` intents.

mod access;
pub mod portforward;
mod reader;
pub mod scp;
pub mod sftp;
pub(crate) mod tree;

use crate::audit::Event;
use crate::ids::CommandId;
use crate::kube::KubeError;
use crate::session::Ctx;

/// Why a file operation failed, as one line for the user (and an SFTP status code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FileError {
    /// Nothing there (or not in the tree).
    #[error("{0}")]
    NotFound(String),
    /// The policy, RBAC or the container refused it.
    #[error("{0}")]
    Denied(String),
    /// Anything else (the API server, the reader, the audit log).
    #[error("{0}")]
    Failure(String),
}

impl From<tree::TreeError> for FileError {
    fn from(e: tree::TreeError) -> Self {
        match e {
            tree::TreeError::NotFound(_) => FileError::NotFound(e.to_string()),
            tree::TreeError::Invalid(_) => FileError::Failure(e.to_string()),
        }
    }
}

/// A Kubernetes failure, classified by its HTTP status.
impl From<KubeError> for FileError {
    fn from(e: KubeError) -> Self {
        match e.status() {
            Some(404) => FileError::NotFound(e.to_string()),
            Some(403) => FileError::Denied(e.to_string()),
            _ => FileError::Failure(e.to_string()),
        }
    }
}

/// The `sftp` subsystem's work inside its session: the tree, unless the certificate is
/// restricted to one command (as with sshd, where force-command replaces the subsystem).
pub(crate) async fn sftp_session(ctx: &Ctx<'_>, read: russh::ChannelReadHalf) -> u32 {
    if ctx.id.force_command().is_some() {
        ctx.say("refused: your certificate allows only its forced command")
            .await;
        let ev = Event {
            via: Some("sftp".into()),
            op: Some("subsystem".into()),
            reasons: Some(vec!["the certificate has a force-command".into()]),
            ..ctx.event(&CommandId::new())
        };
        ctx.gw.record("file.denied", &ev);
        return 1;
    }
    sftp::serve(ctx, read).await
}
