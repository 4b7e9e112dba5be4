//! Criterion benchmark: verifying one user certificate (goal ≤ 100 µs).
#![expect(
    clippy::unwrap_used,
    missing_docs,
    reason = "benchmark harness: setup may panic on failure; criterion macros generate undocumented items"
)]

use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use jitsh_certs::ssh_key::{Algorithm, PrivateKey};
use jitsh_certs::{
    Presented, RevocationList, UserCertOptions, Verifier, VerifierConfig, generate_ca_key,
    sign_user_certificate,
};

fn bench(c: &mut Criterion) {
    let ca = generate_ca_key("ca").unwrap();
    let user = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let mut opts = UserCertOptions::new(
        "alice@example.com",
        "alice",
        &["oncall-payments", "sre"],
        Duration::from_secs(900),
    );
    opts.source_address = vec!["127.0.0.0/8".into()];
    let cert = sign_user_certificate(&ca, user.public_key(), &opts).unwrap();
    let mut revocations = RevocationList::empty();
    for i in 0..10_000 {
        revocations.revoke_serial(i);
    }
    let other_cas: Vec<_> = (0..3)
        .map(|_| generate_ca_key("old").unwrap().public_key().clone())
        .collect();
    let mut trusted = other_cas;
    trusted.push(ca.public_key().clone());
    let verifier = Verifier::new(VerifierConfig {
        trusted_cas: trusted,
        revocations,
        ..VerifierConfig::default()
    });
    c.bench_function(
        "verify ed25519 user certificate (4 CAs, 10k revocations)",
        |b| {
            b.iter(|| {
                verifier
                    .verify(&Presented {
                        certificate: &cert,
                        username: "alice",
                        peer: Some("127.0.0.1".parse().unwrap()),
                        proven_key: user.public_key().key_data(),
                        now: SystemTime::now(),
                    })
                    .unwrap()
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
