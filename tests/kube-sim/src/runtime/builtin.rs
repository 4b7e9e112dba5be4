//! The built-in container images, run by re-executing the host binary.
//!
//! `app` and `worker` write timestamped lines (every fifth an `ERROR`) to stdout and append the
//! same lines to a log file inside their own filesystem; `app` also answers HTTP on its listen
//! address. Every image echoes lines read on stdin to stdout (so `pods/attach` is observable);
//! `idle` only does that and otherwise sleeps.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::CONTAINER_SUBCOMMAND;

/// Which built-in image to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Image {
    /// Log lines + HTTP responder on container port 8080.
    App,
    /// Log lines.
    Worker,
    /// Sleeps.
    Idle,
}

impl Image {
    /// Parses an image reference (`kube-sim/app`, `kube-sim/app:latest`, `example.com/kube-sim/idle@sha256:..`).
    pub(crate) fn from_reference(image: &str) -> Option<Self> {
        let without_digest = image.split('@').next().unwrap_or(image);
        let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
        let name = match without_digest[last_slash..].find(':') {
            Some(colon) => &without_digest[..last_slash + colon],
            None => without_digest,
        };
        let short = name
            .rsplit_once("kube-sim/")
            .filter(|(prefix, _)| prefix.is_empty() || prefix.ends_with('/'))
            .map(|(_, rest)| rest)?;
        match short {
            "app" => Some(Self::App),
            "worker" => Some(Self::Worker),
            "idle" => Some(Self::Idle),
            _ => None,
        }
    }

    /// The word used on the re-exec command line.
    pub(crate) fn as_arg(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Worker => "worker",
            Self::Idle => "idle",
        }
    }

    /// The container port the image listens on.
    pub(crate) fn listen_port(self) -> Option<u16> {
        (self == Self::App).then_some(APP_PORT)
    }

    /// The log file the image writes inside its filesystem.
    pub(crate) fn log_file(self) -> Option<&'static str> {
        match self {
            Self::App => Some("/var/log/app.log"),
            Self::Worker => Some("/var/log/worker.log"),
            Self::Idle => None,
        }
    }
}

/// Argument that makes [`main`] answer [`PROBE_ANSWER`] (the runtime checks its exe with it).
pub(crate) const PROBE: &str = "probe";
/// What the probe prints.
pub(crate) const PROBE_ANSWER: &str = "kube-sim container images ok";

/// The container port of the `kube-sim/app` HTTP responder.
pub(crate) const APP_PORT: u16 = 8080;

/// Parsed command line of a built-in image.
#[derive(Debug, Default)]
struct Args {
    image: Option<String>,
    name: String,
    log: Option<PathBuf>,
    listen: Option<String>,
    interval_ms: u64,
}

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let rest: Vec<String> = match args.iter().position(|a| a == CONTAINER_SUBCOMMAND) {
        Some(i) => args.into_iter().skip(i + 1).collect(),
        None => args,
    };
    let mut parsed = Args {
        interval_ms: 1000,
        ..Args::default()
    };
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--name" => parsed.name = value("--name")?,
            "--log" => parsed.log = Some(PathBuf::from(value("--log")?)),
            "--listen" => parsed.listen = Some(value("--listen")?),
            "--interval-ms" => {
                parsed.interval_ms = value("--interval-ms")?
                    .parse()
                    .map_err(|e| format!("--interval-ms: {e}"))?;
            }
            other if other.starts_with("--") => return Err(format!("unknown flag {other}")),
            other if parsed.image.is_none() => parsed.image = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    Ok(parsed)
}

/// See [`super::container_main`].
pub(crate) fn main(args: Vec<String>) -> ExitCode {
    let args = match parse_args(args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("kube-sim container: {e}");
            return ExitCode::from(2);
        }
    };
    let image = match args.image.as_deref() {
        Some(PROBE) => {
            println!("{PROBE_ANSWER}");
            return ExitCode::SUCCESS;
        }
        Some("app") => Image::App,
        Some("worker") => Image::Worker,
        Some("idle") => Image::Idle,
        other => {
            eprintln!("kube-sim container: unknown built-in image {other:?} (app, worker, idle)");
            return ExitCode::from(2);
        }
    };
    let name = if args.name.is_empty() {
        image.as_arg().to_owned()
    } else {
        args.name.clone()
    };
    let out = Arc::new(Output::new(args.log.as_deref()));
    if image != Image::Idle {
        for n in 1..=BURST {
            log_line(&out, &name, n);
        }
    }

    if let Some(listen) = &args.listen {
        let listener = match TcpListener::bind(listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kube-sim container: cannot listen on {listen}: {e}");
                return ExitCode::from(98);
            }
        };
        out.line(&format!(
            "INFO {name}: listening on container port {APP_PORT} ({listen})"
        ));
        let (out, name) = (Arc::clone(&out), name.clone());
        thread::spawn(move || serve_http(&listener, &out, &name));
    }

    {
        let (out, name) = (Arc::clone(&out), name.clone());
        thread::spawn(move || echo_stdin(&out, &name));
    }

    if image == Image::Idle {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    log_forever(&out, &name, Duration::from_millis(args.interval_ms.max(10)))
}

/// Where a built-in image's lines go: stdout and (optionally) its log file.
struct Output {
    file: Option<Mutex<fs::File>>,
    stdout: Mutex<io::Stdout>,
}

impl Output {
    fn new(log: Option<&Path>) -> Self {
        let file = log.and_then(|path| {
            if let Some(dir) = path.parent() {
                let _ = fs::create_dir_all(dir);
            }
            match OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => Some(Mutex::new(f)),
                Err(e) => {
                    eprintln!("kube-sim container: cannot open {}: {e}", path.display());
                    None
                }
            }
        });
        Self {
            file,
            stdout: Mutex::new(io::stdout()),
        }
    }

    /// Writes `message` with a timestamp as one line to stdout and the log file.
    fn line(&self, message: &str) {
        let line = format!("{} {message}\n", now_rfc3339_millis());
        if let Ok(mut out) = self.stdout.lock() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
        if let Some(file) = &self.file
            && let Ok(mut f) = file.lock()
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

fn now_rfc3339_millis() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

const ENDPOINTS: [&str; 4] = ["/orders", "/payments", "/refunds", "/healthz"];

/// Lines written at start-up, before the image listens, so the log has content (an `ERROR`
/// included) by the time the container counts as started.
const BURST: u64 = 5;

fn log_line(out: &Output, name: &str, n: u64) {
    if n.is_multiple_of(5) {
        out.line(&format!(
            "ERROR {name}: upstream timeout talking to ledger (request {n})"
        ));
    } else {
        let endpoint = ENDPOINTS
            .get((n as usize) % ENDPOINTS.len())
            .copied()
            .unwrap_or_default();
        out.line(&format!(
            "INFO {name}: handled GET {endpoint} in {}ms (request {n})",
            3 + n % 17
        ));
    }
}

fn log_forever(out: &Output, name: &str, interval: Duration) -> ExitCode {
    let mut n: u64 = BURST;
    loop {
        thread::sleep(interval);
        n += 1;
        log_line(out, name, n);
    }
}

fn echo_stdin(out: &Output, name: &str) {
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        match line {
            Ok(line) => out.line(&format!("INFO {name}: stdin: {line}")),
            Err(_) => break,
        }
    }
}

fn serve_http(listener: &TcpListener, out: &Arc<Output>, name: &str) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (out, name) = (Arc::clone(out), name.to_owned());
        thread::spawn(move || {
            if let Err(e) = answer(conn, &out, &name) {
                out.line(&format!("WARN {name}: http connection failed: {e}"));
            }
        });
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The part of `chunk` that a `read` returning `n` filled (`Read` promises `n <= chunk.len()`).
fn filled(chunk: &[u8], n: usize) -> io::Result<&[u8]> {
    chunk
        .get(..n)
        .ok_or_else(|| io::Error::other("read reported more bytes than its buffer holds"))
}

/// Answers one HTTP/1.x request (keep-alive supported) with a small text body.
fn answer(mut conn: TcpStream, out: &Output, name: &str) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > 16 * 1024 {
                conn.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
            let mut chunk = [0u8; 1024];
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(filled(&chunk, n)?);
        };
        // `head_end` is within `buf`: it was found there.
        let head: Vec<u8> = buf.drain(..head_end).collect();
        let head = String::from_utf8_lossy(&head).into_owned();
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("GET").to_owned();
        let path = parts.next().unwrap_or("/").to_owned();
        let close = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("connection:") && l.contains("close")
        }) || request_line.ends_with("HTTP/1.0");
        // Skip a request body, if any.
        let content_length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut to_skip = content_length;
        while to_skip > 0 {
            if !buf.is_empty() {
                let n = to_skip.min(buf.len());
                buf.drain(..n);
                to_skip -= n;
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(filled(&chunk, n)?);
        }
        out.line(&format!("INFO {name}: http {method} {path}"));
        let body = format!("kube-sim {name} on {}: {method} {path}\n", hostname());
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        conn.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}
