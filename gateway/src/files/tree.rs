//! The read-only virtual tree that SFTP and scp see, as typed values:
//!
//! ```text
//! /                                        namespaces the policy grants
//! /<ns>/                                   pods (listed as the user)
//! /<ns>/<pod>/                             containers
//! /<ns>/<pod>/<container>/logs/            current.log, previous.log (pods/log)
//! /<ns>/<pod>/<container>/fs/<abs path>    the container's files the policy's `files` globs allow
//! ```
//!
//! Paths are normalised first (`.`, `..` and `//` resolved, relative paths taken from `/`), so
//! `fs/var/log/../../etc/shadow` is `fs/etc/shadow`, which the policy then judges.

use std::collections::BTreeSet;
use std::fmt;

use crate::intent::is_dns_label;

/// Pod and container of a path below `/<ns>/<pod>/<container>/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Loc {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
}

/// Which log of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogKind {
    /// `current.log`: the running instance.
    Current,
    /// `previous.log`: the instance before the last restart.
    Previous,
}

impl LogKind {
    /// The file name in `logs/`.
    pub fn file_name(self) -> &'static str {
        match self {
            LogKind::Current => "current.log",
            LogKind::Previous => "previous.log",
        }
    }
}

/// A node of the virtual tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// `/`.
    Root,
    /// `/<ns>`.
    Namespace(String),
    /// `/<ns>/<pod>`.
    Pod(String, String),
    /// `/<ns>/<pod>/<container>`.
    Container(Loc),
    /// `/<ns>/<pod>/<container>/logs`.
    LogsDir(Loc),
    /// `/<ns>/<pod>/<container>/logs/{current,previous}.log`.
    Log(Loc, LogKind),
    /// `/<ns>/<pod>/<container>/fs<path>`: `path` is absolute and normalised (`/` for `fs`).
    Fs(Loc, String),
}

/// Why a path names nothing in the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TreeError {
    /// No such node.
    #[error("no such file or directory: {0}")]
    NotFound(String),
    /// Not representable (a NUL byte, or longer than the protocol allows).
    #[error("invalid path: {0}")]
    Invalid(String),
}

/// Longest virtual path accepted.
const MAX_PATH: usize = 4096;

/// Resolves `.`, `..` and empty components; relative paths are taken from `/`.
pub(crate) fn normalize(path: &str) -> Result<Vec<&str>, TreeError> {
    if path.contains('\0') {
        return Err(TreeError::Invalid(
            "a path may not contain a NUL byte".into(),
        ));
    }
    if path.len() > MAX_PATH {
        return Err(TreeError::Invalid(format!(
            "a path may not be longer than {MAX_PATH} bytes"
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Ok(parts)
}

/// The normalised absolute form of `path` (what SFTP `realpath` answers).
pub(crate) fn canonical(path: &str) -> Result<String, TreeError> {
    Ok(format!("/{}", normalize(path)?.join("/")))
}

/// Parses a client path into a node.
pub(crate) fn parse(path: &str) -> Result<Node, TreeError> {
    let parts = normalize(path)?;
    let not_found = || TreeError::NotFound(format!("/{}", parts.join("/")));
    let name = |s: &str| -> Result<String, TreeError> {
        if is_dns_label(s) {
            Ok(s.to_owned())
        } else {
            Err(not_found())
        }
    };
    let loc = |p: &[&str]| -> Result<Loc, TreeError> {
        let [ns, pod, container, ..] = p else {
            return Err(not_found());
        };
        Ok(Loc {
            namespace: name(ns)?,
            pod: name(pod)?,
            container: name(container)?,
        })
    };
    Ok(match parts.as_slice() {
        [] => Node::Root,
        [ns] => Node::Namespace(name(ns)?),
        [ns, pod] => Node::Pod(name(ns)?, name(pod)?),
        [_, _, _] => Node::Container(loc(&parts)?),
        [_, _, _, "logs"] => Node::LogsDir(loc(&parts)?),
        [_, _, _, "logs", "current.log"] => Node::Log(loc(&parts)?, LogKind::Current),
        [_, _, _, "logs", "previous.log"] => Node::Log(loc(&parts)?, LogKind::Previous),
        [_, _, _, "fs", rest @ ..] => Node::Fs(loc(&parts)?, format!("/{}", rest.join("/"))),
        _ => return Err(not_found()),
    })
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = |f: &mut fmt::Formatter<'_>, l: &Loc| {
            write!(f, "/{}/{}/{}", l.namespace, l.pod, l.container)
        };
        match self {
            Node::Root => write!(f, "/"),
            Node::Namespace(ns) => write!(f, "/{ns}"),
            Node::Pod(ns, pod) => write!(f, "/{ns}/{pod}"),
            Node::Container(loc) => l(f, loc),
            Node::LogsDir(loc) => {
                l(f, loc)?;
                write!(f, "/logs")
            }
            Node::Log(loc, kind) => {
                l(f, loc)?;
                write!(f, "/logs/{}", kind.file_name())
            }
            Node::Fs(loc, p) if p == "/" => {
                l(f, loc)?;
                write!(f, "/fs")
            }
            Node::Fs(loc, p) => {
                l(f, loc)?;
                write!(f, "/fs{p}")
            }
        }
    }
}

/// The literal leading directories of a path glob: the components before the first one with a
/// wildcard (`/var/log/**` → `var`, `log`; `/etc/app/*.yaml` → `etc`, `app`).
fn literal_prefix(glob: &str) -> Vec<&str> {
    glob.split('/')
        .filter(|c| !c.is_empty())
        .take_while(|c| !c.contains(['*', '?', '[', ']', '{', '}', '\\']))
        .collect()
}

/// When `dir` is a strict ancestor of the literal part of some glob, the names that lead on
/// towards them (the directory is then shown without asking the container); `None` otherwise.
pub(crate) fn glob_children<S: AsRef<str>>(globs: &[S], dir: &str) -> Option<BTreeSet<String>> {
    let dir: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    let mut out = BTreeSet::new();
    let mut any = false;
    for g in globs {
        let lit = literal_prefix(g.as_ref());
        if let Some(next) = lit
            .strip_prefix(dir.as_slice())
            .and_then(|rest| rest.first())
        {
            any = true;
            out.insert((*next).to_owned());
        }
    }
    any.then_some(out)
}

/// Joins a directory and an entry name.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Loc {
        Loc {
            namespace: "payments".into(),
            pod: "api-0".into(),
            container: "app".into(),
        }
    }

    #[test]
    fn parses_every_level() {
        assert_eq!(parse("/").unwrap(), Node::Root);
        assert_eq!(parse("").unwrap(), Node::Root);
        assert_eq!(parse(".").unwrap(), Node::Root);
        assert_eq!(parse("/..").unwrap(), Node::Root);
        assert_eq!(
            parse("payments").unwrap(),
            Node::Namespace("payments".into())
        );
        assert_eq!(
            parse("/payments/api-0/").unwrap(),
            Node::Pod("payments".into(), "api-0".into())
        );
        assert_eq!(
            parse("/payments/api-0/app").unwrap(),
            Node::Container(loc())
        );
        assert_eq!(
            parse("/payments/api-0/app/logs").unwrap(),
            Node::LogsDir(loc())
        );
        assert_eq!(
            parse("/payments/api-0/app/logs/current.log").unwrap(),
            Node::Log(loc(), LogKind::Current)
        );
        assert_eq!(
            parse("/payments/api-0/app/logs/previous.log").unwrap(),
            Node::Log(loc(), LogKind::Previous)
        );
        assert_eq!(
            parse("/payments/api-0/app/fs").unwrap(),
            Node::Fs(loc(), "/".into())
        );
        assert_eq!(
            parse("/payments/api-0/app/fs/var//log/./app.log").unwrap(),
            Node::Fs(loc(), "/var/log/app.log".into())
        );
    }

    #[test]
    fn dot_dot_cannot_hide_a_path() {
        assert_eq!(
            parse("/payments/api-0/app/fs/var/log/../../etc/shadow").unwrap(),
            Node::Fs(loc(), "/etc/shadow".into())
        );
        assert_eq!(
            parse("/payments/api-0/app/fs/../../../../etc").unwrap(),
            Node::Namespace("etc".into())
        );
    }

    #[test]
    fn refuses_what_is_not_in_the_tree() {
        for bad in [
            "/Payments",
            "/payments/api_0",
            "/payments/api-0/app/other",
            "/payments/api-0/app/logs/x.log",
            "/payments/api-0/app/logs/current.log/x",
        ] {
            assert!(matches!(parse(bad), Err(TreeError::NotFound(_))), "{bad}");
        }
        assert!(matches!(parse("/a\0b"), Err(TreeError::Invalid(_))));
        assert!(matches!(
            parse(&"/a".repeat(3000)),
            Err(TreeError::Invalid(_))
        ));
    }

    #[test]
    fn displays_back() {
        for p in [
            "/",
            "/payments",
            "/payments/api-0",
            "/payments/api-0/app",
            "/payments/api-0/app/logs",
            "/payments/api-0/app/logs/current.log",
            "/payments/api-0/app/fs",
            "/payments/api-0/app/fs/var/log",
        ] {
            assert_eq!(parse(p).unwrap().to_string(), p);
        }
        assert_eq!(canonical("a/./b/../c").unwrap(), "/a/c");
    }

    #[test]
    fn virtual_ancestors_of_globs() {
        let globs = ["/var/log/**", "/etc/app/*.yaml", "/srv/data.json"];
        let names =
            |d: &str| glob_children(&globs, d).map(|s| s.into_iter().collect::<Vec<_>>().join(","));
        assert_eq!(names("/").as_deref(), Some("etc,srv,var"));
        assert_eq!(names("/var").as_deref(), Some("log"));
        assert_eq!(names("/etc").as_deref(), Some("app"));
        assert_eq!(names("/srv").as_deref(), Some("data.json"));
        assert_eq!(names("/var/log"), None);
        assert_eq!(names("/etc/app"), None);
        assert_eq!(names("/usr"), None);
        assert_eq!(join("/", "var"), "/var");
        assert_eq!(join("/var", "log"), "/var/log");
    }
}
