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

mod builtin;
mod error;
mod exec;
mod logs;
mod pods;
mod sandbox;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::Stream;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

pub use error::RuntimeError;
pub use exec::{ExecExit, ExecOutput, ExecProcess, ExecSpec, ExecStdin, Resizer, TerminalSize};
pub use logs::OutputStream;
pub use pods::{AttachStdin, Attached};

use pods::{Container, PodEntry};
use sandbox::Sandbox;

/// `argv[1]` that makes the kube-sim (and jitsh) binary run a built-in container image instead of
/// its normal CLI. Both binaries call [`container_main`] with the rest of `argv` when they see it.
pub const CONTAINER_SUBCOMMAND: &str = "__kube-sim-container";

/// Entry point of a built-in container image (see [`CONTAINER_SUBCOMMAND`]).
///
/// `args` may be the whole `argv` (program, [`CONTAINER_SUBCOMMAND`], ...) or only what follows
/// [`CONTAINER_SUBCOMMAND`]; everything up to and including the subcommand is skipped.
pub fn container_main(args: Vec<String>) -> ExitCode {
    builtin::main(args)
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
///
/// Dropping the last handle kills every process it started; [`Runtime::shutdown`] does the same
/// and waits for them to be gone.
#[derive(Clone, Debug)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// Running pods by (namespace, name).
type PodMap = HashMap<(String, String), Arc<PodEntry>>;

#[derive(Debug)]
struct Inner {
    ctx: Arc<pods::Ctx>,
    pods: Mutex<PodMap>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let pods: Vec<Arc<PodEntry>> = match self.pods.lock() {
            Ok(mut pods) => pods.drain().map(|(_, p)| p).collect(),
            Err(_) => Vec::new(),
        };
        for pod in pods {
            pod.kill_now();
        }
        self.ctx.processes.kill_all();
    }
}

impl Runtime {
    /// Creates the runtime, checking the sandbox asked for.
    pub fn new(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let sandbox = Sandbox::detect(options.sandbox)?;
        std::fs::create_dir_all(&options.state_dir).map_err(|e| {
            RuntimeError::io(
                format!("create state dir {}", options.state_dir.display()),
                e,
            )
        })?;
        let state_dir = options.state_dir.canonicalize().map_err(|e| {
            RuntimeError::io(
                format!("resolve state dir {}", options.state_dir.display()),
                e,
            )
        })?;
        let container_exe = options.container_exe.canonicalize().map_err(|e| {
            RuntimeError::io(
                format!("resolve container exe {}", options.container_exe.display()),
                e,
            )
        })?;
        let ctx = pods::Ctx::new(sandbox, container_exe, state_dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                ctx: Arc::new(ctx),
                pods: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Whether container processes run inside bubblewrap.
    pub fn is_sandboxed(&self) -> bool {
        self.inner.ctx.sandbox.is_bubblewrap()
    }

    /// Whether exec'd commands join the container's own namespaces (same pid namespace, so
    /// `ps` shows the main process). True with bubblewrap when running as root (`nsenter`).
    pub fn exec_shares_namespaces(&self) -> bool {
        self.inner.ctx.sandbox.exec_shares_namespaces()
    }

    /// The value of the `KUBE_SIM_INSTANCE` environment variable every process started by this
    /// runtime carries (tests use it to find leftovers in `/proc`).
    pub fn instance_marker(&self) -> &str {
        &self.inner.ctx.marker.1
    }

    /// Starts every container of `pod.spec.containers` (init and ephemeral containers are ignored).
    /// Returns once each process runs (and each built-in HTTP responder accepts connections).
    pub async fn start_pod(&self, pod: &Pod) -> Result<(), RuntimeError> {
        let plan = pods::PodPlan::from_pod(pod, &self.inner.ctx)?;
        let key = (plan.namespace.clone(), plan.name.clone());
        let entry = {
            let mut pods = self.lock_pods()?;
            if pods.contains_key(&key) {
                return Err(RuntimeError::AlreadyRunning {
                    namespace: key.0,
                    pod: key.1,
                });
            }
            let entry = Arc::new(PodEntry::new(plan));
            pods.insert(key.clone(), Arc::clone(&entry));
            entry
        };
        if let Err(e) = entry.start(&self.inner.ctx).await {
            entry.stop().await;
            if let Ok(mut pods) = self.inner.pods.lock() {
                pods.remove(&key);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Stops every container of the pod and forgets it (its files stay on disk).
    pub async fn stop_pod(&self, namespace: &str, pod: &str) -> Result<(), RuntimeError> {
        let entry = self
            .lock_pods()?
            .remove(&(namespace.to_owned(), pod.to_owned()))
            .ok_or_else(|| RuntimeError::PodNotFound {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
            })?;
        entry.stop().await;
        Ok(())
    }

    /// Kubernetes-shaped status of every container of the pod (state, restart count, start time),
    /// in `spec.containers` order; `None` when the pod is not running in this runtime.
    pub fn container_statuses(&self, namespace: &str, pod: &str) -> Option<Vec<ContainerStatus>> {
        let entry = self.pod(namespace, pod).ok()?;
        Some(entry.containers.iter().map(|c| c.status()).collect())
    }

    /// The log of one container (see [`LogOptions`]).
    pub fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        options: LogOptions,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, RuntimeError> {
        let c = self.container(&ContainerRef::new(namespace, pod, container))?;
        let stream = c.log_stream(&options)?;
        Ok(futures::stream::unfold(stream, |mut s| async move {
            s.next_chunk().await.map(|chunk| (chunk, s))
        }))
    }

    /// Runs a command inside the container's view (same `/var`, `/tmp`, hostname and, when
    /// [`Runtime::exec_shares_namespaces`], the same pid namespace).
    pub async fn exec(
        &self,
        target: &ContainerRef,
        spec: ExecSpec,
    ) -> Result<ExecProcess, RuntimeError> {
        if spec.command.is_empty() {
            return Err(RuntimeError::EmptyCommand);
        }
        let c = self.container(target)?;
        c.exec(&self.inner.ctx, &spec).await
    }

    /// Attaches to the main process of a container: its output from now on, and (with `stdin`)
    /// its standard input.
    pub async fn attach(
        &self,
        target: &ContainerRef,
        stdin: bool,
    ) -> Result<Attached, RuntimeError> {
        let c = self.container(target)?;
        c.attach(stdin)
    }

    /// Opens a TCP connection to `port` of the pod (what pods/portforward tunnels).
    ///
    /// Pods share the host network here, so each built-in listener gets its own host port on
    /// 127.0.0.1 chosen by the runtime; pod port 8080 of a `kube-sim/app` container maps to it.
    /// For pods with other images, the port is reached as 127.0.0.1:`port` on the host.
    pub async fn connect_port(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, RuntimeError> {
        let entry = self.pod(namespace, pod)?;
        let addr = entry.host_addr(port)?;
        tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| RuntimeError::io(format!("connect to {addr} (pod {pod} port {port})"), e))
    }

    /// Stops every container of every pod and waits for the processes to be gone.
    pub async fn shutdown(&self) {
        let pods: Vec<Arc<PodEntry>> = match self.inner.pods.lock() {
            Ok(mut pods) => pods.drain().map(|(_, p)| p).collect(),
            Err(_) => Vec::new(),
        };
        for pod in pods {
            pod.stop().await;
        }
        self.inner.ctx.processes.kill_all();
    }

    fn lock_pods(&self) -> Result<std::sync::MutexGuard<'_, PodMap>, RuntimeError> {
        self.inner.pods.lock().map_err(|_| RuntimeError::ShutDown)
    }

    fn pod(&self, namespace: &str, pod: &str) -> Result<Arc<PodEntry>, RuntimeError> {
        self.lock_pods()?
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
            .ok_or_else(|| RuntimeError::PodNotFound {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
            })
    }

    fn container(&self, target: &ContainerRef) -> Result<Arc<Container>, RuntimeError> {
        let entry = self.pod(&target.namespace, &target.pod)?;
        entry
            .containers
            .iter()
            .find(|c| c.cref.container == target.container)
            .cloned()
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                namespace: target.namespace.clone(),
                pod: target.pod.clone(),
                container: target.container.clone(),
            })
    }
}

/// Processes (exec'd commands) to kill when the runtime goes away.
#[derive(Debug, Default)]
pub(crate) struct ProcessRegistry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Tracked>>,
}

/// A tracked process: its pid and, when it leads one, its process group.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    pid: Option<u32>,
    pgid: Option<u32>,
}

impl ProcessRegistry {
    fn add(&self, pid: Option<u32>, pgid: Option<u32>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, Tracked { pid, pgid });
        }
        id
    }

    fn remove(&self, id: u64) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&id);
        }
    }

    fn kill_all(&self) {
        let all: Vec<Tracked> = match self.live.lock() {
            Ok(mut live) => live.drain().map(|(_, v)| v).collect(),
            Err(_) => Vec::new(),
        };
        for Tracked { pid, pgid } in all {
            if let Some(pgid) = pgid {
                kill_group(pgid);
            } else if let Some(pid) = pid {
                kill_pid(pid);
            }
        }
    }
}

/// SIGKILL to a process group.
pub(crate) fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// SIGKILL to a process.
pub(crate) fn kill_pid(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}
