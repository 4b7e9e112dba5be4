#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::remote::{error_status, exit_status, success_status};
use super::*;
use crate::runtime::RuntimeError;

#[test]
fn exec_prefers_v5_then_v4() {
    let cases: &[(&[&str], Option<Protocol>)] = &[
        (
            &["v5.channel.k8s.io", "v4.channel.k8s.io"],
            Some(Protocol::V5Channel),
        ),
        (
            &["v4.channel.k8s.io", "v5.channel.k8s.io"],
            Some(Protocol::V5Channel),
        ),
        (&[" v4.channel.k8s.io "], Some(Protocol::V4Channel)),
        (&["v3.channel.k8s.io", "channel.k8s.io"], None),
        (&["SPDY/3.1+portforward.k8s.io"], None),
        (&[], None),
    ];
    for (offered, expected) in cases {
        assert_eq!(negotiate_protocol(offered), *expected, "{offered:?}");
    }
}

#[test]
fn portforward_speaks_v4_only() {
    assert_eq!(
        negotiate_portforward_protocol(&["v5.channel.k8s.io", "v4.channel.k8s.io"]),
        Some(Protocol::V4Channel)
    );
    assert_eq!(negotiate_portforward_protocol(&["v5.channel.k8s.io"]), None);
    assert_eq!(Protocol::V4Channel.as_str(), "v4.channel.k8s.io");
    assert_eq!(Protocol::V5Channel.as_str(), "v5.channel.k8s.io");
}

#[test]
fn status_objects_match_the_kubelet() {
    assert_eq!(
        String::from_utf8(success_status()).unwrap(),
        r#"{"metadata":{},"status":"Success"}"#
    );
    let v: serde_json::Value = serde_json::from_slice(&exit_status(
        &["sh".into(), "-c".into(), "exit 7".into()],
        7,
    ))
    .unwrap();
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["reason"], "NonZeroExitCode");
    assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(v["details"]["causes"][0]["message"], "7");
    assert_eq!(
        v["message"],
        "command terminated with non-zero exit code: error executing command [sh -c exit 7], exit code 7"
    );
    // It parses as the k8s-openapi Status kube-rs decodes.
    let status: k8s_openapi::apimachinery::pkg::apis::meta::v1::Status =
        serde_json::from_value(v).unwrap();
    assert_eq!(status.status.as_deref(), Some("Failure"));

    let v: serde_json::Value = serde_json::from_slice(&error_status(&RuntimeError::PodNotFound {
        namespace: "payments".into(),
        pod: "x".into(),
    }))
    .unwrap();
    assert_eq!(v["reason"], "NotFound");
    assert_eq!(v["code"], 404);
}

#[test]
fn frames_carry_the_channel_byte() {
    match frame(channel::STDOUT, b"hi") {
        Message::Binary(b) => assert_eq!(&b[..], b"\x01hi"),
        other => panic!("{other:?}"),
    }
}
