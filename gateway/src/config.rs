//! `jitsh serve --config FILE`: the gateway's YAML configuration, validated before anything binds.
//!
//! Every problem names the key it is about and why (`limits.maxSessions: must be at least 1`);
//! files the configuration names (host key, CAs, revocations, policy) are read and checked here,
//! so a bad deployment fails at start, not at the first connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jitsh_certs::RevocationList;
use russh::keys::ssh_key::{Certificate, PrivateKey, PublicKey};
use serde::Deserialize;

use crate::audit::Redactor;

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// SSH listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The host's private key (OpenSSH format).
    pub host_key: PathBuf,
    /// The host certificate for `host_key`, presented to clients.
    #[serde(default)]
    pub host_certificate: Option<PathBuf>,
    /// Files holding the public keys of the user CAs to trust (one or more keys per file).
    #[serde(rename = "trustedUserCAs")]
    pub trusted_user_cas: Vec<PathBuf>,
    /// Revoked serials and key ids (`serial:N`, `key-id:ID` per line); reloaded on change.
    #[serde(default)]
    pub revocations: Option<PathBuf>,
    /// The policy file; reloaded on change.
    pub policy: PathBuf,
    /// How to reach the Kubernetes API.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// Namespace when a target names none.
    #[serde(default = "default_namespace")]
    pub default_namespace: String,
    /// Audit sinks.
    pub audit: AuditConfig,
    /// Where session recordings go.
    #[serde(default)]
    pub recordings: Option<PathBuf>,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// How often the policy and revocation files are checked for changes.
    #[serde(default = "default_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// The access broker (approvals).
    #[serde(default)]
    pub broker: BrokerConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2222))
}
fn default_namespace() -> String {
    "default".into()
}
fn default_reload() -> Duration {
    Duration::from_secs(2)
}

/// The Kubernetes connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesConfig {
    /// Use the pod's ServiceAccount (the default when no kubeconfig is given).
    #[serde(default)]
    pub in_cluster: Option<bool>,
    /// A kubeconfig file, to run outside a cluster.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The context in `kubeconfig`.
    #[serde(default)]
    pub context: Option<String>,
}

/// Audit sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditConfig {
    /// The hash-chained JSON-lines file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Also write every event to standard output.
    #[serde(default)]
    pub stdout: bool,
    /// Regular expressions whose first capture group (or whole match) is replaced by
    /// `<redacted>` in audited argv; replaces the defaults when given.
    #[serde(default)]
    pub redact: Option<Vec<String>>,
}

/// Limits and timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LimitsConfig {
    /// Time a connection has to authenticate.
    #[serde(with = "humantime_serde")]
    pub pre_auth_timeout: Duration,
    /// Concurrent connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Failed authentications from one IP address within `auth_failure_window` before its new
    /// connections are refused for the rest of the window.
    pub max_auth_failures_per_ip: usize,
    /// The window for `max_auth_failures_per_ip`.
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
    /// Concurrent sessions (commands) in all.
    pub max_sessions: usize,
    /// Concurrent sessions of one user.
    pub max_sessions_per_user: usize,
    /// A session with no input or output for this long is closed (the policy may set less).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// On SIGTERM, how long running commands may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The most one session's recording may hold; past it the session ends.
    pub max_recording_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            pre_auth_timeout: Duration::from_secs(10),
            max_connections_per_ip: 20,
            max_auth_failures_per_ip: 10,
            auth_failure_window: Duration::from_secs(60),
            max_sessions: 500,
            max_sessions_per_user: 20,
            idle_timeout: Duration::from_secs(15 * 60),
            shutdown_grace: Duration::from_secs(30),
            max_recording_bytes: crate::recording::MAX_RECORDING,
        }
    }
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminConfig {
    /// Address for `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

/// A configuration problem: the key and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The key (dotted path) the problem is about.
    pub key: String,
    /// Why.
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Everything the configuration names, read and checked.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// The host key.
    pub host_key: PrivateKey,
    /// The host certificate.
    pub host_certificate: Option<Certificate>,
    /// Trusted user CAs.
    pub trusted_cas: Vec<PublicKey>,
    /// Revocations.
    pub revocations: RevocationList,
    /// The policy.
    pub policy: jitsh_broker_policy::Policy,
    /// The argv redactor.
    pub redactor: Redactor,
    /// The policy file's text as loaded (the reload watcher's starting point).
    pub policy_text: String,
    /// The revocation file's text as loaded.
    pub revocations_text: Option<String>,
}

/// Reads, parses and validates a configuration file and everything it names.
pub fn load(path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![bad(
            &path.display().to_string(),
            format!("cannot read: {e}"),
        )]
    })?;
    let config: Config = serde_saphyr::from_str(&text).map_err(|e| vec![yaml_error(&e)])?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(config, base)
}

/// serde-saphyr's message names the field (`unknown field `x`, expected one of …`) and
/// position; keep it on one line.
fn yaml_error(e: &serde_saphyr::Error) -> ConfigError {
    let msg = e.to_string();
    let one_line = msg.lines().next().unwrap_or("invalid YAML").trim();
    let key = one_line
        .split('`')
        .nth(1)
        .filter(|_| one_line.contains("field"))
        .unwrap_or("(document)");
    bad(key, msg.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn read(key: &str, base: &Path, p: &Path) -> Result<String, ConfigError> {
    let full = resolve(base, p);
    std::fs::read_to_string(&full).map_err(|e| bad(key, format!("{}: {e}", full.display())))
}

/// Validates a parsed configuration; relative paths are relative to `base`.
pub fn validate(mut config: Config, base: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let host_key = read("hostKey", base, &config.host_key).and_then(|t| {
        PrivateKey::from_openssh(&t)
            .map_err(|e| bad("hostKey", format!("not an OpenSSH private key: {e}")))
    });
    let host_certificate = match &config.host_certificate {
        None => Ok(None),
        Some(p) => read("hostCertificate", base, p).and_then(|t| {
            Certificate::from_openssh(t.trim()).map(Some).map_err(|e| {
                bad(
                    "hostCertificate",
                    format!("not an OpenSSH certificate: {e}"),
                )
            })
        }),
    };
    if let (Ok(k), Ok(Some(c))) = (&host_key, &host_certificate)
        && c.public_key() != k.public_key().key_data()
    {
        errs.push(bad(
            "hostCertificate",
            "certifies a different key than hostKey",
        ));
    }
    let b = &config.broker;
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !dns_label(&b.namespace) {
        errs.push(bad(
            "broker.namespace",
            "must be a namespace name (a DNS label)",
        ));
    }
    for (key, d) in [
        ("broker.wait", b.wait),
        ("broker.pendingFor", b.pending_for),
        ("broker.approvedFor", b.approved_for),
    ] {
        if d.is_zero() {
            errs.push(bad(key, "must be longer than 0s"));
        }
    }
    for (i, u) in b.notify.iter().enumerate() {
        if !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            errs.push(bad(
                &format!("broker.notify[{i}]"),
                "must be an http or https URL",
            ));
        }
    }
    let mut trusted_cas = Vec::new();
    if config.trusted_user_cas.is_empty() {
        errs.push(bad(
            "trustedUserCAs",
            "at least one CA public key file is required",
        ));
    }
    for (i, p) in config.trusted_user_cas.iter().enumerate() {
        let key = format!("trustedUserCAs[{i}]");
        match read(&key, base, p) {
            Ok(t) => {
                let mut n = 0;
                for line in t
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    match PublicKey::from_openssh(line) {
                        Ok(k) => {
                            trusted_cas.push(k);
                            n += 1;
                        }
                        Err(e) => errs.push(bad(&key, format!("not an OpenSSH public key: {e}"))),
                    }
                }
                if n == 0 {
                    errs.push(bad(&key, "holds no public key"));
                }
            }
            Err(e) => errs.push(e),
        }
    }
    let mut revocations_text = None;
    let mut policy_text = String::new();
    let revocations = match &config.revocations {
        None => Ok(RevocationList::empty()),
        Some(p) => read("revocations", base, p).and_then(|t| {
            let list = RevocationList::parse(&t).map_err(|e| bad("revocations", e.to_string()))?;
            revocations_text = Some(t);
            Ok(list)
        }),
    };
    let policy = read("policy", base, &config.policy).and_then(|t| {
        policy_text = t.clone();
        jitsh_broker_policy::Policy::from_yaml(&t).map_err(|e| {
            bad(
                "policy",
                format!(
                    "{}: {}",
                    resolve(base, &config.policy).display(),
                    e.to_string().replace('\n', "; ")
                ),
            )
        })
    });
    let k = &config.kubernetes;
    if k.in_cluster == Some(true) && k.kubeconfig.is_some() {
        errs.push(bad(
            "kubernetes",
            "inCluster and kubeconfig exclude each other",
        ));
    }
    if k.context.is_some() && k.kubeconfig.is_none() {
        errs.push(bad("kubernetes.context", "needs kubernetes.kubeconfig"));
    }
    if let Some(p) = &k.kubeconfig {
        let full = resolve(base, p);
        if let Err(e) = std::fs::metadata(&full) {
            errs.push(bad(
                "kubernetes.kubeconfig",
                format!("{}: {e}", full.display()),
            ));
        }
        config.kubernetes.kubeconfig = Some(full);
    }
    if !crate::intent::is_dns_label(&config.default_namespace) {
        errs.push(bad("defaultNamespace", "not a valid namespace name"));
    }
    if config.audit.file.is_none() && !config.audit.stdout {
        errs.push(bad(
            "audit",
            "needs a file, stdout: true, or both (the gateway never runs unaudited)",
        ));
    }
    if let Some(f) = &config.audit.file {
        config.audit.file = Some(resolve(base, f));
    }
    if let Some(r) = &config.recordings {
        config.recordings = Some(resolve(base, r));
    }
    config.policy = resolve(base, &config.policy);
    if let Some(r) = &config.revocations {
        config.revocations = Some(resolve(base, r));
    }
    let redactor = match &config.audit.redact {
        None => Ok(Redactor::default()),
        Some(pats) => Redactor::new(pats).map_err(|(i, e)| bad(&format!("audit.redact[{i}]"), e)),
    };
    let l = &config.limits;
    for (key, v) in [
        ("limits.maxConnectionsPerIp", l.max_connections_per_ip),
        ("limits.maxAuthFailuresPerIp", l.max_auth_failures_per_ip),
        ("limits.maxSessions", l.max_sessions),
        ("limits.maxSessionsPerUser", l.max_sessions_per_user),
    ] {
        if v == 0 {
            errs.push(bad(key, "must be at least 1"));
        }
    }
    for (key, v) in [
        ("limits.preAuthTimeout", l.pre_auth_timeout),
        ("limits.authFailureWindow", l.auth_failure_window),
        ("limits.idleTimeout", l.idle_timeout),
        ("reloadInterval", config.reload_interval),
    ] {
        if v.is_zero() {
            errs.push(bad(key, "must be longer than zero"));
        }
    }
    // Port 0 asks the kernel for a free port each: two of them never collide.
    if let Some(a) = &config.admin
        && a.listen == config.listen
        && a.listen.port() != 0
    {
        errs.push(bad("admin.listen", "must differ from listen"));
    }
    let host_key = host_key.map_err(|e| errs.push(e)).ok();
    let host_certificate = host_certificate.map_err(|e| errs.push(e)).ok();
    let revocations = revocations.map_err(|e| errs.push(e)).ok();
    let policy = policy.map_err(|e| errs.push(e)).ok();
    let redactor = redactor.map_err(|e| errs.push(e)).ok();
    match (host_key, host_certificate, revocations, policy, redactor) {
        (
            Some(host_key),
            Some(host_certificate),
            Some(revocations),
            Some(policy),
            Some(redactor),
        ) if errs.is_empty() => Ok(Loaded {
            config,
            host_key,
            host_certificate,
            trusted_cas,
            revocations,
            policy,
            redactor,
            policy_text,
            revocations_text,
        }),
        _ => Err(errs),
    }
}

/// The access broker: approvals and their timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BrokerConfig {
    /// The namespace holding AccessRequests (the gateway's own).
    pub namespace: String,
    /// How long a command that needs approval waits for it before the client is told to run it
    /// again later.
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    /// How long a request stays open for approval.
    #[serde(with = "humantime_serde")]
    pub pending_for: Duration,
    /// How long an approved command may wait to be run (once).
    #[serde(with = "humantime_serde")]
    pub approved_for: Duration,
    /// Webhooks told of every request, approval, denial, expiry and revocation (JSON with a
    /// `text` field: Slack and Mattermost incoming webhooks take it as is).
    pub notify: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            namespace: "jitsh".into(),
            wait: Duration::from_secs(10 * 60),
            pending_for: Duration::from_secs(60 * 60),
            approved_for: Duration::from_secs(15 * 60),
            notify: Vec::new(),
        }
    }
}
