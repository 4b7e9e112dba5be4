//! Verification of a presented user certificate: every check russh does not do.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_key::certificate::CertType;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Certificate, Fingerprint, HashAlg, PublicKey};

use crate::error::CertError;
use crate::sign::{BREAK_GLASS_EXTENSION, GROUPS_EXTENSION};

/// Critical options jitsh understands; any other makes a certificate unusable (PROTOCOL.certkeys).
const KNOWN_CRITICAL_OPTIONS: &[&str] = &["source-address", "force-command"];

/// What the verifier trusts and how strict it is.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Trusted user CA public keys (several, for rotation).
    pub trusted_cas: Vec<PublicKey>,
    /// Revoked serials and key IDs.
    pub revocations: RevocationList,
    /// Allowed clock skew at both ends of the validity window.
    pub clock_skew: Duration,
    /// Longest total lifetime (`valid_before - valid_after`) accepted.
    pub max_lifetime: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            trusted_cas: Vec::new(),
            revocations: RevocationList::empty(),
            clock_skew: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// A presented certificate and the facts of the connection it came on.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The certificate.
    pub certificate: &'a Certificate,
    /// The SSH user name the client asked for.
    pub username: &'a str,
    /// The peer's address (`None` fails any `source-address` restriction).
    pub peer: Option<IpAddr>,
    /// The public key the client proved possession of (signed the session with).
    pub proven_key: &'a KeyData,
    /// The time of the check.
    pub now: SystemTime,
}

/// Who a verified certificate says the user is. Only [`Verifier::verify`] constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    identity: String,
    username: String,
    groups: Vec<String>,
    serial: u64,
    valid_before: SystemTime,
    break_glass: Option<String>,
    force_command: Option<String>,
    ca_fingerprint: String,
    permit_pty: bool,
    permit_port_forwarding: bool,
}

impl VerifiedIdentity {
    /// The identity (the certificate's key ID).
    pub fn identity(&self) -> &str {
        &self.identity
    }
    /// The key ID (same as [`Self::identity`]).
    pub fn key_id(&self) -> &str {
        &self.identity
    }
    /// The SSH user name (a principal of the certificate).
    pub fn username(&self) -> &str {
        &self.username
    }
    /// Groups from the `groups@jitsh.dev` extension.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    /// The certificate serial.
    pub fn serial(&self) -> u64 {
        self.serial
    }
    /// When the certificate stops being valid.
    pub fn valid_before(&self) -> SystemTime {
        self.valid_before
    }
    /// The incident id of a break-glass certificate.
    pub fn break_glass(&self) -> Option<&str> {
        self.break_glass.as_deref()
    }
    /// The `force-command` critical option, which the gateway must honour.
    pub fn force_command(&self) -> Option<&str> {
        self.force_command.as_deref()
    }
    /// SHA-256 fingerprint of the CA that signed the certificate.
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }
    /// The certificate carries `permit-pty` (as in sshd, without it no terminal is allocated).
    pub fn permits_pty(&self) -> bool {
        self.permit_pty
    }
    /// The certificate carries `permit-port-forwarding` (without it no forward is opened).
    pub fn permits_port_forwarding(&self) -> bool {
        self.permit_port_forwarding
    }
}

/// Why a certificate was refused. Each reason is distinct; `Display` is one line for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a user certificate.
    #[error("a host certificate cannot be used to log in")]
    HostCertificate,
    /// Signed by a CA that is not trusted.
    #[error("certificate signed by an untrusted CA ({0})")]
    UntrustedCa(String),
    /// Signed with `ssh-rsa` (SHA-1).
    #[error(
        "certificate signed with ssh-rsa (SHA-1), which is refused; re-sign with rsa-sha2-512 or ed25519"
    )]
    Sha1Signature,
    /// The CA signature does not verify.
    #[error("certificate signature is invalid")]
    BadSignature,
    /// The certificate's key is not the key the client proved it holds.
    #[error("certificate key does not match the key used to authenticate")]
    KeyMismatch,
    /// No principals: OpenSSH would accept any user; we do not.
    #[error("certificate has no principals")]
    EmptyPrincipals,
    /// The user name is not among the principals.
    #[error("certificate is not valid for user {user:?} (principals: {principals})")]
    PrincipalMismatch {
        /// The requested user.
        user: String,
        /// The certificate's principals.
        principals: String,
    },
    /// Not valid yet.
    #[error("certificate is not valid yet")]
    NotYetValid,
    /// Expired.
    #[error("certificate has expired")]
    Expired,
    /// Lifetime longer than the cap.
    #[error("certificate lifetime {lifetime_secs}s exceeds the maximum of {max_secs}s")]
    LifetimeTooLong {
        /// The certificate's lifetime.
        lifetime_secs: u64,
        /// The cap.
        max_secs: u64,
    },
    /// A critical option jitsh does not understand.
    #[error("certificate has unsupported critical option {0:?}")]
    UnknownCriticalOption(String),
    /// The `source-address` option cannot be parsed.
    #[error("certificate source-address {0:?} is malformed")]
    BadSourceAddress(String),
    /// The peer is not in `source-address`.
    #[error("connection from {peer} is not allowed by the certificate's source-address {allowed}")]
    SourceAddressMismatch {
        /// The peer (or `unknown`).
        peer: String,
        /// The allowed list.
        allowed: String,
    },
    /// Revoked by serial.
    #[error("certificate serial {0} is revoked")]
    RevokedSerial(u64),
    /// Revoked by key ID.
    #[error("certificate key ID {0:?} is revoked")]
    RevokedKeyId(String),
    /// The groups extension is malformed.
    #[error("certificate groups@jitsh.dev extension is malformed")]
    BadGroups,
}

impl Rejection {
    /// A fixed label for metrics and audit (never user input).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::HostCertificate => "host_certificate",
            Rejection::UntrustedCa(_) => "untrusted_ca",
            Rejection::Sha1Signature => "sha1_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::KeyMismatch => "key_mismatch",
            Rejection::EmptyPrincipals => "empty_principals",
            Rejection::PrincipalMismatch { .. } => "principal_mismatch",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::Expired => "expired",
            Rejection::LifetimeTooLong { .. } => "lifetime_too_long",
            Rejection::UnknownCriticalOption(_) => "unknown_critical_option",
            Rejection::BadSourceAddress(_) => "bad_source_address",
            Rejection::SourceAddressMismatch { .. } => "source_address_mismatch",
            Rejection::RevokedSerial(_) => "revoked_serial",
            Rejection::RevokedKeyId(_) => "revoked_key_id",
            Rejection::BadGroups => "bad_groups",
        }
    }
}

/// Revoked serials and key IDs. Text form: one entry per line, `serial:N` or `key-id:ID`;
/// blank lines and `#` comments are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    serials: HashSet<u64>,
    key_ids: HashSet<String>,
}

impl RevocationList {
    /// An empty list.
    pub fn empty() -> Self {
        Self::default()
    }
    /// Parses the text form; every bad line is an error naming it.
    pub fn parse(text: &str) -> Result<Self, CertError> {
        let mut out = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| CertError::Revocation {
                line: i + 1,
                reason: reason.to_owned(),
            };
            if let Some(s) = line.strip_prefix("serial:") {
                out.serials.insert(
                    s.trim()
                        .parse()
                        .map_err(|_| err("serial must be a non-negative integer"))?,
                );
            } else if let Some(k) = line.strip_prefix("key-id:") {
                let k = k.trim();
                if k.is_empty() {
                    return Err(err("empty key ID"));
                }
                out.key_ids.insert(k.to_owned());
            } else {
                return Err(err("expected `serial:N` or `key-id:ID`"));
            }
        }
        Ok(out)
    }
    /// Adds a serial.
    pub fn revoke_serial(&mut self, serial: u64) {
        self.serials.insert(serial);
    }
    /// Adds a key ID.
    pub fn revoke_key_id(&mut self, key_id: impl Into<String>) {
        self.key_ids.insert(key_id.into());
    }
    /// Whether a serial is revoked.
    pub fn is_serial_revoked(&self, serial: u64) -> bool {
        self.serials.contains(&serial)
    }
    /// Whether a key ID is revoked.
    pub fn is_key_id_revoked(&self, key_id: &str) -> bool {
        self.key_ids.contains(key_id)
    }
}

/// Verifies user certificates against a [`VerifierConfig`].
#[derive(Debug, Clone)]
pub struct Verifier {
    config: VerifierConfig,
    trusted: Vec<Fingerprint>,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Verifier {
    /// A verifier for the configuration.
    pub fn new(config: VerifierConfig) -> Self {
        let trusted = config
            .trusted_cas
            .iter()
            .map(|k| k.fingerprint(HashAlg::Sha256))
            .collect();
        Verifier { config, trusted }
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Checks everything about a presented certificate; the identity, or the first reason to refuse.
    pub fn verify(&self, input: &Presented<'_>) -> Result<VerifiedIdentity, Rejection> {
        let cert = input.certificate;
        if cert.cert_type() != CertType::User {
            return Err(Rejection::HostCertificate);
        }
        if matches!(cert.signature().algorithm(), Algorithm::Rsa { hash: None }) {
            return Err(Rejection::Sha1Signature);
        }
        let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
        if !self.trusted.contains(&ca) {
            return Err(Rejection::UntrustedCa(ca.to_string()));
        }
        cert.verify_signature()
            .map_err(|_| Rejection::BadSignature)?;
        if cert.public_key() != input.proven_key {
            return Err(Rejection::KeyMismatch);
        }
        let principals = cert.valid_principals();
        if principals.is_empty() {
            return Err(Rejection::EmptyPrincipals);
        }
        if !principals.iter().any(|p| p == input.username) {
            return Err(Rejection::PrincipalMismatch {
                user: input.username.to_owned(),
                principals: principals.join(","),
            });
        }
        let now = secs(input.now);
        let skew = self.config.clock_skew.as_secs();
        if now.saturating_add(skew) < cert.valid_after() {
            return Err(Rejection::NotYetValid);
        }
        if now.saturating_sub(skew) >= cert.valid_before() {
            return Err(Rejection::Expired);
        }
        let lifetime = cert.valid_before().saturating_sub(cert.valid_after());
        if lifetime > self.config.max_lifetime.as_secs() {
            return Err(Rejection::LifetimeTooLong {
                lifetime_secs: lifetime,
                max_secs: self.config.max_lifetime.as_secs(),
            });
        }
        let options = cert.critical_options();
        if let Some(name) = options
            .keys()
            .find(|k| !KNOWN_CRITICAL_OPTIONS.contains(&k.as_str()))
        {
            return Err(Rejection::UnknownCriticalOption(name.clone()));
        }
        if let Some(list) = options.get("source-address") {
            check_source_address(list, input.peer)?;
        }
        if self.config.revocations.is_serial_revoked(cert.serial()) {
            return Err(Rejection::RevokedSerial(cert.serial()));
        }
        if self.config.revocations.is_key_id_revoked(cert.key_id()) {
            return Err(Rejection::RevokedKeyId(cert.key_id().to_owned()));
        }
        let groups = match cert.extensions().get(GROUPS_EXTENSION) {
            None => Vec::new(),
            Some(v) if v.is_empty() => Vec::new(),
            Some(v) => {
                let gs: Vec<String> = v.split(',').map(|g| g.trim().to_owned()).collect();
                if gs
                    .iter()
                    .any(|g| g.is_empty() || g.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    return Err(Rejection::BadGroups);
                }
                gs
            }
        };
        Ok(VerifiedIdentity {
            identity: cert.key_id().to_owned(),
            username: input.username.to_owned(),
            groups,
            serial: cert.serial(),
            valid_before: UNIX_EPOCH
                + Duration::from_secs(cert.valid_before().min(i64::MAX as u64 / 2)),
            break_glass: cert
                .extensions()
                .get(BREAK_GLASS_EXTENSION)
                .filter(|v| !v.is_empty())
                .cloned(),
            force_command: options.get("force-command").cloned(),
            ca_fingerprint: ca.to_string(),
            permit_pty: cert.extensions().contains_key("permit-pty"),
            permit_port_forwarding: cert.extensions().contains_key("permit-port-forwarding"),
        })
    }
}

fn check_source_address(list: &str, peer: Option<IpAddr>) -> Result<(), Rejection> {
    let mut nets = Vec::new();
    for item in list.split(',').map(str::trim) {
        let net = item
            .parse::<ipnet::IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| Rejection::BadSourceAddress(list.to_owned()))?;
        nets.push(net);
    }
    let ok = peer.is_some_and(|p| {
        let p = match p {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(p, IpAddr::V4),
            v4 => v4,
        };
        nets.iter().any(|n| n.contains(&p))
    });
    if ok {
        Ok(())
    } else {
        Err(Rejection::SourceAddressMismatch {
            peer: peer.map_or_else(|| "an unknown address".to_owned(), |p| p.to_string()),
            allowed: list.to_owned(),
        })
    }
}
