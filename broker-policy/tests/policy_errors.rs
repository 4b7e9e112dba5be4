//! Loading a policy reports every error at once, each with its line and column: structural ones
//! (unknown, repeated and missing keys, values of the wrong type) together with semantic ones
//! (bad globs and patterns, unknown modes, duplicate rule names, approver groups no rule grants).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

use jitsh_broker_policy::{Policy, PolicyError};

/// The 1-based column of `needle` on 1-based line `line` of `doc` (its `nth` occurrence there).
fn col(doc: &str, line: u64, needle: &str, nth: usize) -> u64 {
    let text = doc.lines().nth(line as usize - 1).unwrap();
    let (i, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} not on line {line}: {text:?}"));
    text[..i].chars().count() as u64 + 1
}

fn errors(doc: &str) -> Vec<PolicyError> {
    match Policy::from_yaml(doc) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

/// Asserts the errors are exactly these (line, column, part of the message), in this order.
fn assert_errors(doc: &str, want: &[(u64, u64, &str)]) {
    let got = errors(doc);
    let shown = got
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(got.len(), want.len(), "got:\n{shown}");
    for (e, (line, column, part)) in got.iter().zip(want) {
        assert!(
            e.line == *line && e.column == *column && e.message.contains(part),
            "want {line}:{column}: …{part}…\ngot:\n{shown}"
        );
    }
}

const MIXED: &str = "\
apiVersion: jitsh.dev/v1alpha1
kind: Policy
rules:
  - name: read-logs
    groups: [oncall]
    targets: [{namespaces: [payments], pod: [\"api-*\"]}]
    modes: [exec]
    comands: [\"cat <path:/var/log/**>\"]
  - name: debug
    groups: [oncall]
    targets: [{namespaces: [payments], pods: [\"[api\"]}]
    modes: [exec, teleport]
    commands: [\"tail [-n <int> <path:/var/log/**>\"]
    ports: [http, 8080]
    approval: {approvers: 1, from: [leads]}
    recording: true
  - name: read-logs
    users: [mallory]
    targets: [{namespaces: [payments]}]
    modes: [exec]
    pipelines: maybe
    files: [\"var/log/**\"]
";

#[test]
fn structural_and_semantic_errors_in_different_rules_are_all_reported() {
    let d = MIXED;
    assert_errors(
        d,
        &[
            // rule 1: an unknown key in a target, and one in the rule (structural)
            (
                6,
                col(d, 6, "pod:", 0),
                "unknown key `pod` in a target (did you mean `pods`?)",
            ),
            (
                8,
                5,
                "unknown key `comands` in a rule (did you mean `commands`?)",
            ),
            // rule 2: a bad glob, an unknown mode, a bad pattern (semantic), a port that is
            // not a number (structural), an approver group no rule grants (semantic), a key
            // that belongs in `limits` (structural)
            (11, col(d, 11, "\"[api\"", 0), "bad glob \"[api\""),
            (12, col(d, 12, "teleport", 0), "unknown mode \"teleport\""),
            (
                13,
                col(d, 13, "\"tail", 0),
                "bad pattern \"tail [-n <int> <path:/var/log/**>\": unbalanced '['",
            ),
            (
                14,
                col(d, 14, "http", 0),
                "each entry of `ports` must be a port number (0-65535), not \"http\"",
            ),
            (
                15,
                col(d, 15, "leads", 0),
                "approvers group \"leads\" is not granted by any rule",
            ),
            (16, 5, "unknown key `recording` in a rule"),
            // rule 3: a duplicate name (semantic), a flag that is not a boolean (structural),
            // a relative files glob (semantic)
            (
                17,
                col(d, 17, "read-logs", 0),
                "duplicate rule name \"read-logs\"",
            ),
            (
                21,
                col(d, 21, "maybe", 0),
                "`pipelines` must be true or false, not a string",
            ),
            (
                22,
                col(d, 22, "\"var", 0),
                "path glob \"var/log/**\" must be absolute",
            ),
        ],
    );
}

#[test]
fn the_positions_are_the_ones_a_reader_counts() {
    // The same errors, with the columns written out: a reviewer can check them by eye.
    let got: Vec<(u64, u64)> = errors(MIXED).iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        got,
        [
            (6, 40),
            (8, 5),
            (11, 47),
            (12, 19),
            (13, 16),
            (14, 13),
            (15, 37),
            (16, 5),
            (17, 11),
            (21, 16),
            (22, 13)
        ]
    );
}

#[test]
fn missing_repeated_and_mistyped_keys() {
    let d = "\
apiVersion: jitsh.dev/v1alpha1
rules:
  - name: a
    name: b
    groups: g
    targets: [{namespaces: [x], labels: {app: api, app: web}}]
    modes: [exec]
    approval: {from: [g]}
  - groups: [g]
    targets: {namespaces: [x]}
    breakGlass: {maxDuration: 30x}
    limits: {idleTimeout: [1m]}
  - 42
";
    assert_errors(
        d,
        &[
            (1, 1, "missing `kind` in the policy"),
            (4, 5, "repeated key `name` in a rule"),
            (5, 13, "`groups` must be a list, not a string"),
            (6, col(d, 6, "app:", 1), "repeated label \"app\""),
            (8, 15, "missing `approvers` in `approval`"),
            (9, 5, "missing `modes` in a rule"),
            (9, 5, "missing `name` in a rule"),
            (10, 14, "`targets` must be a list, not a mapping"),
            (
                11,
                col(d, 11, "30x", 0),
                "`maxDuration` must be a duration like 30m or 1h, not \"30x\"",
            ),
            (
                12,
                col(d, 12, "[1m]", 0),
                "`idleTimeout` must be a string, not a list",
            ),
            (13, 5, "a rule must be a mapping, not a number"),
        ],
    );
}

#[test]
fn text_that_is_not_yaml_is_reported_alone_with_its_position() {
    let d = "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules: [{name: a\nbogus: 1\n";
    let errs = errors(d);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].line >= 3 && errs[0].column > 0, "{errs:?}");
    assert!(errs[0].message.starts_with("not valid YAML: "), "{errs:?}");
    assert_errors(
        "",
        &[(
            1,
            1,
            "the policy must be a mapping with apiVersion, kind and rules, not empty",
        )],
    );
}

#[test]
fn plain_numbers_and_quoted_values_read_as_before() {
    // A plain scalar where a string is expected is read as written; quoted numbers and
    // booleans are read as numbers and booleans.
    let d = "\
apiVersion: jitsh.dev/v1alpha1
kind: Policy
rules:
  - name: 2024
    groups: [0x10]
    targets: [{namespaces: [123]}]
    modes: [port-forward]
    ports: ['8080', 22]
    pipelines: 'true'
";
    let p = Policy::from_yaml(d).unwrap();
    assert_eq!(p.rules()[0].name(), "2024");
    // The demo policy loads.
    Policy::from_yaml(include_str!("../../deploy/policy/demo.yaml")).unwrap();
}
