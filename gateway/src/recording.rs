//! Session recordings in asciicast v2 (`asciinema play FILE`): a header line with the terminal
//! size, start time and who/where/which rule, then `[time, code, data]` events — `o` output,
//! `i` input (submitted lines, redacted), `r` resize (`COLSxROWS`) and `m` markers (decisions).
//! Every event is written through to the file; an error ends the session (fail closed).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use serde_json::json;
use tokio::io::AsyncWrite;

/// Why a recording cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("the session recording {path} cannot be written: {source}")]
pub struct RecordingError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// One session's asciicast file.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    started: Instant,
    file: Mutex<Option<std::fs::File>>,
    /// Bytes written so far, and the most this recording may hold.
    written: std::sync::atomic::AtomicU64,
    max: u64,
}

/// The most one session's recording may hold by default (`limits.maxRecordingBytes`); beyond
/// it the recording fails, and with it the session (evidence first), so one session cannot fill
/// the volume everyone's recordings and audit log may share.
pub const MAX_RECORDING: u64 = 256 * 1024 * 1024;

/// What the header says about the session.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// Terminal columns (80 without a terminal).
    pub cols: u16,
    /// Terminal rows (24 without a terminal).
    pub rows: u16,
    /// The session id (also the file name).
    pub session: &'a str,
    /// The verified user.
    pub user: &'a str,
    /// The certificate identity.
    pub identity: &'a str,
    /// `namespace/pod/container`.
    pub target: &'a str,
    /// The rule that allowed the session.
    pub rule: &'a str,
    /// `shell`, `attach` or `break-glass`.
    pub kind: &'a str,
}

impl Recorder {
    /// Creates `<dir>/<time>_<user>_<namespace>-<pod>_<session>.cast` (a name people can find:
    /// `2026-12-03T14-02-11Z_alice_payments-api-0_<id>.cast`) and writes the header.
    pub fn create(dir: &Path, h: &Header<'_>, max: u64) -> Result<Arc<Self>, RecordingError> {
        let path = dir.join(file_name(h, std::time::SystemTime::now()));
        let err = |source| RecordingError {
            path: path.display().to_string(),
            source,
        };
        private_dir(dir).map_err(err)?;
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let header = json!({
            "version": 2,
            "width": h.cols,
            "height": h.rows,
            "timestamp": now,
            "title": format!("jitsh {} {}@{}", h.kind, h.user, h.target),
            "env": {"TERM": "xterm-256color", "SHELL": "jitsh"},
            "jitsh": {"session": h.session, "user": h.user, "identity": h.identity, "target": h.target, "rule": h.rule, "kind": h.kind},
        });
        writeln!(file, "{header}").map_err(err)?;
        file.flush().map_err(err)?;
        Ok(Arc::new(Recorder {
            path,
            started: Instant::now(),
            file: Mutex::new(Some(file)),
            written: std::sync::atomic::AtomicU64::new(0),
            max,
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event.
    pub fn event(&self, code: &str, data: &str) -> Result<(), RecordingError> {
        let t = self.started.elapsed().as_secs_f64();
        let line = json!([(t * 1_000_000.0).round() / 1_000_000.0, code, data]).to_string();
        let mut g = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let err = |source| RecordingError {
            path: self.path.display().to_string(),
            source,
        };
        let f = g
            .as_mut()
            .ok_or_else(|| err(std::io::Error::other("recording closed after an error")))?;
        let size = line.len() as u64 + 1;
        if self
            .written
            .fetch_add(size, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(size)
            > self.max
        {
            *g = None;
            return Err(err(std::io::Error::other(format!(
                "the session's recording reached its limit of {} bytes",
                self.max
            ))));
        }
        let r = writeln!(f, "{line}").and_then(|()| f.flush());
        if let Err(e) = r {
            *g = None;
            return Err(err(e));
        }
        Ok(())
    }

    /// Output bytes (lossy UTF-8, as asciicast requires text).
    pub fn output(&self, bytes: &[u8]) -> Result<(), RecordingError> {
        self.event("o", &String::from_utf8_lossy(bytes))
    }

    /// Syncs the file to disk.
    pub fn finish(&self) {
        let g = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = g.as_ref() {
            let _ = f.sync_all();
        }
    }
}

/// A writer that also records what passes through as `o` events; a recording error fails the
/// write (and so the session).
pub struct Recorded<W> {
    /// The real destination.
    pub inner: W,
    /// The recording.
    pub rec: Option<Arc<Recorder>>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Recorded<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(rec)) = (&r, &self.rec)
            && let Err(e) = rec.output(buf.get(..*n).unwrap_or_default())
        {
            return Poll::Ready(Err(std::io::Error::other(e.to_string())));
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The recording's file name: UTC time (`:` as `-`), user, `namespace-pod`, session id; every
/// part kept to file-name-safe characters.
fn file_name(h: &Header<'_>, now: std::time::SystemTime) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let time = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(':', "-");
    let mut place = h.target.splitn(3, '/');
    let (ns, pod) = (
        place.next().unwrap_or_default(),
        place.next().unwrap_or_default(),
    );
    format!(
        "{time}_{}_{}-{}_{}.cast",
        safe(h.user),
        safe(ns),
        safe(pod),
        safe(h.session)
    )
}

/// Creates `dir` (and its missing parents) readable by the gateway's user only (0700): the
/// recordings and audit logs hold what users typed and saw.
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_events_are_asciicast_v2() {
        let dir = tempfile::tempdir().unwrap();
        let h = Header {
            cols: 100,
            rows: 30,
            session: "s1",
            user: "alice",
            identity: "alice@example.com",
            target: "payments/api-0/app",
            rule: "oncall-read",
            kind: "shell",
        };
        let r = Recorder::create(dir.path(), &h, MAX_RECORDING).unwrap();
        r.output(b"hello\r\n").unwrap();
        r.event("i", "ps aux\r").unwrap();
        r.event("r", "120x40").unwrap();
        r.event("m", "allow ps aux").unwrap();
        r.finish();
        let text = std::fs::read_to_string(r.path()).unwrap();
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["version"], 2);
        assert_eq!(header["width"], 100);
        assert_eq!(header["jitsh"]["user"], "alice");
        let codes: Vec<String> = lines
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()[1]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(codes, ["o", "i", "r", "m"]);
        // A name people can find: time, user, target, session.
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_306_531);
        assert_eq!(
            file_name(&h, at),
            "2026-12-03T14-02-11Z_alice_payments-api-0_s1.cast"
        );
        let odd = Header {
            user: "a/../b",
            ..h.clone()
        };
        assert_eq!(
            file_name(&odd, at),
            "2026-12-03T14-02-11Z_a-..-b_payments-api-0_s1.cast"
        );
    }
}
