//! `jitsh ca init|sign|sign-host|verify`, driven through the built binary and the real ssh-keygen.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::path::Path;
use std::process::{Command, Output};

fn jitsh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jitsh"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn init_sign_verify_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca_dir = d.join("ca");
    ok(&jitsh(&["ca", "init", "--dir", ca_dir.to_str().unwrap()]));
    for f in ["user_ca", "user_ca.pub", "host_ca", "host_ca.pub"] {
        assert!(ca_dir.join(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(ca_dir.join("user_ca"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Refuses to overwrite.
    let again = jitsh(&["ca", "init", "--dir", ca_dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let key = d.join("id_ed25519");
    keygen(&key);
    let user_ca = ca_dir.join("user_ca");
    ok(&jitsh(&[
        "ca",
        "sign",
        "--ca",
        user_ca.to_str().unwrap(),
        "--identity",
        "alice@example.com",
        "--principal",
        "alice",
        "--groups",
        "oncall-payments,sre",
        "--ttl",
        "15m",
        "--serial",
        "7",
        "--source-address",
        "127.0.0.1/32",
        d.join("id_ed25519.pub").to_str().unwrap(),
    ]));
    let cert = d.join("id_ed25519-cert.pub");
    let listing = Command::new("ssh-keygen")
        .args(["-L", "-f"])
        .arg(&cert)
        .output()
        .unwrap();
    let listing = ok(&listing);
    assert!(
        listing.contains("Key ID: \"alice@example.com\"") && listing.contains("Serial: 7"),
        "{listing}"
    );

    let trusted = ca_dir.join("user_ca.pub");
    let verified = ok(&jitsh(&[
        "ca",
        "verify",
        "--trusted",
        trusted.to_str().unwrap(),
        "--user",
        "alice",
        "--source",
        "127.0.0.1",
        cert.to_str().unwrap(),
    ]));
    assert!(
        verified.starts_with(
            "ok: identity alice@example.com user alice groups oncall-payments,sre serial 7"
        ),
        "{verified}"
    );

    let refused = |args: &[&str], want: &str| {
        let out = jitsh(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    };
    refused(
        &[
            "ca",
            "verify",
            "--trusted",
            trusted.to_str().unwrap(),
            "--user",
            "bob",
            "--source",
            "127.0.0.1",
            cert.to_str().unwrap(),
        ],
        "not valid for user \"bob\"",
    );
    refused(
        &[
            "ca",
            "verify",
            "--trusted",
            trusted.to_str().unwrap(),
            "--user",
            "alice",
            "--source",
            "192.0.2.7",
            cert.to_str().unwrap(),
        ],
        "source-address",
    );
    let host_trusted = ca_dir.join("host_ca.pub");
    refused(
        &[
            "ca",
            "verify",
            "--trusted",
            host_trusted.to_str().unwrap(),
            "--user",
            "alice",
            "--source",
            "127.0.0.1",
            cert.to_str().unwrap(),
        ],
        "untrusted CA",
    );
    let revoked = d.join("revoked");
    std::fs::write(&revoked, "serial:7\n").unwrap();
    refused(
        &[
            "ca",
            "verify",
            "--trusted",
            trusted.to_str().unwrap(),
            "--user",
            "alice",
            "--source",
            "127.0.0.1",
            "--revoked",
            revoked.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
        "serial 7 is revoked",
    );
    // A year-long "short-lived" certificate.
    ok(&jitsh(&[
        "ca",
        "sign",
        "--ca",
        user_ca.to_str().unwrap(),
        "--identity",
        "alice@example.com",
        "--principal",
        "alice",
        "--ttl",
        "365d",
        d.join("id_ed25519.pub").to_str().unwrap(),
    ]));
    refused(
        &[
            "ca",
            "verify",
            "--trusted",
            trusted.to_str().unwrap(),
            "--user",
            "alice",
            cert.to_str().unwrap(),
        ],
        "exceeds the maximum",
    );
    // Garbage is a usage error, not a panic.
    std::fs::write(d.join("junk-cert.pub"), "not a certificate").unwrap();
    let junk = jitsh(&[
        "ca",
        "verify",
        "--trusted",
        trusted.to_str().unwrap(),
        "--user",
        "alice",
        d.join("junk-cert.pub").to_str().unwrap(),
    ]);
    assert_eq!(junk.status.code(), Some(2));

    // Host certificate.
    let host = d.join("host_key");
    keygen(&host);
    let out = ok(&jitsh(&[
        "ca",
        "sign-host",
        "--ca",
        ca_dir.join("host_ca").to_str().unwrap(),
        "--hostname",
        "gw.example.com,localhost",
        d.join("host_key.pub").to_str().unwrap(),
    ]));
    assert!(
        out.contains("@cert-authority gw.example.com,localhost ssh-ed25519 "),
        "{out}"
    );
    let listing = ok(&Command::new("ssh-keygen")
        .args(["-L", "-f"])
        .arg(d.join("host_key-cert.pub"))
        .output()
        .unwrap());
    assert!(
        listing.contains("host certificate") && listing.contains("gw.example.com"),
        "{listing}"
    );
}
