//! The gateway's audit log: JSON lines, hash-chained, written and flushed before the action.

mod event;

pub(crate) use event::Event;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Why an audit event could not be written (the action it authorises must not happen).
#[derive(Debug, thiserror::Error)]
#[error("audit log {path} cannot be written: {source}")]
pub struct AuditError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// An append-only, hash-chained audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: Option<PathBuf>,
    stdout: bool,
    prev: Mutex<String>,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditLog {
    /// Opens (creating if needed) the audit file, continuing the chain from its last event.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::with_sinks(Some(path), false)
    }

    /// Opens the configured sinks: a file (continuing its chain) and/or standard output.
    pub fn with_sinks(path: Option<&Path>, stdout: bool) -> Result<Self, AuditError> {
        let Some(path) = path else {
            return Ok(AuditLog {
                path: None,
                stdout,
                prev: Mutex::new(GENESIS.to_owned()),
            });
        };
        let err = |source| AuditError {
            path: path.display().to_string(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(err(e)),
        };
        let prev = text
            .lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v.get("hash").and_then(Value::as_str).map(str::to_owned))
            })
            .unwrap_or_else(|| GENESIS.to_owned());
        Ok(AuditLog {
            path: Some(path.to_owned()),
            stdout,
            prev: Mutex::new(prev),
        })
    }

    /// Writes one event (`kind` plus fields), adding time, `prev` and `hash`; flushed and synced
    /// before returning. The file is opened per event, so a sink that became unwritable fails here.
    pub fn record(&self, kind: &str, fields: &impl serde::Serialize) -> Result<(), AuditError> {
        let err = |source| AuditError {
            path: self
                .path
                .as_ref()
                .map_or_else(|| "stdout".into(), |p| p.display().to_string()),
            source,
        };
        let fields = serde_json::to_value(fields)
            .map_err(|e| err(std::io::Error::other(format!("audit event: {e}"))))?;
        let mut map = match fields {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("data".into(), other);
                m
            }
        };
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        map.insert("time".into(), Value::String(now));
        map.insert("event".into(), Value::String(kind.into()));
        let mut prev = self
            .prev
            .lock()
            .map_err(|_| err(std::io::Error::other("audit lock poisoned")))?;
        map.insert("prev".into(), Value::String(prev.clone()));
        let body = Value::Object(map.clone()).to_string();
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        map.insert("hash".into(), Value::String(hash.clone()));
        let mut line = Value::Object(map).to_string();
        line.push('\n');
        if let Some(path) = &self.path {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(err)?;
            f.write_all(line.as_bytes()).map_err(err)?;
            f.flush().map_err(err)?;
            f.sync_data().map_err(err)?;
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).map_err(err)?;
            out.flush().map_err(err)?;
        }
        *prev = hash;
        Ok(())
    }
}

/// Where an audit file stops verifying.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct VerifyError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Verifies the hash chain of an audit file's text; returns the number of events.
pub fn verify(text: &str) -> Result<usize, VerifyError> {
    let mut prev = GENESIS.to_owned();
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let bad = |reason: String| VerifyError {
            line: i + 1,
            reason,
        };
        let mut map: Map<String, Value> =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let hash = match map.remove("hash") {
            Some(Value::String(h)) => h,
            _ => return Err(bad("no hash".into())),
        };
        if map.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(bad(
                "chain broken: prev does not match the previous event's hash".into(),
            ));
        }
        let body = Value::Object(map).to_string();
        if hex::encode(Sha256::digest(body.as_bytes())) != hash {
            return Err(bad("hash mismatch: the event was modified".into()));
        }
        prev = hash;
        n += 1;
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(VerifyError {
            line: n + 1,
            reason: "truncated last line".into(),
        });
    }
    Ok(n)
}

/// Redacts secrets in argv by regular expressions: the first capture group of each match (or
/// the whole match when the pattern has no group) becomes `<redacted>`.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Vec<regex::Regex>,
}

/// The default redaction patterns: `--password=`, `--token=`, `password=`, `token=`,
/// `Authorization:`, assignments to names with `SECRET`, `PASSWORD`, `TOKEN` or `API_KEY` in
/// them (`DB_PASSWORD=…`), and the password of a URL (`https://user:pass@host`).
pub const DEFAULT_REDACTIONS: &[&str] = &[
    r"(?i)^--?(?:password|passwd|token|secret|api-key)=(.+)$",
    r"(?i)^(?:password|token)=(.+)$",
    r"(?i)^authorization:\s*(.+)$",
    r"(?i)^[a-z0-9_]*(?:secret|password|passwd|token|api_?key)[a-z0-9_]*=(.+)$",
    r"(?i)^(?:bearer|basic)\s+(.+)$",
    r"(?i)^[a-z][a-z0-9+.-]*://[^/@:\s]*:([^@/\s]+)@",
];

/// Options whose *next* argument is a secret (`--password hunter2`).
const SECRET_OPTIONS: &[&str] = &[
    "--password",
    "--passwd",
    "--token",
    "--secret",
    "--api-key",
    "--client-secret",
];

impl Default for Redactor {
    fn default() -> Self {
        let patterns = DEFAULT_REDACTIONS
            .iter()
            .filter_map(|p| regex::Regex::new(p).ok())
            .collect();
        Redactor { patterns }
    }
}

impl Redactor {
    /// Compiles the patterns; on error, the index of the bad pattern and why.
    pub fn new(patterns: &[String]) -> Result<Self, (usize, String)> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| regex::Regex::new(p).map_err(|e| (i, e.to_string().replace('\n', " "))))
            .collect::<Result<_, _>>()?;
        Ok(Redactor { patterns })
    }

    /// Each argument with its secrets replaced.
    pub fn redact(&self, argv: &[String]) -> Vec<String> {
        let mut secret_next = false;
        argv.iter()
            .map(|a| {
                let out = if secret_next {
                    "<redacted>".to_owned()
                } else {
                    self.redact_one(a)
                };
                let bare = a.trim_matches(|c| c == '\'' || c == '"');
                secret_next = SECRET_OPTIONS.iter().any(|o| bare.eq_ignore_ascii_case(o));
                out
            })
            .collect()
    }

    fn redact_one(&self, arg: &str) -> String {
        // A quoted word of a refused line (`'--password=x'`) is matched without its quotes.
        let quote = |c: char| c == '\'' || c == '"';
        let (lead, rest) = arg.split_at(arg.len() - arg.trim_start_matches(quote).len());
        let core = rest.trim_end_matches(quote);
        let trail = rest.get(core.len()..).unwrap_or_default();
        let mut out = core.to_owned();
        for re in &self.patterns {
            let Some(c) = re.captures(&out) else { continue };
            let Some(m) = c.get(1).or_else(|| c.get(0)) else {
                continue;
            };
            out = format!(
                "{}<redacted>{}",
                out.get(..m.start()).unwrap_or_default(),
                out.get(m.end()..).unwrap_or_default()
            );
        }
        format!("{lead}{out}{trail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_verifies_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let log = AuditLog::open(&p).unwrap();
        for i in 0..3 {
            log.record("command.allowed", &serde_json::json!({"n": i}))
                .unwrap();
        }
        let log = AuditLog::open(&p).unwrap();
        log.record("x", &serde_json::json!({})).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(verify(&text).unwrap(), 4);
        let edited = text.replacen("\"n\":1", "\"n\":2", 1);
        assert!(verify(&edited).is_err());
        let lines: Vec<&str> = text.lines().collect();
        let reordered = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1]);
        assert!(verify(&reordered).is_err());
        let dropped = format!("{}\n{}\n", lines[0], lines[2]);
        assert!(verify(&dropped).is_err());
    }

    #[test]
    fn redacts() {
        let r = Redactor::default().redact(&[
            "--password=hunter2".into(),
            "DB_SECRET_KEY=x".into(),
            "ls".into(),
        ]);
        assert_eq!(
            r,
            vec!["--password=<redacted>", "DB_SECRET_KEY=<redacted>", "ls"]
        );
        let h = Redactor::default().redact(&["Authorization: Bearer abc".into()]);
        assert_eq!(h, vec!["Authorization: <redacted>"]);
        let custom = Redactor::new(&["^pin=(\\d+)$".into()]).unwrap();
        assert_eq!(
            custom.redact(&["pin=1234".into(), "--password=x".into()]),
            vec!["pin=<redacted>", "--password=x"]
        );
        assert_eq!(Redactor::new(&["(".into()]).unwrap_err().0, 0);
        // The hardening review's misses: two-word options, *_PASSWORD= assignments, URL
        // credentials, and quoted words of a refused line.
        let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let r = Redactor::default();
        assert_eq!(
            r.redact(&words("mysql --password hunter2 -h db")),
            words("mysql --password <redacted> -h db")
        );
        assert_eq!(
            r.redact(&words("env DB_PASSWORD=hunter2 API_KEY=k GITHUB_TOKEN=t")),
            words("env DB_PASSWORD=<redacted> API_KEY=<redacted> GITHUB_TOKEN=<redacted>")
        );
        assert_eq!(
            r.redact(&words("curl https://bob:hunter2@example.com/x")),
            words("curl https://bob:<redacted>@example.com/x")
        );
        // (what follows a secret in the same word goes with it)
        assert_eq!(
            r.redact(&words("mysql '--password=hunter2'; id")),
            words("mysql '--password=<redacted> id")
        );
        assert_eq!(
            r.redact(&words("x \"--token\" t2")),
            words("x \"--token\" <redacted>")
        );
    }
}
