//! Errors of the container runtime.

use std::io;

/// Everything the container runtime can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The pod has no running containers in this runtime.
    #[error("pods \"{pod}\" not found in namespace \"{namespace}\"")]
    PodNotFound {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        pod: String,
    },
    /// The pod exists but has no container of that name.
    #[error("container {container} is not valid for pod {pod}")]
    ContainerNotFound {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        pod: String,
        /// The container asked for.
        container: String,
    },
    /// `previous=true` was asked for a container that never terminated.
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    PreviousNotFound {
        /// Name of the pod.
        pod: String,
        /// Name of the container.
        container: String,
    },
    /// The container is not running (it exited and was not restarted yet, or the runtime shut down).
    #[error("container {container} in pod {pod} is not running")]
    ContainerNotRunning {
        /// Name of the pod.
        pod: String,
        /// Name of the container.
        container: String,
    },
    /// The pod object cannot be run (no containers, bad names, duplicate container names, ...).
    #[error("invalid pod: {0}")]
    InvalidPod(String),
    /// The pod is already running in this runtime.
    #[error("pod {namespace}/{pod} is already running")]
    AlreadyRunning {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        pod: String,
    },
    /// The pod does not expose the port asked for.
    #[error("unable to forward port {port} to pod {pod}: no container of the pod listens on it")]
    PortNotExposed {
        /// Name of the pod.
        pod: String,
        /// The pod port asked for.
        port: u16,
    },
    /// Bubblewrap was required but does not work on this machine.
    #[error("bubblewrap sandbox unavailable: {0}")]
    SandboxUnavailable(String),
    /// The container exe does not run the built-in images (it must dispatch
    /// `CONTAINER_SUBCOMMAND` to `container_main`).
    #[error("{0}")]
    ContainerExe(String),
    /// Exec request without a command.
    #[error("you must specify at least one command for the container")]
    EmptyCommand,
    /// The runtime was shut down.
    #[error("the container runtime has shut down")]
    ShutDown,
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl RuntimeError {
    /// The HTTP status code a Kubernetes API server would answer this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::PodNotFound { .. } => 404,
            Self::ContainerNotFound { .. }
            | Self::PreviousNotFound { .. }
            | Self::ContainerNotRunning { .. }
            | Self::EmptyCommand
            | Self::PortNotExposed { .. } => 400,
            Self::InvalidPod(_) => 422,
            Self::AlreadyRunning { .. } => 409,
            Self::SandboxUnavailable(_)
            | Self::ContainerExe(_)
            | Self::ShutDown
            | Self::Io { .. } => 500,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
