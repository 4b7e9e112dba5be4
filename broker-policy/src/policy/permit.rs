//! Permits: proof that the policy allowed one request, naming who asked, where, in which mode
//! and exactly what. Only [`Policy`]'s `permit_*` methods build one; every Kubernetes call the
//! gateway makes takes the permit of its mode, so a call nobody decided does not compile.
//!
//! The legitimate route:
//!
//! ```
//! use jitsh_broker_policy::{Policy, Subject, Target, parse_command_line};
//! let policy = Policy::from_yaml(
//!     "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:\n- name: read-logs\n  groups: [sre]\n  \
//!      targets: [{namespaces: [payments]}]\n  modes: [exec]\n  \
//!      commands: ['tail -n <int> <path:/var/log/**>']\n",
//! ).unwrap();
//! let alice = Subject { user: "alice".into(), groups: vec!["sre".into()], grants: Vec::new() };
//! let pod = Target { namespace: "payments".into(), pod: "api-0".into(),
//!     labels: Default::default(), container: "app".into() };
//! let line = parse_command_line("tail -n 5 /var/log/app.log").unwrap();
//! let permit = policy.permit_exec(&alice, &pod, &line).unwrap();
//! assert_eq!(permit.stages(), [["tail", "-n", "5", "/var/log/app.log"]]);
//! assert_eq!(permit.target().pod, "api-0");
//! assert!(policy.permit_port(&alice, &pod, 8080).is_err());
//! ```
//!
//! A permit cannot be written by hand:
//!
//! ```compile_fail
//! use jitsh_broker_policy::{ExecPermit, Permit};
//! fn forged(p: &ExecPermit) -> ExecPermit {
//!     Permit { rule: "anything".into(), ..p.clone() } // private fields
//! }
//! ```
//!
//! nor turned from one mode into another:
//!
//! ```compile_fail
//! use jitsh_broker_policy::{ExecPermit, FilePermit};
//! fn widen(p: ExecPermit) -> FilePermit {
//!     p // a permit to run a command is not a permit to read a file
//! }
//! ```

use std::fmt;

use super::approval::{Approvals, Principal};
use super::{
    Action, BreakGlassAsk, Decision, Effect, Limits, Mode, Policy, Request, Subject, Target,
};
use crate::command_line::CommandLine;
use crate::pattern::normalize_path;

mod sealed {
    pub trait Sealed {}
}

/// What one kind of permit allows. Sealed: the kinds are the ones below.
pub trait Kind: sealed::Sealed + fmt::Debug + Clone + Send + Sync + 'static {
    /// The mode the permit was decided in.
    const MODE: Mode;
    /// The action it was decided on (to decide it again after a reload).
    fn action(&self) -> Action<'_>;
    /// Whether `d`, the same request decided again under `policy`, still allows it.
    fn stands(&self, policy: &Policy, d: &Decision) -> bool {
        let _ = policy;
        d.effect == Effect::Allow
    }
}

/// An exec permit: one command line, the argv of each stage as decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    line: CommandLine,
    stages: Vec<Vec<String>>,
    /// Per stage, the indexes of the arguments a `<path:…>` matched.
    paths: Vec<Vec<usize>>,
    approved: Option<Approved>,
}

/// What a command that needed approval was approved with (kept to decide it again).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Approved {
    requester: Principal,
    target: Target,
    approvals: Vec<Principal>,
    incident: Option<String>,
}

impl Exec {
    pub(super) fn approved(
        line: CommandLine,
        stages: Vec<Vec<String>>,
        paths: Vec<Vec<usize>>,
        asked: &Approvals<'_>,
    ) -> Exec {
        Exec {
            line,
            stages,
            paths,
            approved: Some(Approved {
                requester: asked.requester.clone(),
                target: asked.target.clone(),
                approvals: asked.approvals.to_vec(),
                incident: asked.incident.map(str::to_owned),
            }),
        }
    }
}

/// A permit to resolve a command line's path arguments in the container (`realpath`), so the
/// command can be decided on where its paths really lead: issued for a line a rule matches
/// (allowed, or allowed once approved), naming exactly the arguments its `<path:…>` matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    line: CommandLine,
    /// `(stage, index, path)` of each path argument, as decided (normalised).
    paths: Vec<(usize, usize, String)>,
}

/// A file permit: one normalised absolute path to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    path: String,
}

/// A port-forward permit: one container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    port: u16,
}

/// A permit to read the container's log (pods/log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logs {
    _private: (),
}

/// A permit to attach to the container's main process (pods/attach).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    _private: (),
}

/// A permit to open the filtered prompt (each line is then decided on its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    _private: (),
}

/// A break-glass permit: an unrestricted shell, with the facts that were required for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassShell {
    incident: Option<String>,
    reason: String,
    certificate: bool,
    notify: Vec<String>,
}

macro_rules! session_kind {
    ($($t:ident => $mode:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Kind for $t {
            const MODE: Mode = Mode::$mode;
            fn action(&self) -> Action<'_> {
                Action::Session
            }
        }
    )*};
}
session_kind!(Logs => Logs, Attach => Attach, Shell => Shell);

impl sealed::Sealed for Exec {}
impl Kind for Exec {
    const MODE: Mode = Mode::Exec;
    fn action(&self) -> Action<'_> {
        Action::Command(&self.line)
    }
    fn stands(&self, policy: &Policy, d: &Decision) -> bool {
        match &self.approved {
            None => d.effect == Effect::Allow,
            Some(a) => policy.approval_stands(
                d,
                &self.stages,
                &Approvals {
                    requester: &a.requester,
                    target: &a.target,
                    stages: &self.stages,
                    approvals: &a.approvals,
                    incident: a.incident.as_deref(),
                },
            ),
        }
    }
}

impl sealed::Sealed for Resolve {}
impl Kind for Resolve {
    const MODE: Mode = Mode::Exec;
    fn action(&self) -> Action<'_> {
        Action::Command(&self.line)
    }
}

impl sealed::Sealed for File {}
impl Kind for File {
    const MODE: Mode = Mode::Files;
    fn action(&self) -> Action<'_> {
        Action::Path(&self.path)
    }
}

impl sealed::Sealed for Port {}
impl Kind for Port {
    const MODE: Mode = Mode::PortForward;
    fn action(&self) -> Action<'_> {
        Action::Port(self.port)
    }
}

impl sealed::Sealed for BreakGlassShell {}
impl Kind for BreakGlassShell {
    const MODE: Mode = Mode::BreakGlass;
    fn action(&self) -> Action<'_> {
        Action::BreakGlass(BreakGlassAsk {
            incident: self.incident.as_deref(),
            reason: Some(&self.reason),
            certificate: self.certificate,
        })
    }
}

/// Proof that the policy allowed one request: who, where, which rule and limits, and what
/// (`K`). Built only by [`Policy`]'s `permit_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit<K> {
    subject: Subject,
    target: Target,
    rule: String,
    limits: Limits,
    what: K,
}

/// Runs one decided command line.
pub type ExecPermit = Permit<Exec>;
/// Reads one file.
pub type FilePermit = Permit<File>;
/// Resolves a command line's path arguments in the container.
pub type ResolvePermit = Permit<Resolve>;
/// Forwards one port.
pub type PortPermit = Permit<Port>;
/// Reads the container's log.
pub type LogsPermit = Permit<Logs>;
/// Attaches to the main process.
pub type AttachPermit = Permit<Attach>;
/// Opens the filtered prompt.
pub type ShellPermit = Permit<Shell>;
/// Opens a break-glass shell.
pub type BreakGlassPermit = Permit<BreakGlassShell>;

impl<K: Kind> Permit<K> {
    /// Who it was issued to.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }
    /// The pod and container it is for.
    pub fn target(&self) -> &Target {
        &self.target
    }
    /// The allowing rule.
    pub fn rule(&self) -> &str {
        &self.rule
    }
    /// The rule's limits (for break-glass, the longest session is its `maxDuration`).
    pub fn limits(&self) -> Limits {
        self.limits
    }
    /// The mode it was decided in.
    pub fn mode(&self) -> Mode {
        K::MODE
    }
}

impl Permit<Exec> {
    /// The argv of each stage to run (paths normalised), exactly as decided.
    pub fn stages(&self) -> &[Vec<String>] {
        &self.what.stages
    }
    /// Whether it was issued on approvals (a command that needed approval).
    pub fn is_approved(&self) -> bool {
        self.what.approved.is_some()
    }
    /// An approved command's permit (built only by `Policy::permit_approved_exec`).
    pub(super) fn approved(
        subject: Subject,
        target: Target,
        rule: String,
        limits: Limits,
        what: Exec,
    ) -> Self {
        Permit {
            subject,
            target,
            rule,
            limits,
            what,
        }
    }
}

impl Permit<Resolve> {
    /// The path arguments to resolve: `(stage, index, path)`.
    pub fn paths(&self) -> &[(usize, usize, String)] {
        &self.what.paths
    }
    /// The line as decided (program paths and path arguments normalised).
    pub fn decided(&self) -> &CommandLine {
        &self.what.line
    }
}

impl Permit<File> {
    /// The normalised absolute path it allows reading.
    pub fn path(&self) -> &str {
        &self.what.path
    }
}

impl Permit<Port> {
    /// The container port it allows forwarding to.
    pub fn port(&self) -> u16 {
        self.what.port
    }
}

impl Permit<BreakGlassShell> {
    /// The incident given.
    pub fn incident(&self) -> Option<&str> {
        self.what.incident.as_deref()
    }
    /// The reason given.
    pub fn reason(&self) -> &str {
        &self.what.reason
    }
    /// The webhooks the rule says to notify.
    pub fn notify(&self) -> &[String] {
        &self.what.notify
    }
}

/// Something allowed that must stay allowed: decided again whenever the policy or the
/// subject's grants change.
pub trait Recheck: Send + Sync {
    /// Decides the same request again under `policy`, with the grants the subject holds now:
    /// `Ok` while it is still allowed, else the new decision.
    fn recheck(&self, policy: &Policy, grants: &[String]) -> Result<(), Decision>;
    /// The subject it was issued to (whose grants to look up).
    fn holder(&self) -> &Subject;
}

impl<K: Kind> Recheck for Permit<K> {
    fn holder(&self) -> &Subject {
        &self.subject
    }
    fn recheck(&self, policy: &Policy, grants: &[String]) -> Result<(), Decision> {
        let subject = Subject {
            grants: grants.to_vec(),
            ..self.subject.clone()
        };
        let d = policy.decide(&Request {
            subject: &subject,
            target: &self.target,
            mode: K::MODE,
            action: self.what.action(),
        });
        if self.what.stands(policy, &d) {
            Ok(())
        } else {
            Err(d)
        }
    }
}

impl Policy {
    fn issue<K>(
        &self,
        subject: &Subject,
        target: &Target,
        mode: Mode,
        action: Action<'_>,
        what: impl FnOnce(Vec<Vec<String>>, Vec<Vec<usize>>) -> K,
    ) -> Result<Permit<K>, Decision> {
        match self.decide(&Request {
            subject,
            target,
            mode,
            action,
        }) {
            Decision {
                effect: Effect::Allow,
                rule: Some(rule),
                stages,
                limits,
                paths,
                ..
            } => Ok(Permit {
                subject: subject.clone(),
                target: target.clone(),
                rule,
                limits: *limits,
                what: what(stages, paths),
            }),
            d => Err(d),
        }
    }

    /// Decides a command line; the permit holds the argv of each stage as decided.
    pub fn permit_exec(
        &self,
        subject: &Subject,
        target: &Target,
        line: &CommandLine,
    ) -> Result<ExecPermit, Decision> {
        self.issue(
            subject,
            target,
            Mode::Exec,
            Action::Command(line),
            |stages, paths| Exec {
                line: line.clone(),
                stages,
                paths,
                approved: None,
            },
        )
    }

    /// The permit to resolve `line`'s path arguments in the container before deciding it for
    /// good; `None` when the line has none, or no rule matches it (allowed or once approved).
    pub fn permit_resolve(
        &self,
        subject: &Subject,
        target: &Target,
        line: &CommandLine,
    ) -> Option<ResolvePermit> {
        let d = self.decide(&Request {
            subject,
            target,
            mode: Mode::Exec,
            action: Action::Command(line),
        });
        if d.effect == Effect::Deny {
            return None;
        }
        let mut paths = Vec::new();
        for (s, (argv, idx)) in d.stages.iter().zip(&d.paths).enumerate() {
            for &i in idx {
                if let Some(a) = argv.get(i) {
                    paths.push((s, i, a.clone()));
                }
            }
        }
        if paths.is_empty() {
            return None;
        }
        Some(Permit {
            subject: subject.clone(),
            target: target.clone(),
            rule: d.rule.unwrap_or_default(),
            limits: *d.limits,
            what: Resolve {
                line: CommandLine::from_stages(d.stages),
                paths,
            },
        })
    }

    /// Decides reading one file; the permit holds the normalised path.
    pub fn permit_file(
        &self,
        subject: &Subject,
        target: &Target,
        path: &str,
    ) -> Result<FilePermit, Decision> {
        self.issue(
            subject,
            target,
            Mode::Files,
            Action::Path(path),
            |stages, _| {
                let decided = stages.into_iter().flatten().next();
                File {
                    path: decided
                        .or_else(|| normalize_path(path))
                        .unwrap_or_else(|| path.to_owned()),
                }
            },
        )
    }

    /// Decides forwarding to one container port.
    pub fn permit_port(
        &self,
        subject: &Subject,
        target: &Target,
        port: u16,
    ) -> Result<PortPermit, Decision> {
        self.issue(
            subject,
            target,
            Mode::PortForward,
            Action::Port(port),
            |_, _| Port { port },
        )
    }

    /// Decides reading the container's log.
    pub fn permit_logs(&self, subject: &Subject, target: &Target) -> Result<LogsPermit, Decision> {
        self.issue(subject, target, Mode::Logs, Action::Session, |_, _| Logs {
            _private: (),
        })
    }

    /// Decides attaching to the container's main process.
    pub fn permit_attach(
        &self,
        subject: &Subject,
        target: &Target,
    ) -> Result<AttachPermit, Decision> {
        self.issue(subject, target, Mode::Attach, Action::Session, |_, _| {
            Attach { _private: () }
        })
    }

    /// Decides opening the filtered prompt.
    pub fn permit_shell(
        &self,
        subject: &Subject,
        target: &Target,
    ) -> Result<ShellPermit, Decision> {
        self.issue(subject, target, Mode::Shell, Action::Session, |_, _| {
            Shell { _private: () }
        })
    }

    /// Decides a break-glass shell: the rule's requirements (reason, incident, break-glass
    /// certificate) are checked here, and its `maxDuration` becomes the longest session.
    pub fn permit_break_glass(
        &self,
        subject: &Subject,
        target: &Target,
        ask: BreakGlassAsk<'_>,
    ) -> Result<BreakGlassPermit, Decision> {
        let mut permit = self.issue(
            subject,
            target,
            Mode::BreakGlass,
            Action::BreakGlass(ask),
            |_, _| BreakGlassShell {
                incident: ask
                    .incident
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                reason: ask.reason.map(str::trim).unwrap_or_default().to_owned(),
                certificate: ask.certificate,
                notify: Vec::new(),
            },
        )?;
        permit.what.notify = self
            .rules()
            .iter()
            .find(|r| r.name() == permit.rule)
            .and_then(|r| r.break_glass())
            .map(|b| b.notify.clone())
            .unwrap_or_default();
        Ok(permit)
    }
}
