//! Criterion benchmark: decisions per second on a generated 500-rule policy with a mix of
//! allowed, denied, pipeline and syntax-refused requests (goal ≥ 1,000,000/s/core).
#![expect(
    clippy::unwrap_used,
    missing_docs,
    reason = "benchmark harness: setup may panic on failure; criterion macros generate undocumented items"
)]

use std::collections::BTreeMap;
use std::fmt::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jitsh_broker_policy::{Action, Mode, Policy, Request, Subject, Target, parse_command_line};

fn policy() -> Policy {
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
    Policy::from_yaml(&y).unwrap()
}

fn bench(c: &mut Criterion) {
    let p = policy();
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
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse + decide, 8-request mix, 500 rules", |b| {
        b.iter(|| {
            for l in &lines {
                let d = match parse_command_line(l) {
                    Ok(cl) => p
                        .decide(&Request {
                            subject: &subject,
                            target: &target,
                            mode: Mode::Exec,
                            action: Action::Command(&cl),
                        })
                        .effect(),
                    Err(_) => jitsh_broker_policy::Effect::Deny,
                };
                std::hint::black_box(d);
            }
        })
    });
    let parsed: Vec<_> = lines
        .iter()
        .filter_map(|l| parse_command_line(l).ok())
        .collect();
    g.throughput(Throughput::Elements(parsed.len() as u64));
    g.bench_function("decide only (7 parsed requests), 500 rules", |b| {
        b.iter(|| {
            for cl in &parsed {
                std::hint::black_box(
                    p.decide(&Request {
                        subject: &subject,
                        target: &target,
                        mode: Mode::Exec,
                        action: Action::Command(cl),
                    })
                    .effect(),
                );
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
