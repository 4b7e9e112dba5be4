//! The gateway's own log: no escape codes when stderr is a file, and with `--log-format json`
//! every line is a JSON object; lines emitted inside a session carry its id.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;
use common::{eventually, jsonl, ssh, text};

/// `jitsh serve --dev` with stderr to `log`, ready; killed on drop.
struct Logged(Child);

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, log: &Path, format: Option<&str>) -> Logged {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jitsh"));
    c.args(["serve", "--dev", "--listen", "127.0.0.1:0", "--dev-dir"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .env_remove("JITSH_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(f) = format {
        c.args(["--log-format", f]);
    }
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines
        .next()
        .expect("serve --dev exited before ready")
        .unwrap()
        .contains("jitsh dev gateway ready")
    {}
    std::thread::spawn(move || for _ in lines {});
    Logged(child)
}

#[test]
fn text_log_to_a_file_has_no_escape_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, log) = (tmp.path().join("dev"), tmp.path().join("log"));
    let _gw = start(&dir, &log, None);
    let o = ssh(&dir, "alice", "payments/api-0 -- date", b"");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    eventually("the command is logged at info", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("command allowed")
    });
    let written = std::fs::read(&log).unwrap();
    assert!(!written.contains(&0x1b), "{}", text(&written));
}

#[test]
fn json_log_lines_parse_and_carry_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, log) = (tmp.path().join("dev"), tmp.path().join("log"));
    let _gw = start(&dir, &log, Some("json"));
    let o = ssh(&dir, "alice", "payments/api-0 -- date", b"");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let audit = jsonl(&dir.join("audit.jsonl"));
    let allowed = audit
        .iter()
        .find(|e| e["event"] == "command.allowed")
        .unwrap();
    let session = allowed["session"].as_str().unwrap().to_owned();
    let command = allowed["command"].as_str().unwrap().to_owned();
    eventually("the command is logged", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("command allowed")
    });
    let text_ = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text_
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    // Every line emitted inside the connection names its session (and, inside the command,
    // the command id): in its current span or one of the spans it is in.
    let spans = |l: &serde_json::Value| -> Vec<serde_json::Value> {
        let mut all = l["spans"].as_array().cloned().unwrap_or_default();
        if l["span"].is_object() {
            all.push(l["span"].clone());
        }
        all
    };
    let in_session: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| spans(l).iter().any(|s| s["name"] == "connection"))
        .collect();
    assert!(
        in_session
            .iter()
            .any(|l| l["fields"]["message"] == "command allowed"),
        "{text_}"
    );
    assert!(
        in_session
            .iter()
            .any(|l| l["fields"]["message"] == "certificate accepted"),
        "{text_}"
    );
    for l in &in_session {
        let spans = spans(l);
        assert!(
            spans.iter().any(|s| s["session"] == session.as_str()),
            "{l}"
        );
        if l["fields"]["message"] == "command allowed" {
            assert!(
                spans.iter().any(|s| s["command_id"] == command.as_str()),
                "{l}"
            );
            assert!(spans.iter().any(|s| s["user"] == "alice"), "{l}");
        }
    }
}
