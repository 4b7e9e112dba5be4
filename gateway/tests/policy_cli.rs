//! `jitsh policy check|test|lint` through the built binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::process::{Command, Output};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/policy/demo.yaml");

fn jitsh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jitsh"))
        .args(args)
        .output()
        .unwrap()
}

fn check(user: &str, group: &str, target: &str, line: &str) -> (Option<i32>, String) {
    let out = jitsh(&[
        "policy", "check", "--policy", DEMO, "--user", user, "--group", group, "--target", target,
        "--line", line,
    ]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_exit_codes() {
    assert_eq!(
        check(
            "alice",
            "oncall-payments",
            "payments/api-0/app",
            "tail -n 5 /var/log/app.log"
        )
        .0,
        Some(0)
    );
    let (code, out) = check("alice", "oncall-payments", "payments/api-0/app", "rm -rf /");
    assert_eq!(code, Some(3));
    assert!(
        out.contains("'rm' is not allowed on payments/api-0"),
        "{out}"
    );
    let (code, out) = check(
        "alice",
        "oncall-payments",
        "payments/api-0/app",
        "cat /var/log/app.log; id",
    );
    assert_eq!(code, Some(3));
    assert!(out.contains("command separator ';' at column 21"), "{out}");
    assert_eq!(
        check(
            "alice",
            "oncall-payments",
            "payments/api-0/app",
            "kill -TERM 7"
        )
        .0,
        Some(4)
    );
    // argv after --, and JSON.
    let out = jitsh(&[
        "policy",
        "check",
        "--policy",
        DEMO,
        "--user",
        "alice",
        "--group",
        "oncall-payments",
        "--target",
        "payments/api-0/app",
        "--json",
        "--",
        "ps",
        "aux",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["decision"].as_str(), v["rule"].as_str()),
        (Some("allow"), Some("oncall-read"))
    );
    // Invalid policy and usage: 2.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:\n  - name: x\n    groups: [g]\n    targets: [{namespaces: [n]}]\n    modes: [exec]\n    commands: [\"ls [\"]\n").unwrap();
    let out = jitsh(&[
        "policy",
        "check",
        "--policy",
        bad.to_str().unwrap(),
        "--user",
        "u",
        "--target",
        "n/p",
        "--line",
        "ls",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.yaml:8:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        jitsh(&[
            "policy", "check", "--policy", DEMO, "--user", "u", "--target", "nopod", "--line", "ls"
        ])
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn test_tables_pass_and_fail_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "- {user: alice, groups: [oncall-payments], target: payments/api-0/app, line: 'ps aux', expect: allow}\n- {user: alice, groups: [oncall-payments], target: payments/api-0/app, line: 'rm -rf /', expect: deny}\n- {user: alice, groups: [oncall-payments], target: default/toolbox/toolbox, line: 'ps aux', expect: deny}\n").unwrap();
    let out = jitsh(&["policy", "test", "--policy", DEMO, good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 passed, 0 failed"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- {user: alice, groups: [oncall-payments], target: payments/api-0/app, line: 'rm -rf /', expect: allow}\n").unwrap();
    let out = jitsh(&["policy", "test", "--policy", DEMO, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("- expected: allow") && text.contains("+ got:      deny"),
        "{text}"
    );
}

#[test]
fn lint_flags_risky_grants() {
    let out = jitsh(&["policy", "lint", "--policy", DEMO]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dir = tempfile::tempdir().unwrap();
    let risky = dir.path().join("risky.yaml");
    std::fs::write(&risky, "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:\n  - name: yolo\n    groups: [g]\n    targets: [{namespaces: [n]}]\n    modes: [exec, files]\n    commands: [\"less <path:/var/log/**>\", \"ls [-l] [<path:/var/log/**>]\", \"find ...\", \"cat <path:/proc/**>\", \"env\"]\n    files: [\"/**\"]\n").unwrap();
    let out = jitsh(&["policy", "lint", "--policy", risky.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "grants less",
        "makes a path optional",
        "grants find",
        "ends in '...'",
        "/proc/",
        "grants env",
        "files glob '/**'",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
