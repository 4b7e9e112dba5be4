//! Lint: risky grants, from a curated table of programs with shell escapes or command
//! execution, secret readers and unbounded patterns.

use crate::policy::Policy;

/// Programs that can run other programs or spawn shells, with why.
const ESCAPES: &[(&str, &str)] = &[
    ("less", "'!' runs a shell"),
    ("more", "'!' runs a shell"),
    ("man", "runs a pager with shell escapes"),
    ("vi", "':!' runs a shell"),
    ("vim", "':!' runs a shell"),
    ("nano", "can run commands"),
    ("find", "-exec/-execdir/-ok run commands"),
    ("xargs", "runs commands"),
    ("awk", "system() runs commands"),
    ("gawk", "system() runs commands"),
    ("sed", "the e and w commands run/write"),
    ("perl", "an interpreter"),
    ("python", "an interpreter"),
    ("python3", "an interpreter"),
    ("ruby", "an interpreter"),
    ("node", "an interpreter"),
    ("lua", "an interpreter"),
    ("sh", "a shell"),
    ("bash", "a shell"),
    ("tar", "--to-command/--checkpoint-action run commands"),
    ("zip", "-T with -TT runs commands"),
    ("git", "-c core.pager/alias runs commands"),
    ("env", "runs any program and prints secrets"),
    ("nice", "runs any program"),
    ("timeout", "runs any program"),
    ("nohup", "runs any program"),
    ("stdbuf", "runs any program"),
    ("busybox", "contains a shell"),
    ("ssh", "remote commands and tunnels"),
    ("nc", "network shells"),
    ("socat", "network shells and exec"),
    ("curl", "-o writes files"),
    ("wget", "-O writes files"),
    ("tee", "writes files"),
    ("dd", "of= writes files"),
    ("printenv", "prints secrets"),
];

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: String,
    /// What is risky.
    pub message: String,
}

/// Lints a policy.
pub fn lint(policy: &Policy) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in policy.rules() {
        for p in r.commands() {
            if let Some((_, why)) = ESCAPES.iter().find(|(name, _)| *name == p.program()) {
                out.push(Finding {
                    rule: r.name().to_owned(),
                    message: format!("'{}' grants {} ({why})", p.source(), p.program()),
                });
            }
            if p.has_optional_path() {
                out.push(Finding {
                    rule: r.name().to_owned(),
                    message: format!(
                        "'{}' makes a path optional: without it the program works on the working directory (often the container's root), outside the glob",
                        p.source()
                    ),
                });
            }
            if p.has_rest() {
                out.push(Finding {
                    rule: r.name().to_owned(),
                    message: format!("'{}' ends in '...': any arguments are allowed", p.source()),
                });
            }
            if p.source().contains("/proc/")
                || p.source().contains("/var/run/secrets")
                || p.source().contains("<path:/**>")
                || p.source().contains("<path:/*")
            {
                out.push(Finding {
                    rule: r.name().to_owned(),
                    message: format!("'{}' can read secrets or the whole filesystem", p.source()),
                });
            }
        }
        for f in r.file_globs() {
            if f == "/**"
                || f.starts_with("/proc")
                || f.starts_with("/var/run/secrets")
                || f.starts_with("/run/secrets")
            {
                out.push(Finding {
                    rule: r.name().to_owned(),
                    message: format!("files glob '{f}' can read secrets or the whole filesystem"),
                });
            }
        }
    }
    out
}
