//! Shared helpers of the runtime_* integration tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    reason = "tests: a failed unwrap, expect or panic is a test failure; each test binary uses only part of this shared module"
)]

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_sim::runtime::{ContainerRef, ExecExit, ExecSpec, Runtime, RuntimeOptions, SandboxMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The kube-sim binary (it dispatches the built-in images).
pub fn container_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kube-sim"))
}

/// Whether bubblewrap works here (the sandboxed tests need it).
pub fn bwrap_available() -> bool {
    let dir = tempfile::tempdir().unwrap();
    Runtime::new(RuntimeOptions {
        container_exe: container_exe(),
        state_dir: dir.path().to_owned(),
        sandbox: SandboxMode::Bubblewrap,
    })
    .is_ok()
}

/// A runtime over a fresh state directory.
pub fn runtime(sandbox: SandboxMode) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeOptions {
        container_exe: container_exe(),
        state_dir: dir.path().to_owned(),
        sandbox,
    })
    .unwrap();
    (rt, dir)
}

pub fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        ..Container::default()
    }
}

pub fn pod(namespace: &str, name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers,
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// The demo fixture's pods: payments/api-0 (app, sidecar), payments/worker-0 (worker), default/toolbox.
pub fn demo_pods() -> Vec<Pod> {
    let mut app = container("app", "kube-sim/app");
    app.ports = Some(vec![ContainerPort {
        container_port: 8080,
        ..ContainerPort::default()
    }]);
    vec![
        pod(
            "payments",
            "api-0",
            vec![app, container("sidecar", "kube-sim/idle")],
        ),
        pod(
            "payments",
            "worker-0",
            vec![container("worker", "kube-sim/worker")],
        ),
        pod(
            "default",
            "toolbox",
            vec![container("toolbox", "kube-sim/idle")],
        ),
    ]
}

pub async fn start_demo(rt: &Runtime) {
    for p in demo_pods() {
        rt.start_pod(&p).await.unwrap();
    }
}

/// Output of a finished exec.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExecExit,
}

impl Output {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs argv in a container (pipes), feeding `input` then closing stdin.
pub async fn exec(
    rt: &Runtime,
    target: &ContainerRef,
    argv: &[&str],
    input: Option<&[u8]>,
) -> Output {
    let mut p = rt
        .exec(
            target,
            ExecSpec {
                command: argv.iter().map(|s| (*s).to_owned()).collect(),
                stdin: input.is_some(),
                ..ExecSpec::default()
            },
        )
        .await
        .unwrap();
    let stdin = p.stdin.take();
    let mut stdout = p.stdout.take().unwrap();
    let mut stderr = p.stderr.take().unwrap();
    let input = input.map(<[u8]>::to_vec);
    let feed = async move {
        if let (Some(mut s), Some(data)) = (stdin, input) {
            s.write_all(&data).await.unwrap();
            s.close().await.unwrap();
        }
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (_, a, b) = tokio::join!(
        feed,
        stdout.read_to_end(&mut out),
        stderr.read_to_end(&mut err)
    );
    a.unwrap();
    b.unwrap();
    let exit = p.wait().await.unwrap();
    Output {
        stdout: out,
        stderr: err,
        exit,
    }
}

/// Polls `check` until it returns `Some`, for at most 30 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Processes (pid, cmdline) whose environment carries the runtime's instance marker.
pub fn marked_processes(marker: &str) -> Vec<(u32, String)> {
    let needle = format!("KUBE_SIM_INSTANCE={marker}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // Zombies have an empty cmdline and are already dead.
            if !cmdline.is_empty() {
                found.push((pid, cmdline));
            }
        }
    }
    found
}
