//! Loading: YAML text → validated rules, every error with its line and column.
//!
//! The text is parsed once into a tree of positioned nodes (`yaml.rs`); the document is read
//! from it recording every structural error (unknown, repeated or missing keys, wrong types),
//! then every rule that could be read is validated (patterns, globs, modes, duplicate names,
//! approver groups), and all errors are returned together, in document order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use globset::Glob;
use serde_saphyr::{Location, Spanned};

use super::decide::RulePrograms;
use super::yaml::{self, Node, Reader, error_at, present};
use super::{
    Approval, AutoApprove, BreakGlass, Limits, Mode, Modes, NameGlob, Policy, PolicyError,
    PolicyErrors, Rule, TargetRule,
};
use crate::pattern::{Pattern, path_glob};

const DOC_KEYS: &[&str] = &["apiVersion", "kind", "rules"];
const RULE_KEYS: &[&str] = &[
    "name",
    "groups",
    "users",
    "targets",
    "modes",
    "commands",
    "deny",
    "approvalRequired",
    "files",
    "ports",
    "pipelines",
    "approval",
    "breakGlass",
    "limits",
    "requiresGrant",
    "maxGrant",
];
const TARGET_KEYS: &[&str] = &["namespaces", "pods", "containers", "labels"];
const APPROVAL_KEYS: &[&str] = &["approvers", "from", "autoApprove"];
const AUTO_APPROVE_KEYS: &[&str] = &["groups", "incident"];
const BREAK_GLASS_KEYS: &[&str] = &[
    "maxDuration",
    "incidentRequired",
    "certificateRequired",
    "notify",
];
const LIMITS_KEYS: &[&str] = &["maxSession", "idleTimeout", "recording"];

impl Policy {
    /// Parses and validates a policy document. Every error is reported at once, with line and
    /// column: unknown, repeated and missing keys, values of the wrong type, bad patterns and
    /// globs, unknown modes, duplicate rule names, approvers that name no granted group. Only
    /// text that is not YAML at all (say, an unclosed bracket) gives its one error alone.
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyErrors> {
        let root = yaml::parse(text).map_err(|e| PolicyErrors(vec![e]))?;
        let mut r = Reader::new(text);
        let doc = read_doc(&mut r, &root);
        let mut errors = r.errors;
        let rules = validate(doc, &mut errors);
        if errors.is_empty() {
            Ok(Policy::indexed(rules))
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(PolicyErrors(errors))
        }
    }
}

struct Doc {
    api_version: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    rules: Vec<RuleDoc>,
}

struct RuleDoc {
    /// Where the rule starts (for errors about the whole rule when it has no name).
    at: Location,
    name: Option<Spanned<String>>,
    groups: Vec<String>,
    users: Vec<String>,
    /// Whether `groups` or `users` had an error already reported (so "grants no one" would
    /// only repeat it).
    subjects_unreadable: bool,
    targets: Vec<TargetDoc>,
    modes: Vec<Spanned<String>>,
    commands: Vec<Spanned<String>>,
    deny: Vec<Spanned<String>>,
    approval_required: Vec<Spanned<String>>,
    files: Vec<Spanned<String>>,
    ports: Vec<u16>,
    pipelines: bool,
    approval: Option<ApprovalDoc>,
    break_glass: Option<BreakGlassDoc>,
    limits: LimitsDoc,
    requires_grant: bool,
    max_grant: Option<Duration>,
}

struct TargetDoc {
    namespaces: Vec<String>,
    pods: Vec<Spanned<String>>,
    containers: Vec<Spanned<String>>,
    labels: BTreeMap<String, String>,
}

struct ApprovalDoc {
    approvers: Option<u32>,
    from: Vec<Spanned<String>>,
    auto_groups: Vec<Spanned<String>>,
    auto_incident: bool,
}

struct BreakGlassDoc {
    max_duration: Option<Duration>,
    incident_required: bool,
    certificate_required: bool,
    notify: Vec<String>,
}

#[derive(Default)]
struct LimitsDoc {
    max_session: Option<Duration>,
    idle_timeout: Option<Duration>,
    recording: Option<bool>,
}

fn read_doc(r: &mut Reader<'_>, root: &Spanned<Node>) -> Doc {
    let mut doc = Doc {
        api_version: None,
        kind: None,
        rules: Vec::new(),
    };
    if !matches!(root.value, Node::Map(_)) {
        r.errors.push(error_at(
            &root.referenced,
            format!(
                "the policy must be a mapping with apiVersion, kind and rules, not {}",
                root.value.kind()
            ),
        ));
        return doc;
    }
    let Some(f) = r.map(root, "the policy", DOC_KEYS) else {
        return doc;
    };
    doc.api_version = r
        .required(&f, "apiVersion", "the policy")
        .and_then(|n| r.string(n, "`apiVersion`"));
    doc.kind = r
        .required(&f, "kind", "the policy")
        .and_then(|n| r.string(n, "`kind`"));
    let rules = r.list(f.get("rules"), "`rules`");
    doc.rules = rules.iter().filter_map(|n| read_rule(r, n)).collect();
    doc
}

fn read_rule(r: &mut Reader<'_>, n: &Spanned<Node>) -> Option<RuleDoc> {
    const RULE: &str = "a rule";
    let f = r.map(n, RULE, RULE_KEYS)?;
    let targets = r.required(&f, "targets", RULE);
    let targets = r.list(targets, "`targets`");
    let modes = r.required(&f, "modes", RULE);
    let strings = |r: &mut Reader<'_>, key: &str| {
        r.strings(f.get(key), &format!("`{key}`"))
            .into_iter()
            .map(|s| s.value)
            .collect()
    };
    let name = r
        .required(&f, "name", RULE)
        .and_then(|n| r.string(n, "`name`"));
    let before = r.errors.len();
    let groups = strings(r, "groups");
    let users = strings(r, "users");
    Some(RuleDoc {
        at: *f.at,
        name,
        groups,
        users,
        subjects_unreadable: r.errors.len() > before,
        targets: targets.iter().filter_map(|t| read_target(r, t)).collect(),
        modes: r.strings(modes, "`modes`"),
        commands: r.strings(f.get("commands"), "`commands`"),
        deny: r.strings(f.get("deny"), "`deny`"),
        approval_required: r.strings(f.get("approvalRequired"), "`approvalRequired`"),
        files: r.strings(f.get("files"), "`files`"),
        ports: r
            .list(f.get("ports"), "`ports`")
            .iter()
            .filter_map(|p| r.number(p, "each entry of `ports`", "a port number (0-65535)"))
            .collect(),
        pipelines: r.flag(f.get("pipelines"), "`pipelines`").unwrap_or(false),
        approval: present(f.get("approval")).and_then(|n| read_approval(r, n)),
        break_glass: present(f.get("breakGlass")).and_then(|n| read_break_glass(r, n)),
        limits: present(f.get("limits"))
            .and_then(|n| read_limits(r, n))
            .unwrap_or_default(),
        requires_grant: r
            .flag(f.get("requiresGrant"), "`requiresGrant`")
            .unwrap_or(false),
        max_grant: present(f.get("maxGrant")).and_then(|n| r.duration(Some(n), "`maxGrant`")),
    })
}

fn read_target(r: &mut Reader<'_>, n: &Spanned<Node>) -> Option<TargetDoc> {
    const TARGET: &str = "a target";
    let f = r.map(n, TARGET, TARGET_KEYS)?;
    let namespaces = r.required(&f, "namespaces", TARGET);
    let mut labels = BTreeMap::new();
    for (k, v) in r.string_map(f.get("labels"), "`labels`") {
        if labels.insert(k.value.clone(), v).is_some() {
            r.errors.push(error_at(
                &k.referenced,
                format!("repeated label {:?}", k.value),
            ));
        }
    }
    Some(TargetDoc {
        namespaces: r
            .strings(namespaces, "`namespaces`")
            .into_iter()
            .map(|s| s.value)
            .collect(),
        pods: r.strings(f.get("pods"), "`pods`"),
        containers: r.strings(f.get("containers"), "`containers`"),
        labels,
    })
}

fn read_approval(r: &mut Reader<'_>, n: &Spanned<Node>) -> Option<ApprovalDoc> {
    const APPROVAL: &str = "`approval`";
    let f = r.map(n, APPROVAL, APPROVAL_KEYS)?;
    let approvers = r
        .required(&f, "approvers", APPROVAL)
        .and_then(|n| r.number(n, "`approvers`", "a whole number"));
    let from = r.required(&f, "from", APPROVAL);
    let from = r.strings(from, "`from`");
    let (mut auto_groups, mut auto_incident) = (Vec::new(), false);
    if let Some(a) = present(f.get("autoApprove"))
        && let Some(af) = r.map(a, "`autoApprove`", AUTO_APPROVE_KEYS)
    {
        auto_groups = r.strings(af.get("groups"), "`autoApprove.groups`");
        auto_incident = r
            .flag(af.get("incident"), "`autoApprove.incident`")
            .unwrap_or(false);
    }
    Some(ApprovalDoc {
        approvers,
        from,
        auto_groups,
        auto_incident,
    })
}

fn read_break_glass(r: &mut Reader<'_>, n: &Spanned<Node>) -> Option<BreakGlassDoc> {
    const BREAK_GLASS: &str = "`breakGlass`";
    let f = r.map(n, BREAK_GLASS, BREAK_GLASS_KEYS)?;
    let max = r.required(&f, "maxDuration", BREAK_GLASS);
    Some(BreakGlassDoc {
        max_duration: r.duration(max, "`maxDuration`"),
        incident_required: r
            .flag(f.get("incidentRequired"), "`incidentRequired`")
            .unwrap_or(true),
        certificate_required: r
            .flag(f.get("certificateRequired"), "`certificateRequired`")
            .unwrap_or(false),
        notify: r
            .strings(f.get("notify"), "`notify`")
            .into_iter()
            .map(|s| s.value)
            .collect(),
    })
}

fn read_limits(r: &mut Reader<'_>, n: &Spanned<Node>) -> Option<LimitsDoc> {
    let f = r.map(n, "`limits`", LIMITS_KEYS)?;
    Some(LimitsDoc {
        max_session: r.duration(present(f.get("maxSession")), "`maxSession`"),
        idle_timeout: r.duration(present(f.get("idleTimeout")), "`idleTimeout`"),
        recording: r.flag(present(f.get("recording")), "`recording`"),
    })
}

fn at<T>(s: &Spanned<T>, message: impl Into<String>) -> PolicyError {
    error_at(&s.referenced, message)
}

/// The semantic checks, on every rule that could be read.
fn validate(doc: Doc, errors: &mut Vec<PolicyError>) -> Vec<Rule> {
    if let Some(v) = &doc.api_version
        && v.value != "jitsh.dev/v1alpha1"
    {
        errors.push(at(
            v,
            format!("apiVersion must be jitsh.dev/v1alpha1, not {:?}", v.value),
        ));
    }
    if let Some(k) = &doc.kind
        && k.value != "Policy"
    {
        errors.push(at(k, format!("kind must be Policy, not {:?}", k.value)));
    }
    let mut names = BTreeSet::new();
    let all_groups: BTreeSet<&str> = doc
        .rules
        .iter()
        .flat_map(|r| r.groups.iter().map(String::as_str))
        .collect();
    let mut rules = Vec::new();
    for r in &doc.rules {
        // Errors about the whole rule point at its name, or where it starts.
        let rule_at = |message: &str| match &r.name {
            Some(n) => at(n, message),
            None => error_at(&r.at, message),
        };
        if let Some(n) = &r.name
            && !names.insert(n.value.as_str())
        {
            errors.push(at(n, format!("duplicate rule name {:?}", n.value)));
        }
        if r.groups.is_empty() && r.users.is_empty() && !r.subjects_unreadable {
            errors.push(rule_at("a rule must grant at least one group or user"));
        }
        let mut modes = Modes::default();
        for m in &r.modes {
            match Mode::parse(&m.value) {
                Some(mode) => modes.insert(mode),
                None => errors.push(at(
                    m,
                    format!(
                        "unknown mode {:?} (exec, shell, logs, files, attach, port-forward, break-glass)",
                        m.value
                    ),
                )),
            }
        }
        let mut pats = |list: &[Spanned<String>]| -> Vec<Pattern> {
            list.iter()
                .filter_map(|p| {
                    Pattern::parse(&p.value)
                        .map_err(|e| errors.push(at(p, format!("bad pattern {:?}: {e}", p.value))))
                        .ok()
                })
                .collect()
        };
        let commands = pats(&r.commands);
        let deny = pats(&r.deny);
        let approval_required = pats(&r.approval_required);
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
                pods: t.pods.iter().filter_map(|p| glob(p, errors)).collect(),
                containers: t
                    .containers
                    .iter()
                    .filter_map(|c| glob(c, errors))
                    .collect(),
                labels: t.labels.clone(),
            })
            .collect();
        let approval = r.approval.as_ref().map(|a| {
            for g in &a.from {
                if !all_groups.contains(g.value.as_str()) {
                    errors.push(at(
                        g,
                        format!("approvers group {:?} is not granted by any rule", g.value),
                    ));
                }
            }
            if a.approvers == Some(0) {
                errors.push(rule_at("approval.approvers must be at least 1"));
            }
            Approval {
                approvers: a.approvers.unwrap_or(0),
                from: a.from.iter().map(|g| g.value.clone()).collect(),
                auto_approve: AutoApprove {
                    groups: a.auto_groups.iter().map(|g| g.value.clone()).collect(),
                    incident: a.auto_incident,
                },
            }
        });
        if r.requires_grant && approval.is_none() {
            errors.push(rule_at(
                "requiresGrant needs an approval block naming who approves grants",
            ));
        }
        if r.max_grant.is_some() && !r.requires_grant {
            errors.push(rule_at(
                "maxGrant applies only to a rule with requiresGrant: true",
            ));
        }
        if !r.approval_required.is_empty() && approval.is_none() {
            errors.push(rule_at(
                "approvalRequired needs an approval block naming the approvers",
            ));
        }
        if modes.contains(Mode::BreakGlass) && r.break_glass.is_none() {
            errors.push(rule_at("mode break-glass needs a breakGlass block"));
        }
        let d = Limits::default();
        rules.push(Rule {
            name: r.name.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
            groups: r.groups.clone(),
            users: r.users.clone(),
            targets,
            modes,
            commands,
            deny,
            approval_required,
            files,
            ports: r.ports.clone(),
            pipelines: r.pipelines,
            approval,
            break_glass: r.break_glass.as_ref().map(|b| BreakGlass {
                max_duration: b.max_duration.unwrap_or_default(),
                incident_required: b.incident_required,
                certificate_required: b.certificate_required,
                notify: b.notify.clone(),
            }),
            limits: Limits {
                max_session: r.limits.max_session.unwrap_or(d.max_session),
                idle_timeout: r.limits.idle_timeout.unwrap_or(d.idle_timeout),
                recording: r.limits.recording.unwrap_or(d.recording),
            },
            requires_grant: r.requires_grant,
            max_grant: r.max_grant.unwrap_or(DEFAULT_MAX_GRANT),
            ids: RulePrograms::default(),
        });
    }
    rules
}

/// The longest grant of a grant-only rule without `maxGrant`.
const DEFAULT_MAX_GRANT: Duration = Duration::from_secs(3600);

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
