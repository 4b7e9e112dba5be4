#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap, expect or panic is a test failure"
)]

use std::time::{Duration, SystemTime};

use super::builtin::Image;
use super::logs::{LogStream, LogWriter, OutputStream, timestamp};
use super::sandbox::ContainerDirs;
use super::{LogOptions, RuntimeError};

#[test]
fn built_in_images_by_reference() {
    let cases = [
        ("kube-sim/app", Some(Image::App)),
        ("kube-sim/app:latest", Some(Image::App)),
        (
            "registry.local:5000/kube-sim/worker:1.2",
            Some(Image::Worker),
        ),
        ("kube-sim/idle@sha256:abcd", Some(Image::Idle)),
        ("not-kube-sim/app", None),
        ("kube-sim/nginx", None),
        ("nginx", None),
        ("", None),
    ];
    for (reference, expected) in cases {
        assert_eq!(Image::from_reference(reference), expected, "{reference}");
    }
}

#[test]
fn unsandboxed_paths_map_under_the_container_dir() {
    let dirs = ContainerDirs::new("/state/pods/ns/p/c".into());
    assert_eq!(
        dirs.host_path("/var/log/app.log").unwrap(),
        std::path::Path::new("/state/pods/ns/p/c/var/log/app.log")
    );
    assert_eq!(
        dirs.host_path("/tmp").unwrap(),
        std::path::Path::new("/state/pods/ns/p/c/tmp")
    );
    assert_eq!(dirs.host_path("/variable"), None);
    assert_eq!(dirs.host_path("/etc/passwd"), None);
}

#[test]
fn timestamps_are_fixed_width_rfc3339() {
    let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5);
    assert_eq!(timestamp(t), "2023-11-14T22:13:20.000000005Z");
}

async fn read_all(path: std::path::PathBuf, options: &LogOptions) -> String {
    let mut s = LogStream::new(path, options, None);
    let mut out = Vec::new();
    while let Some(chunk) = s.next_chunk().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn log_records_round_trip_with_partials_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let (mut w, _progress) = LogWriter::create(&path).unwrap();
    w.write_chunk(OutputStream::Stdout, b"one\ntwo\nthr")
        .unwrap();
    w.write_chunk(OutputStream::Stdout, b"ee\n").unwrap();
    w.write_chunk(OutputStream::Stderr, b"oops\n").unwrap();
    let long = vec![b'x'; 40_000];
    w.write_chunk(OutputStream::Stdout, &long).unwrap();
    w.write_chunk(OutputStream::Stdout, b"\nlast\n").unwrap();
    w.close();

    let all = read_all(path.clone(), &LogOptions::default()).await;
    let expected = format!("one\ntwo\nthree\noops\n{}\nlast\n", "x".repeat(40_000));
    assert_eq!(all, expected);

    // The raw file is CRI-formatted: partial records are tagged P.
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(raw.lines().any(|l| l.ends_with(" stdout P thr")), "{raw}");
    assert!(raw.lines().any(|l| l.contains(" stderr F oops")), "{raw}");

    // Tail counts lines, not records: "three" (P + F) is one line; the long line is one too.
    let tail = read_all(
        path.clone(),
        &LogOptions {
            tail_lines: Some(3),
            ..LogOptions::default()
        },
    )
    .await;
    assert_eq!(tail, format!("oops\n{}\nlast\n", "x".repeat(40_000)));
    let tail = read_all(
        path.clone(),
        &LogOptions {
            tail_lines: Some(100),
            ..LogOptions::default()
        },
    )
    .await;
    assert_eq!(tail, expected);

    let limited = read_all(
        path.clone(),
        &LogOptions {
            limit_bytes: Some(6),
            ..LogOptions::default()
        },
    )
    .await;
    assert_eq!(limited, "one\ntw");

    let stamped = read_all(
        path.clone(),
        &LogOptions {
            timestamps: true,
            tail_lines: Some(1),
            ..LogOptions::default()
        },
    )
    .await;
    let (ts, rest) = stamped.split_once(' ').unwrap();
    assert_eq!(ts.len(), 30);
    assert_eq!(rest, "last\n");

    let future = SystemTime::now() + Duration::from_secs(3600);
    let none = read_all(
        path,
        &LogOptions {
            since_time: Some(future),
            ..LogOptions::default()
        },
    )
    .await;
    assert_eq!(none, "");
}

#[tokio::test]
async fn follow_delivers_later_writes_and_ends_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let (mut w, progress) = LogWriter::create(&path).unwrap();
    w.write_chunk(OutputStream::Stdout, b"early\n").unwrap();
    let mut s = LogStream::new(
        path,
        &LogOptions {
            follow: true,
            ..LogOptions::default()
        },
        Some(progress),
    );
    assert_eq!(&s.next_chunk().await.unwrap().unwrap()[..], b"early\n");
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(chunk) = s.next_chunk().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    });
    w.write_chunk(OutputStream::Stdout, b"later\n").unwrap();
    w.close();
    assert_eq!(reader.await.unwrap(), b"later\n");
}

#[test]
fn errors_map_to_api_status_codes() {
    assert_eq!(
        RuntimeError::PodNotFound {
            namespace: "a".into(),
            pod: "b".into()
        }
        .http_status(),
        404
    );
    assert_eq!(RuntimeError::EmptyCommand.http_status(), 400);
    assert_eq!(RuntimeError::InvalidPod("x".into()).http_status(), 422);
}

#[test]
fn hostnames_are_cut_like_the_kubelet_does() {
    assert_eq!(super::pods::hostname_of("api-0"), "api-0");
    let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
    assert_eq!(super::pods::hostname_of(&long), "a".repeat(62));
}

#[test]
fn a_container_exe_that_does_not_dispatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = super::Runtime::new(super::RuntimeOptions {
        container_exe: "/usr/bin/true".into(),
        state_dir: dir.path().to_owned(),
        sandbox: super::SandboxMode::None,
    })
    .unwrap_err();
    assert!(matches!(err, RuntimeError::ContainerExe(_)), "{err}");
}
