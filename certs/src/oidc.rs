//! OIDC ID-token validation (the pure part: no fetching). Signature by a key from the JWKS,
//! algorithm allowlist (RS256, ES256, EdDSA — never `none`, never HS*), issuer, audience,
//! exp/nbf/iat with leeway, and the configured username and groups claims.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;

/// How ID tokens are checked.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (one of).
    pub audience: String,
    /// The claim that names the user (e.g. `preferred_username`, `email`).
    pub username_claim: String,
    /// The claim that lists the groups (an array of strings).
    pub groups_claim: String,
    /// Clock skew allowed on exp, nbf and iat.
    pub leeway: Duration,
    /// Allowed algorithms (from RS256, ES256, EdDSA).
    pub algorithms: Vec<Algorithm>,
}

impl OidcConfig {
    /// A configuration with the defaults: claims `preferred_username` and `groups`, 60 s
    /// leeway, RS256/ES256/EdDSA.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            leeway: Duration::from_secs(60),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        }
    }
}

/// Who a valid ID token says the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// `sub`.
    pub subject: String,
    /// The username claim.
    pub username: String,
    /// The groups claim.
    pub groups: Vec<String>,
    /// `exp` (Unix seconds).
    pub expires_at: u64,
}

/// Why a token was refused; each reason distinct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` not in the allowlist (`none`, HS*, ...).
    #[error("token algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No key in the JWKS for the token's `kid` (the caller may refetch once).
    #[error("no signing key {0:?} in the issuer's JWKS")]
    UnknownKey(String),
    /// The JWK does not fit the token's algorithm.
    #[error("the signing key does not match the token algorithm")]
    KeyAlgorithmMismatch,
    /// Signature invalid.
    #[error("token signature is invalid")]
    BadSignature,
    /// Wrong `iss`.
    #[error("issuer mismatch")]
    WrongIssuer,
    /// Wrong `aud`.
    #[error("audience mismatch")]
    WrongAudience,
    /// Expired.
    #[error("token has expired")]
    Expired,
    /// `nbf` in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` in the future.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// A required claim is missing.
    #[error("token has no {0:?} claim")]
    MissingClaim(String),
    /// A claim has the wrong type.
    #[error("token claim {0:?} has the wrong type")]
    BadClaimType(String),
}

impl TokenError {
    /// A fixed label for metrics and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::KeyAlgorithmMismatch => "key_algorithm_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::BadClaimType(_) => "bad_claim_type",
        }
    }
}

/// The `alg` of a token's header, read before any typed parsing (so `none` gets its own reason).
fn raw_alg(token: &str) -> Result<String, TokenError> {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("header is not base64url".into()))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("header is not JSON".into()))?;
    v.get("alg")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| TokenError::Malformed("header has no alg".into()))
}

fn find_key<'a>(jwks: &'a JwkSet, kid: Option<&str>) -> Result<&'a Jwk, TokenError> {
    match kid {
        Some(k) => jwks
            .find(k)
            .ok_or_else(|| TokenError::UnknownKey(k.to_owned())),
        None => match jwks.keys.as_slice() {
            [only] => Ok(only),
            _ => Err(TokenError::UnknownKey(String::new())),
        },
    }
}

/// Validates an ID token against a JWKS at time `now`.
pub fn validate_id_token(
    token: &str,
    jwks: &JwkSet,
    cfg: &OidcConfig,
    now: SystemTime,
) -> Result<OidcIdentity, TokenError> {
    if token.split('.').count() != 3 {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    }
    let alg_name = raw_alg(token)?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| TokenError::AlgorithmNotAllowed(alg_name.clone()))?;
    if !cfg.algorithms.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed(alg_name));
    }
    let jwk = find_key(jwks, header.kid.as_deref())?;
    if let Some(ka) = jwk.common.key_algorithm
        && format!("{ka:?}") != format!("{:?}", header.alg)
    {
        return Err(TokenError::KeyAlgorithmMismatch);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::KeyAlgorithmMismatch)?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&cfg.issuer]);
    validation.set_audience(&[&cfg.audience]);
    validation.leeway = cfg.leeway.as_secs();
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let data =
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey => TokenError::KeyAlgorithmMismatch,
            other => TokenError::Malformed(format!("{other:?}")),
        })?;
    let claims = data.claims;
    // jsonwebtoken checks exp and nbf against the system clock; check them (and iat) against `now` too.
    let num = |k: &str| claims.get(k).and_then(Value::as_u64);
    let leeway = cfg.leeway.as_secs();
    if num("exp").is_some_and(|exp| exp.saturating_add(leeway) < now_s) {
        return Err(TokenError::Expired);
    }
    if num("nbf").is_some_and(|nbf| nbf > now_s.saturating_add(leeway)) {
        return Err(TokenError::NotYetValid);
    }
    if num("iat").is_some_and(|iat| iat > now_s.saturating_add(leeway)) {
        return Err(TokenError::IssuedInFuture);
    }
    let username = match claims.get(&cfg.username_claim) {
        None | Some(Value::Null) => {
            return Err(TokenError::MissingClaim(cfg.username_claim.clone()));
        }
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(TokenError::BadClaimType(cfg.username_claim.clone())),
    };
    let groups = match claims.get(&cfg.groups_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| {
                g.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| TokenError::BadClaimType(cfg.groups_claim.clone()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(TokenError::BadClaimType(cfg.groups_claim.clone())),
    };
    Ok(OidcIdentity {
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        username,
        groups,
        expires_at: num("exp").unwrap_or(0),
    })
}
