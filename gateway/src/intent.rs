//! What the exec string asks for: a gateway word, or a target followed by a command line.

/// A target as typed: `[namespace/]pod[/container]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Namespace, when given.
    pub namespace: Option<String>,
    /// Pod name.
    pub pod: String,
    /// Container, when given.
    pub container: Option<String>,
}

/// A parsed exec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// `help`.
    Help,
    /// `whoami`.
    Whoami,
    /// `pods [namespace]`.
    Pods {
        /// The namespace, when given.
        namespace: Option<String>,
    },
    /// `logs TARGET [-f] [--tail N] [--since D] [--previous] [--timestamps]`.
    Logs {
        /// Where.
        target: TargetSpec,
        /// What to read.
        options: LogOptions,
    },
    /// `scp -f PATH...`: the source side of the legacy scp protocol (`scp -O` downloads),
    /// answered by the gateway itself over the virtual file tree.
    ScpSource {
        /// Virtual paths as the client sent them (unexpanded: no shell runs here).
        paths: Vec<String>,
        /// `-p`: send modification and access times.
        preserve: bool,
        /// `-r`: the client asked for a recursive copy.
        recursive: bool,
    },
    /// `scp -t ...`: the sink side (uploads), which the read-only gateway refuses.
    ScpSink,
    /// The filtered prompt on a target (a target and no command).
    Prompt {
        /// Where.
        target: TargetSpec,
    },
    /// `break-glass TARGET --incident ID --reason TEXT`.
    BreakGlass {
        /// Where.
        target: TargetSpec,
        /// The incident id.
        incident: Option<String>,
        /// Why.
        reason: Option<String>,
    },
    /// `attach TARGET`.
    Attach {
        /// Where.
        target: TargetSpec,
    },
    /// `requests [--all] [--json]`: my requests and those I may approve.
    Requests {
        /// Also the finished ones.
        all: bool,
        /// A JSON array instead of a table.
        json: bool,
    },
    /// `approve ID [--comment TEXT]`.
    Approve {
        /// The request.
        id: String,
        /// A comment for the record.
        comment: Option<String>,
    },
    /// `deny ID --reason TEXT`.
    Deny {
        /// The request.
        id: String,
        /// Why.
        reason: String,
    },
    /// `revoke ID`: withdraw a request or an unused approval.
    Revoke {
        /// The request.
        id: String,
    },
    /// `request TARGET --reason TEXT [--incident ID] [--wait] -- COMMAND...`: ask for approval
    /// of one exact command (and with `--wait`, run it once approved).
    Request {
        /// Where.
        target: TargetSpec,
        /// Why.
        reason: String,
        /// The incident, if any.
        incident: Option<String>,
        /// Wait for the approval and run the command.
        wait: bool,
        /// The command line.
        line: String,
    },
    /// `request --rule NAME [--for D] --reason TEXT [--incident ID] [--wait]`: ask for a grant
    /// of a grant-only rule.
    Grant {
        /// The rule.
        rule: String,
        /// How long (at most the rule's `maxGrant`; that when not given).
        duration: Option<std::time::Duration>,
        /// Why.
        reason: String,
        /// The incident, if any.
        incident: Option<String>,
        /// Wait for the approval.
        wait: bool,
    },
    /// Run the command line (unparsed text after the target and an optional `--`) in the target.
    Exec {
        /// Where.
        target: TargetSpec,
        /// The command line text, parsed by broker-policy.
        line: String,
    },
}

/// Options of the `logs` word (those of `kubectl logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `-f`: keep streaming.
    pub follow: bool,
    /// `--tail N`: the last N lines.
    pub tail: Option<i64>,
    /// `--since D`: only lines newer than D (e.g. `10m`).
    pub since_seconds: Option<i64>,
    /// `--previous`: the previous container instance.
    pub previous: bool,
    /// `--timestamps`.
    pub timestamps: bool,
}

/// Why the exec string could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IntentError(pub String);

/// Parses the SSH exec string.
pub fn parse(text: &str) -> Result<Intent, IntentError> {
    let text = text.trim_start();
    let (first, rest) = match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    };
    match first {
        "" => return Err(IntentError("no command given; try 'help'".into())),
        "help" => return Ok(Intent::Help),
        "whoami" => return Ok(Intent::Whoami),
        "pods" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            return match words.as_slice() {
                [] => Ok(Intent::Pods { namespace: None }),
                [ns] if is_dns_label(ns) => Ok(Intent::Pods {
                    namespace: Some((*ns).to_owned()),
                }),
                _ => Err(IntentError("usage: pods [namespace]".into())),
            };
        }
        "logs" => return parse_logs(rest),
        "requests" => {
            let (pos, f) = flags(
                "requests",
                rest,
                REQUESTS_USAGE,
                &[("--all", false), ("--json", false)],
            )?;
            if !pos.is_empty() {
                return Err(IntentError(REQUESTS_USAGE.into()));
            }
            return Ok(Intent::Requests {
                all: f.has("--all"),
                json: f.has("--json"),
            });
        }
        "approve" => {
            let (pos, mut f) = flags("approve", rest, APPROVE_USAGE, &[("--comment", true)])?;
            return Ok(Intent::Approve {
                id: one_id(pos, APPROVE_USAGE)?,
                comment: f.take("--comment"),
            });
        }
        "deny" => {
            let (pos, mut f) = flags("deny", rest, DENY_USAGE, &[("--reason", true)])?;
            let id = one_id(pos, DENY_USAGE)?;
            let reason = f
                .take("--reason")
                .filter(|r| !r.trim().is_empty())
                .ok_or_else(|| {
                    IntentError(format!("deny: a --reason is required; {DENY_USAGE}"))
                })?;
            return Ok(Intent::Deny { id, reason });
        }
        "revoke" => {
            let (pos, _) = flags("revoke", rest, REVOKE_USAGE, &[])?;
            return Ok(Intent::Revoke {
                id: one_id(pos, REVOKE_USAGE)?,
            });
        }
        "request" => return parse_request(rest),
        w if let Some((_, why)) = UNSUPPORTED.iter().find(|(p, _)| *p == w) => {
            return Err(IntentError((*why).to_owned()));
        }
        "scp" => return parse_scp(rest),
        "break-glass" => return parse_break_glass(rest),
        "attach" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            return match words.as_slice() {
                [t] => Ok(Intent::Attach {
                    target: parse_target(t)?,
                }),
                _ => Err(IntentError(
                    "usage: attach [namespace/]pod[/container]".into(),
                )),
            };
        }
        _ => {}
    }
    let target = parse_target(first)?;
    let line = match rest.strip_prefix("--") {
        Some(r) if r.is_empty() || r.starts_with(char::is_whitespace) => r.trim_start(),
        _ => rest,
    };
    if line.is_empty() {
        return Ok(Intent::Prompt { target });
    }
    Ok(Intent::Exec {
        target,
        line: line.to_owned(),
    })
}

/// Programs people (and their tools: `rsync -e ssh`, scripts) send as the whole command, with
/// what to use instead — rather than "pod rsync not found". A pod of one of these names is
/// still reached with its namespace (`default/sh`).
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "rsync",
        "rsync is not supported through the gateway; use scp or sftp (the file tree is read-only)",
    ),
    (
        "sudo",
        "sudo is not available: commands run in the pod as its container's user, decided by the policy for you; try 'help'",
    ),
    (
        "sh",
        "no shell is offered: give a target and a command ('payments/api-0 -- ps aux'), or a target alone for the filtered prompt; try 'help'",
    ),
    (
        "bash",
        "no shell is offered: give a target and a command ('payments/api-0 -- ps aux'), or a target alone for the filtered prompt; try 'help'",
    ),
    (
        "kubectl",
        "kubectl does not run through the gateway: it already acts through the Kubernetes API as you; give a target and a command, or use 'pods' and 'logs'",
    ),
];

const REQUESTS_USAGE: &str = "usage: requests [--all] [--json]";
const APPROVE_USAGE: &str = "usage: approve ID [--comment \"TEXT\"]";
const DENY_USAGE: &str = "usage: deny ID --reason \"TEXT\"";
const REVOKE_USAGE: &str = "usage: revoke ID";
const GRANT_USAGE: &str =
    "usage: request --rule NAME [--for DURATION] --reason \"TEXT\" [--incident ID] [--wait]";
const REQUEST_USAGE: &str = "usage: request [namespace/]pod[/container] --reason \"TEXT\" [--incident ID] [--wait] -- COMMAND...";

/// Options given to a word, by name.
struct Flags(Vec<(String, Option<String>)>);

impl Flags {
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(n, _)| n == name)?;
        self.0.remove(i).1
    }
}

/// Splits a word's arguments (quoted as a command line; nothing expanded) into positional
/// words and the `known` options (`true`: takes a value, as `--x V` or `--x=V`).
fn flags(
    word: &str,
    rest: &str,
    usage: &str,
    known: &[(&str, bool)],
) -> Result<(Vec<String>, Flags), IntentError> {
    if rest.trim().is_empty() {
        return Ok((Vec::new(), Flags(Vec::new())));
    }
    let cl = jitsh_broker_policy::parse_command_line(rest)
        .map_err(|e| IntentError(format!("{word}: {e}; {usage}")))?;
    let [argv] = cl.stages() else {
        return Err(IntentError(usage.into()));
    };
    let (mut pos, mut out) = (Vec::new(), Vec::new());
    let mut words = argv.iter();
    while let Some(w) = words.next() {
        if !w.starts_with("--") {
            pos.push(w.clone());
            continue;
        }
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (w.as_str(), None),
        };
        let Some((_, takes)) = known.iter().find(|(k, _)| *k == flag) else {
            return Err(IntentError(format!(
                "{word}: unknown option '{flag}'; {usage}"
            )));
        };
        // A value runs to the next option, so `--reason disk full` needs no quotes through
        // ssh (which joins its arguments with spaces).
        let value = if *takes {
            let mut v: Vec<String> = inline.into_iter().collect();
            while let Some(next) = words.as_slice().first()
                && !next.starts_with("--")
            {
                v.push(next.clone());
                words.next();
            }
            if v.is_empty() {
                return Err(IntentError(format!(
                    "{word}: {flag} needs a value; {usage}"
                )));
            }
            Some(v.join(" "))
        } else {
            None
        };
        if out
            .iter()
            .any(|(n, _): &(String, Option<String>)| n == flag)
        {
            return Err(IntentError(format!("{word}: {flag} given twice; {usage}")));
        }
        out.push((flag.to_owned(), value));
    }
    Ok((pos, Flags(out)))
}

fn one_id(pos: Vec<String>, usage: &str) -> Result<String, IntentError> {
    match <[String; 1]>::try_from(pos) {
        Ok([id]) => Ok(id),
        Err(_) => Err(IntentError(usage.into())),
    }
}

fn parse_request(rest: &str) -> Result<Intent, IntentError> {
    // The command is everything after the first ` -- `, kept as typed to be parsed as a
    // command line of its own.
    let (head, line) = match rest.find(" -- ") {
        Some(i) => (&rest[..i], rest[i + 4..].trim()),
        None => (rest, ""),
    };
    let (pos, mut f) = flags(
        "request",
        head,
        REQUEST_USAGE,
        &[
            ("--reason", true),
            ("--incident", true),
            ("--wait", false),
            ("--for", true),
            ("--rule", true),
        ],
    )?;
    if let Some(rule) = f.take("--rule") {
        if !pos.is_empty() || !line.is_empty() {
            return Err(IntentError(format!(
                "request: a grant is for a policy rule, not a pod or a command; {GRANT_USAGE}"
            )));
        }
        let duration = match f.take("--for") {
            None => None,
            Some(d) => Some(
                humantime::parse_duration(&d)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        IntentError(format!(
                            "request: --for wants a duration like 30m, not '{d}'"
                        ))
                    })?,
            ),
        };
        let reason = f
            .take("--reason")
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| {
                IntentError(format!("request: a --reason is required; {GRANT_USAGE}"))
            })?;
        return Ok(Intent::Grant {
            rule,
            duration,
            reason,
            incident: f.take("--incident"),
            wait: f.has("--wait"),
        });
    }
    if f.has("--for") {
        return Err(IntentError(format!(
            "request: --for is the length of a grant, which names its rule; {GRANT_USAGE}"
        )));
    }
    let [t] = pos.as_slice() else {
        return Err(IntentError(REQUEST_USAGE.into()));
    };
    let target = parse_target(t)?;
    if line.is_empty() {
        return Err(IntentError(format!(
            "request: give the command after '--'; {REQUEST_USAGE}"
        )));
    }
    let reason = f
        .take("--reason")
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| IntentError(format!("request: a --reason is required; {REQUEST_USAGE}")))?;
    Ok(Intent::Request {
        target,
        reason,
        incident: f.take("--incident"),
        wait: f.has("--wait"),
        line: line.to_owned(),
    })
}

const BREAK_GLASS_USAGE: &str =
    "usage: break-glass [namespace/]pod[/container] --incident ID --reason \"TEXT\"";

fn parse_break_glass(rest: &str) -> Result<Intent, IntentError> {
    // Quoting as in a command line (the reason is usually quoted); nothing is expanded.
    let (pos, mut f) = flags(
        "break-glass",
        rest,
        BREAK_GLASS_USAGE,
        &[("--incident", true), ("--reason", true)],
    )?;
    let [t] = pos.as_slice() else {
        return Err(IntentError(BREAK_GLASS_USAGE.into()));
    };
    Ok(Intent::BreakGlass {
        target: parse_target(t)?,
        incident: f.take("--incident"),
        reason: f.take("--reason"),
    })
}

const LOGS_USAGE: &str = "usage: logs [namespace/]pod[/container] [-f] [--tail N] [--since DURATION] [--previous] [--timestamps]";

fn parse_logs(rest: &str) -> Result<Intent, IntentError> {
    let mut words = rest.split_whitespace();
    let Some(t) = words.next() else {
        return Err(IntentError(LOGS_USAGE.into()));
    };
    let target = parse_target(t)?;
    let mut options = LogOptions::default();
    while let Some(w) = words.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (w, None),
        };
        let mut value = |name: &str| {
            inline
                .map(str::to_owned)
                .or_else(|| words.next().map(str::to_owned))
                .ok_or_else(|| IntentError(format!("logs: {name} needs a value; {LOGS_USAGE}")))
        };
        match flag {
            "-f" | "--follow" => options.follow = true,
            "--previous" | "-p" => options.previous = true,
            "--timestamps" => options.timestamps = true,
            "--tail" => {
                let v = value("--tail")?;
                let n: i64 = v.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    IntentError(format!("logs: --tail wants a number of lines, not '{v}'"))
                })?;
                options.tail = Some(n);
            }
            "--since" => {
                let v = value("--since")?;
                let d = humantime::parse_duration(&v).map_err(|_| {
                    IntentError(format!(
                        "logs: --since wants a duration like 10m, not '{v}'"
                    ))
                })?;
                options.since_seconds = Some(i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1));
            }
            other => {
                return Err(IntentError(format!(
                    "logs: unknown option '{other}'; {LOGS_USAGE}"
                )));
            }
        }
    }
    Ok(Intent::Logs { target, options })
}

const SCP_USAGE: &str =
    "scp: the gateway serves downloads only: scp [-p] [-r] [-v] [-d] -f [--] PATH...";

/// The remote half of the legacy scp protocol: what OpenSSH's `scp -O` runs on the server
/// (`scp [-v] [-r] [-p] [-d] -f [--] PATH...`). Words are split with POSIX quoting and nothing
/// is expanded: a glob or `$` in a path is refused, as in any command line.
fn parse_scp(rest: &str) -> Result<Intent, IntentError> {
    let line = jitsh_broker_policy::parse_command_line(rest)
        .map_err(|e| IntentError(format!("scp: {e}")))?;
    let [words] = line.stages() else {
        return Err(IntentError(SCP_USAGE.into()));
    };
    let (mut source, mut sink, mut preserve, mut recursive) = (false, false, false, false);
    let mut paths = Vec::new();
    let mut options_done = false;
    for w in words {
        if options_done || !w.starts_with('-') || w == "-" {
            paths.push(w.clone());
            continue;
        }
        if w == "--" {
            options_done = true;
            continue;
        }
        for flag in w.chars().skip(1) {
            match flag {
                'f' => source = true,
                't' => sink = true,
                'p' => preserve = true,
                'r' => recursive = true,
                // Verbose and "target should be a directory" change nothing for a source.
                'v' | 'd' | 'q' => {}
                other => {
                    return Err(IntentError(format!(
                        "scp: unsupported option '-{other}'; {SCP_USAGE}"
                    )));
                }
            }
        }
    }
    match (source, sink) {
        (_, true) => Ok(Intent::ScpSink),
        (true, false) if !paths.is_empty() => Ok(Intent::ScpSource {
            paths,
            preserve,
            recursive,
        }),
        _ => Err(IntentError(SCP_USAGE.into())),
    }
}

/// Whether `s` is a valid Kubernetes name (lowercase DNS subdomain).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !s.starts_with(['-', '.'])
}

fn parse_target(s: &str) -> Result<TargetSpec, IntentError> {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.iter().any(|p| !is_dns_label(p)) || parts.len() > 3 {
        return Err(IntentError(format!(
            "'{s}' is neither a gateway word nor [namespace/]pod[/container]; try 'help'"
        )));
    }
    Ok(match parts.as_slice() {
        [pod] => TargetSpec {
            namespace: None,
            pod: (*pod).into(),
            container: None,
        },
        [ns, pod] => TargetSpec {
            namespace: Some((*ns).into()),
            pod: (*pod).into(),
            container: None,
        },
        [ns, pod, c] => TargetSpec {
            namespace: Some((*ns).into()),
            pod: (*pod).into(),
            container: Some((*c).into()),
        },
        _ => return Err(IntentError("empty target".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_separator() {
        let Intent::Exec { target, line } = parse("payments/api-0 -- ps aux").unwrap() else {
            panic!()
        };
        assert_eq!(target.namespace.as_deref(), Some("payments"));
        assert_eq!(line, "ps aux");
        let Intent::Exec { target, line } = parse("payments/api-0/app ps aux").unwrap() else {
            panic!()
        };
        assert_eq!(target.container.as_deref(), Some("app"));
        assert_eq!(line, "ps aux");
        assert_eq!(parse("help").unwrap(), Intent::Help);
        assert!(parse("Bad!Pod ls").is_err());
        assert_eq!(
            parse("payments/api-0").unwrap(),
            Intent::Prompt {
                target: TargetSpec {
                    namespace: Some("payments".into()),
                    pod: "api-0".into(),
                    container: None
                }
            }
        );
        let Intent::BreakGlass {
            incident, reason, ..
        } = parse("break-glass payments/api-0 --incident INC-42 --reason 'db down'").unwrap()
        else {
            panic!()
        };
        assert_eq!(incident.as_deref(), Some("INC-42"));
        assert_eq!(reason.as_deref(), Some("db down"));
        assert!(parse("break-glass payments/api-0 --reason").is_err());
        assert!(parse("break-glass payments/api-0 --reason 'x' ; id").is_err());
        assert!(matches!(
            parse("attach payments/api-0/app").unwrap(),
            Intent::Attach { .. }
        ));
        assert_eq!(parse("pods").unwrap(), Intent::Pods { namespace: None });
        assert_eq!(
            parse("pods payments").unwrap(),
            Intent::Pods {
                namespace: Some("payments".into())
            }
        );
        assert!(parse("pods a b").is_err());
        let Intent::Logs { target, options } =
            parse("logs payments/api-0 -f --tail 20 --since=10m --timestamps").unwrap()
        else {
            panic!()
        };
        assert_eq!(target.pod, "api-0");
        assert!(options.follow && options.timestamps && !options.previous);
        assert_eq!(options.tail, Some(20));
        assert_eq!(options.since_seconds, Some(600));
        assert!(parse("logs payments/api-0 --tail x").is_err());
        assert!(parse("logs payments/api-0 --bogus").is_err());
        assert!(parse("logs").is_err());
    }

    #[test]
    fn scp_source_and_sink() {
        assert_eq!(
            parse("scp -f /payments/api-0/app/fs/var/log/app.log").unwrap(),
            Intent::ScpSource {
                paths: vec!["/payments/api-0/app/fs/var/log/app.log".into()],
                preserve: false,
                recursive: false,
            }
        );
        assert_eq!(
            parse("scp -v -p -f -- '/a b' -c").unwrap(),
            Intent::ScpSource {
                paths: vec!["/a b".into(), "-c".into()],
                preserve: true,
                recursive: false,
            }
        );
        let Intent::ScpSource { recursive, .. } = parse("scp -rf /x").unwrap() else {
            panic!()
        };
        assert!(recursive);
        assert_eq!(parse("scp -t /tmp").unwrap(), Intent::ScpSink);
        assert_eq!(parse("scp -d -t -- /tmp").unwrap(), Intent::ScpSink);
        for bad in [
            "scp",
            "scp -f",
            "scp /x",
            "scp -x -f /a",
            "scp -f /var/log/*.log",
            "scp -f /a; id",
            "scp -f $(id)",
            "scp -f /a | cat",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsupported_programs_say_what_to_use_instead() {
        for (line, want) in [
            ("rsync --server -vlogDtpre.iLsfxC . /tmp", "use scp or sftp"),
            ("sudo ls", "sudo is not available"),
            ("sh -c id", "no shell is offered"),
            ("bash", "no shell is offered"),
            (
                "kubectl get pods",
                "kubectl does not run through the gateway",
            ),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.to_string().contains(want), "{line}: {e}");
        }
        // A pod of such a name is still reachable with its namespace.
        assert!(matches!(
            parse("default/sh -- ps aux"),
            Ok(Intent::Exec { .. })
        ));
    }

    #[test]
    fn broker_words() {
        assert_eq!(
            parse("requests --json").unwrap(),
            Intent::Requests {
                all: false,
                json: true
            }
        );
        assert_eq!(
            parse("approve ar-abc --comment looks right to me").unwrap(),
            Intent::Approve {
                id: "ar-abc".into(),
                comment: Some("looks right to me".into())
            }
        );
        assert_eq!(
            parse("deny ar-abc --reason 'not during the freeze'").unwrap(),
            Intent::Deny {
                id: "ar-abc".into(),
                reason: "not during the freeze".into()
            }
        );
        assert!(
            parse("deny ar-abc")
                .unwrap_err()
                .0
                .contains("--reason is required")
        );
        assert!(
            parse("approve")
                .unwrap_err()
                .0
                .starts_with("usage: approve")
        );
        assert!(parse("approve a b").is_err());
        assert!(
            parse("revoke ar-x --force")
                .unwrap_err()
                .0
                .contains("unknown option '--force'")
        );
        let Intent::Request {
            target,
            reason,
            incident,
            wait,
            line,
        } = parse(
            "request payments/api-0 --reason stuck worker --incident INC-7 --wait -- kill -TERM 42",
        )
        .unwrap()
        else {
            panic!()
        };
        assert_eq!(target.pod, "api-0");
        assert_eq!(
            (reason.as_str(), incident.as_deref(), wait),
            ("stuck worker", Some("INC-7"), true)
        );
        assert_eq!(line, "kill -TERM 42");
        assert!(
            parse("request payments/api-0 -- kill -TERM 1")
                .unwrap_err()
                .0
                .contains("--reason is required")
        );
        assert!(
            parse("request payments/api-0 --reason x")
                .unwrap_err()
                .0
                .contains("after '--'")
        );
        assert!(
            parse("request payments/api-0 --rule ops --for 30m --reason x")
                .unwrap_err()
                .0
                .contains("a grant is for a policy rule")
        );
        assert_eq!(
            parse("request --rule ops --for 30m --reason disk full --wait").unwrap(),
            Intent::Grant {
                rule: "ops".into(),
                duration: Some(std::time::Duration::from_secs(1800)),
                reason: "disk full".into(),
                incident: None,
                wait: true
            }
        );
        assert!(
            parse("request --rule ops --for soon --reason x")
                .unwrap_err()
                .0
                .contains("--for wants a duration")
        );
    }
}
