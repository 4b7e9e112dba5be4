//! Decisions across several applicable rules that share patterns (the shape generated policies
//! have, and the one the fast path is built for): explicit deny wins wherever it is, the first
//! rule that allows decides, a pattern's answer is the same in every rule, and arguments without
//! an absolute path never satisfy a `<path:…>` or a different literal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

use std::collections::BTreeMap;

use jitsh_broker_policy::{
    Action, Decision, Effect, Mode, Policy, Request, Subject, Target, parse_command_line,
};

const POLICY: &str = "\
apiVersion: jitsh.dev/v1alpha1
kind: Policy
rules:
  - name: first
    groups: [team]
    targets: [{namespaces: [prod], pods: [\"api-*\"]}]
    modes: [exec]
    commands: [\"cat <path:/var/log/**>\", \"tail [-n <int>] <path:/var/log/**>\", \"tool [--level <int>] <path:/data/*.log>\"]
    approvalRequired: [\"kill -TERM <int>\"]
    approval: {approvers: 1, from: [leads]}
  - name: other-pods
    groups: [team]
    targets: [{namespaces: [prod], pods: [\"db-*\"]}]
    modes: [exec]
    commands: [\"ps aux\"]
    deny: [\"cat <path:/var/log/**>\"]
  - name: second
    groups: [leads]
    targets: [{namespaces: [\"*\"]}]
    modes: [exec]
    pipelines: true
    commands: [\"cat <path:/var/log/**>\", \"grep <word>\", \"tail [-n <int>] <path:/var/log/**>\"]
    deny: [\"cat <path:/var/log/secret/**>\"]
";

fn decide(groups: &[&str], pod: &str, line: &str) -> Decision {
    let p = Policy::from_yaml(POLICY).unwrap();
    let subject = Subject {
        user: "alice".into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        grants: Vec::new(),
    };
    let target = Target {
        namespace: "prod".into(),
        pod: pod.into(),
        labels: BTreeMap::new(),
        container: "app".into(),
    };
    let cl = parse_command_line(line).unwrap();
    p.decide(&Request {
        subject: &subject,
        target: &target,
        mode: Mode::Exec,
        action: Action::Command(&cl),
    })
}

fn summary(d: &Decision) -> (Effect, &str) {
    (d.effect(), d.rule().unwrap_or("-"))
}

#[test]
fn the_first_allowing_rule_decides_and_deny_wins_wherever_it_is() {
    let both = ["team", "leads"];
    assert_eq!(
        summary(&decide(&both, "api-0", "cat /var/log/app.log")),
        (Effect::Allow, "first")
    );
    // `second` denies secrets; `first` would allow them.
    assert_eq!(
        summary(&decide(&both, "api-0", "cat /var/log/secret/key")),
        (Effect::Deny, "second")
    );
    // `other-pods` denies all of cat, but does not apply to api-0.
    assert_eq!(
        summary(&decide(&["team"], "db-0", "cat /var/log/app.log")),
        (Effect::Deny, "other-pods")
    );
    // Pipelines: `first` does not allow them, `second` does, for every stage.
    let d = decide(&both, "api-0", "cat /var/log/app.log | grep x");
    assert_eq!(summary(&d), (Effect::Allow, "second"));
    assert_eq!(
        d.stages(),
        [
            vec!["cat".to_owned(), "/var/log/app.log".to_owned()],
            vec!["grep".to_owned(), "x".to_owned()]
        ]
    );
    assert_eq!(
        summary(&decide(
            &["team"],
            "api-0",
            "cat /var/log/app.log | tail -n 1"
        )),
        (Effect::Deny, "first")
    );
}

#[test]
fn arguments_must_match_literally_even_without_paths() {
    // No absolute argument at all: literals and placeholders still decide.
    assert_eq!(
        decide(&["team"], "api-0", "kill -TERM 1").effect(),
        Effect::NeedsApproval
    );
    for line in [
        "kill -9 1",
        "kill -TERM x",
        "kill -TERM",
        "tail -n 5",
        "cat app.log",
    ] {
        assert_eq!(
            decide(&["team"], "api-0", line).effect(),
            Effect::Deny,
            "{line}"
        );
    }
    // Long options both ways; paths normalised in the permit.
    for line in [
        "tool --level=3 /data/./x.log",
        "tool --level 3 /data/y/../x.log",
    ] {
        let d = decide(&["team"], "api-0", line);
        assert_eq!(d.effect(), Effect::Allow, "{line}: {:?}", d.reasons());
        assert_eq!(d.stages()[0][3], "/data/x.log");
    }
    assert_eq!(
        decide(&["team"], "api-0", "tool --level=3 /data/../etc/x.log").effect(),
        Effect::Deny
    );
}

#[test]
fn reasons_list_each_allowed_form_once() {
    let d = decide(&["team", "leads"], "api-0", "cat /etc/shadow");
    assert_eq!(d.effect(), Effect::Deny);
    assert_eq!(
        d.reasons(),
        ["'cat' is allowed on prod/api-0 only as: 'cat <path:/var/log/**>' (rule first)"]
    );
    let d = decide(&["team", "leads"], "api-0", "rm -rf /");
    assert_eq!(
        d.reasons(),
        ["'rm' is not allowed on prod/api-0; allowed here: cat, grep, tail, tool (rule first)"]
    );
}
