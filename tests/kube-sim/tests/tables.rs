//! The AccessRequest CRD and server-side Table output: the real kubectl against kube-sim
//! (`get accessrequests`, the `ar` short name, `-o yaml`, `get crd`, RBAC), and the Table JSON
//! itself as a client sees it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

mod runtime_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use kube_sim::runtime::SandboxMode;
use runtime_support::{bwrap_available, container_exe};
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";
const NS: &str = "jitsh";
const ARS: &str = "/apis/jitsh.dev/v1alpha1/namespaces/jitsh/accessrequests";
const TABLE_V1: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
/// What kubectl 1.32 sends for `kubectl get`.
const KUBECTL_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

struct Cluster {
    sim: kube_sim::RunningSim,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let sim = kube_sim::SimBuilder::new()
        .container_exe(container_exe())
        .state_dir(dir.path().join("state"))
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
        dir,
    }
}

/// The deploy file, parsed independently of kube-sim.
fn crd_file() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/accessrequest-crd.yaml"
    ))
    .unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn printer_columns(crd: &Value) -> Vec<Value> {
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .clone()
}

/// An AccessRequest as the gateway writes it.
fn access_request(name: &str, summary: &str, stages: Option<Value>) -> Value {
    let mut spec = json!({
        "requester": {"user": "alice", "identity": "alice", "groups": ["oncall-payments"]},
        "target": {"namespace": "payments", "pod": "api-0", "container": "app"},
        "targetRef": "payments/api-0/app", "mode": "exec", "rule": "oncall-read",
        "summary": summary, "reason": "stuck worker"});
    match stages {
        Some(s) => spec["command"] = json!({"stages": s}),
        None => spec["duration"] = json!("30m"),
    }
    json!({"apiVersion": "jitsh.dev/v1alpha1", "kind": "AccessRequest",
           "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

impl Cluster {
    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
        assert!(Path::new(KUBECTL).exists(), "{KUBECTL} is required");
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            tokio::io::AsyncWriteExt::write_all(&mut input, text.as_bytes())
                .await
                .unwrap();
        }
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (code, out, err) = self.kubectl(args, stdin).await;
        assert_eq!(code, Some(0), "kubectl {args:?}: {err}");
        out
    }

    /// A raw request as `admin`; the status code and the body as JSON.
    async fn get(&self, path: &str, accept: &str) -> (u16, Value) {
        let client = self.sim.client("admin").await.unwrap();
        let req = http::Request::builder()
            .method("GET")
            .uri(path)
            .header("accept", accept)
            .body(kube::client::Body::empty())
            .unwrap();
        let resp = client.send(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, v)
    }

    /// Creates the two AccessRequests with kubectl, the first approved through `/status`.
    /// Returns them as created and the approved one's status.
    async fn create_access_requests(&self) -> (Vec<Value>, Value) {
        let approved = access_request(
            "ar-kill-42",
            "kill -TERM 42",
            Some(json!([["kill", "-TERM", "42"]])),
        );
        let pending = access_request("ar-grant-oncall", "grant oncall-read for 30m", None);
        for ar in [&approved, &pending] {
            // No OpenAPI in kube-sim: client-side validation is off (harmless on a real server).
            let out = self
                .kubectl_ok(
                    &["create", "--validate=false", "-f", "-"],
                    Some(&ar.to_string()),
                )
                .await;
            assert!(out.contains("created"), "{out}");
        }
        let now = time::OffsetDateTime::now_utc();
        let status = json!({
            "state": "Approved", "approvalsRequired": 1, "approvers": ["payments-leads"],
            "progress": "1/1",
            "approvals": [{"by": "bob", "identity": "bob", "groups": ["payments-leads"],
                           "at": rfc3339(now), "comment": "ok"}],
            "expiresAt": rfc3339(now + time::Duration::hours(1))});
        let patch = json!({"status": status}).to_string();
        self.kubectl_ok(
            &[
                "patch",
                "accessrequest",
                "ar-kill-42",
                "-n",
                NS,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        )
        .await;
        (vec![approved, pending], status)
    }
}

/// kubectl's human-readable table, read by the header's column offsets (cells hold spaces).
fn parse_table(out: &str) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts = Vec::new();
    let mut prev = ' ';
    for (i, c) in header.char_indices() {
        // A column starts after two or more spaces (header names hold at most one: "CREATED AT").
        if c != ' ' && (i == 0 || (prev == ' ' && header[..i].ends_with("  "))) {
            starts.push(i);
        }
        prev = c;
    }
    let cut = |line: &str, k: usize| -> String {
        let from = starts[k];
        let to = starts
            .get(k + 1)
            .copied()
            .unwrap_or(usize::MAX)
            .min(line.len());
        line.get(from..to).unwrap_or_default().trim().to_owned()
    };
    let names: Vec<String> = (0..starts.len()).map(|k| cut(header, k)).collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            names
                .iter()
                .enumerate()
                .map(|(k, n)| (n.clone(), cut(l, k)))
                .collect()
        })
        .collect();
    (names, rows)
}

fn is_fresh_age(s: &str) -> bool {
    s.strip_suffix('s')
        .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n < 120))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_accessrequests_shows_the_crd_printer_columns() {
    let c = cluster().await;
    let (ars, status) = c.create_access_requests().await;
    let crd = crd_file();
    let columns = printer_columns(&crd);

    let out = c.kubectl_ok(&["get", "accessrequests", "-A"], None).await;
    let (header, rows) = parse_table(&out);
    let mut want: Vec<String> = vec!["NAMESPACE".into(), "NAME".into()];
    want.extend(
        columns
            .iter()
            .map(|col| col["name"].as_str().unwrap().to_uppercase()),
    );
    assert_eq!(header, want, "{out}");
    assert_eq!(
        header.join(" "),
        "NAMESPACE NAME REQUESTER TARGET WHAT STATE APPROVALS EXPIRES AGE"
    );
    assert_eq!(rows.len(), 2, "{out}");
    for ar in &ars {
        let name = ar["metadata"]["name"].as_str().unwrap();
        let row = rows
            .iter()
            .find(|r| r["NAME"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {out}"));
        assert_eq!(row["NAMESPACE"], NS);
        assert_eq!(
            row["REQUESTER"],
            ar["spec"]["requester"]["user"].as_str().unwrap()
        );
        assert_eq!(row["TARGET"], ar["spec"]["targetRef"].as_str().unwrap());
        assert_eq!(row["WHAT"], ar["spec"]["summary"].as_str().unwrap());
        assert!(is_fresh_age(&row["AGE"]), "{out}");
        if name == "ar-kill-42" {
            assert_eq!(row["STATE"], status["state"].as_str().unwrap());
            assert_eq!(row["APPROVALS"], status["progress"].as_str().unwrap());
            // Expires is a `string` column: the timestamp itself (a `date` column would show a
            // future time as `<invalid>`, apimachinery's HumanDuration of a negative age).
            assert_eq!(
                row["EXPIRES"],
                status["expiresAt"].as_str().unwrap(),
                "{out}"
            );
        } else {
            // No status yet: the cells are null, which kubectl prints as nothing.
            for col in ["STATE", "APPROVALS", "EXPIRES"] {
                assert_eq!(row[col], "", "{col}: {out}");
            }
        }
    }

    // The short name from the CRD, in one namespace (no NAMESPACE column).
    let short = crd["spec"]["names"]["shortNames"][0].as_str().unwrap();
    let out = c.kubectl_ok(&["get", short, "-n", NS], None).await;
    let (header, rows) = parse_table(&out);
    assert_eq!(header[0], "NAME", "{out}");
    assert_eq!(header.len(), 1 + columns.len(), "{out}");
    let mut names: Vec<&str> = rows.iter().map(|r| r["NAME"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ar-grant-oncall", "ar-kill-42"]);

    // -o yaml shows the object, approvals included.
    let out = c
        .kubectl_ok(
            &["get", "accessrequest", "ar-kill-42", "-n", NS, "-o", "yaml"],
            None,
        )
        .await;
    let got: Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(got["kind"], "AccessRequest");
    assert_eq!(got["spec"], ars[0]["spec"], "{out}");
    assert_eq!(got["status"], status, "{out}");
    assert_eq!(got["status"]["approvals"][0]["by"], "bob");

    // The CRD itself: listed by the default convertor, and its printer columns in -o yaml.
    let out = c.kubectl_ok(&["get", "crd"], None).await;
    let (header, rows) = parse_table(&out);
    assert_eq!(header, ["NAME", "CREATED AT"], "{out}");
    assert_eq!(rows[0]["NAME"], crd["metadata"]["name"].as_str().unwrap());
    let out = c
        .kubectl_ok(
            &["get", "crd", "accessrequests.jitsh.dev", "-o", "yaml"],
            None,
        )
        .await;
    let served: Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(printer_columns(&served), columns, "{out}");
    assert_eq!(served["spec"]["names"], crd["spec"]["names"]);
    assert_eq!(served["status"]["acceptedNames"], crd["spec"]["names"]);

    // alice has no rights on either.
    for args in [
        &["--context", "alice", "get", "accessrequests", "-n", NS][..],
        &["--context", "alice", "get", "ar", "-A"][..],
        &["--context", "alice", "get", "crd"][..],
        &[
            "--context",
            "alice",
            "get",
            "crd",
            "accessrequests.jitsh.dev",
            "-o",
            "yaml",
        ][..],
    ] {
        let (code, out, err) = c.kubectl(args, None).await;
        assert_ne!(code, Some(0), "{args:?}: {out}");
        assert!(
            err.contains("Forbidden") && err.contains("User \"alice\" cannot"),
            "{args:?}: {err}"
        );
    }
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_json_has_the_api_servers_shape() {
    let c = cluster().await;
    let (ars, status) = c.create_access_requests().await;
    let crd_columns = printer_columns(&crd_file());

    let (code, plain) = c.get(ARS, "application/json").await;
    assert_eq!(code, 200, "{plain}");
    assert_eq!(plain["kind"], "AccessRequestList");
    let (code, t) = c.get(ARS, KUBECTL_ACCEPT).await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(
        (t["kind"].as_str(), t["apiVersion"].as_str()),
        (Some("Table"), Some("meta.k8s.io/v1"))
    );
    // The list's resourceVersion is kept (nothing was written in between).
    assert_eq!(
        t["metadata"]["resourceVersion"],
        plain["metadata"]["resourceVersion"]
    );
    assert!(
        !t["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    let cols = t["columnDefinitions"].as_array().unwrap();
    assert_eq!(cols.len(), 1 + crd_columns.len());
    assert_eq!(
        (&cols[0]["name"], &cols[0]["type"], &cols[0]["format"]),
        (&json!("Name"), &json!("string"), &json!("name"))
    );
    for (col, want) in cols[1..].iter().zip(&crd_columns) {
        assert_eq!(col["name"], want["name"]);
        assert_eq!(col["type"], want["type"]);
        assert_eq!(
            col["format"],
            want.get("format").cloned().unwrap_or(json!(""))
        );
        assert_eq!(
            col["priority"],
            want.get("priority").cloned().unwrap_or(json!(0))
        );
        assert_eq!(
            col["description"],
            format!(
                "Custom resource definition column (in JSONPath format): {}",
                want["jsonPath"].as_str().unwrap()
            )
        );
    }
    let col = |name: &str| cols.iter().position(|c| c["name"] == name).unwrap();
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), ars.len());
    for row in rows {
        let cells = row["cells"].as_array().unwrap();
        assert_eq!(cells.len(), cols.len(), "{row}");
        // Default includeObject=Metadata: PartialObjectMetadata, no spec.
        let object = &row["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
        assert!(object.get("spec").is_none(), "{object}");
        let name = object["metadata"]["name"].as_str().unwrap();
        assert_eq!(cells[0], name);
        let ar = ars.iter().find(|a| a["metadata"]["name"] == name).unwrap();
        assert_eq!(cells[col("Requester")], ar["spec"]["requester"]["user"]);
        assert_eq!(cells[col("Target")], ar["spec"]["targetRef"]);
        assert_eq!(cells[col("What")], ar["spec"]["summary"]);
        assert!(is_fresh_age(cells[col("Age")].as_str().unwrap()), "{row}");
        if name == "ar-kill-42" {
            assert_eq!(cells[col("State")], status["state"]);
            assert_eq!(cells[col("Approvals")], status["progress"]);
            // A `string` column: the timestamp as stored.
            assert_eq!(cells[col("Expires")], status["expiresAt"]);
        } else {
            for missing in ["State", "Approvals", "Expires"] {
                assert!(cells[col(missing)].is_null(), "{missing}: {row}");
            }
        }
    }

    // includeObject=None omits the object; Object embeds the whole AccessRequest.
    let (_, t) = c.get(&format!("{ARS}?includeObject=None"), TABLE_V1).await;
    assert!(
        t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["object"].is_null()),
        "{t}"
    );
    let (_, t) = c
        .get(&format!("{ARS}?includeObject=Object"), TABLE_V1)
        .await;
    for row in t["rows"].as_array().unwrap() {
        assert_eq!(row["object"]["kind"], "AccessRequest");
        assert_eq!(row["object"]["apiVersion"], "jitsh.dev/v1alpha1");
        assert!(row["object"]["spec"]["requester"].is_object(), "{row}");
    }
    let (code, e) = c
        .get(&format!("{ARS}?includeObject=Everything"), TABLE_V1)
        .await;
    assert_eq!(
        (code, e["reason"].as_str()),
        (400, Some("BadRequest")),
        "{e}"
    );

    // One object: a one-row Table with the object's resourceVersion; v1beta1 when asked for.
    let (_, obj) = c
        .get(&format!("{ARS}/ar-kill-42"), "application/json")
        .await;
    let (code, t) = c
        .get(
            &format!("{ARS}/ar-kill-42"),
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
        )
        .await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(
        t["metadata"]["resourceVersion"],
        obj["metadata"]["resourceVersion"]
    );
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    assert_eq!(t["rows"][0]["object"]["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(t["rows"][0]["object"]["metadata"], obj["metadata"]);

    // Nothing acceptable: 406; a fallback in the list is taken.
    let bad = "application/json;as=Table;v=v2;g=meta.k8s.io";
    let (code, e) = c.get(ARS, bad).await;
    assert_eq!(
        (code, e["reason"].as_str()),
        (406, Some("NotAcceptable")),
        "{e}"
    );
    let (code, v) = c.get(ARS, &format!("{bad}, application/json")).await;
    assert_eq!((code, v["kind"].as_str()), (200, Some("AccessRequestList")));

    // Metadata-only lists (what kube-rs' metadata API asks for).
    let (code, v) = c
        .get(
            ARS,
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .await;
    assert_eq!(
        (code, v["kind"].as_str()),
        (200, Some("PartialObjectMetadataList")),
        "{v}"
    );
    assert_eq!(v["items"].as_array().unwrap().len(), ars.len());
    assert!(v["items"][0].get("spec").is_none());

    // Pods: the pod printer's columns, filled from the live container statuses.
    let (_, pods) = c
        .get("/api/v1/namespaces/payments/pods", "application/json")
        .await;
    let (code, t) = c
        .get("/api/v1/namespaces/payments/pods", KUBECTL_ACCEPT)
        .await;
    assert_eq!(code, 200, "{t}");
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    for pod in pods["items"].as_array().unwrap() {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let row = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["cells"][0] == name)
            .unwrap();
        let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
        let ready = statuses
            .iter()
            .filter(|s| s["ready"] == true && s["state"]["running"].is_object())
            .count();
        let total = pod["spec"]["containers"].as_array().unwrap().len();
        let restarts: i64 = statuses
            .iter()
            .map(|s| s["restartCount"].as_i64().unwrap())
            .sum();
        assert_eq!(row["cells"][1], format!("{ready}/{total}"), "{row}");
        assert_eq!(row["cells"][2], pod["status"]["phase"]);
        if restarts == 0 {
            assert_eq!(row["cells"][3], "0");
        }
        assert_eq!(row["cells"][5], pod["status"]["podIPs"][0]["ip"]);
        assert_eq!(row["cells"][6], pod["spec"]["nodeName"]);
    }

    // Resources without a dedicated printer: Name and Created At (the timestamp itself).
    let path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin";
    let (_, role) = c.get(path, "application/json").await;
    let (_, t) = c.get(path, TABLE_V1).await;
    let defs = t["columnDefinitions"].as_array().unwrap();
    assert_eq!(
        defs.iter()
            .map(|d| (d["name"].as_str().unwrap(), d["type"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("Name", "string"), ("Created At", "date")]
    );
    assert_eq!(
        t["rows"][0]["cells"],
        json!(["cluster-admin", role["metadata"]["creationTimestamp"]])
    );

    // A Table watch: each event's object is a one-row Table, column definitions in the first only.
    let (code, body) = c
        .get(
            &format!("{ARS}?watch=1&resourceVersion=0&timeoutSeconds=1"),
            KUBECTL_ACCEPT,
        )
        .await;
    assert_eq!(code, 200);
    let events: Vec<Value> = body
        .as_str()
        .map(|s| {
            s.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .unwrap_or_else(|| vec![body.clone()]);
    assert_eq!(events.len(), ars.len(), "{body}");
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["type"], "ADDED");
        assert_eq!(ev["object"]["kind"], "Table");
        assert_eq!(ev["object"]["rows"].as_array().unwrap().len(), 1);
        assert_eq!(ev["object"]["columnDefinitions"].is_array(), i == 0, "{ev}");
    }
    c.sim.shutdown().await;
}
