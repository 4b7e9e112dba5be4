//! OIDC ID-token validation: every refusal with its own reason.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jitsh_certs::jsonwebtoken::jwk::{Jwk, JwkSet};
use jitsh_certs::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use jitsh_certs::{OidcConfig, TokenError, validate_id_token};
use serde_json::{Value, json};

const ISS: &str = "https://idp.example.com";
const AUD: &str = "jitsh";

struct Keys {
    rsa: EncodingKey,
    rsa_public_pem: Vec<u8>,
    ec: EncodingKey,
    jwks: JwkSet,
}

fn rsa_key(dir: &std::path::Path, name: &str) -> (EncodingKey, Vec<u8>) {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""])
        .arg("-f")
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let pem = std::fs::read(&path).unwrap();
    let public = Command::new("ssh-keygen")
        .args(["-e", "-m", "PKCS8", "-f"])
        .arg(&path)
        .output()
        .unwrap()
        .stdout;
    (EncodingKey::from_rsa_pem(&pem).unwrap(), public)
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.to_owned());
    j
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_public_pem) = rsa_key(dir.path(), "rsa");
    let ec = EncodingKey::from_ec_der(&rcgen::KeyPair::generate().unwrap().serialize_der());
    let jwks = JwkSet {
        keys: vec![
            jwk(&rsa, Algorithm::RS256, "rsa-1"),
            jwk(&ec, Algorithm::ES256, "ec-1"),
        ],
    };
    Keys {
        rsa,
        rsa_public_pem,
        ec,
        jwks,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "u-123", "preferred_username": "alice", "groups": ["oncall-payments", "sre"],
           "iat": now(), "nbf": now() - 10, "exp": now() + 300})
}

fn token(key: &EncodingKey, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_owned());
    encode(&h, claims, key).unwrap()
}

fn cfg() -> OidcConfig {
    OidcConfig::new(ISS, AUD)
}

fn with(f: impl FnOnce(&mut Value)) -> Value {
    let mut c = claims();
    f(&mut c);
    c
}

#[test]
fn valid_rs256_and_es256_tokens_give_the_identity() {
    let k = keys();
    for t in [
        token(&k.rsa, Algorithm::RS256, "rsa-1", &claims()),
        token(&k.ec, Algorithm::ES256, "ec-1", &claims()),
    ] {
        let id = validate_id_token(&t, &k.jwks, &cfg(), SystemTime::now()).unwrap();
        assert_eq!(
            (id.username.as_str(), id.subject.as_str()),
            ("alice", "u-123")
        );
        assert_eq!(id.groups, ["oncall-payments", "sre"]);
    }
    // A configurable username claim.
    let mut c = cfg();
    c.username_claim = "sub".into();
    let t = token(&k.rsa, Algorithm::RS256, "rsa-1", &claims());
    assert_eq!(
        validate_id_token(&t, &k.jwks, &c, SystemTime::now())
            .unwrap()
            .username,
        "u-123"
    );
}

#[test]
fn every_refusal_has_its_own_reason() {
    let k = keys();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    // HS256 "signed" with the RSA public key as the HMAC secret (key-confusion attack).
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        encode(&h, &claims(), &EncodingKey::from_secret(&k.rsa_public_pem)).unwrap()
    };
    let good = token(&k.rsa, Algorithm::RS256, "rsa-1", &claims());
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&parts[2])
        .unwrap();
    sig[10] ^= 0x01;
    parts[2] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig);
    let tampered_sig = parts.join(".");
    let tampered_claims = {
        let mut p: Vec<String> = good.split('.').map(str::to_owned).collect();
        p[1] = b64(&with(|c| c["preferred_username"] = json!("admin")));
        p.join(".")
    };
    let rs = |c: Value| token(&k.rsa, Algorithm::RS256, "rsa-1", &c);
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", alg_none, "algorithm_not_allowed"),
        (
            "HS256 with the RSA public key as secret",
            hs256,
            "algorithm_not_allowed",
        ),
        (
            "wrong iss",
            rs(with(|c| c["iss"] = json!("https://evil.example.com"))),
            "wrong_issuer",
        ),
        (
            "wrong aud",
            rs(with(|c| c["aud"] = json!("other"))),
            "wrong_audience",
        ),
        (
            "expired",
            rs(with(|c| c["exp"] = json!(now() - 3600))),
            "expired",
        ),
        (
            "nbf in the future",
            rs(with(|c| c["nbf"] = json!(now() + 3600))),
            "not_yet_valid",
        ),
        (
            "iat in the future",
            rs(with(|c| c["iat"] = json!(now() + 3600))),
            "issued_in_future",
        ),
        (
            "unknown kid",
            token(&k.rsa, Algorithm::RS256, "rsa-2", &claims()),
            "unknown_key",
        ),
        ("bad signature", tampered_claims, "bad_signature"),
        (
            "missing username claim",
            rs(with(|c| {
                c.as_object_mut().unwrap().remove("preferred_username");
            })),
            "missing_claim",
        ),
        (
            "groups claim of the wrong type",
            rs(with(|c| c["groups"] = json!("oncall-payments"))),
            "bad_claim_type",
        ),
        (
            "groups with a non-string",
            rs(with(|c| c["groups"] = json!(["a", 1]))),
            "bad_claim_type",
        ),
        (
            "missing exp",
            rs(with(|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            "missing_claim",
        ),
        (
            "RS256 token naming the EC key",
            token(&k.rsa, Algorithm::RS256, "ec-1", &claims()),
            "key_algorithm_mismatch",
        ),
        ("garbage", "not.a.jwt".into(), "malformed"),
        ("two parts", "abc.def".into(), "malformed"),
    ];
    for (name, t, want) in cases {
        let got = validate_id_token(&t, &k.jwks, &cfg(), SystemTime::now()).expect_err(name);
        assert_eq!(got.code(), want, "{name}: {got}");
    }
    // A flipped signature bit is refused.
    assert_eq!(
        validate_id_token(&tampered_sig, &k.jwks, &cfg(), SystemTime::now()).unwrap_err(),
        TokenError::BadSignature
    );
    // Within the leeway an expired token still passes; the leeway is configurable.
    let t = rs(with(|c| c["exp"] = json!(now() - 30)));
    validate_id_token(&t, &k.jwks, &cfg(), SystemTime::now()).unwrap();
    let mut strict = cfg();
    strict.leeway = Duration::ZERO;
    assert_eq!(
        validate_id_token(&t, &k.jwks, &strict, SystemTime::now()).unwrap_err(),
        TokenError::Expired
    );
}
