//! A minimal, unauthenticated HTTP router over the runtime: just enough of the pod API for the
//! stream protocols to be driven by kube-rs and kubectl (the real API server lives elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use kube_sim::runtime::{ContainerRef, PodRef, Runtime};
use kube_sim::streams;

fn query(raw: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn flag(q: &[(String, String)], name: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == name && (v == "true" || v == "1"))
}

fn container_of(q: &[(String, String)]) -> String {
    q.iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "app".to_owned())
}

async fn exec(
    State(rt): State<Runtime>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = streams::offered_protocols(&headers);
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let Some(protocol) = streams::negotiate_protocol(&offered) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (container, options) = match streams::parse_exec_query(&raw.unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let target = ContainerRef::new(ns, pod, container.unwrap_or_else(|| "app".to_owned()));
    ws.protocols([protocol.as_str()])
        .on_upgrade(move |ws| streams::serve_exec(ws, protocol, rt, target, options))
}

async fn attach(
    State(rt): State<Runtime>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = streams::offered_protocols(&headers);
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let Some(protocol) = streams::negotiate_protocol(&offered) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (container, options) = match streams::parse_attach_query(&raw.unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let target = ContainerRef::new(ns, pod, container.unwrap_or_else(|| "app".to_owned()));
    ws.protocols([protocol.as_str()])
        .on_upgrade(move |ws| streams::serve_attach(ws, protocol, rt, target, options))
}

async fn portforward(
    State(rt): State<Runtime>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = streams::offered_protocols(&headers);
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let Some(protocol) = streams::negotiate_portforward_protocol(&offered) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let ports = match streams::parse_portforward_ports(&raw.unwrap_or_default()) {
        Ok(ports) => ports,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    ws.protocols([protocol.as_str()]).on_upgrade(move |ws| {
        streams::serve_portforward(ws, protocol, rt, PodRef::new(ns, pod), ports)
    })
}

async fn get_pod(Path((ns, pod)): Path<(String, String)>) -> Response {
    let Some(mut p) = super::demo_pods().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str())
            && p.metadata.name.as_deref() == Some(pod.as_str())
    }) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Running".to_owned()),
        ..Default::default()
    });
    let mut v = serde_json::to_value(&p).unwrap();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Pod".into();
    axum::Json(v).into_response()
}

async fn api() -> Response {
    axum::Json(serde_json::json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }))
    .into_response()
}

async fn apis() -> Response {
    axum::Json(serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
        .into_response()
}

async fn api_v1() -> Response {
    let sub = |name: &str, verbs: &[&str]| serde_json::json!({"name": name, "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": verbs});
    axum::Json(serde_json::json!({
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get"], "shortNames": ["po"]},
            sub("pods/exec", &["create", "get"]),
            sub("pods/attach", &["create", "get"]),
            sub("pods/portforward", &["create", "get"]),
        ],
    }))
    .into_response()
}

async fn log(
    State(rt): State<Runtime>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query(raw);
    let num = |name: &str| {
        q.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let options = kube_sim::runtime::LogOptions {
        follow: flag(&q, "follow"),
        tail_lines: num("tailLines"),
        since_seconds: num("sinceSeconds"),
        timestamps: flag(&q, "timestamps"),
        previous: flag(&q, "previous"),
        limit_bytes: num("limitBytes"),
        ..Default::default()
    };
    match rt.logs(&ns, &pod, &container_of(&q), options) {
        Ok(stream) => axum::body::Body::from_stream(stream).into_response(),
        Err(e) => (
            StatusCode::from_u16(e.http_status()).unwrap(),
            e.to_string(),
        )
            .into_response(),
    }
}

/// Serves the router on 127.0.0.1:0.
pub async fn serve(rt: Runtime) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/api", get(api))
        .route("/apis", get(apis))
        .route("/api/v1", get(api_v1))
        .route("/api/v1/namespaces/{ns}/pods/{pod}", get(get_pod))
        .route("/api/v1/namespaces/{ns}/pods/{pod}/log", get(log))
        .route("/api/v1/namespaces/{ns}/pods/{pod}/exec", any(exec))
        .route("/api/v1/namespaces/{ns}/pods/{pod}/attach", any(attach))
        .route(
            "/api/v1/namespaces/{ns}/pods/{pod}/portforward",
            any(portforward),
        )
        .with_state(rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}
