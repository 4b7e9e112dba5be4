//! Errors of the certs crate.

/// A failure to make, read or sign keys and certificates (not a verification verdict: see
/// [`crate::Rejection`]).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The SSH key library refused an operation.
    #[error("{context}: {source}")]
    Ssh {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: ssh_key::Error,
    },
    /// An option value is invalid.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which option.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A revocation list line is invalid.
    #[error("revocation list line {line}: {reason}")]
    Revocation {
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
}

impl CertError {
    pub(crate) fn ssh(context: &'static str) -> impl FnOnce(ssh_key::Error) -> CertError {
        move |source| CertError::Ssh { context, source }
    }
}
