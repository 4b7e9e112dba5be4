//! Signing: CA keys, user certificates and host certificates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_key::certificate::{Builder, CertType};
use ssh_key::{Algorithm, Certificate, PrivateKey, PublicKey};

use crate::error::CertError;

/// The extension that carries the user's groups, comma-separated.
pub const GROUPS_EXTENSION: &str = "groups@jitsh.dev";
/// The extension that marks a break-glass certificate; its value is the incident id.
pub const BREAK_GLASS_EXTENSION: &str = "break-glass@jitsh.dev";

/// Generates an ed25519 CA key.
pub fn generate_ca_key(comment: &str) -> Result<PrivateKey, CertError> {
    let mut key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(CertError::ssh("generating a key"))?;
    key.set_comment(comment);
    Ok(key)
}

/// What goes into a user certificate.
#[derive(Debug, Clone)]
pub struct UserCertOptions {
    /// Key ID: the identity (e.g. `alice@example.com`).
    pub identity: String,
    /// Principals (SSH user names).
    pub principals: Vec<String>,
    /// Groups, carried in [`GROUPS_EXTENSION`].
    pub groups: Vec<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Serial (default: random).
    pub serial: Option<u64>,
    /// `source-address` critical option (CIDRs).
    pub source_address: Vec<String>,
    /// Break-glass incident id, carried in [`BREAK_GLASS_EXTENSION`].
    pub break_glass: Option<String>,
    /// `force-command` critical option.
    pub force_command: Option<String>,
    /// Start of validity (default: now minus one minute, for clock skew).
    pub valid_after: Option<SystemTime>,
}

impl UserCertOptions {
    /// Options for `identity` with one principal and the given groups and lifetime.
    pub fn new(
        identity: impl Into<String>,
        principal: impl Into<String>,
        groups: &[&str],
        ttl: Duration,
    ) -> Self {
        UserCertOptions {
            identity: identity.into(),
            principals: vec![principal.into()],
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ttl,
            serial: None,
            source_address: Vec::new(),
            break_glass: None,
            force_command: None,
            valid_after: None,
        }
    }
}

fn unix(t: SystemTime) -> Result<u64, CertError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| CertError::Invalid {
            what: "validity",
            reason: "time before 1970".into(),
        })
}

fn validity(valid_after: Option<SystemTime>, ttl: Duration) -> Result<(u64, u64), CertError> {
    if ttl.is_zero() {
        return Err(CertError::Invalid {
            what: "ttl",
            reason: "must be positive".into(),
        });
    }
    let start = unix(valid_after.unwrap_or_else(SystemTime::now))?;
    Ok((start, start.saturating_add(ttl.as_secs().max(1))))
}

/// Signs a user certificate for `key` with the CA `ca`.
pub fn sign_user_certificate(
    ca: &PrivateKey,
    key: &PublicKey,
    opts: &UserCertOptions,
) -> Result<Certificate, CertError> {
    if opts.identity.is_empty() {
        return Err(CertError::Invalid {
            what: "identity",
            reason: "must not be empty".into(),
        });
    }
    if opts.principals.is_empty() || opts.principals.iter().any(String::is_empty) {
        return Err(CertError::Invalid {
            what: "principal",
            reason: "at least one non-empty principal is required".into(),
        });
    }
    for g in &opts.groups {
        if g.is_empty() || g.contains(',') || g.chars().any(char::is_whitespace) {
            return Err(CertError::Invalid {
                what: "groups",
                reason: format!("bad group name {g:?}"),
            });
        }
    }
    for cidr in &opts.source_address {
        cidr.parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| CertError::Invalid {
                what: "source-address",
                reason: format!("{cidr:?} is not an address or CIDR"),
            })?;
    }
    let (after, before) = validity(opts.valid_after, opts.ttl)?;
    let e = CertError::ssh("building the certificate");
    let mut b =
        Builder::new_with_random_nonce(&mut rand::rng(), key.key_data().clone(), after, before)
            .map_err(e)?;
    let serial = opts.serial.unwrap_or_else(rand::random);
    b.serial(serial).map_err(CertError::ssh("serial"))?;
    b.cert_type(CertType::User)
        .map_err(CertError::ssh("type"))?;
    b.key_id(opts.identity.clone())
        .map_err(CertError::ssh("key id"))?;
    for p in &opts.principals {
        b.valid_principal(p.clone())
            .map_err(CertError::ssh("principal"))?;
    }
    if !opts.source_address.is_empty() {
        b.critical_option("source-address", opts.source_address.join(","))
            .map_err(CertError::ssh("source-address"))?;
    }
    if let Some(fc) = &opts.force_command {
        b.critical_option("force-command", fc.clone())
            .map_err(CertError::ssh("force-command"))?;
    }
    // What the gateway honours of sshd's `permit-*` extensions (agent, X11 and user-rc are
    // never offered, so they are not granted).
    for ext in ["permit-pty", "permit-port-forwarding"] {
        b.extension(ext, "").map_err(CertError::ssh(ext))?;
    }
    if !opts.groups.is_empty() {
        b.extension(GROUPS_EXTENSION, opts.groups.join(","))
            .map_err(CertError::ssh("groups"))?;
    }
    if let Some(inc) = &opts.break_glass {
        b.extension(BREAK_GLASS_EXTENSION, inc.clone())
            .map_err(CertError::ssh("break-glass"))?;
    }
    b.comment(opts.identity.clone())
        .map_err(CertError::ssh("comment"))?;
    b.sign(ca)
        .map_err(CertError::ssh("signing the certificate"))
}

/// What goes into a host certificate.
#[derive(Debug, Clone)]
pub struct HostCertOptions {
    /// Host names (principals).
    pub hostnames: Vec<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Key ID (default: the first host name).
    pub key_id: Option<String>,
}

/// Signs a host certificate for the gateway's host key.
pub fn sign_host_certificate(
    ca: &PrivateKey,
    key: &PublicKey,
    opts: &HostCertOptions,
) -> Result<Certificate, CertError> {
    let first_hostname = match opts.hostnames.first() {
        Some(first) if !opts.hostnames.iter().any(String::is_empty) => first,
        _ => {
            return Err(CertError::Invalid {
                what: "hostname",
                reason: "at least one non-empty host name is required".into(),
            });
        }
    };
    let (after, before) = validity(None, opts.ttl)?;
    let mut b =
        Builder::new_with_random_nonce(&mut rand::rng(), key.key_data().clone(), after, before)
            .map_err(CertError::ssh("building the certificate"))?;
    b.serial(rand::random()).map_err(CertError::ssh("serial"))?;
    b.cert_type(CertType::Host)
        .map_err(CertError::ssh("type"))?;
    let key_id = opts
        .key_id
        .clone()
        .unwrap_or_else(|| first_hostname.clone());
    b.key_id(key_id).map_err(CertError::ssh("key id"))?;
    for h in &opts.hostnames {
        b.valid_principal(h.clone())
            .map_err(CertError::ssh("principal"))?;
    }
    b.sign(ca)
        .map_err(CertError::ssh("signing the certificate"))
}
