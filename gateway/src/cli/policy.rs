//! `jitsh policy check|test|lint`. Exit codes: 0 allow, 3 deny (including refused syntax),
//! 4 needs approval, 2 invalid policy or usage (`test` and `lint`: 0 clean, 1 findings).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jitsh_broker_policy::{
    Action, Decision, Effect, Mode, Policy, Request, Subject, Target, parse_command_line,
};
use serde::Deserialize;

/// Policy subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Decide one request and print the decision and rule (exit 0 allow, 3 deny, 4 needs approval, 2 invalid).
    Check {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The user.
        #[arg(long)]
        user: String,
        /// A group of the user (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Decide as if the user held an approved grant for this grant-only rule (repeatable).
        #[arg(long = "with-grant")]
        with_grants: Vec<String>,
        /// NAMESPACE/POD[/CONTAINER].
        #[arg(long)]
        target: String,
        /// A pod label k=v (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Mode: exec, shell, logs, files, attach, port-forward, break-glass.
        #[arg(long, default_value = "exec")]
        mode: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The raw command line, as typed.
        #[arg(long, conflicts_with = "argv")]
        line: Option<String>,
        /// The argv (after `--`).
        #[arg(last = true)]
        argv: Vec<String>,
    },
    /// Run a table of expected decisions (YAML); exit 1 with a diff on any mismatch.
    Test {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The cases file.
        cases: PathBuf,
    },
    /// Warn about risky grants (shell escapes, secret readers, unbounded patterns).
    Lint {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
    },
}

fn load(path: &Path) -> Result<Policy, ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("jitsh: policy: reading {}: {e}", path.display());
        ExitCode::from(2)
    })?;
    Policy::from_yaml(&text).map_err(|errs| {
        for e in &errs.0 {
            eprintln!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message);
        }
        ExitCode::from(2)
    })
}

fn parse_target(s: &str, labels: &[String]) -> Option<Target> {
    let parts: Vec<&str> = s.split('/').collect();
    let (ns, pod, container) = match parts.as_slice() {
        [ns, pod] => (*ns, *pod, ""),
        [ns, pod, c] => (*ns, *pod, *c),
        _ => return None,
    };
    let mut l = BTreeMap::new();
    for kv in labels {
        let (k, v) = kv.split_once('=')?;
        l.insert(k.to_owned(), v.to_owned());
    }
    Some(Target {
        namespace: ns.into(),
        pod: pod.into(),
        labels: l,
        container: container.into(),
    })
}

fn effect_name(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
        Effect::NeedsApproval => "needs-approval",
    }
}

fn exit_for(e: Effect) -> ExitCode {
    ExitCode::from(match e {
        Effect::Allow => 0,
        Effect::Deny => 3,
        Effect::NeedsApproval => 4,
    })
}

/// Decides a raw line or argv; syntax refusals are denials.
fn decide(
    policy: &Policy,
    subject: &Subject,
    target: &Target,
    mode: Mode,
    line: Option<&str>,
    argv: &[String],
) -> Decision {
    let parsed = match line {
        Some(l) => parse_command_line(l),
        None if argv.is_empty() => {
            return policy.decide(&Request {
                subject,
                target,
                mode,
                action: Action::Session,
            });
        }
        None => Ok(jitsh_broker_policy::CommandLine::from_argv(argv.to_vec())),
    };
    match parsed {
        Ok(cl) => {
            let action = match mode {
                Mode::Files => {
                    Action::Path(argv.first().map(String::as_str).or(line).unwrap_or(""))
                }
                Mode::PortForward => Action::Port(
                    argv.first()
                        .or(line.map(str::to_owned).as_ref())
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                ),
                _ => Action::Command(&cl),
            };
            policy.decide(&Request {
                subject,
                target,
                mode,
                action,
            })
        }
        Err(e) => Decision::denied(e.to_string()),
    }
}

/// Runs a `jitsh policy` subcommand.
pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check {
            policy,
            user,
            groups,
            with_grants,
            target,
            labels,
            mode,
            json,
            line,
            argv,
        } => {
            let policy = match load(&policy) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let Some(target) = parse_target(&target, &labels) else {
                eprintln!(
                    "jitsh: policy check: --target must be NAMESPACE/POD[/CONTAINER] and --label k=v"
                );
                return ExitCode::from(2);
            };
            let Some(mode) = Mode::parse(&mode) else {
                eprintln!("jitsh: policy check: unknown mode {mode:?}");
                return ExitCode::from(2);
            };
            let subject = Subject {
                user,
                groups,
                grants: with_grants,
            };
            let d = decide(&policy, &subject, &target, mode, line.as_deref(), &argv);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"decision": effect_name(d.effect()), "rule": d.rule(), "reasons": d.reasons()})
                );
            } else {
                println!(
                    "{} (rule {}){}",
                    effect_name(d.effect()),
                    d.rule().unwrap_or("-"),
                    d.reasons()
                        .iter()
                        .map(|r| format!(": {r}"))
                        .collect::<String>()
                );
            }
            exit_for(d.effect())
        }
        PolicyCommand::Test { policy, cases } => {
            let policy = match load(&policy) {
                Ok(p) => p,
                Err(code) => return code,
            };
            run_cases(&policy, &cases)
        }
        PolicyCommand::Lint { policy } => {
            let policy = match load(&policy) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let findings = jitsh_broker_policy::lint(&policy);
            for f in &findings {
                println!("warning: rule {}: {}", f.rule, f.message);
            }
            if findings.is_empty() {
                println!("no findings");
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    /// Grant-only rules the user holds an approved grant for.
    #[serde(default, rename = "withGrants")]
    with_grants: Vec<String>,
    target: String,
    #[serde(default = "exec")]
    mode: String,
    line: String,
    expect: String,
}

fn exec() -> String {
    "exec".into()
}

fn run_cases(policy: &Policy, path: &Path) -> ExitCode {
    let cases: Vec<Case> = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_saphyr::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jitsh: policy test: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut failed = 0;
    for (i, c) in cases.iter().enumerate() {
        let (Some(target), Some(mode)) = (parse_target(&c.target, &[]), Mode::parse(&c.mode))
        else {
            eprintln!("jitsh: policy test: case {}: bad target or mode", i + 1);
            return ExitCode::from(2);
        };
        let subject = Subject {
            user: c.user.clone(),
            groups: c.groups.clone(),
            grants: c.with_grants.clone(),
        };
        let d = decide(policy, &subject, &target, mode, Some(&c.line), &[]);
        let got = effect_name(d.effect());
        if got == c.expect {
            println!("ok   {} {} {:?} → {got}", c.user, c.target, c.line);
        } else {
            failed += 1;
            println!(
                "FAIL {} {} {:?}\n  - expected: {}\n  + got:      {got} (rule {}) {}",
                c.user,
                c.target,
                c.line,
                c.expect,
                d.rule().unwrap_or("-"),
                d.reasons().join("; ")
            );
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
