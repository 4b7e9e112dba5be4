//! Container processes of simulated pods: sandboxing, logs, exec, attach and port connections.
//!
//! Every container of a pod runs as a real process. With bubblewrap (`bwrap`) the process gets
//! its own `/var` and `/tmp` (directories under the runtime's state directory), hostname = pod name,
//! its own pid, uts and ipc namespaces, the host `/usr` read-only, a minimal read-only `/etc` and a
//! fresh `/proc`. Without bubblewrap the process runs unsandboxed (see [`SandboxMode::None`]).
//!
//! Built-in images (`kube-sim/app`, `kube-sim/worker`, `kube-sim/idle`) are implemented by this
//! crate and run by re-executing the host binary with [`CONTAINER_SUBCOMMAND`]; any other image runs
//! the pod's `command` + `args` as given (there is no image store: `/usr` is the host's).

mod error;

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use futures::Stream;
use k8s_openapi::api::core::v1::Pod;

pub use error::RuntimeError;

/// `argv[1]` that makes the kube-sim (and jitsh) binary run a built-in container image instead of
/// its normal CLI. Both binaries call [`container_main`] with the rest of `argv` when they see it.
pub const CONTAINER_SUBCOMMAND: &str = "__kube-sim-container";

/// Entry point of a built-in container image (see [`CONTAINER_SUBCOMMAND`]).
///
/// `args` may be the whole `argv` (program, [`CONTAINER_SUBCOMMAND`], ...) or only what follows
/// [`CONTAINER_SUBCOMMAND`]; everything up to and including the subcommand is skipped.
pub fn container_main(args: Vec<String>) -> ExitCode {
    let _ = args;
    ExitCode::FAILURE
}

/// How container processes are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Bubblewrap when `bwrap` is installed and works, otherwise unsandboxed.
    #[default]
    Auto,
    /// Bubblewrap, or [`Runtime::new`] fails.
    Bubblewrap,
    /// No sandbox: processes run on the host as the current user, with the container's `/var` and
    /// `/tmp` paths rewritten to directories under the state directory.
    None,
}

/// Options of [`Runtime::new`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// The binary that implements the built-in images (it must dispatch [`CONTAINER_SUBCOMMAND`]
    /// to [`container_main`]); usually `std::env::current_exe()`.
    pub container_exe: PathBuf,
    /// Where container filesystems and logs live (created if missing). One runtime per directory.
    pub state_dir: PathBuf,
    /// Isolation of container processes.
    pub sandbox: SandboxMode,
}

/// Names one container of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
    /// Name of the container.
    pub container: String,
}

impl ContainerRef {
    /// Builds a reference from its three names.
    pub fn new(
        namespace: impl Into<String>,
        pod: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        }
    }
}

/// Names one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
}

impl PodRef {
    /// Builds a reference from its two names.
    pub fn new(namespace: impl Into<String>, pod: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            pod: pod.into(),
        }
    }
}

/// Query of [`Runtime::logs`], the `pods/log` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and deliver lines written later, until the container exits.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only lines written in the last N seconds.
    pub since_seconds: Option<u64>,
    /// Only lines written at or after this time.
    pub since_time: Option<std::time::SystemTime>,
    /// Prefix every line with its RFC 3339 timestamp (nanoseconds, UTC) and a space.
    pub timestamps: bool,
    /// The log of the previous (terminated) instance of the container.
    pub previous: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// The container runtime: a cheap handle (clone it freely) to every pod process it started.
#[derive(Clone, Debug)]
pub struct Runtime {
    options: RuntimeOptions,
}

impl Runtime {
    /// Creates the runtime, checking the sandbox asked for.
    pub fn new(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        Ok(Self { options })
    }

    /// Whether container processes run inside bubblewrap.
    pub fn is_sandboxed(&self) -> bool {
        let _ = &self.options;
        false
    }

    /// Starts every container of `pod.spec.containers` (init and ephemeral containers are ignored).
    /// Returns once each process runs (and each built-in HTTP responder accepts connections).
    pub async fn start_pod(&self, pod: &Pod) -> Result<(), RuntimeError> {
        let _ = pod;
        Err(RuntimeError::ShutDown)
    }

    /// Stops every container of the pod and forgets it (its files stay on disk).
    pub async fn stop_pod(&self, namespace: &str, pod: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::PodNotFound {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
        })
    }

    /// The log of one container (see [`LogOptions`]).
    pub fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        options: LogOptions,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, RuntimeError> {
        let _ = (container, options);
        Err::<futures::stream::Empty<std::io::Result<Bytes>>, _>(RuntimeError::PodNotFound {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
        })
    }

    /// Kubernetes-shaped status of every container of the pod (state, restart count, start time),
    /// in `spec.containers` order; `None` when the pod is not running in this runtime.
    pub fn container_statuses(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>> {
        let _ = (namespace, pod);
        None
    }

    /// Opens a TCP connection to `port` of the pod (what pods/portforward tunnels).
    pub async fn connect_port(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, RuntimeError> {
        Err(RuntimeError::PortNotExposed {
            pod: format!("{namespace}/{pod}"),
            port,
        })
    }

    /// Stops every container of every pod and waits for the processes to be gone.
    pub async fn shutdown(&self) {}
}
