//! Runs a permitted command in a pod through kube-rs, impersonating the verified identity.

use futures::SinkExt;
use http::{HeaderName, HeaderValue};
use jitsh_broker_policy::Permit;
use jitsh_certs::VerifiedIdentity;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

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

/// A failure talking to Kubernetes, as one line for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KubeError(pub String);

fn kube_err(e: kube::Error) -> KubeError {
    match e {
        kube::Error::Api(s) => KubeError(format!("kubernetes: {} ({})", s.message, s.code)),
        other => KubeError(format!("kubernetes: {other}")),
    }
}

impl KubeAccess {
    /// Wraps the gateway's own client configuration.
    pub fn new(base: kube::Config) -> Self {
        KubeAccess { base }
    }

    /// Asks the API server for its version as the gateway itself (readiness).
    pub async fn ping(&self) -> Result<String, KubeError> {
        let c = kube::Client::try_from(self.base.clone()).map_err(kube_err)?;
        let v = c.apiserver_version().await.map_err(kube_err)?;
        Ok(v.git_version)
    }

    /// A client impersonating `id`, sending `Audit-ID: audit_id` on every request.
    pub fn client_as(
        &self,
        id: &VerifiedIdentity,
        audit_id: &str,
    ) -> Result<kube::Client, KubeError> {
        let mut c = self.base.clone();
        c.auth_info.impersonate = Some(id.username().to_owned());
        c.auth_info.impersonate_groups = Some(id.groups().to_vec());
        let v = HeaderValue::from_str(audit_id).map_err(|e| KubeError(e.to_string()))?;
        c.headers.push((HeaderName::from_static("audit-id"), v));
        kube::Client::try_from(c).map_err(kube_err)
    }
}

/// The resolved pod and container.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
    /// Pod labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Looks the pod up as the user and picks the container (annotation default, else first).
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<Resolved, KubeError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let p = api.get(pod).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => {
            KubeError(format!("pod {namespace}/{pod} not found"))
        }
        other => kube_err(other),
    })?;
    let names: Vec<String> = p
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let annotated = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container").cloned());
    let chosen = match container {
        Some(c) if names.iter().any(|n| n == c) => c.to_owned(),
        Some(c) => {
            return Err(KubeError(format!(
                "pod {namespace}/{pod} has no container '{c}' (has: {})",
                names.join(", ")
            )));
        }
        None => annotated
            .filter(|a| names.contains(a))
            .or_else(|| names.first().cloned())
            .ok_or_else(|| KubeError(format!("pod {namespace}/{pod} has no containers")))?,
    };
    Ok(Resolved {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: chosen,
        labels: p.metadata.labels.unwrap_or_default(),
    })
}

/// Lists pods in `namespace` as the client's user: name, phase, containers.
pub async fn list_pods(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<(String, String, Vec<String>)>, KubeError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(kube_err)?;
    Ok(list
        .items
        .into_iter()
        .map(|p| {
            let name = p.metadata.name.unwrap_or_default();
            let phase = p
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "Unknown".into());
            let containers = p
                .spec
                .map(|s| s.containers.into_iter().map(|c| c.name).collect())
                .unwrap_or_default();
            (name, phase, containers)
        })
        .collect())
}

/// Streams a container's log (pods/log as the client's user) into `out`; returns bytes copied.
pub async fn stream_logs<O>(
    client: &kube::Client,
    target: &Resolved,
    options: &crate::intent::LogOptions,
    mut out: O,
) -> Result<u64, KubeError>
where
    O: AsyncWrite + Unpin,
{
    use futures::AsyncReadExt as _;
    let api: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let lp = kube::api::LogParams {
        container: Some(target.container.clone()),
        follow: options.follow,
        tail_lines: options.tail,
        since_seconds: options.since_seconds,
        previous: options.previous,
        timestamps: options.timestamps,
        ..Default::default()
    };
    let reader = api.log_stream(&target.pod, &lp).await.map_err(kube_err)?;
    let mut reader = std::pin::pin!(reader);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| KubeError(format!("kubernetes: reading the log: {e}")))?;
        if n == 0 {
            break;
        }
        if out.write_all(&buf[..n]).await.is_err() {
            break;
        }
        total += n as u64;
    }
    let _ = out.flush().await;
    Ok(total)
}

/// Copies with 256 KiB reads (tokio's `copy` reads 8 KiB at a time, which becomes 8 KiB SSH
/// packets and twice the client's CPU for bulk output).
async fn copy_large<R, W>(r: &mut R, w: &mut W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, r);
    tokio::io::copy_buf(&mut reader, w).await
}

/// Sends the initial terminal size, then forwards each resize until either side closes.
async fn forward_resizes(
    size: Tty,
    mut rx: tokio::sync::mpsc::Receiver<Tty>,
    mut tx: futures::channel::mpsc::Sender<kube::api::TerminalSize>,
) -> tokio::task::JoinHandle<()> {
    let ts = |t: Tty| kube::api::TerminalSize {
        width: t.cols,
        height: t.rows,
    };
    let _ = tx.send(ts(size)).await;
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            if tx.send(ts(t)).await.is_err() {
                break;
            }
        }
    })
}

/// Terminal request of the SSH channel.
#[derive(Debug, Clone, Copy)]
pub struct Tty {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// Runs each stage of `permit` as one exec, joined by the gateway; returns the last stage's exit
/// status. Requires both proofs: the identity and the permit.
#[allow(clippy::too_many_arguments)]
pub async fn run<I, O, E>(
    client: &kube::Client,
    _identity: &VerifiedIdentity,
    permit: &Permit,
    target: &Resolved,
    tty: Option<Tty>,
    resize: Option<tokio::sync::mpsc::Receiver<Tty>>,
    stdin: I,
    stdout: O,
    stderr: E,
) -> Result<u32, KubeError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin + Send + 'static,
{
    run_stages(
        client,
        permit.stages(),
        target,
        tty,
        resize,
        stdin,
        stdout,
        stderr,
    )
    .await
}

/// Runs a break-glass shell: `argv` (the configured shell, not user text) under a break-glass
/// permit.
#[allow(clippy::too_many_arguments)]
pub async fn run_break_glass<I, O, E>(
    client: &kube::Client,
    _permit: &Permit,
    shell: &[String],
    target: &Resolved,
    tty: Option<Tty>,
    resize: Option<tokio::sync::mpsc::Receiver<Tty>>,
    stdin: I,
    stdout: O,
    stderr: E,
) -> Result<u32, KubeError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin + Send + 'static,
{
    run_stages(
        client,
        std::slice::from_ref(&shell.to_vec()),
        target,
        tty,
        resize,
        stdin,
        stdout,
        stderr,
    )
    .await
}

/// Attaches to the container's main process (pods/attach) as the client's user.
#[allow(clippy::too_many_arguments)]
pub async fn attach<I, O, E>(
    client: &kube::Client,
    _permit: &Permit,
    target: &Resolved,
    tty: Option<Tty>,
    resize: Option<tokio::sync::mpsc::Receiver<Tty>>,
    mut stdin: I,
    mut stdout: O,
    mut stderr: E,
) -> Result<u32, KubeError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin + Send + 'static,
{
    let api: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    // The main process's terminal and stdin exist only when its spec asks for them; attach
    // follows the spec so it works on ordinary containers (output only).
    let pod = api.get(&target.pod).await.map_err(kube_err)?;
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == target.container));
    let with_stdin = spec.and_then(|c| c.stdin).unwrap_or(false);
    let with_tty = tty.is_some() && spec.and_then(|c| c.tty).unwrap_or(false);
    let ap = AttachParams {
        container: Some(target.container.clone()),
        stdin: with_stdin,
        stdout: true,
        stderr: !with_tty,
        tty: with_tty,
        max_stdin_buf_size: Some(256 * 1024),
        max_stdout_buf_size: Some(256 * 1024),
        max_stderr_buf_size: Some(256 * 1024),
    };
    let mut p = api.attach(&target.pod, &ap).await.map_err(kube_err)?;
    let mut tasks = Vec::new();
    if let Some(mut w) = p.stdin() {
        tasks.push(tokio::spawn(async move {
            let _ = copy_large(&mut stdin, &mut w).await;
            let _ = w.shutdown().await;
        }));
    }
    if let (Some(size), Some(rx), Some(tx)) = (tty, resize, p.terminal_size()) {
        tasks.push(forward_resizes(size, rx, tx).await);
    }
    let err_task = p.stderr().map(|mut e| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut e, &mut stderr).await;
            let _ = stderr.flush().await;
        })
    });
    if let Some(mut out) = p.stdout() {
        let _ = copy_large(&mut out, &mut stdout).await;
    }
    let _ = stdout.flush().await;
    if let Some(t) = err_task {
        let _ = t.await;
    }
    for t in tasks {
        t.abort();
    }
    let status = p.take_status();
    let code = match status {
        Some(s) => s.await.map_or(0, |st| exit_code(&st)),
        None => 0,
    };
    let _ = p.join().await;
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
async fn run_stages<I, O, E>(
    client: &kube::Client,
    stages: &[Vec<String>],
    target: &Resolved,
    tty: Option<Tty>,
    resize: Option<tokio::sync::mpsc::Receiver<Tty>>,
    stdin: I,
    mut stdout: O,
    mut stderr: E,
) -> Result<u32, KubeError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin + Send + 'static,
{
    let api: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let mut procs = Vec::with_capacity(stages.len());
    for argv in stages {
        let ap = AttachParams {
            container: Some(target.container.clone()),
            stdin: true,
            stdout: true,
            stderr: tty.is_none(),
            tty: tty.is_some() && stages.len() == 1,
            max_stdin_buf_size: Some(256 * 1024),
            max_stdout_buf_size: Some(256 * 1024),
            max_stderr_buf_size: Some(256 * 1024),
        };
        let p = api
            .exec(&target.pod, argv.clone(), &ap)
            .await
            .map_err(kube_err)?;
        procs.push(p);
    }
    let mut tasks = Vec::new();
    // stdin → first stage
    let mut stdin = stdin;
    if let Some(mut w) = procs.first_mut().and_then(|p| p.stdin()) {
        tasks.push(tokio::spawn(async move {
            let _ = copy_large(&mut stdin, &mut w).await;
            let _ = w.shutdown().await;
        }));
    }
    if let (Some(size), Some(rx)) = (tty, resize)
        && let Some(tx) = procs.first_mut().and_then(|p| p.terminal_size())
    {
        tasks.push(forward_resizes(size, rx, tx).await);
    }
    // stage i stdout → stage i+1 stdin
    for i in 0..procs.len().saturating_sub(1) {
        let r = procs[i].stdout();
        let w = procs[i + 1].stdin();
        if let (Some(mut r), Some(mut w)) = (r, w) {
            tasks.push(tokio::spawn(async move {
                let _ = copy_large(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }));
        }
    }
    let mut errs = Vec::new();
    for p in procs.iter_mut() {
        if let Some(e) = p.stderr() {
            errs.push(e);
        }
    }
    let err_task = tokio::spawn(async move {
        for mut e in errs {
            let _ = tokio::io::copy(&mut e, &mut stderr).await;
        }
        let _ = stderr.flush().await;
    });
    let last = procs
        .last_mut()
        .ok_or_else(|| KubeError("empty command".into()))?;
    let status = last.take_status();
    if let Some(mut out) = last.stdout() {
        let _ = copy_large(&mut out, &mut stdout).await;
    }
    let _ = stdout.flush().await;
    let code = match status {
        Some(s) => match s.await {
            Some(st) => exit_code(&st),
            None => 1,
        },
        None => 1,
    };
    let _ = err_task.await;
    for t in tasks {
        t.abort();
    }
    for p in procs {
        let _ = p.join().await;
    }
    Ok(code)
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
