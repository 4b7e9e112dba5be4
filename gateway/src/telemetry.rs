//! Telemetry: the gateway's metrics (typed label sets, served by the admin listener) and its
//! own log: `tracing` to stderr, as text (colour only on a terminal) or as one
//! JSON object per line, `info` unless `RUST_LOG` says otherwise. Lines emitted inside a
//! connection carry its span (`session`, `client_ip`, `user`) and inside a command its
//! `command` id.

use std::io::IsTerminal;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What became of a command, as counted (`decision` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Allowed and run.
    Allow,
    /// Denied by the policy.
    Deny,
    /// Allowed, but refused because the audit log could not be written.
    Refused,
    /// A break-glass shell opened.
    BreakGlass,
    /// Kubernetes refused the lookup as the user (forbidden, not found, unreachable).
    KubeRefused,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        e.write_str(match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Refused => "refused",
            Outcome::BreakGlass => "break-glass",
            Outcome::KubeRefused => "kube-refused",
        })
    }
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From users to pods.
    In,
    /// From pods to users.
    Out,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        e.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

/// `{decision}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ByDecision {
    /// The decision.
    pub decision: Outcome,
}

/// `{reason}`: a fixed reason code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ByReason {
    /// The code.
    pub reason: String,
}

/// `{direction}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ByDirection {
    /// The direction.
    pub direction: Direction,
}

/// `{file, result}` of a reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ByReload {
    /// `policy` or `revocations`.
    pub file: String,
    /// `ok` or `error`.
    pub result: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colour only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the current span and its parents.
    Json,
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connections accepted.
    pub connections: Counter,
    /// Connections refused before the handshake, by reason.
    pub(crate) connections_refused: Family<ByReason, Counter>,
    /// Sessions (commands, words) running now.
    pub active_sessions: Gauge,
    /// Commands by decision (`allow`, `deny`, `refused`).
    pub(crate) commands: Family<ByDecision, Counter>,
    /// Authentication failures by reason code.
    pub(crate) auth_failures: Family<ByReason, Counter>,
    /// Time from decision to the pod's exit status.
    pub exec_seconds: Histogram,
    /// Bytes by direction (`in` = to pods, `out` = to users).
    pub(crate) bytes: Family<ByDirection, Counter>,
    /// Policy and revocation reloads by result.
    pub(crate) reloads: Family<ByReload, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let connections = Counter::default();
        let connections_refused = Family::<ByReason, Counter>::default();
        let active_sessions = Gauge::default();
        let commands = Family::<ByDecision, Counter>::default();
        let auth_failures = Family::<ByReason, Counter>::default();
        let exec_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let bytes = Family::<ByDirection, Counter>::default();
        let reloads = Family::<ByReload, Counter>::default();
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

impl Metrics {
    /// Counts a command by its decision.
    pub fn command(&self, decision: Outcome) {
        self.commands.get_or_create(&ByDecision { decision }).inc();
    }
    /// Counts a connection refused before the handshake.
    pub fn refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ByReason {
                reason: reason.to_owned(),
            })
            .inc();
    }
    /// Counts an authentication failure by its reason code.
    pub fn auth_failure(&self, code: &str) {
        self.auth_failures
            .get_or_create(&ByReason {
                reason: code.to_owned(),
            })
            .inc();
    }
    /// The byte counter of one direction.
    pub fn bytes(&self, direction: Direction) -> Counter {
        self.bytes.get_or_create(&ByDirection { direction }).clone()
    }
    /// Counts a reload of `file` (`policy`, `revocations`) by `result`.
    pub fn reload(&self, file: &str, result: &str) {
        self.reloads
            .get_or_create(&ByReload {
                file: file.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
