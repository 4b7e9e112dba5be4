//! Loading: YAML text → validated rules, every error with its line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use globset::Glob;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::decide::RulePrograms;
use super::{
    Approval, BreakGlass, Limits, Mode, Modes, NameGlob, Policy, PolicyError, PolicyErrors, Rule,
    TargetRule,
};
use crate::pattern::{Pattern, path_glob};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Doc {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleDoc {
    name: Spanned<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    targets: Vec<TargetDoc>,
    modes: Vec<Spanned<String>>,
    #[serde(default)]
    commands: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    approval_required: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    pipelines: bool,
    #[serde(default)]
    approval: Option<ApprovalDoc>,
    #[serde(default)]
    break_glass: Option<BreakGlassDoc>,
    #[serde(default)]
    limits: Option<LimitsDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TargetDoc {
    namespaces: Vec<String>,
    #[serde(default)]
    pods: Vec<Spanned<String>>,
    #[serde(default)]
    containers: Vec<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApprovalDoc {
    approvers: u32,
    from: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BreakGlassDoc {
    #[serde(with = "humantime_serde_compat")]
    max_duration: Duration,
    #[serde(default = "yes")]
    incident_required: bool,
    #[serde(default)]
    certificate_required: bool,
    #[serde(default)]
    notify: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LimitsDoc {
    #[serde(default, with = "humantime_serde_compat::option")]
    max_session: Option<Duration>,
    #[serde(default, with = "humantime_serde_compat::option")]
    idle_timeout: Option<Duration>,
    #[serde(default)]
    recording: Option<bool>,
}

fn yes() -> bool {
    true
}

/// humantime durations without another dependency.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
    pub mod option {
        use super::*;
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

fn at<T>(s: &Spanned<T>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        line: s.referenced.line(),
        column: s.referenced.column(),
        message: message.into(),
    }
}

fn glob(s: &Spanned<String>, errors: &mut Vec<PolicyError>) -> Option<NameGlob> {
    let special = |t: &str| t.contains(['*', '?', '[', ']', '{', '}', '\\']);
    let v = s.value.as_str();
    if v == "*" {
        return Some(NameGlob::Any);
    }
    if !special(v) {
        return Some(NameGlob::Exact(v.to_owned()));
    }
    if let Some(prefix) = v.strip_suffix('*')
        && !special(prefix)
    {
        return Some(NameGlob::Prefix(prefix.to_owned()));
    }
    match Glob::new(v) {
        Ok(g) => Some(NameGlob::Glob(Box::new(g.compile_matcher()))),
        Err(e) => {
            errors.push(at(s, format!("bad glob {v:?}: {e}")));
            None
        }
    }
}

impl Policy {
    /// Parses and validates a policy document; every error at once, with line and column.
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyErrors> {
        let doc: Doc = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            PolicyErrors(vec![PolicyError {
                line,
                column,
                message: e.to_string().lines().next().unwrap_or_default().to_owned(),
            }])
        })?;
        let mut errors = Vec::new();
        if doc.api_version.value != "jitsh.dev/v1alpha1" {
            errors.push(at(
                &doc.api_version,
                format!(
                    "apiVersion must be jitsh.dev/v1alpha1, not {:?}",
                    doc.api_version.value
                ),
            ));
        }
        if doc.kind.value != "Policy" {
            errors.push(at(
                &doc.kind,
                format!("kind must be Policy, not {:?}", doc.kind.value),
            ));
        }
        let mut names = BTreeSet::new();
        let mut all_groups: BTreeSet<String> = BTreeSet::new();
        for r in &doc.rules {
            all_groups.extend(r.groups.iter().cloned());
        }
        let mut rules = Vec::new();
        for r in doc.rules {
            if !names.insert(r.name.value.clone()) {
                errors.push(at(
                    &r.name,
                    format!("duplicate rule name {:?}", r.name.value),
                ));
            }
            if r.groups.is_empty() && r.users.is_empty() {
                errors.push(at(&r.name, "a rule must grant at least one group or user"));
            }
            let mut modes = Modes::default();
            for m in &r.modes {
                match Mode::parse(&m.value) {
                    Some(mode) => {
                        modes.insert(mode);
                    }
                    None => errors.push(at(m, format!("unknown mode {:?} (exec, shell, logs, files, attach, port-forward, break-glass)", m.value))),
                }
            }
            let pats = |list: &[Spanned<String>], errors: &mut Vec<PolicyError>| -> Vec<Pattern> {
                list.iter()
                    .filter_map(|p| {
                        Pattern::parse(&p.value)
                            .map_err(|e| {
                                errors.push(at(p, format!("bad pattern {:?}: {e}", p.value)))
                            })
                            .ok()
                    })
                    .collect()
            };
            let commands = pats(&r.commands, &mut errors);
            let deny = pats(&r.deny, &mut errors);
            let approval_required = pats(&r.approval_required, &mut errors);
            let files = r
                .files
                .iter()
                .filter_map(|f| path_glob(&f.value).map_err(|e| errors.push(at(f, e))).ok())
                .collect();
            let targets = r
                .targets
                .iter()
                .map(|t| TargetRule {
                    namespaces: t.namespaces.clone(),
                    pods: t.pods.iter().filter_map(|p| glob(p, &mut errors)).collect(),
                    containers: t
                        .containers
                        .iter()
                        .filter_map(|c| glob(c, &mut errors))
                        .collect(),
                    labels: t.labels.clone(),
                })
                .collect();
            let approval = r.approval.as_ref().map(|a| {
                for g in &a.from {
                    if !all_groups.contains(&g.value) {
                        errors.push(at(
                            g,
                            format!("approvers group {:?} is not granted by any rule", g.value),
                        ));
                    }
                }
                if a.approvers == 0 {
                    errors.push(at(&r.name, "approval.approvers must be at least 1"));
                }
                Approval {
                    approvers: a.approvers,
                    from: a.from.iter().map(|g| g.value.clone()).collect(),
                }
            });
            if !r.approval_required.is_empty() && approval.is_none() {
                errors.push(at(
                    &r.name,
                    "approvalRequired needs an approval block naming the approvers",
                ));
            }
            if modes.contains(Mode::BreakGlass) && r.break_glass.is_none() {
                errors.push(at(&r.name, "mode break-glass needs a breakGlass block"));
            }
            let limits_doc = r.limits.unwrap_or_default();
            let d = Limits::default();
            rules.push(Rule {
                name: r.name.value,
                groups: r.groups,
                users: r.users,
                targets,
                modes,
                commands,
                deny,
                approval_required,
                files,
                ports: r.ports,
                pipelines: r.pipelines,
                approval,
                break_glass: r.break_glass.map(|b| BreakGlass {
                    max_duration: b.max_duration,
                    incident_required: b.incident_required,
                    certificate_required: b.certificate_required,
                    notify: b.notify,
                }),
                limits: Limits {
                    max_session: limits_doc.max_session.unwrap_or(d.max_session),
                    idle_timeout: limits_doc.idle_timeout.unwrap_or(d.idle_timeout),
                    recording: limits_doc.recording.unwrap_or(d.recording),
                },
                ids: RulePrograms::default(),
            });
        }
        if errors.is_empty() {
            Ok(Policy::indexed(rules))
        } else {
            Err(PolicyErrors(errors))
        }
    }
}
