//! Policy documents: YAML → validated rules (every error with line and column) → decisions.
//! Loading lives in `policy/load.rs` (on the YAML tree of `policy/yaml.rs`), evaluation in
//! `policy/decide.rs`.

mod decide;
mod load;
pub mod permit;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use globset::GlobMatcher;

use crate::command_line::CommandLine;
use crate::pattern::{PathGlob, Pattern};

mod approval;
mod grants;
pub use approval::{ApprovalRefused, Approvals, Principal};
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

/// A set of modes, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Modes(u8);

impl Modes {
    fn insert(&mut self, m: Mode) {
        self.0 |= 1 << (m as u8);
    }
    fn contains(self, m: Mode) -> bool {
        self.0 & (1 << (m as u8)) != 0
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
    /// How many distinct approvers.
    pub approvers: u32,
    /// From which groups (never the requester).
    pub from: Vec<String>,
    /// When a request needs no one: recorded as auto-approved with the condition that matched.
    pub auto_approve: AutoApprove,
}

/// `autoApprove`: conditions under which a request is approved as soon as it is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoApprove {
    /// The requester is a member of one of these groups.
    pub groups: Vec<String>,
    /// The request names an incident.
    pub incident: bool,
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
    modes: Modes,
    commands: Vec<Pattern>,
    deny: Vec<Pattern>,
    approval_required: Vec<Pattern>,
    files: Vec<PathGlob>,
    ports: Vec<u16>,
    pipelines: bool,
    approval: Option<Approval>,
    break_glass: Option<BreakGlass>,
    limits: Limits,
    /// In effect for a subject only while they hold an approved grant for it.
    requires_grant: bool,
    /// The longest grant.
    max_grant: Duration,
    /// The interned program of each `commands`, `deny` and `approvalRequired` pattern, in the
    /// same order, and the sorted distinct programs of `commands` (set by `Policy::indexed`).
    ids: decide::RulePrograms,
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
    /// Whether the rule is in effect only under an approved grant.
    pub fn requires_grant(&self) -> bool {
        self.requires_grant
    }
    /// The longest grant of a grant-only rule.
    pub fn max_grant(&self) -> Duration {
        self.max_grant
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
    /// Which rules name which subject in which namespace, and the programs the rules name, so a
    /// decision looks only at the rules that name the requester there.
    index: decide::Index,
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

impl Policy {
    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Who asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// The grant-only rules (`requiresGrant`) the subject holds an approved, unexpired grant
    /// for; the gateway reads them from the broker and the policy counts their approvals
    /// ([`Policy::grant_stands`]) before they go here.
    pub grants: Vec<String>,
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
    /// Open a session (shell, attach, logs).
    Session,
    /// Open a break-glass shell, with the facts its rule may require.
    BreakGlass(BreakGlassAsk<'a>),
}

/// What a break-glass request states: its rule decides whether that is enough.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakGlassAsk<'a> {
    /// The incident id given (`--incident`).
    pub incident: Option<&'a str>,
    /// The reason given (`--reason`).
    pub reason: Option<&'a str>,
    /// Whether the certificate carries the `break-glass@jitsh.dev` extension.
    pub certificate: bool,
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

/// A decision with its rule and reasons. Its fields are private: only this crate decides, and
/// only [`Policy`]'s `permit_*` methods turn an allowing decision into a [`Permit`].
///
/// A denial cannot be made into a permit:
///
/// ```compile_fail
/// use jitsh_broker_policy::{Decision, Effect, Permit, permit::Exec};
/// let mut d = Decision::denied("no");
/// d.effect = Effect::Allow; // private field
/// ```
///
/// ```compile_fail
/// use jitsh_broker_policy::{Decision, Permit, permit::Exec};
/// let p: Permit<Exec> = Decision::denied("no").permit(); // no such method
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    effect: Effect,
    rule: Option<String>,
    reasons: Vec<String>,
    stages: Vec<Vec<String>>,
    limits: Box<Limits>,
    fact: Fact,
    /// Per stage, the indexes of the arguments a `<path:…>` matched.
    paths: Vec<Vec<usize>>,
}

/// What kind of denial a decision is, for how it is shown (never read off its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fact {
    /// A plain decision.
    Plain,
    /// The reasons already name the deciding rule.
    NamesRule,
    /// A command line that did not parse: nothing was decided.
    RefusedSyntax,
    /// The rule applies, but the request lacks what it requires (break-glass facts).
    Unmet,
}

impl Decision {
    fn allow(rule: &Rule, stages: Vec<Vec<String>>) -> Decision {
        Decision {
            effect: Effect::Allow,
            rule: Some(rule.name.clone()),
            reasons: Vec::new(),
            stages,
            limits: Box::new(rule.limits),
            fact: Fact::Plain,
            paths: Vec::new(),
        }
    }
    fn deny(rule: Option<&Rule>, reason: String) -> Decision {
        Decision {
            effect: Effect::Deny,
            rule: rule.map(|r| r.name.clone()),
            reasons: vec![reason],
            stages: Vec::new(),
            limits: Box::default(),
            fact: Fact::Plain,
            paths: Vec::new(),
        }
    }
    /// A denial whose reason already names its rule.
    fn deny_naming(rule: Option<&Rule>, reason: String) -> Decision {
        Decision {
            fact: Fact::NamesRule,
            ..Decision::deny(rule, reason)
        }
    }
    /// A denial by a rule that applies but whose requirements the request does not meet.
    fn unmet(rule: &Rule, reason: String) -> Decision {
        Decision {
            fact: Fact::Unmet,
            ..Decision::deny(Some(rule), reason)
        }
    }
    /// A denial with no rule. (Anyone may build a denial: it can never become a permit.)
    pub fn denied(reason: impl Into<String>) -> Decision {
        Decision::deny(None, reason.into())
    }
    /// The denial of a command line that did not parse (nothing was decided or run).
    pub fn refused_syntax(e: &crate::SyntaxError) -> Decision {
        Decision {
            fact: Fact::RefusedSyntax,
            ..Decision::deny(None, format!("refused: {e}"))
        }
    }
    /// The effect.
    pub fn effect(&self) -> Effect {
        self.effect
    }
    /// The deciding rule, if one decided.
    pub fn rule(&self) -> Option<&str> {
        self.rule.as_deref()
    }
    /// Reasons, written for the person at the terminal.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
    /// The argv of each stage as decided (empty unless allowed).
    pub fn stages(&self) -> &[Vec<String>] {
        match self.effect {
            Effect::Allow => &self.stages,
            _ => &[],
        }
    }
    /// A command that needs approval: the argv of each stage as it would run once approved (what
    /// an approval request names). Empty for every other decision.
    pub fn held_stages(&self) -> &[Vec<String>] {
        match self.effect {
            // Held back until the approvals are shown (`Policy::permit_approved_exec`).
            Effect::NeedsApproval => &self.stages,
            _ => &[],
        }
    }
    /// The deciding rule's limits.
    pub fn limits(&self) -> Limits {
        *self.limits
    }
    /// A command line that did not parse: nothing was decided.
    pub fn is_refused_syntax(&self) -> bool {
        self.fact == Fact::RefusedSyntax
    }
    /// The reasons already name the deciding rule.
    pub fn reasons_name_rule(&self) -> bool {
        self.fact == Fact::NamesRule
    }
    /// The rule applies, but the request lacks what it requires (a break-glass reason,
    /// incident or certificate): the user is told what to add.
    pub fn is_unmet_requirement(&self) -> bool {
        self.fact == Fact::Unmet
    }
}
