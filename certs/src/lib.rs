//! jitsh-certs: the SSH certificate authority and full certificate verification.
//!
//! russh checks only a certificate's signature and validity window; everything else that makes
//! a certificate trustworthy (trusted CA, certificate type, principals, lifetime cap, critical
//! options, source address, revocation, possession of the key) is checked here, and only this
//! crate can construct the resulting [`VerifiedIdentity`]. It also validates OIDC ID tokens
//! ([`validate_id_token`]). Pure library: no I/O, no printing.

mod error;
mod oidc;
mod sign;
mod verify;

pub use error::CertError;
pub use jsonwebtoken;
pub use oidc::{OidcConfig, OidcIdentity, TokenError, validate_id_token};
pub use sign::{
    BREAK_GLASS_EXTENSION, GROUPS_EXTENSION, HostCertOptions, UserCertOptions, generate_ca_key,
    sign_host_certificate, sign_user_certificate,
};
pub use ssh_key;
pub use verify::{
    Presented, Rejection, RevocationList, VerifiedIdentity, Verifier, VerifierConfig,
};
