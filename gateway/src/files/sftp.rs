//! The `sftp` subsystem (SFTP version 3, what OpenSSH's `sftp` and `scp` speak): the read-only
//! virtual tree served with russh-sftp's protocol types.
//!
//! Requests are answered in order, as OpenSSH's own sftp-server does; throughput comes from the
//! client's pipelining (64 requests in flight), large reads (`limits@openssh.com` advertises
//! 255 KiB, as OpenSSH does), the reader's read-ahead in the pod stream, and responses batched
//! until the client's queue of requests is drained. Writes, uploads, `mkdir`, `rm`, `rename`,
//! `setstat` and links are refused with "permission denied" and audited.

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use russh_sftp::protocol::{
    Attrs, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use tokio::io::{AsyncReadExt, BufReader};

use super::FileError;
use super::access::{Files, OpenFile};
use super::reader::{Attr, Kind};
use super::tree;
use crate::audit::Event;
use crate::ids::CommandId;
use crate::session::{Ctx, say};

/// Largest read served (what OpenSSH's sftp-server advertises: 256 KiB less 1 KiB).
const MAX_READ: u32 = 256 * 1024 - 1024;
/// Largest request accepted from the client.
const MAX_REQUEST: u32 = 256 * 1024 + 4096;
/// Handles advertised in `limits@openssh.com`. OpenSSH's client also caps its requests in
/// flight at this number, so it stays at its default of 64 (the real caps are below).
const ADVERTISED_HANDLES: u64 = 64;
/// Files open at once (each holds a reader in the pod and its read-ahead buffer).
const MAX_FILES: usize = 8;
/// Directories open at once (each holds its listing).
const MAX_DIRS: usize = 8;
/// Distinct reasons shown on the client's stderr per session (then only the status codes).
const MAX_SAID: usize = 64;
/// Directory entries per `SSH_FXP_NAME` answer.
const NAMES_PER_READDIR: usize = 128;
/// `SSH_FXP_DATA`.
const SSH_FXP_DATA: u8 = 103;
/// Length, type, request id and data length before the data of an `SSH_FXP_DATA`.
const DATA_HEADER: usize = 13;

enum Opened {
    File(Box<OpenFile>),
    Dir { entries: Vec<File>, next: usize },
}

struct Session<'c> {
    files: Files<'c>,
    handles: HashMap<String, Opened>,
    counter: u64,
    bytes: u64,
    /// Reasons already shown on the client's stderr (clients retry; say each once).
    said: HashSet<String>,
}

/// What to send back for one request.
enum Reply {
    Packet(Packet),
    /// `SSH_FXP_DATA`: `data` starts with [`DATA_HEADER`] bytes of room for the framing, so the
    /// file's bytes go out as read, without another copy.
    Data {
        id: u32,
        data: BytesMut,
    },
}

/// Serves the subsystem until the client closes the channel; the exit status.
pub(crate) async fn serve(ctx: &Ctx<'_>, mut read: russh::ChannelReadHalf) -> u32 {
    let cid = CommandId::new();
    let mut ev = Event {
        via: Some("sftp".into()),
        ..ctx.event(&cid)
    };
    if let Err(e) = ctx.gw.audit_first("sftp.start", &ev) {
        say(ctx.write, &e.to_string(), false).await;
        return 1;
    }
    let files = match Files::new(ctx, "sftp", &cid) {
        Ok(f) => f,
        Err(e) => {
            say(ctx.write, &e.to_string(), false).await;
            return 1;
        }
    };
    let mut s = Session {
        files,
        handles: HashMap::new(),
        counter: 0,
        bytes: 0,
        said: HashSet::new(),
    };
    let mut input = BufReader::with_capacity(256 * 1024, read.make_reader());
    let sent = ctx.bytes(crate::telemetry::Direction::Out);
    let end = loop {
        let len = match input.read_u32().await {
            Ok(n) => n,
            Err(_) => break None,
        };
        if len == 0 || len > MAX_REQUEST {
            break Some(format!("protocol error: a request of {len} bytes"));
        }
        let mut body = vec![0u8; len as usize];
        if input.read_exact(&mut body).await.is_err() {
            break None;
        }
        ctx.clock.touch();
        // The request id sits after the type byte (version negotiation has none: 0).
        let id = body
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_be_bytes);
        let mut bytes = Bytes::from(body);
        let reply = match Packet::try_from(&mut bytes) {
            Ok(p) => s.handle(ctx, p).await,
            Err(_) => Reply::Packet(status(id, StatusCode::BadMessage, "malformed request")),
        };
        // Owned bytes go to the channel as they are (russh slices them into packets).
        let Ok(out) = encode(reply) else {
            break Some("could not encode a response".into());
        };
        let n = out.len() as u64;
        if ctx.write.data_bytes(out).await.is_err() {
            break None;
        }
        sent.inc_by(n);
        ctx.clock.touch();
    };
    if let Some(msg) = &end {
        say(ctx.write, msg, false).await;
    }
    for (_, h) in s.handles.drain() {
        if let Opened::File(f) = h {
            s.bytes += f.bytes();
            f.close(
                ctx,
                Some("the SFTP session ended with the file open".into()),
            );
        }
    }
    ev.files = Some(s.files.opened);
    ev.bytes = Some(s.bytes);
    ev.error = end;
    ctx.gw.record("sftp.end", &ev);
    0
}

/// The response as one buffer, framed.
fn encode(reply: Reply) -> Result<Bytes, String> {
    match reply {
        Reply::Data { id, mut data } => {
            let n = u32::try_from(data.len().saturating_sub(DATA_HEADER)).unwrap_or(u32::MAX);
            if let Some(head) = data.get_mut(..DATA_HEADER) {
                // length, type, request id, data length: 4 + 1 + 4 + 4 = DATA_HEADER bytes.
                let mut framed = [0u8; DATA_HEADER];
                for (slot, byte) in framed.iter_mut().zip(
                    (9 + n)
                        .to_be_bytes()
                        .into_iter()
                        .chain([SSH_FXP_DATA])
                        .chain(id.to_be_bytes())
                        .chain(n.to_be_bytes()),
                ) {
                    *slot = byte;
                }
                head.copy_from_slice(&framed);
            }
            Ok(data.freeze())
        }
        Reply::Packet(p) => Bytes::try_from(p).map_err(|e| e.to_string()),
    }
}

fn status(id: u32, code: StatusCode, msg: &str) -> Packet {
    Packet::Status(Status {
        id,
        status_code: code,
        error_message: msg.to_owned(),
        language_tag: "en".to_owned(),
    })
}

fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "Success")
}

impl Session<'_> {
    async fn handle(&mut self, ctx: &Ctx<'_>, p: Packet) -> Reply {
        let id = p.get_request_id();
        match self.dispatch(ctx, p).await {
            Ok(r) => r,
            Err(e) => {
                let code = match &e {
                    FileError::NotFound(_) => StatusCode::NoSuchFile,
                    FileError::Denied(_) => StatusCode::PermissionDenied,
                    FileError::Failure(_) => StatusCode::Failure,
                };
                // The client shows only the status code; the reason goes to its stderr.
                if !matches!(e, FileError::NotFound(_))
                    && self.said.len() < MAX_SAID
                    && self.said.insert(e.to_string())
                {
                    say(ctx.write, &e.to_string(), false).await;
                }
                Reply::Packet(status(id, code, &format!("jitsh: {e}")))
            }
        }
    }

    async fn dispatch(&mut self, ctx: &Ctx<'_>, p: Packet) -> Result<Reply, FileError> {
        let pk = |p: Packet| Ok(Reply::Packet(p));
        match p {
            Packet::Init(_) => {
                let mut v = Version::new();
                v.extensions
                    .insert(russh_sftp::extensions::LIMITS.to_owned(), "1".to_owned());
                pk(Packet::Version(v))
            }
            Packet::RealPath(r) => {
                let path = tree::canonical(&r.path)?;
                pk(Packet::Name(Name {
                    id: r.id,
                    files: vec![File::dummy(path)],
                }))
            }
            Packet::Stat(r) => {
                let a = self.files.stat(&tree::parse(&r.path)?, true).await?;
                pk(Packet::Attrs(Attrs {
                    id: r.id,
                    attrs: attributes(&a),
                }))
            }
            Packet::Lstat(r) => {
                let a = self.files.stat(&tree::parse(&r.path)?, false).await?;
                pk(Packet::Attrs(Attrs {
                    id: r.id,
                    attrs: attributes(&a),
                }))
            }
            Packet::Open(r) => {
                let writes = OpenFlags::WRITE
                    | OpenFlags::APPEND
                    | OpenFlags::CREATE
                    | OpenFlags::TRUNCATE
                    | OpenFlags::EXCLUDE;
                if r.pflags.intersects(writes) {
                    return Err(self.files.read_only(&r.filename, "write"));
                }
                self.room(true)?;
                let f = self.files.open(&tree::parse(&r.filename)?, false).await?;
                let handle = self.insert(Opened::File(Box::new(f)));
                pk(Packet::Handle(Handle { id: r.id, handle }))
            }
            Packet::Read(r) => {
                let Some(Opened::File(f)) = self.handles.get_mut(&r.handle) else {
                    return Err(FileError::Failure("invalid file handle".into()));
                };
                let len = r.len.min(MAX_READ) as usize;
                let data = f.read_at(r.offset, len, DATA_HEADER).await?;
                if data.len() == DATA_HEADER {
                    return pk(status(r.id, StatusCode::Eof, "End of file"));
                }
                Ok(Reply::Data { id: r.id, data })
            }
            Packet::Fstat(r) => match self.handles.get(&r.handle) {
                Some(Opened::File(f)) => pk(Packet::Attrs(Attrs {
                    id: r.id,
                    attrs: attributes(&f.attr),
                })),
                Some(Opened::Dir { .. }) => pk(Packet::Attrs(Attrs {
                    id: r.id,
                    attrs: attributes(&Attr::dir(0)),
                })),
                None => Err(FileError::Failure("invalid handle".into())),
            },
            Packet::Close(r) => match self.handles.remove(&r.handle) {
                Some(Opened::File(f)) => {
                    self.bytes += f.bytes();
                    f.close(ctx, None);
                    pk(ok(r.id))
                }
                Some(Opened::Dir { .. }) => pk(ok(r.id)),
                None => Err(FileError::Failure("invalid handle".into())),
            },
            Packet::OpenDir(r) => {
                self.room(false)?;
                let node = tree::parse(&r.path)?;
                let entries = self
                    .files
                    .list(&node)
                    .await?
                    .into_iter()
                    .map(|(name, a)| File {
                        longname: longname(&name, &a),
                        filename: name,
                        attrs: attributes(&a),
                    })
                    .collect();
                let handle = self.insert(Opened::Dir { entries, next: 0 });
                pk(Packet::Handle(Handle { id: r.id, handle }))
            }
            Packet::ReadDir(r) => {
                let Some(Opened::Dir { entries, next }) = self.handles.get_mut(&r.handle) else {
                    return Err(FileError::Failure("invalid directory handle".into()));
                };
                if *next >= entries.len() {
                    return pk(status(r.id, StatusCode::Eof, "End of directory"));
                }
                let end = (*next + NAMES_PER_READDIR).min(entries.len());
                let files = entries.get(*next..end).unwrap_or_default().to_vec();
                *next = end;
                pk(Packet::Name(Name { id: r.id, files }))
            }
            Packet::Extended(r) if r.request == russh_sftp::extensions::LIMITS => {
                let limits = russh_sftp::extensions::LimitsExtension {
                    max_packet_len: 256 * 1024,
                    max_read_len: u64::from(MAX_READ),
                    max_write_len: u64::from(MAX_READ),
                    max_open_handles: ADVERTISED_HANDLES,
                };
                let data = russh_sftp::ser::to_bytes(&limits)
                    .map_err(|e| FileError::Failure(e.to_string()))?
                    .to_vec();
                pk(Packet::ExtendedReply(ExtendedReply { id: r.id, data }))
            }
            Packet::Extended(r) => match r.request.as_str() {
                "posix-rename@openssh.com"
                | "hardlink@openssh.com"
                | "fsync@openssh.com"
                | "lsetstat@openssh.com"
                | "copy-data" => Err(self.files.read_only(&r.request, "write")),
                _ => pk(status(
                    r.id,
                    StatusCode::OpUnsupported,
                    "unsupported extension",
                )),
            },
            Packet::Write(r) => {
                let what = self.handle_path(&r.handle);
                Err(self.files.read_only(&what, "write"))
            }
            Packet::SetStat(r) => Err(self.files.read_only(&r.path, "setstat")),
            Packet::FSetStat(r) => {
                let what = self.handle_path(&r.handle);
                Err(self.files.read_only(&what, "setstat"))
            }
            Packet::Remove(r) => Err(self.files.read_only(&r.filename, "remove")),
            Packet::MkDir(r) => Err(self.files.read_only(&r.path, "mkdir")),
            Packet::RmDir(r) => Err(self.files.read_only(&r.path, "rmdir")),
            Packet::Rename(r) => Err(self.files.read_only(&r.oldpath, "rename")),
            Packet::Symlink(r) => Err(self.files.read_only(&r.linkpath, "symlink")),
            Packet::ReadLink(r) => pk(status(
                r.id,
                StatusCode::OpUnsupported,
                "readlink is not supported",
            )),
            // Responses sent by a client are not requests.
            _ => pk(status(0, StatusCode::BadMessage, "not a request")),
        }
    }

    /// Whether another file (or directory) may be opened.
    fn room(&self, file: bool) -> Result<(), FileError> {
        let open = self
            .handles
            .values()
            .filter(|h| matches!(h, Opened::File(_)) == file)
            .count();
        let (max, what) = if file {
            (MAX_FILES, "files")
        } else {
            (MAX_DIRS, "directories")
        };
        if open >= max {
            return Err(FileError::Failure(format!(
                "too many open {what} (at most {max} per session)"
            )));
        }
        Ok(())
    }

    fn insert(&mut self, h: Opened) -> String {
        self.counter += 1;
        let name = self.counter.to_string();
        self.handles.insert(name.clone(), h);
        name
    }

    fn handle_path(&self, handle: &str) -> String {
        match self.handles.get(handle) {
            Some(Opened::File(f)) => f.name.clone(),
            _ => format!("handle {handle}"),
        }
    }
}

/// SFTP attributes: type bits with the permissions, size when known, ids and times.
fn attributes(a: &Attr) -> FileAttributes {
    FileAttributes {
        size: a.size,
        uid: Some(a.uid),
        user: None,
        gid: Some(a.gid),
        group: None,
        permissions: Some(type_bits(a.kind) | a.perm),
        atime: Some(a.atime),
        mtime: Some(a.mtime),
    }
}

fn type_bits(k: Kind) -> u32 {
    match k {
        Kind::File => 0o100000,
        Kind::Dir => 0o040000,
        Kind::Link => 0o120000,
        Kind::Other => 0,
    }
}

/// An `ls -l` line, as OpenSSH's sftp-server writes it.
fn longname(name: &str, a: &Attr) -> String {
    let t = match a.kind {
        Kind::Dir => 'd',
        Kind::Link => 'l',
        Kind::File => '-',
        Kind::Other => '?',
    };
    let mut perms = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let bits = (a.perm >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let when = time::OffsetDateTime::from_unix_timestamp(i64::from(a.mtime))
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[month repr:short] [day padding:space] [year]"
            ))
            .ok()
        })
        .unwrap_or_default();
    format!(
        "{t}{perms}    1 {:<8} {:<8} {:>8} {when} {name}",
        a.uid,
        a.gid,
        a.size.unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_replies_are_framed_like_russh_sftp() {
        let mut data = BytesMut::zeroed(DATA_HEADER);
        data.extend_from_slice(b"hello");
        let ours = encode(Reply::Data { id: 7, data }).unwrap();
        let theirs = Bytes::try_from(Packet::Data(russh_sftp::protocol::Data {
            id: 7,
            data: b"hello".to_vec(),
        }))
        .unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn attributes_and_longnames() {
        let a = Attr {
            kind: Kind::File,
            perm: 0o640,
            size: Some(42),
            atime: 1,
            mtime: 86400 * 365,
            uid: 0,
            gid: 4,
        };
        let fa = attributes(&a);
        assert_eq!(fa.permissions, Some(0o100640));
        assert_eq!(fa.size, Some(42));
        let l = longname("app.log", &a);
        assert!(l.starts_with("-rw-r-----"), "{l}");
        assert!(l.ends_with(" Jan  1 1971 app.log"), "{l}");
        assert!(longname("d", &Attr::dir(0)).starts_with("dr-xr-xr-x"));
    }
}
