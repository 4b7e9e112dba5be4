//! Running the gateway: from a configuration file (`serve --config`) or from development mode,
//! through the same listener, admin endpoints, reload watcher and shutdown path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jitsh_broker_policy::Policy;
use jitsh_certs::{RevocationList, Verifier, VerifierConfig};

use crate::audit::AuditLog;
use crate::audit::Event;
use crate::config::{self, Loaded};
use crate::gateway::{Gateway, Settings};
use crate::kube::KubeAccess;

/// Files watched for changes while the gateway runs.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// The policy file.
    pub policy: Option<PathBuf>,
    /// The revocation file.
    pub revocations: Option<PathBuf>,
    /// How often to look.
    pub interval: Duration,
    /// The policy text the running policy was loaded from (a file that differs is reloaded,
    /// even when it changed between loading and the first look).
    pub policy_loaded: Option<Vec<u8>>,
    /// The revocation text that is in force.
    pub revocations_loaded: Option<Vec<u8>>,
}

/// A gateway ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// The gateway state.
    pub gateway: Arc<Gateway>,
    /// The russh configuration.
    pub ssh: Arc<russh::server::Config>,
    /// The bound SSH listener.
    pub listener: tokio::net::TcpListener,
    /// The bound admin listener.
    pub admin: Option<tokio::net::TcpListener>,
    /// What to reload.
    pub watched: Watched,
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run(p: Prepared) -> anyhow::Result<()> {
    let gw = p.gateway;
    if let Some(admin) = p.admin {
        let g = gw.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::admin::serve(admin, g).await {
                tracing::error!("admin listener: {e}");
            }
        });
    }
    let watcher = tokio::spawn(watch(gw.clone(), p.watched));
    let requests = tokio::spawn(crate::broker::watch(gw.clone()));
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "gateway started");
    gw.record(
        "gateway.start",
        &Event {
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            ..Event::default()
        },
    );
    let r = crate::ssh::serve(p.listener, p.ssh, gw, shutdown_signal()).await;
    watcher.abort();
    requests.abort();
    r.map_err(anyhow::Error::from)
}

/// Polls the watched files; a changed file that parses replaces the running one, a bad one is
/// logged with every error and the last good one stays.
pub async fn watch(gw: Arc<Gateway>, w: Watched) {
    let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read(p).ok());
    let mut last_policy = w.policy_loaded.clone().or_else(|| read(&w.policy));
    let mut last_revocations = w
        .revocations_loaded
        .clone()
        .or_else(|| read(&w.revocations));
    let interval = if w.interval.is_zero() {
        Duration::from_secs(2)
    } else {
        w.interval
    };
    loop {
        tokio::time::sleep(interval).await;
        let now = read(&w.policy);
        if now.is_some() && now != last_policy {
            let path = w
                .policy
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(now.as_deref().unwrap_or_default()).into_owned();
            match Policy::from_yaml(&text) {
                Ok(p) => {
                    gw.reload_policy(p);
                    reloaded(&gw, "policy", "ok", Some(path), Vec::new());
                    tracing::info!("policy reloaded");
                }
                Err(errs) => {
                    for e in &errs.0 {
                        tracing::error!(
                            "policy reload refused, keeping the last good policy: {}:{}:{}: {}",
                            path,
                            e.line,
                            e.column,
                            e.message
                        );
                    }
                    let msgs: Vec<String> = errs
                        .0
                        .iter()
                        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
                        .collect();
                    reloaded(&gw, "policy", "error", None, msgs);
                }
            }
            last_policy = now;
        }
        let now = read(&w.revocations);
        if now.is_some() && now != last_revocations {
            let text = String::from_utf8_lossy(now.as_deref().unwrap_or_default()).into_owned();
            match RevocationList::parse(&text) {
                Ok(list) => {
                    gw.reload_revocations(list);
                    reloaded(&gw, "revocations", "ok", None, Vec::new());
                    tracing::info!("revocations reloaded");
                }
                Err(e) => {
                    tracing::error!("revocations reload refused, keeping the last good list: {e}");
                    reloaded(&gw, "revocations", "error", None, vec![e.to_string()]);
                }
            }
            last_revocations = now;
        }
    }
}

fn reloaded(gw: &Gateway, what: &str, result: &str, file: Option<String>, errors: Vec<String>) {
    gw.metrics().reload(what, result);
    let ev = Event {
        file,
        file_kind: Some(what.to_owned()),
        result: Some(result.to_owned()),
        errors: (!errors.is_empty()).then_some(errors),
        ..Event::default()
    };
    gw.record("policy.reload", &ev);
}

/// Loads a configuration file and binds its listeners; every problem is reported before
/// anything binds.
pub async fn prepare_from_config(path: &Path) -> anyhow::Result<Prepared> {
    let Loaded {
        config,
        host_key,
        host_certificate,
        trusted_cas,
        revocations,
        policy,
        redactor,
        policy_text,
        revocations_text,
    } = config::load(path).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "invalid configuration {}:\n  {}",
            path.display(),
            lines.join("\n  ")
        )
    })?;
    let kcfg = match &config.kubernetes.kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("kubernetes.kubeconfig: {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions {
                    context: config.kubernetes.context.clone(),
                    ..Default::default()
                },
            )
            .await
            .context("kubernetes.kubeconfig")?
        }
        None => kube::Config::incluster()
            .context("kubernetes.inCluster: not running in a cluster (set kubernetes.kubeconfig to run outside one)")?,
    };
    if let Some(r) = &config.recordings {
        crate::recording::private_dir(r).with_context(|| format!("recordings: {}", r.display()))?;
    }
    let audit = AuditLog::with_sinks(config.audit.file.as_deref(), config.audit.stdout)
        .context("audit.file")?;
    let settings = Settings {
        default_namespace: config.default_namespace.clone(),
        limits: config.limits.clone(),
        recordings: config.recordings.clone(),
        broker: config.broker.clone(),
    };
    let verifier = Verifier::new(VerifierConfig {
        trusted_cas,
        revocations,
        ..Default::default()
    });
    let ssh = Arc::new(crate::ssh::ssh_config(
        host_key,
        host_certificate,
        &config.limits,
    ));
    let gateway = Arc::new(Gateway::new(
        verifier,
        policy,
        audit,
        KubeAccess::new(kcfg),
        settings,
        redactor,
    ));
    let listener = bind(config.listen, "listen").await?;
    let admin = match &config.admin {
        Some(a) => Some(bind(a.listen, "admin.listen").await?),
        None => None,
    };
    Ok(Prepared {
        gateway,
        ssh,
        listener,
        admin,
        watched: Watched {
            // validate() made these absolute
            policy: Some(config.policy.clone()),
            revocations: config.revocations.clone(),
            interval: config.reload_interval,
            policy_loaded: Some(policy_text.into_bytes()),
            revocations_loaded: revocations_text.map(String::into_bytes),
        },
    })
}

/// Binds a listener, naming the key on failure.
pub async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: cannot bind {addr}"))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
