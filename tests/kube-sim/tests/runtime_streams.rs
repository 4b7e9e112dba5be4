//! The WebSocket stream protocols driven by kube-rs through the real kube-sim API server, as the
//! gateway ServiceAccount impersonating alice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

mod runtime_support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, TerminalSize};
use kube_sim::runtime::SandboxMode;
use runtime_support::*;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    sim: kube_sim::RunningSim,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
    async fn stop(self) {
        self.sim.shutdown().await;
    }
}

/// The real kube-sim API server; kube-rs connects as the `gateway` ServiceAccount impersonating
/// alice (group oncall-payments), exactly as the jitsh gateway does.
async fn server() -> Server {
    let mode = if bwrap_available() {
        SandboxMode::Bubblewrap
    } else {
        SandboxMode::None
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = kube_sim::SimBuilder::new()
        .container_exe(container_exe())
        .state_dir(dir.path().join("state"))
        .sandbox(mode)
        .start()
        .await
        .unwrap();
    let options = kube::config::KubeConfigOptions {
        context: Some("gateway".to_owned()),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(sim.kubeconfig(), &options)
        .await
        .unwrap();
    config.auth_info.impersonate = Some("alice".to_owned());
    config.auth_info.impersonate_groups = Some(vec!["oncall-payments".to_owned()]);
    let client = kube::Client::try_from(config).unwrap();
    Server {
        sim,
        client,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_exec_stdout_stderr_and_status() {
    let s = server().await;
    let pods = s.pods("payments");
    let mut p = pods
        .exec(
            "api-0",
            ["cat", "/var/log/app.log"],
            &AttachParams::default().container("app"),
        )
        .await
        .unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    assert!(out.contains("INFO app: handled GET"), "{out}");
    p.join().await.unwrap();

    let mut p = pods
        .exec(
            "api-0",
            ["sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
            &AttachParams::default().container("app").stderr(true),
        )
        .await
        .unwrap();
    let mut out = String::new();
    let mut err = String::new();
    let mut stdout = p.stdout().unwrap();
    let mut stderr = p.stderr().unwrap();
    let (a, b) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err)
    );
    a.unwrap();
    b.unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "to-out\n");
    assert_eq!(err, "to-err\n");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let causes = status.details.unwrap().causes.unwrap();
    assert_eq!(causes[0].reason.as_deref(), Some("ExitCode"));
    assert_eq!(causes[0].message.as_deref(), Some("7"));
    assert!(
        status
            .message
            .unwrap()
            .starts_with("command terminated with non-zero exit code: ")
    );

    // A container that does not exist: refused before the upgrade, as by the real API server.
    let err = pods
        .exec(
            "api-0",
            ["true"],
            &AttachParams::default().container("nope"),
        )
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("container nope is not valid for pod api-0"),
        "{err}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_exec_50_mib_through_sha256sum() {
    let s = server().await;
    let pods = s.pods("payments");
    let params = AttachParams {
        container: Some("app".to_owned()),
        stdin: true,
        stdout: true,
        stderr: false,
        max_stdin_buf_size: Some(256 * 1024),
        ..AttachParams::default()
    };
    let mut p = pods.exec("api-0", ["sha256sum"], &params).await.unwrap();
    let mut stdin = p.stdin().unwrap();
    let mut stdout = p.stdout().unwrap();
    let total: usize = 50 * 1024 * 1024;
    let feed = async move {
        let mut hasher = sha2::Sha256::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        let mut seed = 0x9e37_79b9u32;
        while sent < total {
            for b in chunk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed as u8;
            }
            hasher.update(&chunk);
            stdin.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        stdin.shutdown().await.unwrap();
        drop(stdin);
        hex::encode(hasher.finalize())
    };
    let mut out = String::new();
    let (expected, read) = tokio::join!(feed, stdout.read_to_string(&mut out));
    read.unwrap();
    assert_eq!(
        out.split_whitespace().next(),
        Some(expected.as_str()),
        "{out}"
    );
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_tty_exec_sees_resize() {
    let s = server().await;
    let pods = s.pods("payments");
    let mut p = pods
        .exec(
            "api-0",
            ["sh"],
            &AttachParams::interactive_tty().container("app"),
        )
        .await
        .unwrap();
    let mut resize = p.terminal_size().unwrap();
    let mut stdin = p.stdin().unwrap();
    let mut stdout = p.stdout().unwrap();
    use futures::SinkExt;
    resize
        .send(TerminalSize {
            width: 91,
            height: 33,
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The resize frame and the command race on different channels: ask until the size shows.
    let mut attempt = 0;
    while !String::from_utf8_lossy(&seen).contains("33 91") {
        attempt += 1;
        assert!(attempt < 200, "{}", String::from_utf8_lossy(&seen));
        stdin
            .write_all(format!("stty size; echo done-{attempt}\n").as_bytes())
            .await
            .unwrap();
        let marker = format!("done-{attempt}\r\n");
        while !String::from_utf8_lossy(&seen).contains(&marker) {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
    }
    stdin.write_all(b"tty; exit 5\n").await.unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await.unwrap();
    seen.extend_from_slice(&rest);
    let status = p.take_status().unwrap().await.unwrap();
    let causes = status.details.unwrap().causes.unwrap();
    assert_eq!(causes[0].message.as_deref(), Some("5"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_attach_and_portforward() {
    let s = server().await;
    let pods = s.pods("payments");
    let mut p = pods
        .attach(
            "api-0",
            &AttachParams::default()
                .container("app")
                .stdin(true)
                .stderr(false),
        )
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    let mut stdout = p.stdout().unwrap();
    stdin.write_all(b"hello-through-attach\n").await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("stdin: hello-through-attach") {
        let n = stdout.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    p.abort();

    let mut pf = pods.portforward("api-0", &[8080, 9999]).await.unwrap();
    let mut conn = pf.take_stream(8080).unwrap();
    let error = pf.take_error(9999).unwrap();
    conn.write_all(b"GET /via-portforward HTTP/1.1\r\nHost: api-0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let message = error.await.unwrap();
    assert!(message.contains("error forwarding port 9999"), "{message}");
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("GET /via-portforward"), "{response}");
    if s.sim.runtime().is_sandboxed() {
        assert!(response.contains("on api-0"), "{response}");
    }
    // The pod closed the only live port: the server closed the socket (that is how EOF reaches
    // the client in this protocol).
    drop(conn);
    let _ = pf.join().await;

    // Keep-alive: the client reads one response, drops its stream, and the forwarder ends cleanly.
    let mut pf = pods.portforward("api-0", &[8080]).await.unwrap();
    let mut conn = pf.take_stream(8080).unwrap();
    conn.write_all(b"GET /keep HTTP/1.1\r\nHost: api-0\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0);
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            if body.len() >= len {
                assert!(body.contains("GET /keep"), "{body}");
                break;
            }
        }
    }
    drop(conn);
    pf.join().await.unwrap();
    s.stop().await;
}
