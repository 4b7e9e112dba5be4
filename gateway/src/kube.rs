//! Every call to the Kubernetes API server, and only here. Each call acts as one user through an
//! [`Impersonated`] client, which only a [`VerifiedIdentity`] can build, and takes the policy's
//! permit for its mode, so a request the gateway has not authenticated and decided does not
//! compile.
//!
//! ```compile_fail
//! // A client as a user cannot be made from a plain kube client (no constructor, private fields).
//! fn forge(c: kube::Client) -> jitsh_gateway::kube::Impersonated {
//!     jitsh_gateway::kube::Impersonated { client: c, user: "alice".into() }
//! }
//! ```
//!
//! A command runs only with the exec permit the policy issued for it:
//!
//! ```no_run
//! use jitsh_broker_policy::ExecPermit;
//! use jitsh_gateway::kube::{Impersonated, exec::{Streams, run}};
//! type Io = Streams<tokio::io::Empty, tokio::io::Sink, tokio::io::Sink>;
//! async fn permitted(k: &Impersonated, p: &ExecPermit, io: Io) {
//!     let _ = run(k, p, io).await;
//! }
//! ```
//!
//! Without one it does not compile:
//!
//! ```compile_fail
//! use jitsh_gateway::kube::{Impersonated, exec::{Streams, run}};
//! type Io = Streams<tokio::io::Empty, tokio::io::Sink, tokio::io::Sink>;
//! async fn unpermitted(k: &Impersonated, io: Io) {
//!     let _ = run(k, io).await;
//! }
//! ```
//!
//! nor with a permit for another mode (reading a file is not running a command):
//!
//! ```compile_fail
//! use jitsh_broker_policy::FilePermit;
//! use jitsh_gateway::kube::{Impersonated, exec::{Streams, run}};
//! type Io = Streams<tokio::io::Empty, tokio::io::Sink, tokio::io::Sink>;
//! async fn wrong_mode(k: &Impersonated, p: &FilePermit, io: Io) {
//!     let _ = run(k, p, io).await;
//! }
//! ```

pub mod exec;
pub mod files;
pub mod logs;
pub mod pods;
pub mod portforward;
mod remote;
pub mod requests;

use http::{HeaderName, HeaderValue};
use jitsh_certs::VerifiedIdentity;

pub use pods::Resolved;
pub(crate) use remote::Remote;

/// Kubernetes access as the gateway's ServiceAccount, impersonating users per call.
#[derive(Clone)]
pub struct KubeAccess {
    base: kube::Config,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess").finish_non_exhaustive()
    }
}

/// A failure talking to Kubernetes; its `Display` is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The pod does not exist (or the user may not see it).
    #[error("pod {namespace}/{pod} not found")]
    PodNotFound {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
    },
    /// The pod has no such container.
    #[error("pod {namespace}/{pod} has no container '{container}' (has: {has})")]
    NoSuchContainer {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// The container asked for.
        container: String,
        /// The containers it has, comma-separated.
        has: String,
    },
    /// The pod lists no containers.
    #[error("pod {namespace}/{pod} has no containers")]
    NoContainers {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
    },
    /// The API server answered with an error status.
    #[error("kubernetes: {message} ({code})")]
    Api {
        /// HTTP status.
        code: u16,
        /// Its message.
        message: String,
    },
    /// The request did not get an answer.
    #[error("kubernetes: {0}")]
    Client(#[source] kube::Error),
    /// A stream broke while reading.
    #[error("kubernetes: reading from the pod: {0}")]
    Read(#[source] std::io::Error),
    /// The API server's stream lacked a part the gateway asked for.
    #[error("kubernetes: the stream has no {0}")]
    MissingStream(&'static str),
    /// Resolving a command's paths in the container failed (the line says why).
    #[error("{0}")]
    Resolve(String),
    /// The audit id could not be sent as a header.
    #[error("kubernetes: invalid Audit-ID header: {0}")]
    AuditId(#[source] http::header::InvalidHeaderValue),
}

impl KubeError {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            KubeError::PodNotFound { .. } => "pod-not-found",
            KubeError::NoSuchContainer { .. } | KubeError::NoContainers { .. } => "no-container",
            KubeError::Api { code: 403, .. } => "forbidden",
            KubeError::Api { code: 404, .. } => "not-found",
            KubeError::Api { .. } => "api-error",
            KubeError::Client(_) => "unreachable",
            KubeError::Read(_) => "stream-read",
            KubeError::MissingStream(_) => "missing-stream",
            KubeError::AuditId(_) => "audit-id",
            KubeError::Resolve(_) => "resolve",
        }
    }

    /// The API server's HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            KubeError::PodNotFound { .. } => Some(404),
            _ => None,
        }
    }
}

impl From<kube::Error> for KubeError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => KubeError::Api {
                code: s.code,
                message: s.message,
            },
            other => KubeError::Client(other),
        }
    }
}

impl KubeAccess {
    /// Wraps the gateway's own client configuration.
    pub fn new(base: kube::Config) -> Self {
        KubeAccess { base }
    }

    /// Asks the API server for its version as the gateway itself (readiness).
    pub async fn ping(&self) -> Result<String, KubeError> {
        let c = kube::Client::try_from(self.base.clone())?;
        let v = c.apiserver_version().await?;
        Ok(v.git_version)
    }

    /// A client acting as `id`, sending `Audit-ID: audit_id` on every request.
    pub fn impersonate(
        &self,
        id: &VerifiedIdentity,
        audit_id: &str,
    ) -> Result<Impersonated, KubeError> {
        let mut c = self.base.clone();
        c.auth_info.impersonate = Some(id.username().to_owned());
        c.auth_info.impersonate_groups = Some(id.groups().to_vec());
        let v = HeaderValue::from_str(audit_id).map_err(KubeError::AuditId)?;
        c.headers.push((HeaderName::from_static("audit-id"), v));
        Ok(Impersonated {
            client: kube::Client::try_from(c)?,
            user: id.username().to_owned(),
        })
    }
}

/// A Kubernetes client acting as one verified user (impersonation headers and the command's
/// `Audit-ID` on every request). Built only by [`KubeAccess::impersonate`] from a
/// [`VerifiedIdentity`], which only the `certs` crate builds.
#[derive(Clone)]
pub struct Impersonated {
    client: kube::Client,
    user: String,
}

impl std::fmt::Debug for Impersonated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonated")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Impersonated {
    /// The user it acts as.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn api<K>(&self, namespace: &str) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), namespace)
    }
}

/// The exit status a pods/exec status reports (`Success` → 0, else its `ExitCode` cause, else 1).
pub(crate) fn exit_code(st: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> u32 {
    if st.status.as_deref() == Some("Success") {
        return 0;
    }
    st.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_ref())
                .and_then(|m| m.parse().ok())
        })
        .unwrap_or(1)
}
