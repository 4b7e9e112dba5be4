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
    /// Run the command line (unparsed text after the target and an optional `--`) in the target.
    Exec {
        /// Where.
        target: TargetSpec,
        /// The command line text, parsed by broker-policy.
        line: String,
    },
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
        _ => {}
    }
    let target = parse_target(first)?;
    let line = match rest.strip_prefix("--") {
        Some(r) if r.is_empty() || r.starts_with(char::is_whitespace) => r.trim_start(),
        _ => rest,
    };
    if line.is_empty() {
        return Err(IntentError(format!(
            "no command given for {first}; interactive sessions need 'ssh -t' (not yet supported)"
        )));
    }
    Ok(Intent::Exec {
        target,
        line: line.to_owned(),
    })
}

fn parse_target(s: &str) -> Result<TargetSpec, IntentError> {
    let parts: Vec<&str> = s.split('/').collect();
    let valid = |p: &str| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if parts.iter().any(|p| !valid(p)) || parts.len() > 3 {
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
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
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
        assert!(parse("payments/api-0").is_err());
    }
}
