//! Policy documents: YAML → validated rules (every error with line and column) → decisions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::command_line::CommandLine;
use crate::pattern::{PathGlob, Pattern, normalize_path, path_glob, program_name};

mod grants;
pub use grants::Grant;

/// One policy error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

/// Every error of a policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}: {}", e.line, e.column, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// An access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// One command.
    Exec,
    /// The filtered prompt.
    Shell,
    /// pods/log.
    Logs,
    /// File pulls.
    Files,
    /// pods/attach.
    Attach,
    /// Port-forward.
    PortForward,
    /// Break-glass shell.
    BreakGlass,
}

impl Mode {
    /// Parses the YAML name.
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "exec" => Mode::Exec,
            "shell" => Mode::Shell,
            "logs" => Mode::Logs,
            "files" => Mode::Files,
            "attach" => Mode::Attach,
            "port-forward" => Mode::PortForward,
            "break-glass" => Mode::BreakGlass,
            _ => return None,
        })
    }
    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exec => "exec",
            Mode::Shell => "shell",
            Mode::Logs => "logs",
            Mode::Files => "files",
            Mode::Attach => "attach",
            Mode::PortForward => "port-forward",
            Mode::BreakGlass => "break-glass",
        }
    }
}

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

/// Session limits of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest session.
    pub max_session: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Whether sessions are recorded.
    pub recording: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_session: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(900),
            recording: true,
        }
    }
}

/// Approval settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// How many approvers.
    pub approvers: u32,
    /// From which groups (never the requester).
    pub from: Vec<String>,
}

/// Break-glass settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlass {
    /// Longest grant.
    pub max_duration: Duration,
    /// Whether an incident id is required.
    pub incident_required: bool,
    /// Whether a `break-glass@jitsh.dev` certificate is required.
    pub certificate_required: bool,
    /// Webhooks to notify.
    pub notify: Vec<String>,
}

#[derive(Debug, Clone)]
struct TargetRule {
    namespaces: Vec<String>,
    pods: Vec<NameGlob>,
    containers: Vec<NameGlob>,
    labels: BTreeMap<String, String>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    groups: Vec<String>,
    users: Vec<String>,
    targets: Vec<TargetRule>,
    modes: BTreeSet<Mode>,
    commands: Vec<Pattern>,
    deny: Vec<Pattern>,
    approval_required: Vec<Pattern>,
    files: Vec<PathGlob>,
    ports: Vec<u16>,
    pipelines: bool,
    approval: Option<Approval>,
    break_glass: Option<BreakGlass>,
    limits: Limits,
}

impl Rule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Approval settings.
    pub fn approval(&self) -> Option<&Approval> {
        self.approval.as_ref()
    }
    /// Break-glass settings.
    pub fn break_glass(&self) -> Option<&BreakGlass> {
        self.break_glass.as_ref()
    }
    /// Command patterns (for lint and `help`).
    pub fn commands(&self) -> &[Pattern] {
        &self.commands
    }
    /// The `files` globs as written.
    pub fn file_globs(&self) -> Vec<&str> {
        self.files.iter().map(PathGlob::source).collect()
    }
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Rule indices by granted subject and namespace (`g:GROUP|NS`, `u:USER|*`), so a decision
    /// looks only at the rules that name the requester there.
    by_subject: std::collections::HashMap<String, Vec<usize>>,
}

fn at<T>(s: &Spanned<T>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        line: s.referenced.line(),
        column: s.referenced.column(),
        message: message.into(),
    }
}

/// A pod or container name glob; the common shapes (`*`, `name`, `prefix-*`) skip the regex.
#[derive(Debug, Clone)]
enum NameGlob {
    Any,
    Exact(String),
    Prefix(String),
    Glob(Box<GlobMatcher>),
}

impl NameGlob {
    fn is_match(&self, name: &str) -> bool {
        match self {
            NameGlob::Any => true,
            NameGlob::Exact(e) => e == name,
            NameGlob::Prefix(p) => name.starts_with(p.as_str()),
            NameGlob::Glob(g) => g.is_match(name),
        }
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
            let mut modes = BTreeSet::new();
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
            if modes.contains(&Mode::BreakGlass) && r.break_glass.is_none() {
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
            });
        }
        if errors.is_empty() {
            Ok(Policy::indexed(rules))
        } else {
            Err(PolicyErrors(errors))
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    fn indexed(rules: Vec<Rule>) -> Policy {
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

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// Where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Container.
    pub container: String,
}

/// What is asked for.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Run a command line.
    Command(&'a CommandLine),
    /// Read a file.
    Path(&'a str),
    /// Forward a port.
    Port(u16),
    /// Open a session (shell, attach, logs, break-glass).
    Session,
}

/// A request to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who.
    pub subject: &'a Subject,
    /// Where.
    pub target: &'a Target,
    /// Mode.
    pub mode: Mode,
    /// What.
    pub action: Action<'a>,
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Allowed once approved.
    NeedsApproval,
}

/// A decision with its rule and reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The effect.
    pub effect: Effect,
    /// The deciding rule.
    pub rule: Option<String>,
    /// Reasons, written for the person at the terminal.
    pub reasons: Vec<String>,
    stages: Vec<Vec<String>>,
    limits: Limits,
}

impl Decision {
    fn allow(rule: &Rule, stages: Vec<Vec<String>>) -> Decision {
        Decision {
            effect: Effect::Allow,
            rule: Some(rule.name.clone()),
            reasons: Vec::new(),
            stages,
            limits: rule.limits,
        }
    }
    fn deny(rule: Option<&Rule>, reason: String) -> Decision {
        Decision {
            effect: Effect::Deny,
            rule: rule.map(|r| r.name.clone()),
            reasons: vec![reason],
            stages: Vec::new(),
            limits: Limits::default(),
        }
    }
    /// A denial with no rule, e.g. for a refused command-line syntax. (Anyone may build a
    /// denial: it can never become a permit.)
    pub fn denied(reason: impl Into<String>) -> Decision {
        Decision::deny(None, reason.into())
    }
    /// The permit to act, when allowed; else the decision back.
    pub fn permit(self) -> Result<Permit, Decision> {
        match (self.effect, &self.rule) {
            (Effect::Allow, Some(rule)) => Ok(Permit {
                rule: rule.clone(),
                stages: self.stages,
                limits: self.limits,
            }),
            _ => Err(self),
        }
    }
}

/// Proof that a request was allowed. Only this crate constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    rule: String,
    stages: Vec<Vec<String>>,
    limits: Limits,
}

impl Permit {
    /// The argv of each stage to run (paths normalised), exactly as decided.
    pub fn stages(&self) -> &[Vec<String>] {
        &self.stages
    }
    /// The allowing rule.
    pub fn rule(&self) -> &str {
        &self.rule
    }
    /// The rule's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}
