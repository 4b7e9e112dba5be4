//! Parsing of the pods/exec, pods/attach and pods/portforward query strings and of the offered
//! subprotocols, with the API server's error messages (all client input: errors, never panics).

use super::{AttachOptions, ExecOptions};

/// A query string the API server rejects with 400 Bad Request (the message is the Status text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

fn pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Go's `strconv.ParseBool`, which the API server uses for boolean query parameters.
fn parse_bool(name: &str, value: &str) -> Result<bool, QueryError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(QueryError(format!(
            "invalid value {other:?} for query parameter {name:?}: want true or false"
        ))),
    }
}

fn flag(pairs: &[(String, String)], name: &str) -> Result<bool, QueryError> {
    match pairs.iter().rev().find(|(k, _)| k == name) {
        Some((_, v)) => parse_bool(name, v),
        None => Ok(false),
    }
}

fn container(pairs: &[(String, String)]) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// Parses a pods/exec query: `command` (repeated, in order), `container`, `stdin`, `stdout`,
/// `stderr`, `tty`. Returns the container asked for (`None`: the caller picks the default one).
pub fn parse_exec_query(query: &str) -> Result<(Option<String>, ExecOptions), QueryError> {
    let pairs = pairs(query);
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(QueryError(
            "you must specify at least one command for the container".to_owned(),
        ));
    }
    let options = ExecOptions {
        command,
        stdin: flag(&pairs, "stdin")?,
        stdout: flag(&pairs, "stdout")?,
        stderr: flag(&pairs, "stderr")?,
        tty: flag(&pairs, "tty")?,
    };
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(QueryError(
            "you must specify at least one of stdin, stdout, stderr".to_owned(),
        ));
    }
    Ok((container(&pairs), options))
}

/// Parses a pods/attach query: `container`, `stdin`, `stdout`, `stderr`, `tty`.
pub fn parse_attach_query(query: &str) -> Result<(Option<String>, AttachOptions), QueryError> {
    let pairs = pairs(query);
    let options = AttachOptions {
        stdin: flag(&pairs, "stdin")?,
        stdout: flag(&pairs, "stdout")?,
        stderr: flag(&pairs, "stderr")?,
        tty: flag(&pairs, "tty")?,
    };
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(QueryError(
            "you must specify at least one of stdin, stdout, stderr".to_owned(),
        ));
    }
    Ok((container(&pairs), options))
}

/// Parses the `ports` of a pods/portforward query (repeated and/or comma-separated, as kube-rs
/// sends `ports=80%2C1234`), in order. At most 64 ports.
pub fn parse_portforward_ports(query: &str) -> Result<Vec<u16>, QueryError> {
    let mut ports = Vec::new();
    for (_, value) in pairs(query).iter().filter(|(k, _)| k == "ports") {
        for item in value.split(',') {
            let item = item.trim();
            let port: u16 = item
                .parse()
                .map_err(|_| QueryError(format!("unable to parse {item:?} as a port")))?;
            if port == 0 {
                return Err(QueryError(format!("port {item:?} must be > 0")));
            }
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(QueryError("at least one port must be specified".to_owned()));
    }
    if ports.len() > 64 {
        return Err(QueryError(
            "at most 64 ports may be forwarded at once".to_owned(),
        ));
    }
    Ok(ports)
}

/// The subprotocols a client offered: every `Sec-WebSocket-Protocol` header, split on commas.
pub fn offered_protocols(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}
