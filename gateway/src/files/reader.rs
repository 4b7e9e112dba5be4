//! The fixed readers: every file operation runs one of a handful of argv templates in the pod
//! through pods/exec as the user — never a shell, never text from the client but the one path
//! the policy permitted — and parses its output.
//!
//! | operation | argv |
//! | --- | --- |
//! | read from the start | `cat -- PATH` |
//! | read from byte N (a seek) | `tail -c +N+1 -- PATH` |
//! | stat (follows links) / lstat | `stat [-L] -c '%f %s %X %Y %u %g' -- PATH` |
//! | canonical path (links resolved) | `realpath -e -- PATH` |
//! | list a directory | `find PATH -mindepth 1 -maxdepth 1 -printf '%y %m %s %U %G %A@ %T@ %P\0'` |

use std::future::Future;
use std::pin::Pin;

use jitsh_broker_policy::FilePermit;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use tokio::io::{AsyncReadExt, DuplexStream};

use super::FileError;
use crate::kube::Impersonated;
pub(crate) use crate::kube::files::Reader;

/// Largest directory listing read (bytes of `find` output).
pub(crate) const MAX_LISTING: usize = 8 * 1024 * 1024;
/// Buffer between the API server and the gateway for file data (read-ahead); an SFTP session
/// holds at most 8 open files, so at most 16 MiB of it.
const READ_AHEAD: usize = 2 * 1024 * 1024;
/// Stderr kept for error messages.
const STDERR_KEPT: usize = 4096;

type StatusFuture = Pin<Box<dyn Future<Output = Option<Status>> + Send>>;

/// A running reader in the pod.
pub(crate) struct Proc {
    /// Its stream (dropping it ends the reader in the pod).
    _process: crate::kube::Remote,
    stdout: DuplexStream,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    status: Option<StatusFuture>,
    program: &'static str,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

/// Starts `reader` on the permitted path in the target container (pods/exec as the user).
pub(crate) async fn spawn(
    k: &Impersonated,
    permit: &FilePermit,
    reader: Reader,
) -> Result<Proc, FileError> {
    let program = reader.program();
    let mut process = crate::kube::files::exec_reader(k, permit, reader, READ_AHEAD).await?;
    let (Some(stdout), Some(mut stderr), Some(status)) = (
        process.stdout.take(),
        process.stderr.take(),
        process.status.take(),
    ) else {
        return Err(FileError::Failure(
            "kubernetes: the exec stream has no stdout".into(),
        ));
    };
    // Drained concurrently so a chatty stderr can never stall stdout.
    let stderr = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = STDERR_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
        }
        kept
    });
    Ok(Proc {
        _process: process,
        stdout,
        stderr,
        status: Some(Box::pin(async move { status.await.ok() })),
        program,
    })
}

impl Proc {
    /// Reads stdout; 0 at its end.
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf).await
    }

    /// Reads stdout into `buf`'s spare room (no zeroing, no extra copy); 0 at its end.
    pub(crate) async fn read_buf<B: bytes::BufMut + Send>(
        &mut self,
        buf: &mut B,
    ) -> std::io::Result<usize> {
        self.stdout.read_buf(buf).await
    }

    /// Waits for the exit status once stdout has ended: an error (with the reader's message)
    /// unless it succeeded.
    pub(crate) async fn finish(mut self) -> Result<(), FileError> {
        let status = match self.status.take() {
            Some(s) => s.await,
            None => None,
        };
        let stderr = std::mem::replace(&mut self.stderr, tokio::spawn(async { Vec::new() }))
            .await
            .unwrap_or_default();
        let code = match &status {
            Some(st) => crate::kube::exit_code(st),
            None => 1,
        };
        if code == 0 {
            return Ok(());
        }
        Err(reader_error(self.program, code, &stderr))
    }

    /// Reads all of stdout (at most `limit` bytes) and the exit status.
    pub(crate) async fn collect(mut self, limit: usize) -> Result<Vec<u8>, FileError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.read(&mut buf).await.map_err(|e| {
                FileError::Failure(format!("kubernetes: reading from the pod: {e}"))
            })?;
            if n == 0 {
                break;
            }
            if out.len() + n > limit {
                return Err(FileError::Failure(format!(
                    "{}: more than {limit} bytes of output; refused",
                    self.program
                )));
            }
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        self.finish().await?;
        Ok(out)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The stream ends with `_process` (dropping it closes the connection, which ends the
        // process in the pod when a reader stopped early).
        self.stderr.abort();
    }
}

/// A reader's failure, classified from its exit status and first line of stderr.
fn reader_error(program: &str, code: u32, stderr: &[u8]) -> FileError {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if code == 127 {
        return FileError::Failure(format!(
            "the container has no '{program}' (jitsh reads files with cat, tail, stat, realpath and find)"
        ));
    }
    if line.contains("No such file") || line.contains("Not a directory") {
        return FileError::NotFound(line);
    }
    if line.contains("Permission denied") {
        return FileError::Denied(line);
    }
    if line.is_empty() {
        FileError::Failure(format!("{program} exited with status {code}"))
    } else {
        FileError::Failure(line)
    }
}

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (from lstat or a listing).
    Link,
    /// Anything else (device, FIFO, socket).
    Other,
}

/// File attributes as the tree reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr {
    /// Type.
    pub kind: Kind,
    /// Permission bits (`0o7777` part).
    pub perm: u32,
    /// Size, when known (logs have none without reading them).
    pub size: Option<u64>,
    /// Access time (seconds since the epoch).
    pub atime: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// Owner and group ids.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Attr {
    /// A read-only directory of the virtual tree.
    pub(crate) fn dir(mtime: u32) -> Self {
        Attr {
            kind: Kind::Dir,
            perm: 0o555,
            size: None,
            atime: mtime,
            mtime,
            uid: 0,
            gid: 0,
        }
    }
    /// A read-only file of the virtual tree.
    pub(crate) fn file(mtime: u32, size: Option<u64>) -> Self {
        Attr {
            kind: Kind::File,
            perm: 0o444,
            size,
            atime: mtime,
            mtime,
            uid: 0,
            gid: 0,
        }
    }
}

fn kind_of_mode(mode: u32) -> Kind {
    match mode & 0o170000 {
        0o100000 => Kind::File,
        0o040000 => Kind::Dir,
        0o120000 => Kind::Link,
        _ => Kind::Other,
    }
}

/// Parses `stat -c '%f %s %X %Y %u %g'` output.
pub(crate) fn parse_stat(out: &[u8]) -> Result<Attr, FileError> {
    let bad = || FileError::Failure("stat: unexpected output".into());
    let text = std::str::from_utf8(out).map_err(|_| bad())?;
    let f: Vec<&str> = text.split_whitespace().collect();
    let [mode, size, atime, mtime, uid, gid] = f.as_slice() else {
        return Err(bad());
    };
    let mode = u32::from_str_radix(mode, 16).map_err(|_| bad())?;
    Ok(Attr {
        kind: kind_of_mode(mode),
        perm: mode & 0o7777,
        size: Some(size.parse().map_err(|_| bad())?),
        atime: clamp_time(atime.parse().map_err(|_| bad())?),
        mtime: clamp_time(mtime.parse().map_err(|_| bad())?),
        uid: uid.parse().map_err(|_| bad())?,
        gid: gid.parse().map_err(|_| bad())?,
    })
}

fn clamp_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// Parses `realpath -e` output (the path and one newline).
pub(crate) fn parse_realpath(out: &[u8]) -> Result<String, FileError> {
    let bad = || FileError::Failure("realpath: unexpected output".into());
    let text = std::str::from_utf8(out).map_err(|_| bad())?;
    let p = text.strip_suffix('\n').unwrap_or(text);
    if !p.starts_with('/') || p.contains('\0') {
        return Err(bad());
    }
    Ok(p.to_owned())
}

/// Parses the `find -printf` listing: `(name, attributes)` per entry; names that are not UTF-8
/// (SFTP v3 names are strings here) are skipped.
pub(crate) fn parse_listing(out: &[u8]) -> Result<Vec<(String, Attr)>, FileError> {
    let mut entries = Vec::new();
    for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let bad = || FileError::Failure("find: unexpected output".into());
        let mut fields = rec.splitn(8, |b| *b == b' ');
        let mut next = || fields.next().ok_or_else(bad);
        let (y, m, s, u, g, a, t, name) = (
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
        );
        let num = |b: &[u8]| -> Result<u64, FileError> {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)
        };
        let secs = |b: &[u8]| -> Result<u32, FileError> {
            let s = std::str::from_utf8(b).map_err(|_| bad())?;
            let whole = s.split('.').next().unwrap_or("");
            Ok(clamp_time(whole.parse().map_err(|_| bad())?))
        };
        let kind = match y {
            b"f" => Kind::File,
            b"d" => Kind::Dir,
            b"l" => Kind::Link,
            _ => Kind::Other,
        };
        let perm = std::str::from_utf8(m)
            .ok()
            .and_then(|s| u32::from_str_radix(s, 8).ok())
            .ok_or_else(bad)?;
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        entries.push((
            name.to_owned(),
            Attr {
                kind,
                perm: perm & 0o7777,
                size: Some(num(s)?),
                atime: secs(a)?,
                mtime: secs(t)?,
                uid: u32::try_from(num(u)?).unwrap_or(u32::MAX),
                gid: u32::try_from(num(g)?).unwrap_or(u32::MAX),
            },
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_output() {
        let a = parse_stat(b"81a4 1234 1700000001 1700000002 0 42\n").unwrap();
        assert_eq!(a.kind, Kind::File);
        assert_eq!(a.perm, 0o644);
        assert_eq!(a.size, Some(1234));
        assert_eq!(
            (a.atime, a.mtime, a.uid, a.gid),
            (1700000001, 1700000002, 0, 42)
        );
        assert_eq!(parse_stat(b"41ed 4096 1 2 0 0\n").unwrap().kind, Kind::Dir);
        assert_eq!(parse_stat(b"a1ff 7 1 2 0 0\n").unwrap().kind, Kind::Link);
        for bad in [
            &b""[..],
            b"zz 1 1 1 0 0",
            b"81a4 -1 1 1 0 0",
            b"81a4 1 1 1 0",
            b"\xff",
        ] {
            assert!(parse_stat(bad).is_err());
        }
    }

    #[test]
    fn listing_output() {
        let out = b"f 644 12 0 0 1700000000.5 1700000001.0000000000 app.log\0d 755 4096 1 2 1.0 2.0 nginx\0l 777 7 0 0 1.0 2.0 a name with spaces\0f 600 1 0 0 1.0 2.0 \xff\xfe\0";
        let e = parse_listing(out).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].0, "app.log");
        assert_eq!(e[0].1.size, Some(12));
        assert_eq!(e[0].1.mtime, 1700000001);
        assert_eq!(e[1].1.kind, Kind::Dir);
        assert_eq!((e[1].1.uid, e[1].1.gid), (1, 2));
        assert_eq!(e[2].0, "a name with spaces");
        assert_eq!(e[2].1.kind, Kind::Link);
        assert!(parse_listing(b"").unwrap().is_empty());
        for bad in [
            &b"f 644 x 0 0 1 1 a\0"[..],
            b"f 999 1 0 0 1 1 a\0",
            b"f 644 1 0 0 1 1\0",
            b"f 644 1 0 0 1 1 a/b\0",
        ] {
            assert!(parse_listing(bad).is_err());
        }
    }

    #[test]
    fn realpath_output() {
        assert_eq!(
            parse_realpath(b"/var/log/app.log\n").unwrap(),
            "/var/log/app.log"
        );
        assert!(parse_realpath(b"relative\n").is_err());
        assert!(parse_realpath(b"\xff").is_err());
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(
            reader_error("cat", 1, b"cat: /x: No such file or directory\n"),
            FileError::NotFound(_)
        ));
        assert!(matches!(
            reader_error("cat", 1, b"cat: /x: Permission denied\n"),
            FileError::Denied(_)
        ));
        assert!(
            matches!(reader_error("find", 127, b""), FileError::Failure(m) if m.contains("no 'find'"))
        );
        assert!(
            matches!(reader_error("cat", 2, b""), FileError::Failure(m) if m.contains("status 2"))
        );
    }
}
