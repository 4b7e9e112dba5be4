//! The issuer over HTTPS with a test OIDC provider on loopback, `jitsh login`, and the JWKS
//! cache's refetch-once and rotation behaviour.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jitsh_certs::jsonwebtoken::jwk::{Jwk, JwkSet};
use jitsh_certs::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use jitsh_certs::{OidcConfig, TokenError};
use jitsh_gateway::issuer::jwks::{JwksCache, JwksLocation};
use serde_json::json;

const AUD: &str = "jitsh";

/// A test OIDC provider: discovery and a JWKS that the test can rotate.
struct Provider {
    url: String,
    jwks: Arc<Mutex<JwkSet>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn provider() -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let jwks = Arc::new(Mutex::new(JwkSet { keys: Vec::new() }));
    let (u, j) = (url.clone(), jwks.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let u = u.clone();
                async move { axum::Json(json!({"issuer": u, "jwks_uri": format!("{u}/jwks")})) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                let j = j.clone();
                async move { axum::Json(serde_json::to_value(&*j.lock().unwrap()).unwrap()) }
            }),
        );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Provider {
        url,
        jwks,
        _task: task,
    }
}

fn rsa_key(dir: &std::path::Path, name: &str, kid: &str) -> (EncodingKey, Jwk) {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""])
        .arg("-f")
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let key = EncodingKey::from_rsa_pem(&std::fs::read(&path).unwrap()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    (key, jwk)
}

fn id_token(key: &EncodingKey, kid: &str, iss: &str, user: &str, groups: &[&str]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_owned());
    encode(
        &h,
        &json!({"iss": iss, "aud": AUD, "sub": format!("sub-{user}"), "preferred_username": user,
                        "groups": groups, "iat": now, "exp": now + 300}),
        key,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_is_refetched_once_then_refused_and_rotation_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider().await;
    let (k1, j1) = rsa_key(dir.path(), "k1", "k1");
    let (k2, j2) = rsa_key(dir.path(), "k2", "k2");
    p.jwks.lock().unwrap().keys = vec![j1];
    let cfg = OidcConfig::new(p.url.clone(), AUD);
    let uri = jitsh_gateway::issuer::jwks::discover(
        &reqwest::Client::new(),
        &format!("{}/.well-known/openid-configuration", p.url),
    )
    .await
    .unwrap();
    let cache = JwksCache::new(
        JwksLocation::Url(uri.clone()),
        reqwest::Client::new(),
        Duration::from_secs(3600),
    );
    cache
        .validate(&id_token(&k1, "k1", &p.url, "alice", &[]), &cfg)
        .await
        .unwrap();
    assert_eq!(cache.fetches(), 1);
    // An unknown key: exactly one refetch, then refused; a second one right after: no refetch.
    let unknown = id_token(&k2, "k2", &p.url, "alice", &[]);
    assert!(
        matches!(cache.validate(&unknown, &cfg).await, Err(TokenError::UnknownKey(k)) if k == "k2")
    );
    assert_eq!(cache.fetches(), 2);
    assert!(matches!(
        cache.validate(&unknown, &cfg).await,
        Err(TokenError::UnknownKey(_))
    ));
    assert_eq!(cache.fetches(), 2, "refetching is rate-limited");

    // The provider rotates to k2: a cache whose refetch interval has passed picks it up.
    p.jwks.lock().unwrap().keys = vec![j2];
    let cache = JwksCache::new(
        JwksLocation::Url(uri),
        reqwest::Client::new(),
        Duration::ZERO,
    );
    cache
        .validate(&id_token(&k1, "k1", &p.url, "alice", &[]), &cfg)
        .await
        .unwrap_err();
    let id = cache.validate(&unknown, &cfg).await.unwrap();
    assert_eq!(id.username, "alice");
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_gets_a_capped_certificate_and_break_glass_is_refused_for_other_groups() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = provider().await;
    let (k1, j1) = rsa_key(d, "k1", "k1");
    p.jwks.lock().unwrap().keys = vec![j1];

    // TLS for the issuer: a test CA and a serving certificate for 127.0.0.1.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    std::fs::write(d.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(d.join("tls.key"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(d.join("ca.pem"), ca_cert.pem()).unwrap();

    let st = Command::new(env!("CARGO_BIN_EXE_jitsh"))
        .args(["ca", "init", "--dir"])
        .arg(d.join("ca"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let config = format!(
        "listen: 127.0.0.1:0\ntlsCert: {}\ntlsKey: {}\nuserCaKey: {}\noidc:\n  issuer: {}\n  audience: {AUD}\n  principalDomains: [example.com]\ndefaultTtl: 15m\nmaxTtl: 1h\nbreakGlassGroups: [sre]\n",
        d.join("tls.crt").display(),
        d.join("tls.key").display(),
        d.join("ca/user_ca").display(),
        p.url
    );
    std::fs::write(d.join("issuer.yaml"), config).unwrap();
    let log = std::fs::File::create(d.join("issuer.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitsh"))
        .args(["issuer", "--config"])
        .arg(d.join("issuer.yaml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Child(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("jitsh issuer listening on ")
        .expect("listening line")
        .to_owned();

    let login = |token: &str, extra: &[&str]| {
        std::fs::write(d.join("token"), token).unwrap();
        Command::new(env!("CARGO_BIN_EXE_jitsh"))
            .args(["login", "--issuer", &url, "--token-file"])
            .arg(d.join("token"))
            .arg("--key")
            .arg(d.join("id_ed25519"))
            .arg("--ca-cert")
            .arg(d.join("ca.pem"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = login(
        &id_token(&k1, "k1", &p.url, "alice", &["oncall-payments"]),
        &["--ttl", "8h"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("principal: alice") && summary.contains("groups:    oncall-payments"),
        "{summary}"
    );
    let cert =
        jitsh_certs::ssh_key::Certificate::read_file(&d.join("id_ed25519-cert.pub")).unwrap();
    assert_eq!(cert.valid_principals(), ["alice"]);
    assert!(
        cert.valid_before() - cert.valid_after() <= 3600,
        "the 8h request is capped at maxTtl"
    );
    let listing = Command::new("ssh-keygen")
        .args(["-L", "-f"])
        .arg(d.join("id_ed25519-cert.pub"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("Key ID: \"alice\"") && listing.contains("groups@jitsh.dev"),
        "{listing}"
    );
    // The certificate verifies against the user CA as the gateway will check it.
    let ca_pub =
        jitsh_certs::ssh_key::PublicKey::read_openssh_file(d.join("ca/user_ca.pub")).unwrap();
    let v = jitsh_certs::Verifier::new(jitsh_certs::VerifierConfig {
        trusted_cas: vec![ca_pub],
        ..Default::default()
    });
    let id = v
        .verify(&jitsh_certs::Presented {
            certificate: &cert,
            username: "alice",
            peer: None,
            proven_key: cert.public_key(),
            now: SystemTime::now(),
        })
        .unwrap();
    assert_eq!(id.groups(), ["oncall-payments"]);

    // Break-glass for a group not allowed: 403.
    let out = login(
        &id_token(&k1, "k1", &p.url, "alice", &["oncall-payments"]),
        &["--break-glass", "INC-42", "--reason", "db down"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(403)") && err.contains("break-glass"),
        "{err}"
    );
    // carol (sre) gets one.
    let out = login(
        &id_token(&k1, "k1", &p.url, "carol", &["sre"]),
        &["--break-glass", "INC-42", "--reason", "db down"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert =
        jitsh_certs::ssh_key::Certificate::read_file(&d.join("id_ed25519-cert.pub")).unwrap();
    assert_eq!(
        cert.extensions()
            .get(jitsh_certs::BREAK_GLASS_EXTENSION)
            .map(String::as_str),
        Some("INC-42")
    );
    // Every issuance is logged (identity, groups, incident).
    let log = std::fs::read_to_string(d.join("issuer.log")).unwrap();
    let issued: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("certificate.issued"))
        .collect();
    assert_eq!(issued.len(), 2, "{log}");
    assert!(
        issued[0].contains("identity=alice") && issued[1].contains("INC-42"),
        "{log}"
    );
    // A username in a domain the issuer does not map never becomes someone's principal.
    let out = login(
        &id_token(
            &k1,
            "k1",
            &p.url,
            "alice@attacker.example",
            &["oncall-payments"],
        ),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(403)") && err.contains("does not map"),
        "{err}"
    );
    // One it maps: bob@example.com is bob.
    let out = login(
        &id_token(&k1, "k1", &p.url, "bob@Example.com", &["oncall-payments"]),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert =
        jitsh_certs::ssh_key::Certificate::read_file(&d.join("id_ed25519-cert.pub")).unwrap();
    assert_eq!(cert.valid_principals(), ["bob"]);
    // A token from another issuer: 401 invalid_token.
    let out = login(
        &id_token(&k1, "k1", "https://evil.example.com", "alice", &[]),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(401)") && err.contains("invalid_token") && err.contains("issuer mismatch"),
        "{err}"
    );
}
