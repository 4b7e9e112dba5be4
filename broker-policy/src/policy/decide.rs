//! Evaluation: the rules that apply to a request, and the decision with its reasons.

use std::collections::BTreeSet;

use super::{Action, Decision, Effect, Limits, Mode, Policy, Request, Rule, Subject, Target};
use crate::command_line::CommandLine;
use crate::pattern::{Pattern, normalize_path, program_name};

impl Policy {
    pub(super) fn indexed(rules: Vec<Rule>) -> Policy {
        let mut by_subject: std::collections::HashMap<String, Vec<usize>> =
            std::collections::HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            let subjects = r
                .groups
                .iter()
                .map(|g| format!("g:{g}"))
                .chain(r.users.iter().map(|u| format!("u:{u}")));
            for subject in subjects {
                let namespaces: BTreeSet<&str> = r
                    .targets
                    .iter()
                    .flat_map(|t| t.namespaces.iter().map(String::as_str))
                    .collect();
                for ns in namespaces {
                    let v = by_subject.entry(format!("{subject}|{ns}")).or_default();
                    if v.last() != Some(&i) {
                        v.push(i);
                    }
                }
            }
        }
        Policy { rules, by_subject }
    }

    /// Indices of the rules that name the subject and the namespace (or `*`), in policy order.
    fn candidates(&self, subject: &Subject, namespace: &str) -> Vec<usize> {
        let mut idx: Vec<usize> = Vec::new();
        let mut key = String::with_capacity(96);
        let names =
            std::iter::once(("u:", &subject.user)).chain(subject.groups.iter().map(|g| ("g:", g)));
        for (prefix, name) in names {
            for ns in [namespace, "*"] {
                key.clear();
                key.push_str(prefix);
                key.push_str(name);
                key.push('|');
                key.push_str(ns);
                if let Some(v) = self.by_subject.get(&key) {
                    idx.extend_from_slice(v);
                }
            }
        }
        idx.sort_unstable();
        idx.dedup();
        idx
    }

    fn applicable<'a>(
        &'a self,
        subject: &'a Subject,
        target: &'a Target,
        mode: Mode,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.candidates(subject, &target.namespace)
            .into_iter()
            .map(|i| &self.rules[i])
            .filter(move |r| {
                r.modes.contains(&mode)
                    && r.targets.iter().any(|t| {
                        t.namespaces
                            .iter()
                            .any(|n| n == "*" || *n == target.namespace)
                            && (t.pods.is_empty() || t.pods.iter().any(|g| g.is_match(&target.pod)))
                            && (t.containers.is_empty()
                                || t.containers.iter().any(|g| g.is_match(&target.container)))
                            && t.labels
                                .iter()
                                .all(|(k, v)| target.labels.get(k) == Some(v))
                    })
            })
    }

    /// Programs allowed for `mode` on the target (for `help` and reasons).
    pub fn allowed_summary(&self, subject: &Subject, target: &Target, mode: Mode) -> Vec<String> {
        let set: BTreeSet<String> = self
            .applicable(subject, target, mode)
            .flat_map(|r| r.commands.iter().map(|p| p.program().to_owned()))
            .collect();
        set.into_iter().collect()
    }

    /// Session limits for the subject on the target: the strictest of the applicable rules.
    pub fn session_limits(&self, subject: &Subject, target: &Target) -> Limits {
        let mut out: Option<Limits> = None;
        for r in self.rules.iter().filter(|r| {
            r.users.contains(&subject.user) || r.groups.iter().any(|g| subject.groups.contains(g))
        }) {
            let _ = target;
            out = Some(match out {
                None => r.limits,
                Some(l) => Limits {
                    max_session: l.max_session.min(r.limits.max_session),
                    idle_timeout: l.idle_timeout.min(r.limits.idle_timeout),
                    recording: l.recording || r.limits.recording,
                },
            });
        }
        out.unwrap_or_default()
    }

    /// Decides a request. Default deny; explicit `deny` patterns win; each pipeline stage is
    /// decided on its own.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let rules: Vec<&Rule> = self.applicable(req.subject, req.target, req.mode).collect();
        let where_ = format!("{}/{}", req.target.namespace, req.target.pod);
        let Some(first) = rules.first() else {
            return Decision::deny(
                None,
                format!(
                    "no rule grants {} on {where_} to {}",
                    req.mode.as_str(),
                    req.subject.user
                ),
            );
        };
        match req.action {
            Action::Session => Decision::allow(first, Vec::new()),
            Action::Port(p) => match rules.iter().find(|r| r.ports.contains(&p)) {
                Some(r) => Decision::allow(r, Vec::new()),
                None => Decision::deny(Some(first), format!("port {p} is not allowed on {where_}")),
            },
            Action::Path(path) => {
                let Some(norm) = normalize_path(path) else {
                    return Decision::deny(
                        Some(first),
                        format!("'{path}' is not an absolute path"),
                    );
                };
                match rules
                    .iter()
                    .find(|r| r.files.iter().any(|g| g.matches_normalized(&norm)))
                {
                    Some(r) => Decision::allow(r, vec![vec![norm]]),
                    None => Decision::deny(
                        Some(first),
                        format!("'{norm}' is not an allowed file on {where_}"),
                    ),
                }
            }
            Action::Command(line) => self.decide_command(&rules, line, &where_),
        }
    }

    fn decide_command(&self, rules: &[&Rule], line: &CommandLine, where_: &str) -> Decision {
        let mut out = Vec::new();
        let mut chosen: Option<&Rule> = None;
        let mut needs_approval = false;
        for (i, stage) in line.stages().iter().enumerate() {
            let program = stage
                .first()
                .map(|a| program_name(a).unwrap_or(a))
                .unwrap_or("");
            for r in rules {
                if r.deny.iter().any(|p| p.matches(stage).is_some()) {
                    return Decision::deny(
                        Some(r),
                        format!(
                            "'{program}' with these arguments is denied on {where_} (rule {})",
                            r.name
                        ),
                    );
                }
            }
            let hit = rules.iter().find_map(|r| {
                if line.is_pipeline() && !r.pipelines {
                    return None;
                }
                if let Some(a) = r.approval_required.iter().find_map(|p| p.matches(stage)) {
                    return Some((r, a, true));
                }
                let m = |p: &Pattern| {
                    if i == 0 {
                        p.matches(stage)
                    } else {
                        p.matches_downstream(stage)
                    }
                };
                r.commands.iter().find_map(m).map(|a| (r, a, false))
            });
            match hit {
                Some((r, argv, approval)) => {
                    chosen.get_or_insert(r);
                    needs_approval |= approval;
                    out.push(argv);
                }
                None => {
                    let allowed: BTreeSet<&str> = rules
                        .iter()
                        .flat_map(|r| r.commands.iter().map(Pattern::program))
                        .collect();
                    let allowed = allowed.into_iter().collect::<Vec<_>>().join(", ");
                    let rule = rules.first().map(|r| r.name.as_str()).unwrap_or("-");
                    let why = if line.is_pipeline() && !rules.iter().any(|r| r.pipelines) {
                        format!("pipelines are not allowed on {where_} (rule {rule})")
                    } else if allowed.split(", ").any(|a| a == program) {
                        format!(
                            "'{program}' is allowed on {where_} only as: {} (rule {rule})",
                            self.forms(rules, program)
                        )
                    } else {
                        format!(
                            "'{program}' is not allowed on {where_}; allowed here: {allowed} (rule {rule})"
                        )
                    };
                    return Decision::deny(rules.first().copied(), why);
                }
            }
        }
        let Some(rule) = chosen else {
            return Decision::deny(None, "an empty command line is not allowed".to_owned());
        };
        let mut d = Decision::allow(rule, out);
        if needs_approval {
            d.effect = Effect::NeedsApproval;
            d.reasons
                .push(format!("this command needs approval (rule {})", rule.name));
            d.stages.clear();
        }
        d
    }

    fn forms(&self, rules: &[&Rule], program: &str) -> String {
        rules
            .iter()
            .flat_map(|r| r.commands.iter())
            .filter(|p| p.program() == program)
            .map(|p| format!("'{}'", p.source()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
