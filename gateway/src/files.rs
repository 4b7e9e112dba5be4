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
mod tree;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use jitsh_certs::VerifiedIdentity;
use russh::Channel;
use russh::server::Msg;
use serde_json::json;

use crate::server::{Clock, Ctx, ENDED_STATUS, Gateway, say};

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

/// A Kubernetes API failure, classified by its HTTP status.
pub(crate) fn kube_error(e: kube::Error) -> FileError {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            FileError::NotFound(format!("kubernetes: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 403 => {
            FileError::Denied(format!("kubernetes: {}", s.message))
        }
        kube::Error::Api(s) => {
            FileError::Failure(format!("kubernetes: {} ({})", s.message, s.code))
        }
        other => FileError::Failure(format!("kubernetes: {other}")),
    }
}

/// Serves the `sftp` subsystem on `channel` in its own task: one session slot, ended like any
/// session (certificate expiry, the policy's maximum, idle, shutdown).
pub(crate) fn spawn_sftp(
    gw: Arc<Gateway>,
    id: Arc<VerifiedIdentity>,
    sid: String,
    peer: SocketAddr,
    channel: Channel<Msg>,
) {
    tokio::spawn(async move {
        let (read, write) = channel.split();
        let code = match gw.open_session(id.username()) {
            Err(msg) => {
                say(&write, &msg).await;
                1
            }
            // A certificate restricted to one command gets that command only (as with sshd,
            // where force-command replaces the subsystem); it is not widened to file pulls.
            Ok(_) if id.force_command().is_some() => {
                say(
                    &write,
                    "refused: your certificate allows only its forced command",
                )
                .await;
                gw.record(
                    "file.denied",
                    json!({"session": sid, "identity": id.identity(), "user": id.username(), "via": "sftp", "op": "subsystem", "reasons": ["the certificate has a force-command"]}),
                );
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
                tokio::select! {
                    code = sftp::serve(&ctx, read) => code,
                    reason = clock.expired(&gw, &id, &write) => {
                        say(&write, &format!("session closed: {reason}")).await;
                        gw.record(
                            "session.end",
                            json!({"session": sid, "identity": id.identity(), "user": id.username(), "reason": reason, "via": "sftp"}),
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
}
