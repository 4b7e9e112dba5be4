//! The gateway's shared state: the verifier and policy in force (swapped on reload, each swap
//! broadcast so live sessions decide again), the audit log, Kubernetes access, settings, limits
//! and metrics. Fields are private; everything below reaches them through methods.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use jitsh_broker_policy::Policy;
use jitsh_certs::{RevocationList, Verifier, VerifierConfig};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditError, AuditLog, Event, Redactor};
use crate::broker::Broker;
use crate::config::{BrokerConfig, LimitsConfig};
use crate::kube::KubeAccess;
use crate::limits::Limiter;
use crate::telemetry::Metrics;

/// Settings that do not change while the gateway runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace when the target names none.
    pub default_namespace: String,
    /// Limits and timeouts.
    pub limits: LimitsConfig,
    /// Where recordings go.
    pub recordings: Option<PathBuf>,
    /// The access broker.
    pub broker: BrokerConfig,
}

/// An audit event that had to be written before acting could not be: the action is refused.
#[derive(Debug, thiserror::Error)]
#[error("refused: the audit log cannot be written ({0})")]
pub(crate) struct AuditRefused(#[source] pub(crate) AuditError);

/// Everything a connection needs.
#[derive(Debug)]
pub struct Gateway {
    verifier: ArcSwap<Verifier>,
    policy: ArcSwap<Policy>,
    audit: AuditLog,
    kube: KubeAccess,
    settings: Settings,
    redactor: Redactor,
    metrics: Metrics,
    limiter: Arc<Limiter>,
    broker: Broker,
    /// Bumped on every policy or revocation change; live sessions watch it and decide again.
    changes: tokio::sync::watch::Sender<u64>,
    stopping: CancellationToken,
    kill: CancellationToken,
}

impl Gateway {
    /// A gateway with nothing running.
    pub fn new(
        verifier: Verifier,
        policy: Policy,
        audit: AuditLog,
        kube: KubeAccess,
        settings: Settings,
        redactor: Redactor,
    ) -> Self {
        let metrics = Metrics::default();
        let broker = Broker::new(settings.broker.notify.clone());
        let limiter = Limiter::new(settings.limits.clone(), metrics.active_sessions.clone());
        Gateway {
            verifier: ArcSwap::from_pointee(verifier),
            policy: ArcSwap::from_pointee(policy),
            audit,
            kube,
            settings,
            redactor,
            metrics,
            limiter,
            broker,
            changes: tokio::sync::watch::Sender::new(0),
            stopping: CancellationToken::new(),
            kill: CancellationToken::new(),
        }
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// The certificate verifier in force.
    pub(crate) fn verifier(&self) -> Guard<Arc<Verifier>> {
        self.verifier.load()
    }

    /// Replaces the policy; every live session decides again.
    pub(crate) fn reload_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
        self.changes.send_modify(|n| *n += 1);
    }

    /// Replaces the revocation list; every live session checks its certificate again.
    pub(crate) fn reload_revocations(&self, revocations: RevocationList) {
        let cfg = VerifierConfig {
            revocations,
            ..self.verifier.load().config().clone()
        };
        self.verifier.store(Arc::new(Verifier::new(cfg)));
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes every live session to decide again (a grant changed).
    pub(crate) fn wake_sessions(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that sees every policy and revocation change.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Kubernetes access.
    pub(crate) fn kube(&self) -> &KubeAccess {
        &self.kube
    }

    /// Settings.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Argv redaction.
    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The access broker's shared state.
    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Connection and session limits.
    pub(crate) fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Writes an event that authorises what follows: an error means the action must not happen.
    pub(crate) fn audit_first(&self, kind: &str, ev: &Event) -> Result<(), AuditRefused> {
        self.audit.record(kind, ev).map_err(AuditRefused)
    }

    /// Writes an event that records what happened (a failure is logged: the action is over).
    pub(crate) fn record(&self, kind: &str, ev: &Event) {
        if let Err(e) = self.audit.record(kind, ev) {
            tracing::error!("{e}");
        }
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Stops admitting sessions.
    pub(crate) fn begin_stop(&self) {
        self.stopping.cancel();
    }

    /// Ends every running session.
    pub(crate) fn kill_sessions(&self) {
        self.kill.cancel();
    }

    /// Resolves when running sessions must end now.
    pub(crate) async fn killed(&self) {
        self.kill.cancelled().await;
    }
}
