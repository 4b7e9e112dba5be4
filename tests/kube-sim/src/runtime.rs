//! Container processes of simulated pods: sandboxing, logs, exec, attach and port connections.
//!
//! # Containers
//!
//! Every container of `pod.spec.containers` runs as a real process (init and ephemeral containers
//! are ignored). Built-in images are implemented by this crate and run by re-executing the host
//! binary with [`CONTAINER_SUBCOMMAND`] (it is bound read-only into the sandbox at
//! `/kube-sim/container`):
//!
//! | image | behaviour |
//! | --- | --- |
//! | `kube-sim/app` | writes timestamped lines (every fifth an `ERROR`) to stdout and to `/var/log/app.log`, a burst of five at start then one a second (`args: ["--interval-ms", "N"]` changes that); answers HTTP on container port 8080 |
//! | `kube-sim/worker` | the same lines, to stdout and `/var/log/worker.log`; no listener |
//! | `kube-sim/idle` | sleeps (a sidecar or toolbox) |
//!
//! Every built-in image echoes each line read on stdin to stdout as `... INFO <name>: stdin: <line>`,
//! which makes `pods/attach` and "a line appended later" observable. A tag or registry prefix is
//! accepted (`example.com/kube-sim/app:1.0`). A container with a `command` runs `command` + `args`
//! whatever its image (there is no image store: binaries come from the host's `/usr`); one with
//! neither a built-in image nor a command is rejected ([`RuntimeError::InvalidPod`]). Only literal
//! `env` values are passed (`valueFrom` is ignored); `workingDir` is honoured. `restartPolicy` is
//! honoured (default `Always`, back-off from 0.5 s doubling to 10 s); the previous instance's log
//! is kept for `previous=true`.
//!
//! # Sandbox ([`SandboxMode`])
//!
//! With bubblewrap (`bwrap`, used when it is installed and works) each container gets: its own
//! `/var` and `/tmp` (directories `state_dir/pods/<ns>/<pod>/<container>/{var,tmp}` bound in), hostname
//! = pod name, its own pid, uts and ipc namespaces with a fresh `/proc` (so `ps aux` shows only the
//! container), the host `/usr` read-only (with the `/bin`, `/lib`, ... symlinks), an otherwise empty
//! `/etc` with `passwd`, `group`, `hosts`, `nsswitch.conf`, `localtime` and the `ld.so` files bound
//! read-only, a private `/dev`, and `--die-with-parent`.
//!
//! Exec'd commands run in the same view: as root, `nsenter` joins the mount, uts, ipc and pid
//! namespaces of the container's init process, so they see the same `/var`, `/tmp`, hostname and
//! processes (`ps aux` lists the main process), and a terminal is allocated from the container's
//! own devpts (`tty` prints `/dev/pts/N`). Without root, a second bubblewrap binds the same
//! directories with the same hostname, but in its own pid namespace: `ps` does not show the main
//! process there (see [`Runtime::exec_shares_namespaces`]).
//!
//! Without bubblewrap ([`SandboxMode::None`], or `Auto` when `bwrap` is missing or broken) processes
//! run unsandboxed on the host as the current user, in the container's directory, with the host's
//! hostname and process table. Command-line arguments that are paths under `/var` or `/tmp` (such as
//! the built-in images' `--log /var/log/app.log`, or `cat /var/log/app.log` in an exec) are rewritten
//! to the container's directories; paths inside a shell string (`sh -c '... /tmp/x'`) are not, so
//! isolation is only as good as that rewrite. Exec'd commands run through `env`, so a missing
//! command is exit status 127 in both modes.
//!
//! # Network
//!
//! Containers share the host network (there is no network namespace): to keep pods from colliding
//! and tests on loopback, each built-in listener gets a free port on 127.0.0.1 chosen by the runtime
//! (passed to the image as `--listen 127.0.0.1:PORT`), and [`Runtime::connect_port`] maps pod port
//! 8080 of a pod with a `kube-sim/app` container to it. Ports of other images are reached as
//! 127.0.0.1:`port` on the host. [`Runtime::start_pod`] returns once each built-in listener accepts.
//!
//! # Processes and clean-up
//!
//! All container processes are spawned from one dedicated thread and carry a parent-death signal
//! (`bwrap --die-with-parent`, or `setpriv --pdeathsig KILL`), each main process leads its own process
//! group, and exec'd processes are killed when their [`ExecProcess`] is dropped. [`Runtime::shutdown`]
//! kills everything and waits; dropping the last [`Runtime`] handle kills everything too; and if
//! the whole program dies, the kernel kills the containers. Every process carries
//! `KUBE_SIM_INSTANCE=<`[`Runtime::instance_marker`]`>` in its environment.
//!
//! # Logs
//!
//! A container's stdout and stderr are recorded, line by line with a nanosecond timestamp, in the
//! CRI log format the kubelet uses, in a file per container instance; [`Runtime::logs`] streams
//! from that file (memory stays bounded however large the log), following it through a watch of
//! its length until the instance exits.

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

/// How container processes are isolated (see the [module docs](self)).
///
/// Parses from `auto`, `bubblewrap` (or `bwrap`) and `none`.
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

impl std::str::FromStr for SandboxMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "bubblewrap" | "bwrap" => Ok(Self::Bubblewrap),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown sandbox mode {other:?} (expected auto, bubblewrap or none)"
            )),
        }
    }
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
        probe_container_exe(&container_exe)?;
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

    /// Writes `data` to the stdin of a container's main process. The built-in images echo each
    /// line they read as a log line (`... INFO <container>: stdin: <line>`), so this is how a test
    /// makes "a line appended later" show up in `pods/log`.
    pub async fn write_stdin(
        &self,
        target: &ContainerRef,
        data: &[u8],
    ) -> Result<(), RuntimeError> {
        let attached = self.attach(target, true).await?;
        match attached.stdin {
            Some(stdin) => stdin.write(data).await.map_err(|e| {
                RuntimeError::io(format!("write to the stdin of {}", target.container), e)
            }),
            None => Err(RuntimeError::ShutDown),
        }
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

/// Checks that `exe` runs the built-in images (fails fast instead of at the first pod).
fn probe_container_exe(exe: &std::path::Path) -> Result<(), RuntimeError> {
    let out = std::process::Command::new(exe)
        .args([CONTAINER_SUBCOMMAND, builtin::PROBE])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| RuntimeError::io(format!("run container exe {}", exe.display()), e))?;
    if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == builtin::PROBE_ANSWER
    {
        Ok(())
    } else {
        Err(RuntimeError::ContainerExe(format!(
            "{} does not run the built-in container images: its main must call \
             kube_sim::runtime::container_main when argv[1] is {CONTAINER_SUBCOMMAND:?}",
            exe.display()
        )))
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
