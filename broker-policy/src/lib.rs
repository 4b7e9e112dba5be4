//! jitsh-broker-policy: policy documents, command-line parsing and decisions with reasons.
//! Pure library: no I/O, no Kubernetes, no SSH.
//!
mod command_line;
mod lint;
mod pattern;
mod policy;

pub use command_line::{
    CommandLine, MAX_ARGS, MAX_LINE_BYTES, SyntaxError, parse_command_line,
    parse_command_line_bytes, quote,
};
pub use lint::{Finding, lint};
pub use pattern::{Pattern, normalize_path};
pub use policy::permit::{
    self, AttachPermit, BreakGlassPermit, ExecPermit, FilePermit, LogsPermit, Permit, PortPermit,
    Recheck, ResolvePermit, ShellPermit,
};
pub use policy::{
    Action, Approval, ApprovalRefused, Approvals, AutoApprove, BreakGlass, BreakGlassAsk, Decision,
    Effect, Grant, Limits, Mode, Policy, PolicyError, PolicyErrors, Principal, Request, Rule,
    Subject, Target,
};
