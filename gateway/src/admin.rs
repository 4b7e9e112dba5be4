//! The admin listener: Prometheus `/metrics`, `/healthz` (the process answers) and `/readyz`
//! (a policy is loaded and the Kubernetes API answers the gateway).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::gateway::Gateway;

type Labels = Vec<(String, String)>;

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connections accepted.
    pub connections: Counter,
    /// Connections refused before the handshake, by reason.
    pub connections_refused: Family<Labels, Counter>,
    /// Sessions (commands, words) running now.
    pub active_sessions: Gauge,
    /// Commands by decision (`allow`, `deny`, `refused`).
    pub commands: Family<Labels, Counter>,
    /// Authentication failures by reason code.
    pub auth_failures: Family<Labels, Counter>,
    /// Time from decision to the pod's exit status.
    pub exec_seconds: Histogram,
    /// Bytes by direction (`in` = to pods, `out` = to users).
    pub bytes: Family<Labels, Counter>,
    /// Policy and revocation reloads by result.
    pub reloads: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let connections = Counter::default();
        let connections_refused = Family::<Labels, Counter>::default();
        let active_sessions = Gauge::default();
        let commands = Family::<Labels, Counter>::default();
        let auth_failures = Family::<Labels, Counter>::default();
        let exec_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let bytes = Family::<Labels, Counter>::default();
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "jitsh_connections",
            "SSH connections accepted",
            connections.clone(),
        );
        registry.register(
            "jitsh_connections_refused",
            "SSH connections refused before the handshake, by reason",
            connections_refused.clone(),
        );
        registry.register(
            "jitsh_active_sessions",
            "Sessions running now",
            active_sessions.clone(),
        );
        registry.register("jitsh_commands", "Commands by decision", commands.clone());
        registry.register(
            "jitsh_auth_failures",
            "Authentication failures by reason",
            auth_failures.clone(),
        );
        registry.register(
            "jitsh_exec_duration_seconds",
            "Time from an allowed decision to the command's exit status",
            exec_seconds.clone(),
        );
        registry.register(
            "jitsh_bytes",
            "Bytes relayed by direction (in: to pods, out: to users)",
            bytes.clone(),
        );
        registry.register(
            "jitsh_reloads",
            "Policy and revocation reloads by file and result",
            reloads.clone(),
        );
        Metrics {
            registry,
            connections,
            connections_refused,
            active_sessions,
            commands,
            auth_failures,
            exec_seconds,
            bytes,
            reloads,
        }
    }
}

/// One label.
pub fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_owned(), v.to_owned())]
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves the admin endpoints until the listener fails or the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, gw: Arc<Gateway>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(gw);
    axum::serve(listener, app).await
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.metrics().encode(),
    )
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    match tokio::time::timeout(Duration::from_secs(3), gw.kube().ping()).await {
        Ok(Ok(v)) => (
            StatusCode::OK,
            format!("ok: policy loaded, Kubernetes {v}\n"),
        ),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "kubernetes: no answer within 3s\n".to_owned(),
        ),
    }
}
