//! Pods and their containers: planning from a `Pod`, supervising processes, logs, attach.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::builtin::Image;
use super::exec::{ExecProcess, ExecSpec};
use super::logs::{LogProgress, LogStream, LogWriter, OutputStream, RecordReader, Start};
use super::sandbox::{ContainerDirs, EXE_IN_SANDBOX, Launch, Sandbox};
use super::{
    CONTAINER_SUBCOMMAND, ContainerRef, LogOptions, ProcessRegistry, RuntimeError, kill_group,
};

/// How long output pipes may stay open after the main process exited (a background child
/// holding them) before the log pump gives up on them.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// Longest wait for a built-in HTTP responder to accept connections at start-up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

mod supervise;

use supervise::{sandbox_init_pid, supervise};

/// Immutable context shared by everything the runtime runs.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) sandbox: Sandbox,
    pub(crate) exe: PathBuf,
    pub(crate) state_dir: PathBuf,
    /// `KUBE_SIM_INSTANCE=<random>`, set on every process.
    pub(crate) marker: (String, String),
    pub(crate) processes: Arc<ProcessRegistry>,
    spawner: Mutex<std::sync::mpsc::Sender<SpawnJob>>,
}

/// A process to spawn on the spawner thread.
struct SpawnJob {
    cmd: tokio::process::Command,
    handle: tokio::runtime::Handle,
    reply: oneshot::Sender<std::io::Result<Child>>,
}

impl Ctx {
    pub(crate) fn new(
        sandbox: Sandbox,
        exe: PathBuf,
        state_dir: PathBuf,
    ) -> Result<Self, RuntimeError> {
        // Container processes die with the thread that spawned them (bwrap --die-with-parent and
        // setpriv --pdeathsig act on the parent *thread*), so one long-lived thread spawns them
        // all; it ends, killing them, when the runtime is dropped.
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("kube-sim-spawner".to_owned())
            .spawn(move || {
                for job in rx {
                    let _guard = job.handle.enter();
                    let mut cmd = job.cmd;
                    let result = cmd.spawn();
                    drop(cmd);
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| RuntimeError::io("start the spawner thread", e))?;
        let marker = (
            "KUBE_SIM_INSTANCE".to_owned(),
            format!("{:016x}", rand::random::<u64>()),
        );
        Ok(Self {
            sandbox,
            exe,
            state_dir,
            marker,
            processes: Arc::new(ProcessRegistry::default()),
            spawner: Mutex::new(tx),
        })
    }

    /// Spawns `cmd` on the spawner thread, registered with the caller's tokio runtime.
    pub(crate) async fn spawn(&self, cmd: tokio::process::Command) -> Result<Child, RuntimeError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            RuntimeError::io("spawn needs a tokio runtime", std::io::Error::other(e))
        })?;
        let (reply, rx) = oneshot::channel();
        let job = SpawnJob { cmd, handle, reply };
        self.spawner
            .lock()
            .map_err(|_| RuntimeError::ShutDown)?
            .send(job)
            .map_err(|_| RuntimeError::ShutDown)?;
        rx.await
            .map_err(|_| RuntimeError::ShutDown)?
            .map_err(|e| RuntimeError::io("spawn container process", e))
    }
}

/// Restart policy of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

/// Everything needed to run one pod, decided up front.
#[derive(Debug)]
pub(crate) struct PodPlan {
    pub(crate) namespace: String,
    pub(crate) name: String,
    containers: Vec<Container>,
    /// container port → host address.
    ports: HashMap<u16, SocketAddr>,
    /// Some container runs a non-built-in image (its ports are the host's).
    foreign: bool,
}

fn valid_name(kind: &str, name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidPod(format!(
            "invalid {kind} name {name:?}"
        )))
    }
}

fn free_port() -> Result<u16, RuntimeError> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| RuntimeError::io("pick a host port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| RuntimeError::io("pick a host port", e))
}

impl PodPlan {
    pub(crate) fn from_pod(pod: &Pod, ctx: &Ctx) -> Result<Self, RuntimeError> {
        let name = pod
            .metadata
            .name
            .clone()
            .ok_or_else(|| RuntimeError::InvalidPod("metadata.name is missing".to_owned()))?;
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        valid_name("namespace", &namespace)?;
        valid_name("pod", &name)?;
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| RuntimeError::InvalidPod("spec is missing".to_owned()))?;
        if spec.containers.is_empty() {
            return Err(RuntimeError::InvalidPod(
                "spec.containers is empty".to_owned(),
            ));
        }
        let restart = match spec.restart_policy.as_deref() {
            None | Some("Always") => Restart::Always,
            Some("OnFailure") => Restart::OnFailure,
            Some("Never") => Restart::Never,
            Some(other) => {
                return Err(RuntimeError::InvalidPod(format!(
                    "unknown restartPolicy {other:?}"
                )));
            }
        };
        let mut ports = HashMap::new();
        let mut foreign = false;
        let mut containers = Vec::with_capacity(spec.containers.len());
        for c in &spec.containers {
            valid_name("container", &c.name)?;
            if containers
                .iter()
                .any(|x: &Container| x.cref.container == c.name)
            {
                return Err(RuntimeError::InvalidPod(format!(
                    "duplicate container name {:?}",
                    c.name
                )));
            }
            let image_ref = c.image.clone().unwrap_or_default();
            let image = Image::from_reference(&image_ref);
            let command = c.command.clone().unwrap_or_default();
            let args = c.args.clone().unwrap_or_default();
            let dirs = ContainerDirs::new(
                ctx.state_dir
                    .join("pods")
                    .join(&namespace)
                    .join(&name)
                    .join(&c.name),
            );
            let argv = match (command.is_empty(), image) {
                (false, _) => command.into_iter().chain(args).collect(),
                (true, Some(image)) => {
                    let mut argv = vec![
                        EXE_IN_SANDBOX.to_owned(),
                        CONTAINER_SUBCOMMAND.to_owned(),
                        image.as_arg().to_owned(),
                        "--name".to_owned(),
                        c.name.clone(),
                    ];
                    if let Some(log) = image.log_file() {
                        argv.extend(["--log".to_owned(), log.to_owned()]);
                    }
                    if let Some(port) = image.listen_port() {
                        let host =
                            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port()?));
                        argv.extend(["--listen".to_owned(), host.to_string()]);
                        ports.insert(port, host);
                    }
                    argv.extend(args);
                    argv
                }
                (true, None) if !args.is_empty() => args,
                (true, None) => {
                    return Err(RuntimeError::InvalidPod(format!(
                        "container {:?}: image {image_ref:?} is not a built-in image \
                         (kube-sim/app, kube-sim/worker, kube-sim/idle) and it has no command",
                        c.name
                    )));
                }
            };
            if image.is_none() || !c.command.as_deref().unwrap_or_default().is_empty() {
                foreign = true;
            }
            let env = c
                .env
                .iter()
                .flatten()
                .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
                .collect();
            containers.push(Container {
                cref: ContainerRef::new(&namespace, &name, &c.name),
                image: image_ref,
                dirs,
                argv,
                env,
                workdir: c.working_dir.clone(),
                restart,
                stdin_once: c.stdin_once.unwrap_or(false),
                needs_ready: image
                    .and_then(Image::listen_port)
                    .and_then(|p| ports.get(&p).copied()),
                live: Mutex::new(Live::default()),
                stop: watch::channel(false).0,
            });
        }
        Ok(Self {
            namespace,
            name,
            containers,
            ports,
            foreign,
        })
    }
}

/// A pod known to the runtime.
#[derive(Debug)]
pub(crate) struct PodEntry {
    pub(crate) containers: Vec<Arc<Container>>,
    ports: HashMap<u16, SocketAddr>,
    foreign: bool,
    pod: String,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

impl PodEntry {
    pub(crate) fn new(plan: PodPlan) -> Self {
        Self {
            containers: plan.containers.into_iter().map(Arc::new).collect(),
            ports: plan.ports,
            foreign: plan.foreign,
            pod: plan.name,
            supervisors: Mutex::new(Vec::new()),
        }
    }

    /// Starts every container and waits until each runs (and built-in listeners accept).
    pub(crate) async fn start(&self, ctx: &Arc<Ctx>) -> Result<(), RuntimeError> {
        let mut waits = Vec::new();
        for c in &self.containers {
            // A new pod starts from empty directories (like a fresh emptyDir), even when the
            // state directory is reused.
            let _ = std::fs::remove_dir_all(&c.dirs.root);
            c.dirs.create()?;
            let (tx, rx) = oneshot::channel();
            let handle = tokio::spawn(supervise(Arc::clone(ctx), Arc::clone(c), tx));
            if let Ok(mut s) = self.supervisors.lock() {
                s.push(handle);
            }
            waits.push(rx);
        }
        for rx in waits {
            rx.await.map_err(|_| RuntimeError::ShutDown)??;
        }
        for c in &self.containers {
            if let Some(addr) = c.needs_ready {
                c.wait_ready(addr).await?;
            }
        }
        Ok(())
    }

    /// Host address of a pod port.
    pub(crate) fn host_addr(&self, port: u16) -> Result<SocketAddr, RuntimeError> {
        if let Some(addr) = self.ports.get(&port) {
            return Ok(*addr);
        }
        if self.foreign && port != 0 {
            return Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)));
        }
        Err(RuntimeError::PortNotExposed {
            pod: self.pod.clone(),
            port,
        })
    }

    /// Stops every container and waits for the supervisors to finish.
    pub(crate) async fn stop(&self) {
        self.kill_now();
        let handles: Vec<JoinHandle<()>> = match self.supervisors.lock() {
            Ok(mut s) => s.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for h in handles {
            let _ = h.await;
        }
    }

    /// Marks every container stopping and kills its processes, without waiting.
    pub(crate) fn kill_now(&self) {
        for c in &self.containers {
            c.stop.send_replace(true);
            c.kill_current();
        }
    }
}

/// What the runtime knows about a terminated container instance.
#[derive(Debug, Clone)]
struct Terminated {
    exit_code: i32,
    signal: Option<i32>,
    started_at: SystemTime,
    finished_at: SystemTime,
}

/// One run of a container's main process.
#[derive(Debug)]
struct Instance {
    started_at: SystemTime,
    log_path: PathBuf,
    progress: watch::Receiver<LogProgress>,
    /// The bwrap (or plain) process: a process-group leader.
    host_pid: Option<u32>,
    /// The sandbox's init process, whose namespaces exec joins.
    ns_pid: Option<u32>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
}

#[derive(Debug, Default)]
struct Live {
    /// The running instance.
    current: Option<Arc<Instance>>,
    /// The most recent instance (running or not).
    last: Option<Arc<Instance>>,
    /// Instances started before the last one.
    restart_count: i32,
    /// The previous instance's end (what `lastState` reports).
    last_terminated: Option<Terminated>,
    /// The last instance's end, when it is not running.
    terminated: Option<Terminated>,
}

/// One container of a pod.
#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) cref: ContainerRef,
    image: String,
    dirs: ContainerDirs,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    restart: Restart,
    stdin_once: bool,
    needs_ready: Option<SocketAddr>,
    live: Mutex<Live>,
    stop: watch::Sender<bool>,
}

/// The pod's hostname: its name cut to 63 bytes (as the kubelet does), without a trailing
/// `-` or `.`.
pub(crate) fn hostname_of(pod: &str) -> &str {
    pod.get(..pod.len().min(63))
        .unwrap_or(pod)
        .trim_end_matches(['-', '.'])
}

fn to_time(t: SystemTime) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::try_from(t).ok().map(Time)
}

impl Container {
    fn launch(&self) -> Launch<'_> {
        Launch {
            hostname: hostname_of(&self.cref.pod),
            dirs: &self.dirs,
            exe: Path::new(""),
            env: &self.env,
            argv: &self.argv,
            workdir: self.workdir.as_deref(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Live>, RuntimeError> {
        self.live.lock().map_err(|_| RuntimeError::ShutDown)
    }

    fn not_running(&self) -> RuntimeError {
        RuntimeError::ContainerNotRunning {
            pod: self.cref.pod.clone(),
            container: self.cref.container.clone(),
        }
    }

    fn current(&self) -> Result<Arc<Instance>, RuntimeError> {
        self.lock()?
            .current
            .clone()
            .ok_or_else(|| self.not_running())
    }

    fn kill_current(&self) {
        let current = self.live.lock().ok().and_then(|l| l.current.clone());
        if let Some(pid) = current.and_then(|i| i.host_pid) {
            kill_group(pid);
        }
    }

    /// The Kubernetes status of this container.
    pub(crate) fn status(&self) -> ContainerStatus {
        let live = self.live.lock().ok();
        let (current, restart_count, last_terminated, terminated) = match &live {
            Some(l) => (
                l.current.clone(),
                l.restart_count,
                l.last_terminated.clone(),
                l.terminated.clone(),
            ),
            None => (None, 0, None, None),
        };
        let terminated_state = |t: &Terminated| ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: t.signal,
                reason: Some(
                    if t.exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .to_owned(),
                ),
                started_at: to_time(t.started_at),
                finished_at: to_time(t.finished_at),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        let state = match (&current, &terminated) {
            (Some(i), _) => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: to_time(i.started_at),
                }),
                ..ContainerState::default()
            },
            (None, Some(t)) => terminated_state(t),
            (None, None) => ContainerState::default(),
        };
        ContainerStatus {
            name: self.cref.container.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            container_id: Some(format!(
                "kube-sim://{}_{}_{}_{}",
                self.cref.namespace, self.cref.pod, self.cref.container, restart_count
            )),
            ready: current.is_some(),
            started: Some(current.is_some()),
            restart_count,
            state: Some(state),
            last_state: last_terminated.as_ref().map(terminated_state),
            ..ContainerStatus::default()
        }
    }

    fn log_path(&self, generation: i32) -> PathBuf {
        self.dirs.logs.join(format!("{generation}.log"))
    }

    /// A `pods/log` stream of this container.
    pub(crate) fn log_stream(&self, options: &LogOptions) -> Result<LogStream, RuntimeError> {
        let live = self.lock()?;
        if options.previous {
            let previous = live.restart_count - 1;
            let path = self.log_path(previous);
            if previous < 0 || !path.exists() {
                return Err(RuntimeError::PreviousNotFound {
                    pod: self.cref.pod.clone(),
                    container: self.cref.container.clone(),
                });
            }
            return Ok(LogStream::new(path, options, None));
        }
        let last = live.last.clone().ok_or_else(|| self.not_running())?;
        Ok(LogStream::new(
            last.log_path.clone(),
            options,
            Some(last.progress.clone()),
        ))
    }

    /// Runs a command in this container's view.
    pub(crate) async fn exec(
        &self,
        ctx: &Ctx,
        spec: &ExecSpec,
    ) -> Result<ExecProcess, RuntimeError> {
        let instance = self.current()?;
        let launch = Launch {
            exe: &ctx.exe,
            argv: &spec.command,
            ..self.launch()
        };
        let cmd = ctx
            .sandbox
            .exec_command(&launch, &ctx.marker, instance.ns_pid, spec.tty);
        let ptmx = instance
            .ns_pid
            .filter(|_| ctx.sandbox.exec_shares_namespaces())
            .map(|pid| PathBuf::from(format!("/proc/{pid}/root/dev/ptmx")));
        ExecProcess::spawn(cmd, spec, ptmx.as_deref(), ctx).await
    }

    /// Attaches to the running main process.
    pub(crate) fn attach(&self, stdin: bool) -> Result<Attached, RuntimeError> {
        let instance = self.current()?;
        let offset = instance.progress.borrow().len;
        let reader = RecordReader::new(
            instance.log_path.clone(),
            Start::Offset(offset),
            Some(instance.progress.clone()),
        );
        let output = futures::stream::unfold(reader, |mut reader| async move {
            match reader.next().await {
                Ok(Some(record)) => {
                    let mut data = record.content.to_vec();
                    if record.full {
                        data.push(b'\n');
                    }
                    Some((Ok((record.stream, Bytes::from(data))), reader))
                }
                Ok(None) => None,
                Err(e) => Some((Err(e), reader)),
            }
        })
        .boxed();
        Ok(Attached {
            stdin: stdin.then(|| AttachStdin {
                instance: Arc::clone(&instance),
                stdin_once: self.stdin_once,
            }),
            output,
        })
    }

    async fn wait_ready(&self, addr: SocketAddr) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if self.current().is_err() || tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::io(
                    format!(
                        "container {} did not start listening on {addr}",
                        self.cref.container
                    ),
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Spawns one instance of the main process.
    async fn start_instance(
        &self,
        ctx: &Ctx,
    ) -> Result<(Arc<Instance>, Child, LogWriter), RuntimeError> {
        let generation = self.lock()?.restart_count;
        let log_path = self.log_path(generation);
        let (writer, progress) = LogWriter::create(&log_path)
            .map_err(|e| RuntimeError::io(format!("create {}", log_path.display()), e))?;
        // Keep the previous instance's log only.
        let _ = std::fs::remove_file(self.log_path(generation - 2));
        let launch = Launch {
            exe: &ctx.exe,
            ..self.launch()
        };
        let mut cmd = ctx.sandbox.main_command(&launch, &ctx.marker);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = ctx.spawn(cmd).await?;
        let host_pid = child.id();
        let ns_pid = match (ctx.sandbox.is_bubblewrap(), host_pid) {
            (true, Some(pid)) => sandbox_init_pid(pid, &mut child).await,
            _ => None,
        };
        let instance = Arc::new(Instance {
            started_at: SystemTime::now(),
            log_path,
            progress,
            host_pid,
            ns_pid,
            stdin: tokio::sync::Mutex::new(child.stdin.take()),
        });
        let mut live = self.lock()?;
        live.current = Some(Arc::clone(&instance));
        live.last = Some(Arc::clone(&instance));
        live.terminated = None;
        Ok((instance, child, writer))
    }
}

/// A session attached to a container's main process.
pub struct Attached {
    /// Writes to the main process's stdin (when asked for).
    pub stdin: Option<AttachStdin>,
    /// The main process's output from the moment of attaching, until it exits.
    pub output: BoxStream<'static, std::io::Result<(OutputStream, Bytes)>>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("stdin", &self.stdin)
            .finish_non_exhaustive()
    }
}

/// The stdin of a container's main process, shared by every attached client.
#[derive(Debug)]
pub struct AttachStdin {
    instance: Arc<Instance>,
    stdin_once: bool,
}

impl AttachStdin {
    /// Writes `data` to the main process's stdin.
    pub async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        let mut stdin = self.instance.stdin.lock().await;
        match stdin.as_mut() {
            Some(pipe) => pipe.write_all(data).await,
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the container's stdin is closed",
            )),
        }
    }

    /// The client closed its stdin: closes the process's stdin when the container has
    /// `stdinOnce: true` (as the kubelet does), else leaves it open for other clients.
    pub async fn close(&self) {
        if self.stdin_once {
            self.instance.stdin.lock().await.take();
        }
    }
}
