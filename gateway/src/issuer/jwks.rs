//! Fetching and caching an OIDC provider's JWKS: from the discovery document or a file,
//! refetched once (rate-limited) when a token names an unknown key.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use jitsh_certs::jsonwebtoken::jwk::JwkSet;
use jitsh_certs::{OidcConfig, OidcIdentity, TokenError, validate_id_token};
use tokio::sync::Mutex;

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum JwksLocation {
    /// A JWKS URL (from discovery or configured).
    Url(String),
    /// A JWKS file.
    File(PathBuf),
}

/// A cached JWKS.
pub struct JwksCache {
    location: JwksLocation,
    http: reqwest::Client,
    min_refetch: Duration,
    /// The keys, whether they were loaded, and when the last refetch for an unknown key was.
    state: Mutex<(JwkSet, bool, Option<Instant>)>,
    fetches: AtomicU64,
}

/// Reads `{issuer}/.well-known/openid-configuration` and returns its `jwks_uri`.
pub async fn discover(http: &reqwest::Client, discovery_url: &str) -> anyhow::Result<String> {
    let doc: serde_json::Value = http
        .get(discovery_url)
        .send()
        .await
        .with_context(|| format!("fetching {discovery_url}"))?
        .error_for_status()?
        .json()
        .await
        .context("decoding the discovery document")?;
    doc.get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .context("the discovery document has no jwks_uri")
}

impl JwksCache {
    /// A cache that refetches at most once per `min_refetch`.
    pub fn new(location: JwksLocation, http: reqwest::Client, min_refetch: Duration) -> Self {
        JwksCache {
            location,
            http,
            min_refetch,
            state: Mutex::new((JwkSet { keys: Vec::new() }, false, None)),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times the keys were fetched.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match &self.location {
            JwksLocation::Url(url) => Ok(self
                .http
                .get(url)
                .send()
                .await
                .with_context(|| format!("fetching JWKS {url}"))?
                .error_for_status()?
                .json()
                .await
                .context("decoding the JWKS")?),
            JwksLocation::File(p) => {
                let text = tokio::fs::read_to_string(p)
                    .await
                    .with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str(&text).with_context(|| format!("decoding {}", p.display()))
            }
        }
    }

    /// Validates a token; on an unknown key, refetches once — at most once per minimum
    /// interval, so unknown `kid`s cannot make the issuer hammer the provider — then decides.
    pub async fn validate(
        &self,
        token: &str,
        cfg: &OidcConfig,
    ) -> Result<OidcIdentity, TokenError> {
        let mut state = self.state.lock().await;
        if !state.1
            && let Ok(set) = self.fetch().await
        {
            state.0 = set;
            state.1 = true;
        }
        match validate_id_token(token, &state.0, cfg, SystemTime::now()) {
            Err(TokenError::UnknownKey(kid)) => {
                let allowed = state.2.is_none_or(|t| t.elapsed() >= self.min_refetch);
                if !allowed {
                    return Err(TokenError::UnknownKey(kid));
                }
                state.2 = Some(Instant::now());
                if let Ok(set) = self.fetch().await {
                    state.0 = set;
                }
                validate_id_token(token, &state.0, cfg, SystemTime::now())
            }
            other => other,
        }
    }
}
