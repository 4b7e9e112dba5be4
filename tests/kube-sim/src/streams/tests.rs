#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

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

#[test]
fn exec_queries_parse_like_the_api_server() {
    let (container, o) = parse_exec_query(
        "command=sh&command=-c&command=echo%20a%26b&container=app&stdin=true&stdout=1&stderr=false&tty=T",
    )
    .unwrap();
    assert_eq!(container.as_deref(), Some("app"));
    assert_eq!(o.command, ["sh", "-c", "echo a&b"]);
    assert!(o.stdin && o.stdout && !o.stderr && o.tty);

    let (container, _) = parse_exec_query("command=ls&stdout=true").unwrap();
    assert_eq!(container, None);

    let bad = [
        ("stdout=true", "at least one command"),
        ("command=ls", "at least one of stdin, stdout, stderr"),
        ("command=ls&stdout=yes", "invalid value"),
    ];
    for (query, message) in bad {
        let e = parse_exec_query(query).unwrap_err();
        assert!(e.0.contains(message), "{query}: {e}");
    }
    assert!(parse_attach_query("stdin=true").is_ok());
    assert!(parse_attach_query("tty=true").is_err());
}

#[test]
fn portforward_ports_parse() {
    assert_eq!(
        parse_portforward_ports("&ports=80%2C1234").unwrap(),
        [80, 1234]
    );
    assert_eq!(
        parse_portforward_ports("ports=8080&ports=9090").unwrap(),
        [8080, 9090]
    );
    for bad in [
        "",
        "ports=",
        "ports=0",
        "ports=70000",
        "ports=http",
        "ports=1,",
    ] {
        assert!(parse_portforward_ports(bad).is_err(), "{bad}");
    }
    let many = (1..=65)
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert!(parse_portforward_ports(&format!("ports={many}")).is_err());
}

#[test]
fn offered_protocols_split_headers() {
    let mut h = http::HeaderMap::new();
    h.append(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
    );
    h.append(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        "base64.channel.k8s.io".parse().unwrap(),
    );
    assert_eq!(
        offered_protocols(&h),
        [
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "base64.channel.k8s.io"
        ]
    );
}
