//! Container log files: one record per line (or partial line) of the container's stdout/stderr,
//! in the CRI logging format the kubelet reads:
//!
//! ```text
//! 2026-01-02T03:04:05.123456789Z stdout F a complete line
//! 2026-01-02T03:04:05.123456790Z stderr P a partial line (no newline yet)
//! ```
//!
//! Logs live on disk, never in memory: readers stream the file and follow it through a
//! [`tokio::sync::watch`] of the written length.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::watch;

use super::LogOptions;

/// Longest record content; longer lines are split into partial records.
const MAX_RECORD: usize = 16 * 1024;
/// Largest chunk a reader yields at once.
const MAX_CHUNK: usize = 64 * 1024;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Progress of one log file, published by its writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogProgress {
    /// Bytes written so far.
    pub(crate) len: u64,
    /// The writer is done (the container instance exited).
    pub(crate) closed: bool,
}

/// Appends records to one container instance's log file.
pub(crate) struct LogWriter {
    file: File,
    len: u64,
    progress: watch::Sender<LogProgress>,
}

impl LogWriter {
    /// Creates (truncates) the file at `path`.
    pub(crate) fn create(path: &Path) -> io::Result<(Self, watch::Receiver<LogProgress>)> {
        let file = File::create(path)?;
        let (progress, rx) = watch::channel(LogProgress::default());
        Ok((
            Self {
                file,
                len: 0,
                progress,
            },
            rx,
        ))
    }

    /// Records one chunk of output: complete lines as `F` records, a trailing rest as a `P` record.
    pub(crate) fn write_chunk(&mut self, stream: OutputStream, data: &[u8]) -> io::Result<()> {
        let ts = timestamp(SystemTime::now());
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut rest = data;
        while !rest.is_empty() {
            let newline = rest
                .iter()
                .position(|b| *b == b'\n')
                .filter(|i| *i <= MAX_RECORD);
            let (content, tag, after) = match newline.and_then(|i| rest.split_at_checked(i)) {
                // A complete line, recorded without its newline (the first byte of `from_nl`).
                Some((line, from_nl)) => (line, 'F', from_nl.get(1..).unwrap_or_default()),
                None => match rest.split_at_checked(MAX_RECORD) {
                    // Longer than a record without a newline in it: a record's worth.
                    Some((part, after)) => (part, 'P', after),
                    // The trailing rest.
                    None => (rest, 'P', &[][..]),
                },
            };
            out.extend_from_slice(ts.as_bytes());
            out.push(b' ');
            out.extend_from_slice(stream.as_str().as_bytes());
            out.push(b' ');
            out.push(tag as u8);
            out.push(b' ');
            out.extend_from_slice(content);
            out.push(b'\n');
            rest = after;
        }
        self.file.write_all(&out)?;
        self.len += out.len() as u64;
        let len = self.len;
        self.progress.send_modify(|p| p.len = len);
        Ok(())
    }

    /// Marks the log complete: followers end once they read everything.
    pub(crate) fn close(&self) {
        self.progress.send_modify(|p| p.closed = true);
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// RFC 3339 UTC with exactly nine fractional digits (what the kubelet prints); fixed width, so
/// timestamps compare as strings.
pub(crate) fn timestamp(at: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    time::OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_default()
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Its timestamp, as written.
    pub(crate) ts: Bytes,
    /// Its stream.
    pub(crate) stream: OutputStream,
    /// Whether it ends a line.
    pub(crate) full: bool,
    /// Its content, without the newline.
    pub(crate) content: Bytes,
}

fn parse_record(line: &[u8]) -> Option<Record> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => OutputStream::Stdout,
        b"stderr" => OutputStream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or_default();
    Some(Record {
        ts: Bytes::copy_from_slice(ts),
        stream,
        full,
        content: Bytes::copy_from_slice(content),
    })
}

/// Where a reader starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// At the first record.
    Beginning,
    /// At the start of the last N lines.
    TailLines(u64),
    /// At this byte offset (the current end, for attach).
    Offset(u64),
}

/// Reads records from a log file, optionally following it.
pub(crate) struct RecordReader {
    path: PathBuf,
    reader: Option<BufReader<tokio::fs::File>>,
    start: Start,
    pos: u64,
    partial: Vec<u8>,
    progress: Option<watch::Receiver<LogProgress>>,
    done: bool,
}

impl RecordReader {
    /// A reader of `path`; with `progress` it follows the file until its writer closes.
    pub(crate) fn new(
        path: PathBuf,
        start: Start,
        progress: Option<watch::Receiver<LogProgress>>,
    ) -> Self {
        Self {
            path,
            reader: None,
            start,
            pos: 0,
            partial: Vec::new(),
            progress,
            done: false,
        }
    }

    /// Whether more data is buffered (no I/O needed for the next record).
    fn has_buffered(&self) -> bool {
        self.reader.as_ref().is_some_and(|r| !r.buffer().is_empty())
    }

    async fn open(&mut self) -> io::Result<()> {
        let mut file = tokio::fs::File::open(&self.path).await?;
        let offset = match self.start {
            Start::Beginning => 0,
            Start::Offset(o) => o,
            Start::TailLines(n) => tail_offset(&self.path, n).await?,
        };
        file.seek(io::SeekFrom::Start(offset)).await?;
        self.pos = offset;
        self.reader = Some(BufReader::with_capacity(64 * 1024, file));
        Ok(())
    }

    /// The next record, or `None` at the end (or when not following, at the end of the file).
    pub(crate) async fn next(&mut self) -> io::Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        if self.reader.is_none() {
            self.open().await?;
        }
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return Ok(None);
            };
            // Lines are bounded: the writer caps record content at MAX_RECORD.
            let n = reader.read_until(b'\n', &mut self.partial).await?;
            self.pos += n as u64;
            if self.partial.ends_with(b"\n") {
                let record = parse_record(&self.partial);
                self.partial.clear();
                match record {
                    Some(r) => return Ok(Some(r)),
                    None => continue,
                }
            }
            if self.partial.len() > MAX_RECORD * 2 {
                // Not a file we wrote: refuse to grow without bound.
                self.partial.clear();
            }
            // End of what is written so far.
            let Some(progress) = self.progress.as_mut() else {
                self.done = true;
                return Ok(None);
            };
            let seen = *progress.borrow_and_update();
            if seen.len > self.pos {
                continue;
            }
            if seen.closed {
                self.done = true;
                return Ok(None);
            }
            if progress.changed().await.is_err() {
                // Writer gone: read what is left, then stop.
                self.progress = None;
            }
        }
    }
}

/// Offset of the start of the last `n` lines of the log at `path`.
async fn tail_offset(path: &Path, n: u64) -> io::Result<u64> {
    if n == 0 {
        return Ok(tokio::fs::metadata(path).await?.len());
    }
    let file = tokio::fs::File::open(path).await?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut starts: VecDeque<u64> = VecDeque::new();
    let mut line_start = true;
    let mut pos = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).await?;
        if read == 0 || !buf.ends_with(b"\n") {
            break;
        }
        if line_start {
            starts.push_back(pos);
            if starts.len() as u64 > n {
                starts.pop_front();
            }
        }
        line_start = parse_record(&buf).is_none_or(|r| r.full);
        pos += read as u64;
    }
    Ok(starts.front().copied().unwrap_or(pos))
}

/// Turns records into `pods/log` output bytes according to [`LogOptions`].
pub(crate) struct LogStream {
    reader: RecordReader,
    timestamps: bool,
    since: Option<String>,
    remaining: Option<u64>,
}

impl LogStream {
    /// A stream over `path` (following `progress` when `options.follow`).
    pub(crate) fn new(
        path: PathBuf,
        options: &LogOptions,
        progress: Option<watch::Receiver<LogProgress>>,
    ) -> Self {
        let start = options
            .tail_lines
            .map_or(Start::Beginning, Start::TailLines);
        let since_seconds = options
            .since_seconds
            .and_then(|s| SystemTime::now().checked_sub(Duration::from_secs(s)));
        let since = match (since_seconds, options.since_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Self {
            reader: RecordReader::new(path, start, progress.filter(|_| options.follow)),
            timestamps: options.timestamps,
            since: since.map(timestamp),
            remaining: options.limit_bytes,
        }
    }

    /// The next chunk of output, `None` at the end.
    pub(crate) async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        let budget = self.remaining.unwrap_or(u64::MAX);
        if budget == 0 {
            return None;
        }
        let mut out = BytesMut::new();
        loop {
            if !out.is_empty() && (out.len() >= MAX_CHUNK || !self.reader.has_buffered()) {
                break;
            }
            let record = match self.reader.next().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) if out.is_empty() => return Some(Err(e)),
                Err(_) => break,
            };
            if self
                .since
                .as_ref()
                .is_some_and(|since| record.ts.as_ref() < since.as_bytes())
            {
                continue;
            }
            if self.timestamps {
                out.extend_from_slice(&record.ts);
                out.extend_from_slice(b" ");
            }
            out.extend_from_slice(&record.content);
            if record.full {
                out.extend_from_slice(b"\n");
            }
            if out.len() as u64 >= budget {
                out.truncate(usize::try_from(budget).unwrap_or(usize::MAX));
                break;
            }
        }
        if let Some(remaining) = self.remaining.as_mut() {
            *remaining = remaining.saturating_sub(out.len() as u64);
        }
        if out.is_empty() {
            None
        } else {
            Some(Ok(out.freeze()))
        }
    }
}
