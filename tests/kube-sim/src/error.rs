//! Errors of the kube-sim server and its builder.

use std::path::PathBuf;

/// Why kube-sim could not start or answer a library call.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Generating the TLS material failed.
    #[error("kube-sim: generating TLS material: {0}")]
    Tls(String),
    /// Binding or serving the listener failed.
    #[error("kube-sim: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The fixture could not be read or is invalid.
    #[error("kube-sim: fixture {path}: {reason}")]
    Fixture {
        /// The fixture file (or `demo`).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The container runtime failed.
    #[error("kube-sim: runtime: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A kube client could not be built.
    #[error("kube-sim: client for context {context:?}: {reason}")]
    Client {
        /// The kubeconfig context.
        context: String,
        /// Why.
        reason: String,
    },
}

impl SimError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SimError::Io {
            context: context.into(),
            source,
        }
    }
}
