#![no_main]
//! Fuzz target: certificate parsing (binary and OpenSSH text) and full verification must never
//! panic, whatever the bytes.
use std::sync::OnceLock;
use std::time::SystemTime;

use jitsh_certs::ssh_key::{Certificate, PublicKey};
use jitsh_certs::{Presented, Verifier, VerifierConfig};
use libfuzzer_sys::fuzz_target;

const CA: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl fuzz-ca";

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let trusted = PublicKey::from_openssh(CA).into_iter().collect();
        Verifier::new(VerifierConfig { trusted_cas: trusted, ..VerifierConfig::default() })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut certs = Vec::new();
    if let Ok(c) = Certificate::from_bytes(data) {
        certs.push(c);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = Certificate::from_openssh(text)
    {
        certs.push(c);
    }
    for cert in &certs {
        let _ = verifier().verify(&Presented {
            certificate: cert,
            username: "alice",
            peer: Some("127.0.0.1".parse().unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))),
            proven_key: cert.public_key(),
            now: SystemTime::now(),
        });
    }
});
