//! The workload of `benches/decide.rs` (same generated 500-rule policy, subject, target and
//! lines) in a plain loop, for counting instructions with callgrind, which is repeatable where
//! timings on a shared machine are not (docs/benchmarks.md):
//!
//!     decide_callgrind N [decide|parse] [LINE]
//!
//! runs N rounds of deciding the 7 lines that parse (`decide`, the default), or of parsing and
//! deciding all 8 (`parse`); LINE (0-7) keeps one line only. Everything decided goes through
//! `measured`, so `--toggle-collect='*decide_callgrind::measured*'` counts exactly the decisions
//! (dropping the decision included).
#![expect(
    clippy::unwrap_used,
    reason = "benchmark harness: setup may panic on failure"
)]
use std::collections::BTreeMap;
use std::fmt::Write;

use jitsh_broker_policy::{Action, Mode, Policy, Request, Subject, Target, parse_command_line};

fn main() {
    let mut y = String::from("apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:\n");
    for i in 0..500 {
        write!(
            y,
            "  - name: rule-{i}\n    groups: [team-{g}]\n    targets: [{{namespaces: [ns-{n}], pods: [\"api-*\"]}}]\n    modes: [exec]\n    pipelines: true\n    commands: [\"cat <path:/var/log/**>\", \"tail [-n <int>] [-f] <path:/var/log/**>\", \"grep [-i] [-n] [-c] <word> <path:/var/log/**>\", \"ps aux\", \"ls [-l|-la|-lah] [<path:/var/log/**>]\"]\n    deny: [\"cat <path:/var/log/secret/**>\"]\n",
            g = i % 50,
            n = i % 20
        )
        .unwrap();
    }
    let p = Policy::from_yaml(&y).unwrap();
    let subject = Subject {
        user: "alice".into(),
        groups: vec!["team-7".into(), "team-27".into()],
        grants: Vec::new(),
    };
    let target = Target {
        namespace: "ns-7".into(),
        pod: "api-0".into(),
        labels: BTreeMap::new(),
        container: "app".into(),
    };
    let lines = [
        "tail -n 50 /var/log/app.log",
        "cat /var/log/app.log",
        "grep -i error /var/log/app.log | tail -n 5",
        "ps aux",
        "rm -rf /",
        "cat /var/log/../../etc/shadow",
        "cat /var/log/app.log; id",
        "ls -la /var/log",
    ];
    let only: Option<usize> = std::env::args().nth(3).map(|s| s.parse().unwrap());
    let parsed: Vec<_> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|o| o == *i))
        .filter_map(|(_, l)| parse_command_line(l).ok())
        .collect();
    let n: usize = std::env::args().nth(1).map_or(1000, |s| s.parse().unwrap());
    let mode = std::env::args().nth(2).unwrap_or_default();
    for _ in 0..n {
        if mode == "parse" {
            for l in &lines {
                let d = match parse_command_line(l) {
                    Ok(cl) => measured(
                        &p,
                        &Request {
                            subject: &subject,
                            target: &target,
                            mode: Mode::Exec,
                            action: Action::Command(&cl),
                        },
                    ),
                    Err(_) => jitsh_broker_policy::Effect::Deny,
                };
                std::hint::black_box(d);
            }
        } else {
            for cl in &parsed {
                std::hint::black_box(measured(
                    &p,
                    &Request {
                        subject: &subject,
                        target: &target,
                        mode: Mode::Exec,
                        action: Action::Command(cl),
                    },
                ));
            }
        }
    }
}

/// One decision, dropped before returning its effect.
#[inline(never)]
fn measured(p: &Policy, r: &Request<'_>) -> jitsh_broker_policy::Effect {
    p.decide(r).effect()
}
