//! The kube-sim API server: kubectl and kube-rs against RBAC, impersonation, discovery,
//! access reviews, the AccessRequest store, the audit log and malformed requests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

mod runtime_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, AttachParams, DynamicObject, GroupVersionKind, LogParams, PostParams,
    WatchEvent, WatchParams,
};
use kube_sim::runtime::SandboxMode;
use runtime_support::{bwrap_available, container_exe};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const KUBECTL: &str = "/usr/bin/kubectl";

struct Cluster {
    sim: kube_sim::RunningSim,
    kubeconfig: PathBuf,
    audit: PathBuf,
    dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("k8s-audit.jsonl");
    let sim = kube_sim::SimBuilder::new()
        .container_exe(container_exe())
        .state_dir(dir.path().join("state"))
        .audit_log(&audit)
        .sandbox(if bwrap_available() {
            SandboxMode::Bubblewrap
        } else {
            SandboxMode::None
        })
        .start()
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    Cluster {
        sim,
        kubeconfig,
        audit,
        dir,
    }
}

impl Cluster {
    async fn kubectl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        assert!(Path::new(KUBECTL).exists(), "{KUBECTL} is required");
        let out = tokio::process::Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The gateway ServiceAccount impersonating `user` with `groups`.
    async fn as_user(&self, user: &str, groups: &[&str]) -> kube::Client {
        let options = kube::config::KubeConfigOptions {
            context: Some("gateway".into()),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(self.sim.kubeconfig(), &options)
            .await
            .unwrap();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_owned()).collect());
        kube::Client::try_from(config).unwrap()
    }

    /// A raw request; returns the status code and the body as JSON (or a string).
    async fn raw(
        &self,
        client: &kube::Client,
        method: &str,
        path: &str,
        ct: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(kube::client::Body::from(body.as_bytes().to_vec()))
            .unwrap();
        let resp = client.send(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_pods_and_containers_are_isolated() {
    let c = cluster().await;
    let (code, out, err) = c.kubectl(&["get", "pods", "-A", "-o", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["default/toolbox", "payments/api-0", "payments/worker-0"]
    );
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"]["phase"] == "Running")
    );

    let (code, out, err) = c
        .kubectl(&[
            "exec",
            "-n",
            "payments",
            "api-0",
            "-c",
            "app",
            "--",
            "cat",
            "/var/log/app.log",
        ])
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("INFO app: handled GET"), "{out}");
    // The toolbox container has its own /var: the app's log is not there.
    let (code, _, err) = c
        .kubectl(&[
            "exec",
            "-n",
            "default",
            "toolbox",
            "--",
            "cat",
            "/var/log/app.log",
        ])
        .await;
    assert_ne!(code, Some(0));
    assert!(err.contains("No such file"), "{err}");
    // A multi-container pod needs a container name, as on a real API server.
    let (c2, _) = c
        .raw(
            &c.sim.client("admin").await.unwrap(),
            "GET",
            "/api/v1/namespaces/payments/pods/api-0/log",
            "application/json",
            "",
            &[],
        )
        .await;
    assert_eq!(c2, 400);
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_and_impersonation_rbac() {
    let c = cluster().await;
    let (code, out, _) = c
        .kubectl(&[
            "auth",
            "can-i",
            "create",
            "pods",
            "--subresource=exec",
            "-n",
            "payments",
            "--as",
            "alice",
            "--as-group",
            "oncall-payments",
        ])
        .await;
    assert_eq!((code, out.trim()), (Some(0), "yes"));
    let (code, out, _) = c
        .kubectl(&[
            "auth",
            "can-i",
            "create",
            "pods",
            "--subresource=exec",
            "-n",
            "payments",
            "--as",
            "mallory",
        ])
        .await;
    assert_eq!((code, out.trim()), (Some(1), "no"));
    // alice is not allowed to impersonate anyone.
    let (code, _, err) = c
        .kubectl(&[
            "--context",
            "alice",
            "get",
            "pods",
            "-n",
            "payments",
            "--as",
            "bob",
        ])
        .await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("Forbidden") && err.contains("cannot impersonate resource \"users\""),
        "{err}"
    );
    // mallory has no RBAC in payments.
    let (code, _, err) = c
        .kubectl(&[
            "--context",
            "mallory",
            "exec",
            "-n",
            "payments",
            "api-0",
            "--",
            "true",
        ])
        .await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("User \"mallory\" cannot get resource \"pods\""),
        "{err}"
    );
    // Nobody but admin reaches the default namespace.
    let (code, _, err) = c
        .kubectl(&["--context", "alice", "get", "pods", "-n", "default"])
        .await;
    assert_ne!(code, Some(0));
    assert!(err.contains("forbidden"), "{err}");
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_exec_needs_both_get_and_create() {
    let c = cluster().await;
    let admin = c.sim.client("admin").await.unwrap();
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "exec-create-only", "namespace": "payments"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                  {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "exec-create-only", "namespace": "payments"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exec-create-only"},
        "subjects": [{"kind": "User", "name": "dave"}]});
    for (path, obj) in [("roles", &role), ("rolebindings", &binding)] {
        let (code, v) = c
            .raw(
                &admin,
                "POST",
                &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/payments/{path}"),
                "application/json",
                &obj.to_string(),
                &[],
            )
            .await;
        assert_eq!(code, 201, "{v}");
    }
    let pods: Api<Pod> = Api::namespaced(c.as_user("dave", &[]).await, "payments");
    let err = pods
        .exec("api-0", ["true"], &AttachParams::default().container("app"))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("cannot get resource \"pods/exec\""),
        "{err}"
    );
    // Granting get as well makes the WebSocket exec work.
    let mut role2 = role.clone();
    role2["rules"][1]["verbs"] = json!(["create", "get"]);
    let (code, v) = c
        .raw(
            &admin,
            "PUT",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/payments/roles/exec-create-only",
            "application/json",
            &role2.to_string(),
            &[],
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let mut p = pods
        .exec(
            "api-0",
            ["echo", "ok"],
            &AttachParams::default().container("app"),
        )
        .await
        .unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "ok\n");
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_logs_portforward_and_audit_ids() {
    let c = cluster().await;
    let alice = c.as_user("alice", &["oncall-payments"]).await;
    let pods: Api<Pod> = Api::namespaced(alice.clone(), "payments");
    let mut lines = futures::AsyncBufReadExt::lines(
        pods.log_stream(
            "api-0",
            &LogParams {
                container: Some("app".into()),
                tail_lines: Some(2),
                ..LogParams::default()
            },
        )
        .await
        .unwrap(),
    );
    let first = lines.next().await.unwrap().unwrap();
    assert!(first.contains(" app: "), "{first}");

    let mut pf = pods.portforward("api-0", &[8080]).await.unwrap();
    let mut stream = pf.take_stream(8080).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: api-0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    drop(stream);

    // The audit log names the ServiceAccount, the impersonated user and the Audit-ID we sent.
    let (code, _) = c
        .raw(
            &alice,
            "GET",
            "/api/v1/namespaces/payments/pods/api-0",
            "application/json",
            "",
            &[("Audit-ID", "jitsh-cmd-4242")],
        )
        .await;
    assert_eq!(code, 200);
    let text = std::fs::read_to_string(&c.audit).unwrap();
    let ev: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["auditID"] == "jitsh-cmd-4242")
        .expect("audit event with our Audit-ID");
    assert_eq!(ev["user"]["username"], kube_sim::GATEWAY_USER);
    assert_eq!(ev["impersonatedUser"]["username"], "alice");
    assert_eq!(ev["objectRef"]["name"], "api-0");
    assert_eq!(ev["verb"], "get");
    assert!(
        text.lines()
            .any(|l| l.contains("\"subresource\":\"portforward\""))
    );
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_requests_watch_and_optimistic_concurrency() {
    let c = cluster().await;
    let gvk = GroupVersionKind::gvk("jitsh.dev", "v1alpha1", "AccessRequest");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "accessrequests");
    let admin: Api<DynamicObject> =
        Api::namespaced_with(c.sim.client("admin").await.unwrap(), "payments", &ar);
    let bob: Api<DynamicObject> =
        Api::namespaced_with(c.as_user("bob", &["payments-leads"]).await, "payments", &ar);
    let mut watch = bob
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();

    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "jitsh.dev/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": "req-1"}, "spec": {"user": "alice", "reason": "INC-42"},
        "status": {"phase": "Approved"}}))
    .unwrap();
    let created = admin.create(&PostParams::default(), &obj).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is set only through the status subresource"
    );
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, WatchEvent::Added(ref o) if o.metadata.name.as_deref() == Some("req-1")),
        "{ev:?}"
    );

    // bob may update; a second update from the same stale copy is a 409.
    let mut fresh = bob.get("req-1").await.unwrap();
    let stale = fresh.clone();
    fresh.data["spec"]["reason"] = json!("INC-43");
    bob.replace("req-1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let err = bob
        .replace("req-1", &PostParams::default(), &stale)
        .await
        .err()
        .unwrap();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("expected 409, got {other:?}"),
    }
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, WatchEvent::Modified(ref o) if o.data["spec"]["reason"] == "INC-43"),
        "{ev:?}"
    );

    // Status subresource by merge patch; bob may not create.
    let patch =
        kube::api::Patch::Merge(json!({"status": {"phase": "Approved", "approvers": ["bob"]}}));
    let patched = bob
        .patch_status("req-1", &kube::api::PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Approved");
    let err = bob
        .create(&PostParams::default(), &obj)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("cannot create resource \"accessrequests\""),
        "{err}"
    );
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_right_status_and_the_server_keeps_serving() {
    let c = cluster().await;
    let admin = c.sim.client("admin").await.unwrap();
    let ars = "/apis/jitsh.dev/v1alpha1/namespaces/payments/accessrequests";
    let cases: Vec<(&str, String, &str, String, u16)> = vec![
        (
            "POST",
            ars.into(),
            "application/json",
            "{not json".into(),
            400,
        ),
        ("POST", ars.into(), "application/json", "[1,2]".into(), 400),
        (
            "POST",
            ars.into(),
            "application/json",
            json!({"kind": "Pod", "metadata": {"name": "x"}}).to_string(),
            400,
        ),
        (
            "POST",
            ars.into(),
            "application/json",
            json!({"metadata": {}}).to_string(),
            422,
        ),
        (
            "POST",
            ars.into(),
            "application/json",
            json!({"metadata": {"name": "Bad_Name"}}).to_string(),
            422,
        ),
        (
            "POST",
            "/apis/jitsh.dev/v1alpha1/namespaces/nope/accessrequests".into(),
            "application/json",
            json!({"metadata": {"name": "a"}}).to_string(),
            404,
        ),
        (
            "GET",
            "/api/v1/namespaces/payments/widgets".into(),
            "application/json",
            String::new(),
            404,
        ),
        (
            "GET",
            "/apis/nope.example/v1".into(),
            "application/json",
            String::new(),
            404,
        ),
        (
            "GET",
            "/api/v1/namespaces/payments/pods/nope".into(),
            "application/json",
            String::new(),
            404,
        ),
        (
            "DELETE",
            "/api/v1/namespaces/payments/pods/api-0".into(),
            "application/json",
            String::new(),
            405,
        ),
        (
            "GET",
            "/api/v1/pods?labelSelector=app%20in%20(x".into(),
            "application/json",
            String::new(),
            400,
        ),
        (
            "GET",
            "/api/v1/pods?fieldSelector=spec.bogus%3D1".into(),
            "application/json",
            String::new(),
            400,
        ),
        (
            "GET",
            "/api/v1/pods?watch=maybe".into(),
            "application/json",
            String::new(),
            400,
        ),
        (
            "PATCH",
            format!("{ars}/x"),
            "application/json-patch+json",
            "[]".into(),
            415,
        ),
        (
            "GET",
            "/api/v1/namespaces/payments/pods/api-0/log?container=app&tailLines=-1".into(),
            "application/json",
            String::new(),
            422,
        ),
        (
            "GET",
            "/api/v1/namespaces/payments/pods/api-0/log?container=nope".into(),
            "application/json",
            String::new(),
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/payments/pods/api-0/exec?command=true&container=app".into(),
            "application/json",
            String::new(),
            400,
        ),
    ];
    for (method, path, ct, body, want) in &cases {
        let (code, v) = c.raw(&admin, method, path, ct, body, &[]).await;
        assert_eq!(code, *want, "{method} {path}: {v}");
        assert_eq!(v["kind"], "Status", "{method} {path}: {v}");
        assert_eq!(v["code"], *want, "{v}");
    }
    // A bad token is a 401 Status.
    let options = kube::config::KubeConfigOptions {
        context: Some("alice".into()),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(c.sim.kubeconfig(), &options)
        .await
        .unwrap();
    config.auth_info.token = Some("wrong".to_owned().into());
    let stranger = kube::Client::try_from(config).unwrap();
    let (code, v) = c
        .raw(
            &stranger,
            "GET",
            "/api/v1/namespaces/payments/pods",
            "application/json",
            "",
            &[],
        )
        .await;
    assert_eq!((code, v["reason"].as_str()), (401, Some("Unauthorized")));
    // Still serving.
    let (code, v) = c
        .raw(&admin, "GET", "/version", "application/json", "", &[])
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["major"], "1");
    let (code, out, err) = c
        .kubectl(&["get", "pods", "-n", "payments", "-o", "name"])
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("pod/api-0"));
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_writes_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["serve", "--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kc)
        .args(["--state-dir"])
        .arg(dir.path().join("state"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        line.starts_with("kube-sim listening on https://127.0.0.1:"),
        "{line}"
    );
    tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .unwrap()
        .unwrap();
    let got = tokio::process::Command::new(KUBECTL)
        .args(["--context", "alice", "get", "pods", "-o", "name"])
        .env("KUBECONFIG", &kc)
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "pod/api-0\npod/worker-0\n"
    );
    let pid = child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
