//! The OIDC → SSH certificate issuer: `POST /v1/certificates` over HTTPS (rustls).
//! It validates the bearer ID token, then signs the posted public key with the user CA:
//! key ID = identity, principal = username, `groups@jitsh.dev` from the groups claim.

pub mod jwks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jitsh_certs::ssh_key::{PrivateKey, PublicKey};
use jitsh_certs::{OidcConfig, UserCertOptions};
use serde::Deserialize;

use jwks::{JwksCache, JwksLocation};

/// Issuer configuration (YAML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssuerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// TLS private key (PEM).
    pub tls_key: PathBuf,
    /// The user CA private key (OpenSSH format).
    pub user_ca_key: PathBuf,
    /// The OIDC provider.
    pub oidc: OidcSettings,
    /// TTL when the request names none.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest TTL issued (requests above are capped).
    #[serde(default = "max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Groups whose members may get break-glass certificates.
    #[serde(default)]
    pub break_glass_groups: Vec<String>,
}

/// The OIDC provider settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OidcSettings {
    /// Expected issuer (`iss`); its discovery document is read unless `jwksFile` is set.
    pub issuer: String,
    /// Expected audience (`aud`).
    pub audience: String,
    /// A JWKS file instead of discovery.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The username claim.
    #[serde(default = "username_claim")]
    pub username_claim: String,
    /// The groups claim.
    #[serde(default = "groups_claim")]
    pub groups_claim: String,
    /// Domains whose `user@domain` usernames map to the principal `user`. A username in any
    /// other domain is refused: `alice@attacker.example` must never become `alice`.
    #[serde(default)]
    pub principal_domains: Vec<String>,
}

/// The SSH principal (and Kubernetes user) for a token's username: the name itself, or `user`
/// of `user@domain` when the domain is one the issuer maps; `Err` says why not.
fn principal_for(username: &str, domains: &[String]) -> Result<String, String> {
    let principal = match username.rsplit_once('@') {
        None => username,
        Some((user, domain)) if domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) => user,
        Some((_, domain)) => {
            return Err(format!(
                "username {username:?} is in domain {domain:?}, which this issuer does not map \
                 to principals (oidc.principalDomains: {})",
                if domains.is_empty() {
                    "none".to_owned()
                } else {
                    domains.join(", ")
                }
            ));
        }
    };
    if principal.is_empty()
        || !principal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!("username {username:?} is not a valid principal"));
    }
    Ok(principal.to_owned())
}

fn default_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}
fn max_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn username_claim() -> String {
    "preferred_username".into()
}
fn groups_claim() -> String {
    "groups".into()
}

impl IssuerConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: IssuerConfig =
            serde_saphyr::from_str(&text).with_context(|| format!("{}", path.display()))?;
        if cfg.default_ttl > cfg.max_ttl {
            bail!("{}: defaultTtl is longer than maxTtl", path.display());
        }
        if cfg.max_ttl.is_zero() || cfg.max_ttl > Duration::from_secs(24 * 3600) {
            bail!("{}: maxTtl must be between 1s and 24h", path.display());
        }
        Ok(cfg)
    }
}

struct Issuer {
    ca: PrivateKey,
    oidc: OidcConfig,
    jwks: JwksCache,
    cfg: IssuerConfig,
}

/// A running issuer.
pub struct RunningIssuer {
    /// The bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RunningIssuer {
    /// Waits until the server stops.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the issuer.
pub async fn start(cfg: IssuerConfig) -> anyhow::Result<RunningIssuer> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = PrivateKey::read_openssh_file(&cfg.user_ca_key)
        .with_context(|| format!("reading {}", cfg.user_ca_key.display()))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let location = match &cfg.oidc.jwks_file {
        Some(p) => JwksLocation::File(p.clone()),
        None => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                cfg.oidc.issuer.trim_end_matches('/')
            );
            JwksLocation::Url(jwks::discover(&http, &url).await?)
        }
    };
    let mut oidc = OidcConfig::new(cfg.oidc.issuer.clone(), cfg.oidc.audience.clone());
    oidc.username_claim = cfg.oidc.username_claim.clone();
    oidc.groups_claim = cfg.oidc.groups_claim.clone();
    let tls = tls_config(&cfg.tls_cert, &cfg.tls_key)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Issuer {
        ca,
        oidc,
        jwks: JwksCache::new(location, http, Duration::from_secs(30)),
        cfg,
    });
    let app = axum::Router::new()
        .route("/v1/certificates", post(issue))
        .with_state(state);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    Ok(RunningIssuer { addr, task })
}

fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .with_context(|| format!("reading {}", key.display()))?
    .with_context(|| format!("{}: no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `POST /v1/certificates`: what `jitsh login` sends.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueRequest {
    pub(crate) public_key: String,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) ttl: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) break_glass: Option<BreakGlassRequest>,
}

/// The break-glass part of a request.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakGlassRequest {
    pub(crate) incident: String,
    pub(crate) reason: String,
}

/// The issuer's answer: a certificate, or an error code with its detail.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
pub(crate) struct IssueReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) valid_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
}

fn error(code: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    let reply = IssueReply {
        error: Some(error.to_owned()),
        detail: Some(detail.into()),
        ..IssueReply::default()
    };
    (code, Json(reply)).into_response()
}

async fn issue(
    State(s): State<Arc<Issuer>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "missing bearer token",
        );
    };
    let id = match s.jwks.validate(token.trim(), &s.oidc).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(reason = e.code(), "issuer: token refused");
            return error(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string());
        }
    };
    let req: IssueRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    let public = match PublicKey::from_openssh(req.public_key.trim()) {
        Ok(k) => k,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("public_key: {e}"),
            );
        }
    };
    let principal = match principal_for(&id.username, &s.cfg.oidc.principal_domains) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::FORBIDDEN, "forbidden", why),
    };
    let ttl = req.ttl.unwrap_or(s.cfg.default_ttl).min(s.cfg.max_ttl);
    if ttl.is_zero() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "ttl must be positive",
        );
    }
    let mut opts = UserCertOptions::new(id.username.clone(), principal.clone(), &[], ttl);
    opts.groups = id.groups.clone();
    if let Some(bg) = &req.break_glass {
        if bg.incident.trim().is_empty() || bg.reason.trim().is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "break_glass needs an incident and a reason",
            );
        }
        if !id
            .groups
            .iter()
            .any(|g| s.cfg.break_glass_groups.contains(g))
        {
            tracing::warn!(user = %id.username, incident = %bg.incident, "issuer: break-glass refused");
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "break-glass certificates are not allowed for your groups",
            );
        }
        opts.break_glass = Some(bg.incident.clone());
    }
    let cert = match jitsh_certs::sign_user_certificate(&s.ca, &public, &opts) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    let Ok(text) = cert.to_openssh() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "encoding the certificate failed",
        );
    };
    let valid_before = SystemTime::UNIX_EPOCH + Duration::from_secs(cert.valid_before());
    let valid_before = humantime::format_rfc3339_seconds(valid_before).to_string();
    tracing::info!(
        event = "certificate.issued", identity = %id.username, principal = %principal, groups = %id.groups.join(","),
        serial = cert.serial(), valid_before = %valid_before, break_glass = ?opts.break_glass, "issuer: certificate issued"
    );
    (
        StatusCode::OK,
        Json(IssueReply {
            certificate: Some(text),
            valid_before: Some(valid_before),
            ..IssueReply::default()
        }),
    )
        .into_response()
}
