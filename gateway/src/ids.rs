//! Identifiers: a connection's session id and one command's id. The command id is also the
//! `Audit-ID` of its Kubernetes requests, so both audit logs correlate.

use std::fmt;

use serde::Serialize;

fn random_hex() -> String {
    let b: [u8; 12] = rand::random();
    hex::encode(b)
}

/// One SSH connection (what the audit log calls `session`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub(crate) struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub(crate) fn new() -> Self {
        SessionId(random_hex())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One command, word, file session or forward (what the audit log calls `command`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub(crate) struct CommandId(String);

impl CommandId {
    /// A fresh random id.
    pub(crate) fn new() -> Self {
        CommandId(random_hex())
    }
    /// The id as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh random id for things that are neither (recording names).
pub(crate) fn fresh() -> String {
    random_hex()
}
