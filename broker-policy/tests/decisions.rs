//! Decisions of the demo policy (deploy/policy/demo.yaml) and policy parse errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap, expect, panic or out-of-range index is a test failure"
)]

use std::collections::BTreeMap;

use jitsh_broker_policy::{
    Action, BreakGlassAsk, Effect, Mode, Policy, Recheck, Request, Subject, Target,
    parse_command_line,
};

fn demo() -> Policy {
    Policy::from_yaml(include_str!("../../deploy/policy/demo.yaml")).unwrap()
}

fn target(ns: &str, pod: &str, container: &str) -> Target {
    Target {
        namespace: ns.into(),
        pod: pod.into(),
        labels: BTreeMap::from([("app".into(), "api".into())]),
        container: container.into(),
    }
}

fn alice() -> Subject {
    Subject {
        user: "alice".into(),
        groups: vec!["oncall-payments".into()],
        grants: Vec::new(),
    }
}

fn decide(p: &Policy, who: &Subject, t: &Target, line: &str) -> (Effect, String) {
    let cl = match parse_command_line(line) {
        Ok(cl) => cl,
        Err(e) => return (Effect::Deny, e.to_string()),
    };
    let d = p.decide(&Request {
        subject: who,
        target: t,
        mode: Mode::Exec,
        action: Action::Command(&cl),
    });
    (d.effect(), d.reasons().join("; "))
}

#[test]
fn the_issue_examples_are_allowed_for_alice() {
    let p = demo();
    let t = target("payments", "api-0", "app");
    for line in [
        "cat /var/log/app.log",
        "tail -n 5 /var/log/app.log",
        "grep -i error /var/log/app.log",
        "ps aux",
        "ls -la /var/log",
        "grep ERROR /var/log/app.log | tail -n 5",
        "'cat' '/var/log/app.log'",
        "wc -l /var/log/app.log",
        "/usr/bin/cat /var/log/app.log",
        "tail -f /var/log/app.log",
        "sleep 30",
        "df -h",
        "date",
        "sha256sum",
    ] {
        assert_eq!(
            decide(&p, &alice(), &t, line).0,
            Effect::Allow,
            "{line}: {:?}",
            decide(&p, &alice(), &t, line)
        );
    }
}

#[test]
fn denials_name_the_reason() {
    let p = demo();
    let t = target("payments", "api-0", "app");
    let cases = [
        (
            "rm -rf /",
            "'rm' is not allowed on payments/api-0; allowed here: cat, date, df, grep, head, ls, ps, sha256sum, sleep, tail, wc (rule oncall-read)",
        ),
        (
            "cat /etc/shadow",
            "'cat' is allowed on payments/api-0 only as",
        ),
        ("cat /var/log/../../etc/shadow", "only as"),
        ("tail -f --pid=1 /var/log/app.log", "only as"),
        ("grep -f /etc/shadow /var/log/app.log", "only as"),
        (
            "cat /var/log/app.log; id",
            "command separator ';' at column 21",
        ),
        (
            "\u{0441}at /var/log/app.log",
            "is not allowed on payments/api-0",
        ),
        ("cat\u{200b} /var/log/app.log", "invisible character"),
        ("/tmp/cat /var/log/app.log", "'/tmp/cat' is not allowed"),
        ("cat relative.log", "only as"),
        ("find / -exec sh \\;", "'find' is not allowed"),
        ("ps aux | sh", "'sh' is not allowed"),
    ];
    for (line, want) in cases {
        let (effect, why) = decide(&p, &alice(), &t, line);
        assert_eq!(effect, Effect::Deny, "{line}");
        assert!(why.contains(want), "{line}: {why}");
    }
    // Per-command approval.
    assert_eq!(
        decide(&p, &alice(), &t, "kill -TERM 1").0,
        Effect::NeedsApproval
    );
    // Nothing in default; mallory's only grant is cat.
    let (e, why) = decide(
        &p,
        &alice(),
        &target("default", "toolbox", "toolbox"),
        "ps aux",
    );
    assert_eq!(e, Effect::Deny);
    assert!(
        why.contains("no rule grants exec on default/toolbox to alice"),
        "{why}"
    );
    let mallory = Subject {
        user: "mallory".into(),
        groups: vec![],
        grants: Vec::new(),
    };
    assert_eq!(
        decide(&p, &mallory, &t, "cat /var/log/app.log").0,
        Effect::Allow
    );
    assert_eq!(decide(&p, &mallory, &t, "ps aux").0, Effect::Deny);
}

#[test]
fn permits_carry_normalised_argv_and_only_allow_makes_one() {
    let p = demo();
    let t = target("payments", "api-0", "app");
    let cl = parse_command_line("cat /var/log/./x/../app.log").unwrap();
    let permit = p.permit_exec(&alice(), &t, &cl).unwrap();
    assert_eq!(
        permit.stages(),
        [vec!["cat".to_owned(), "/var/log/app.log".to_owned()]]
    );
    assert_eq!(permit.rule(), "oncall-read");
    assert_eq!(permit.target(), &t);
    // A program named by path runs by the path that was decided, normalised: the kernel never
    // sees the `..` it would resolve through a symbolic link (issue 13, item 2).
    let cl = parse_command_line("/tmp/l/../../usr/bin/cat /var/log/app.log").unwrap();
    let permit = p.permit_exec(&alice(), &t, &cl).unwrap();
    assert_eq!(permit.stages(), [["/usr/bin/cat", "/var/log/app.log"]]);
    assert_eq!(permit.subject(), &alice());
    let cl = parse_command_line("kill -TERM 1").unwrap();
    let d = p.permit_exec(&alice(), &t, &cl).unwrap_err();
    assert_eq!(d.effect(), Effect::NeedsApproval);
    assert!(d.reasons_name_rule());
    let file = p.permit_file(&alice(), &t, "/var/log/./app.log").unwrap();
    assert_eq!(file.path(), "/var/log/app.log");
    assert_eq!(p.permit_port(&alice(), &t, 8080).unwrap().port(), 8080);
    assert!(p.permit_port(&alice(), &t, 22).is_err());
    assert!(p.permit_logs(&alice(), &t).is_ok());
    assert!(p.permit_shell(&alice(), &t).is_ok());
    assert!(p.permit_attach(&alice(), &t).is_err());
    // Files, ports, sessions.
    let dec = |mode, action| {
        p.decide(&Request {
            subject: &alice(),
            target: &t,
            mode,
            action,
        })
        .effect()
    };
    assert_eq!(
        dec(Mode::Files, Action::Path("/var/log/app.log")),
        Effect::Allow
    );
    assert_eq!(
        dec(Mode::Files, Action::Path("/var/log/../../etc/shadow")),
        Effect::Deny
    );
    assert_eq!(dec(Mode::PortForward, Action::Port(8080)), Effect::Allow);
    assert_eq!(dec(Mode::PortForward, Action::Port(22)), Effect::Deny);
    assert_eq!(dec(Mode::BreakGlass, Action::Session), Effect::Deny);
}

#[test]
fn break_glass_is_decided_with_its_facts() {
    let p = demo();
    let t = target("payments", "api-0", "app");
    let carol = Subject {
        user: "carol".into(),
        groups: vec!["sre".into()],
        grants: Vec::new(),
    };
    let ask = BreakGlassAsk {
        incident: Some("INC-1"),
        reason: Some("db down"),
        certificate: true,
    };
    let permit = p.permit_break_glass(&carol, &t, ask).unwrap();
    assert_eq!(permit.incident(), Some("INC-1"));
    assert_eq!(permit.reason(), "db down");
    let rule = p
        .rules()
        .iter()
        .find(|r| r.name() == permit.rule())
        .unwrap();
    let grant = rule.break_glass().unwrap();
    assert_eq!(permit.limits().max_session, grant.max_duration);
    assert_eq!(permit.notify(), grant.notify.as_slice());
    // No reason: the rule applies, the request lacks what it requires.
    let d = p
        .permit_break_glass(
            &carol,
            &t,
            BreakGlassAsk {
                reason: Some("  "),
                ..ask
            },
        )
        .unwrap_err();
    assert!(d.is_unmet_requirement());
    assert_eq!(
        d.reasons(),
        ["break-glass needs a reason: --reason \"what is broken\""]
    );
    if grant.incident_required {
        let d = p
            .permit_break_glass(
                &carol,
                &t,
                BreakGlassAsk {
                    incident: None,
                    ..ask
                },
            )
            .unwrap_err();
        assert!(d.reasons()[0].contains("requires an incident"), "{d:?}");
    }
    if grant.certificate_required {
        let d = p
            .permit_break_glass(
                &carol,
                &t,
                BreakGlassAsk {
                    certificate: false,
                    ..ask
                },
            )
            .unwrap_err();
        assert!(d.reasons()[0].contains("break-glass certificate"), "{d:?}");
    }
    // alice is not in a break-glass rule at all: a plain denial, not an unmet requirement.
    let d = p.permit_break_glass(&alice(), &t, ask).unwrap_err();
    assert!(!d.is_unmet_requirement());
    assert_eq!(d.rule(), None);
}

#[test]
fn a_permit_is_decided_again_under_a_new_policy() {
    let p = demo();
    let t = target("payments", "api-0", "app");
    let cl = parse_command_line("ps aux").unwrap();
    let exec = p.permit_exec(&alice(), &t, &cl).unwrap();
    let logs = p.permit_logs(&alice(), &t).unwrap();
    assert_eq!(exec.recheck(&p, &[]), Ok(()));
    assert_eq!(logs.recheck(&p, &[]), Ok(()));
    // The same document without the rule that allowed them.
    let text = include_str!("../../deploy/policy/demo.yaml").replace(
        "groups: [oncall-payments, payments-leads, sre]",
        "groups: [payments-leads, sre]",
    );
    let without = Policy::from_yaml(&text).unwrap();
    assert_eq!(
        without
            .permit_logs(&alice(), &t)
            .map(|_| ())
            .unwrap_err()
            .effect(),
        Effect::Deny
    );
    assert_eq!(
        exec.recheck(&without, &[]).unwrap_err().effect(),
        Effect::Deny
    );
    assert!(logs.recheck(&without, &[]).is_err());
}

#[test]
fn every_policy_error_is_reported_with_its_position() {
    let bad = "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:\n  - name: a\n    groups: [g]\n    targets: [{namespaces: [x]}]\n    modes: [exec, teleport]\n    commands: [\"cat <path:relative/**>\", \"ls [-l\"]\n    approval: {approvers: 1, from: [nobody]}\n  - name: a\n    groups: [g]\n    targets: [{namespaces: [x], pods: [\"[\"]}]\n    modes: [exec]\n";
    let errs = Policy::from_yaml(bad).unwrap_err();
    let text = errs.to_string();
    for want in [
        "7:",
        "unknown mode \"teleport\"",
        "must be absolute",
        "unbalanced '['",
        "approvers group \"nobody\"",
        "duplicate rule name \"a\"",
        "bad glob",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(errs.0.len() >= 6, "{text}");
    assert!(errs.0.iter().all(|e| e.line > 0 && e.column > 0), "{text}");
    let unknown =
        Policy::from_yaml("apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrulez: []\n").unwrap_err();
    assert!(
        unknown.0[0].line == 3 && unknown.to_string().contains("rulez"),
        "{unknown}"
    );
}

/// Decodes the corpus escapes (`\n`, `\r`, `\t`, `\0`, `\\`, `\u{XXXX}`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut cs = s.chars();
    while let Some(c) = cs.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match cs.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('u') => {
                let hex: String = cs.by_ref().skip(1).take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => panic!("bad escape {other:?}"),
        }
    }
    out
}

#[test]
fn decision_corpus() {
    let p = demo();
    let mut n = 0;
    let mut failures = Vec::new();
    for (i, raw) in include_str!("corpus/decisions.tsv").lines().enumerate() {
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = raw.splitn(5, '\t').collect();
        let [user, groups, target, expect, line] = f[..] else {
            panic!("line {}: five columns", i + 1)
        };
        let parts: Vec<&str> = target.split('/').collect();
        let t = Target {
            namespace: parts[0].into(),
            pod: parts[1].into(),
            labels: BTreeMap::new(),
            container: parts[2].into(),
        };
        let who = Subject {
            user: user.into(),
            groups: groups
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            grants: Vec::new(),
        };
        let line = unescape(line);
        let (effect, why) = decide(&p, &who, &t, &line);
        let got = match effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::NeedsApproval => "needs-approval",
        };
        if got != expect {
            failures.push(format!(
                "line {}: {user} {target} {line:?}: expected {expect}, got {got} ({why})",
                i + 1
            ));
        }
        if got == "deny" {
            assert!(!why.is_empty(), "line {}: a denial without a reason", i + 1);
        }
        n += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(n >= 150, "only {n} cases");
}
