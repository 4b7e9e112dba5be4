//! Certificate verification: every rejection path with its distinct reason, and interop with
//! the real `ssh-keygen` in both directions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use jitsh_certs::ssh_key::certificate::{Builder, CertType};
use jitsh_certs::ssh_key::{Algorithm, Certificate, LineEnding, PrivateKey};
use jitsh_certs::{
    HostCertOptions, Presented, Rejection, RevocationList, UserCertOptions, Verifier,
    VerifierConfig, generate_ca_key, sign_host_certificate, sign_user_certificate,
};

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap()
}

fn opts() -> UserCertOptions {
    UserCertOptions::new(
        "alice@example.com",
        "alice",
        &["oncall-payments", "sre"],
        Duration::from_secs(900),
    )
}

fn verifier(ca: &PrivateKey, revocations: RevocationList) -> Verifier {
    Verifier::new(VerifierConfig {
        trusted_cas: vec![ca.public_key().clone()],
        revocations,
        ..VerifierConfig::default()
    })
}

fn check(
    v: &Verifier,
    cert: &Certificate,
    user_key: &PrivateKey,
    user: &str,
) -> Result<jitsh_certs::VerifiedIdentity, Rejection> {
    v.verify(&Presented {
        certificate: cert,
        username: user,
        peer: Some(LOCALHOST),
        proven_key: user_key.public_key().key_data(),
        now: SystemTime::now(),
    })
}

/// A certificate built directly (for shapes our signer refuses to make).
fn raw_cert(
    ca: &PrivateKey,
    user_key: &PrivateKey,
    principals: &[&str],
    critical: &[(&str, &str)],
) -> Certificate {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut b = Builder::new_with_random_nonce(
        &mut rand::rng(),
        user_key.public_key().key_data().clone(),
        now,
        now + 600,
    )
    .unwrap();
    b.cert_type(CertType::User)
        .unwrap()
        .key_id("alice@example.com")
        .unwrap();
    if principals.is_empty() {
        b.all_principals_valid().unwrap();
    }
    for p in principals {
        b.valid_principal(*p).unwrap();
    }
    for (k, v) in critical {
        b.critical_option(*k, *v).unwrap();
    }
    b.sign(ca).unwrap()
}

#[test]
fn a_good_certificate_verifies_with_identity_and_groups() {
    let (ca, user) = (generate_ca_key("ca").unwrap(), key());
    let mut o = opts();
    o.serial = Some(77);
    o.break_glass = Some("INC-42".into());
    let cert = sign_user_certificate(&ca, user.public_key(), &o).unwrap();
    let id = check(
        &verifier(&ca, RevocationList::empty()),
        &cert,
        &user,
        "alice",
    )
    .unwrap();
    assert_eq!(id.identity(), "alice@example.com");
    assert_eq!(id.username(), "alice");
    assert_eq!(id.groups(), ["oncall-payments", "sre"]);
    assert_eq!(id.serial(), 77);
    assert_eq!(id.break_glass(), Some("INC-42"));
    assert!(id.valid_before() > SystemTime::now());
}

#[test]
fn every_rejection_has_its_own_reason() {
    let (ca, user, other_ca, other_key) = (
        generate_ca_key("ca").unwrap(),
        key(),
        generate_ca_key("other").unwrap(),
        key(),
    );
    let hour = Duration::from_secs(3600);
    let signed = |f: &dyn Fn(&mut UserCertOptions)| {
        let mut o = opts();
        f(&mut o);
        sign_user_certificate(&ca, user.public_key(), &o).unwrap()
    };
    let mut revoked = RevocationList::empty();
    revoked.revoke_serial(4242);
    revoked.revoke_key_id("mallory@example.com");
    let strict = verifier(&ca, revoked);

    let cases: Vec<(&str, Certificate, &PrivateKey, &str, &str)> = vec![
        (
            "expired",
            signed(&|o| {
                o.valid_after = Some(SystemTime::now() - 2 * hour);
                o.ttl = hour;
            }),
            &user,
            "alice",
            "expired",
        ),
        (
            "not yet valid",
            signed(&|o| o.valid_after = Some(SystemTime::now() + hour)),
            &user,
            "alice",
            "not_yet_valid",
        ),
        (
            "wrong CA",
            sign_user_certificate(&other_ca, user.public_key(), &opts()).unwrap(),
            &user,
            "alice",
            "untrusted_ca",
        ),
        (
            "host certificate",
            sign_host_certificate(
                &ca,
                user.public_key(),
                &HostCertOptions {
                    hostnames: vec!["alice".into()],
                    ttl: hour,
                    key_id: None,
                },
            )
            .unwrap(),
            &user,
            "alice",
            "host_certificate",
        ),
        (
            "principal mismatch",
            signed(&|o| o.principals = vec!["bob".into()]),
            &user,
            "alice",
            "principal_mismatch",
        ),
        (
            "empty principals",
            raw_cert(&ca, &user, &[], &[]),
            &user,
            "alice",
            "empty_principals",
        ),
        (
            "unknown critical option",
            raw_cert(&ca, &user, &["alice"], &[("no-such-option", "")]),
            &user,
            "alice",
            "unknown_critical_option",
        ),
        (
            "source-address mismatch",
            signed(&|o| o.source_address = vec!["10.0.0.0/8".into()]),
            &user,
            "alice",
            "source_address_mismatch",
        ),
        (
            "malformed source-address",
            raw_cert(&ca, &user, &["alice"], &[("source-address", "not-an-ip")]),
            &user,
            "alice",
            "bad_source_address",
        ),
        (
            "revoked serial",
            signed(&|o| o.serial = Some(4242)),
            &user,
            "alice",
            "revoked_serial",
        ),
        (
            "revoked key ID",
            signed(&|o| o.identity = "mallory@example.com".into()),
            &user,
            "alice",
            "revoked_key_id",
        ),
        (
            "lifetime over the cap",
            signed(&|o| o.ttl = 48 * hour),
            &user,
            "alice",
            "lifetime_too_long",
        ),
        (
            "key not the proven key",
            signed(&|_| {}),
            &other_key,
            "alice",
            "key_mismatch",
        ),
    ];
    for (name, cert, proven, user_name, want) in cases {
        let got = check(&strict, &cert, proven, user_name).expect_err(name);
        assert_eq!(got.code(), want, "{name}: {got}");
        assert!(!got.to_string().is_empty());
    }
    // The source address matches when the peer is inside it.
    let cert = signed(&|o| o.source_address = vec!["127.0.0.0/8".into(), "::1".into()]);
    check(&strict, &cert, &user, "alice").unwrap();
}

#[test]
fn a_corrupted_signature_is_refused() {
    let (ca, user) = (generate_ca_key("ca").unwrap(), key());
    let cert = sign_user_certificate(&ca, user.public_key(), &opts()).unwrap();
    let mut bytes = cert.to_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let corrupted = Certificate::from_bytes(&bytes).unwrap();
    let got = check(
        &verifier(&ca, RevocationList::empty()),
        &corrupted,
        &user,
        "alice",
    )
    .unwrap_err();
    assert_eq!(got, Rejection::BadSignature);
}

#[test]
fn garbage_and_truncated_input_are_errors_not_panics() {
    let (ca, user) = (generate_ca_key("ca").unwrap(), key());
    let text = sign_user_certificate(&ca, user.public_key(), &opts())
        .unwrap()
        .to_openssh()
        .unwrap();
    assert!(Certificate::from_openssh("garbage").is_err());
    assert!(Certificate::from_openssh("").is_err());
    assert!(Certificate::from_openssh(&text[..text.len() / 2]).is_err());
    let bytes = Certificate::from_openssh(&text)
        .unwrap()
        .to_bytes()
        .unwrap();
    for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            Certificate::from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn revocation_lists_parse_and_reject_bad_lines() {
    let list = RevocationList::parse("# revoked\nserial:12\n\nkey-id:bob@example.com\n").unwrap();
    assert!(list.is_serial_revoked(12) && list.is_key_id_revoked("bob@example.com"));
    assert!(!list.is_serial_revoked(13));
    let err = RevocationList::parse("serial:12\nbogus\n").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(RevocationList::parse("serial:-1").is_err());
}

fn ssh_keygen(args: &[&str]) -> String {
    let out = Command::new("ssh-keygen")
        .args(args)
        .output()
        .expect("ssh-keygen is required");
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_private(path: &Path, key: &PrivateKey) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn ssh_keygen_prints_our_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, user) = (generate_ca_key("ca").unwrap(), key());
    let mut o = opts();
    o.serial = Some(99);
    o.source_address = vec!["127.0.0.1/32".into()];
    let cert = sign_user_certificate(&ca, user.public_key(), &o).unwrap();
    let path = dir.path().join("id-cert.pub");
    std::fs::write(&path, cert.to_openssh().unwrap()).unwrap();
    let listing = ssh_keygen(&["-L", "-f", path.to_str().unwrap()]);
    for want in [
        "user certificate",
        "Key ID: \"alice@example.com\"",
        "Serial: 99",
        "alice",
        "source-address 127.0.0.1/32",
        "permit-pty",
    ] {
        assert!(listing.contains(want), "missing {want:?} in:\n{listing}");
    }
    // ssh-keygen prints extensions it does not know as the hex of their (string-encoded) value.
    let hex: String = "oncall-payments,sre"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let groups_line = listing
        .lines()
        .find(|l| l.contains("groups@jitsh.dev"))
        .expect("groups extension");
    assert!(groups_line.contains(&hex), "{groups_line}");
}

#[test]
fn certificates_from_ssh_keygen_verify_with_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = generate_ca_key("ca").unwrap();
    let ca_path = dir.path().join("ca");
    write_private(&ca_path, &ca);
    let user = key();
    let user_pub = dir.path().join("id.pub");
    std::fs::write(&user_pub, user.public_key().to_openssh().unwrap()).unwrap();
    ssh_keygen(&[
        "-q",
        "-s",
        ca_path.to_str().unwrap(),
        "-I",
        "alice@example.com",
        "-n",
        "alice",
        "-V",
        "-1m:+15m",
        "-z",
        "42",
        "-O",
        "source-address=127.0.0.1/32",
        "-O",
        "extension:groups@jitsh.dev=oncall-payments,sre",
        user_pub.to_str().unwrap(),
    ]);
    let cert = Certificate::read_file(&dir.path().join("id-cert.pub")).unwrap();
    let id = check(
        &verifier(&ca, RevocationList::empty()),
        &cert,
        &user,
        "alice",
    )
    .unwrap();
    assert_eq!((id.identity(), id.serial()), ("alice@example.com", 42));
    assert_eq!(id.groups(), ["oncall-payments", "sre"]);
    // The same certificate from another address is refused by its source-address.
    let err = verifier(&ca, RevocationList::empty())
        .verify(&Presented {
            certificate: &cert,
            username: "alice",
            peer: Some("192.0.2.1".parse().unwrap()),
            proven_key: user.public_key().key_data(),
            now: SystemTime::now(),
        })
        .unwrap_err();
    assert_eq!(err.code(), "source_address_mismatch");
}

#[test]
fn an_ssh_rsa_sha1_ca_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("rsa_ca");
    ssh_keygen(&[
        "-q",
        "-t",
        "rsa",
        "-b",
        "2048",
        "-N",
        "",
        "-f",
        ca_path.to_str().unwrap(),
    ]);
    let user = key();
    let user_pub = dir.path().join("id.pub");
    std::fs::write(&user_pub, user.public_key().to_openssh().unwrap()).unwrap();
    ssh_keygen(&[
        "-q",
        "-s",
        ca_path.to_str().unwrap(),
        "-t",
        "ssh-rsa",
        "-I",
        "alice@example.com",
        "-n",
        "alice",
        "-V",
        "-1m:+15m",
        user_pub.to_str().unwrap(),
    ]);
    let cert = Certificate::read_file(&dir.path().join("id-cert.pub")).unwrap();
    let ca_pub =
        jitsh_certs::ssh_key::PublicKey::read_openssh_file(dir.path().join("rsa_ca.pub")).unwrap();
    let v = Verifier::new(VerifierConfig {
        trusted_cas: vec![ca_pub.clone()],
        ..VerifierConfig::default()
    });
    assert_eq!(
        check(&v, &cert, &user, "alice").unwrap_err(),
        Rejection::Sha1Signature
    );
    // The same CA signing with rsa-sha2-512 is accepted.
    ssh_keygen(&[
        "-q",
        "-s",
        ca_path.to_str().unwrap(),
        "-t",
        "rsa-sha2-512",
        "-I",
        "alice@example.com",
        "-n",
        "alice",
        "-V",
        "-1m:+15m",
        user_pub.to_str().unwrap(),
    ]);
    let cert = Certificate::read_file(&dir.path().join("id-cert.pub")).unwrap();
    check(&v, &cert, &user, "alice").unwrap();
}
