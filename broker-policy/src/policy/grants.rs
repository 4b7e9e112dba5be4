//! What a policy grants one subject, for `whoami` and `pods`.

use super::{Mode, Policy, Subject};

/// One rule's grant to a subject, as written in the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The rule's name.
    pub rule: String,
    /// Namespaces it targets (`*` for all).
    pub namespaces: Vec<String>,
    /// Modes it grants.
    pub modes: Vec<Mode>,
    /// Command patterns as written.
    pub commands: Vec<String>,
    /// File globs as written.
    pub files: Vec<String>,
    /// Ports for port-forward.
    pub ports: Vec<u16>,
    /// A grant-only rule: in effect only under an approved grant (`held` says whether the
    /// subject holds one now).
    pub requires_grant: bool,
    /// Whether the subject holds a grant for it (always true for other rules).
    pub held: bool,
}

impl Policy {
    /// The rules that name the subject (by user or group), in policy order.
    pub fn grants(&self, subject: &Subject) -> Vec<Grant> {
        self.rules
            .iter()
            .filter(|r| {
                r.users.contains(&subject.user)
                    || r.groups.iter().any(|g| subject.groups.contains(g))
            })
            .map(|r| {
                let mut namespaces: Vec<String> = r
                    .targets
                    .iter()
                    .flat_map(|t| t.namespaces.iter().cloned())
                    .collect();
                namespaces.sort();
                namespaces.dedup();
                Grant {
                    rule: r.name.clone(),
                    namespaces,
                    modes: [
                        Mode::Exec,
                        Mode::Shell,
                        Mode::Logs,
                        Mode::Files,
                        Mode::Attach,
                        Mode::PortForward,
                        Mode::BreakGlass,
                    ]
                    .into_iter()
                    .filter(|m| r.modes.contains(*m))
                    .collect(),
                    commands: r.commands.iter().map(|p| p.source().to_owned()).collect(),
                    files: r.file_globs().into_iter().map(str::to_owned).collect(),
                    ports: r.ports.clone(),
                    requires_grant: r.requires_grant,
                    held: super::decide::holds(subject, r),
                }
            })
            .collect()
    }
}
