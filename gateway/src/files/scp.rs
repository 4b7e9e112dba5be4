//! The legacy scp protocol (`scp -O`): the gateway answers `scp -f PATH...` itself, as the
//! source, over the same virtual tree and decisions as SFTP; `scp -t` (uploads) is refused.
//!
//! The protocol, per file: the sink sends `\0`; the source sends `T<mtime> 0 <atime> 0\n` (with
//! `-p`) and `C<mode> <size> <name>\n`, each acknowledged with `\0`; then exactly `size` bytes
//! and `\0` (or `\x01message\n` when the data went wrong), acknowledged again. A problem with one
//! file is reported as `\x01message\n`, which the client prints, and the copy goes on.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::FileError;
use super::access::Files;
use super::reader::Kind;
use super::tree;
use crate::audit::Event;
use crate::ids::CommandId;
use crate::session::Ctx;

/// Bytes copied per write.
const CHUNK: usize = 256 * 1024;

/// How sending one file went wrong.
pub(crate) enum Step {
    /// Tell the client (`\x01...`) and go on with the next file.
    Warn(String),
    /// Already reported (by either side): go on with the next file.
    Failed,
    /// The channel or the protocol failed: stop.
    Fatal,
}

/// Answers `scp -f PATHS` (a download with `scp -O`); the exit status.
pub(crate) async fn source(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    paths: &[String],
    preserve: bool,
    recursive: bool,
    mut read: russh::ChannelReadHalf,
) -> u32 {
    let mut ev = Event {
        via: Some("scp".into()),
        paths: Some(paths.to_vec()),
        ..ctx.event(cid)
    };
    if let Err(e) = ctx.gw.audit_first("scp.start", &ev) {
        let mut out = ctx.out();
        let _ = out.write_all(format!("\x02jitsh: {e}\n").as_bytes()).await;
        return 1;
    }
    let mut files = match Files::new(ctx, "scp", cid) {
        Ok(f) => f,
        Err(e) => {
            let mut out = ctx.out();
            let _ = out.write_all(format!("\x02jitsh: {e}\n").as_bytes()).await;
            return 1;
        }
    };
    let mut input = read.make_reader();
    let mut out = ctx.out();
    let mut errors = 0u32;
    let mut bytes = 0u64;
    // The sink starts the conversation.
    let mut fatal = !matches!(ack(&mut input).await, Ok(true));
    for path in paths {
        if fatal {
            break;
        }
        match send_file(
            ctx, &mut files, path, preserve, recursive, &mut input, &mut out,
        )
        .await
        {
            Ok(n) => bytes += n,
            Err(Step::Warn(msg)) => {
                errors += 1;
                let line = format!("\x01jitsh: {}\n", msg.replace('\n', " "));
                if out.write_all(line.as_bytes()).await.is_err() {
                    fatal = true;
                }
            }
            Err(Step::Failed) => errors += 1,
            Err(Step::Fatal) => fatal = true,
        }
    }
    let _ = out.flush().await;
    ev.files = Some(files.opened);
    ev.bytes = Some(bytes);
    ev.error_count = Some(errors);
    ctx.gw.record("scp.end", &ev);
    if fatal || errors > 0 { 1 } else { 0 }
}

/// Refuses `scp -t` (an upload) in the protocol, so the client prints the reason.
pub(crate) async fn refuse_sink(ctx: &Ctx<'_>, cid: &CommandId) -> u32 {
    let ev = Event {
        via: Some("scp".into()),
        op: Some("upload".into()),
        reasons: Some(vec!["the gateway's file tree is read-only".into()]),
        ..ctx.event(cid)
    };
    ctx.gw.record("file.denied", &ev);
    let mut out = ctx.out();
    let _ = out
        .write_all(
            b"\x02jitsh: denied: scp uploads are refused: the gateway's file tree is read-only\n",
        )
        .await;
    let _ = out.flush().await;
    1
}

async fn send_file<R, W>(
    ctx: &Ctx<'_>,
    files: &mut Files<'_>,
    path: &str,
    preserve: bool,
    recursive: bool,
    input: &mut R,
    out: &mut W,
) -> Result<u64, Step>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let warn = |e: FileError| Step::Warn(format!("{path}: {e}"));
    let node = tree::parse(path).map_err(|e| warn(e.into()))?;
    let attr = files.stat(&node, true).await.map_err(warn)?;
    match attr.kind {
        Kind::File => {}
        Kind::Dir if recursive => {
            return Err(Step::Warn(format!(
                "{path}: recursive copies are not supported with legacy scp; use scp without -O (SFTP)"
            )));
        }
        _ => return Err(Step::Warn(format!("{path}: not a regular file"))),
    }
    let name = node
        .to_string()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() || name.contains(['\n', '\r']) {
        return Err(Step::Warn(format!("{path}: a name scp cannot send")));
    }
    let mut f = files.open(&node, true).await.map_err(warn)?;
    let size = f.attr.size.unwrap_or(0);
    let io = |_| Step::Fatal;
    if preserve {
        let t = format!("T{} 0 {} 0\n", f.attr.mtime, f.attr.atime);
        out.write_all(t.as_bytes()).await.map_err(io)?;
        out.flush().await.map_err(io)?;
        if !ack(input).await? {
            f.close(ctx, Some("the client refused the times".into()));
            return Err(Step::Failed);
        }
    }
    let header = format!("C{:04o} {size} {name}\n", f.attr.perm & 0o7777);
    out.write_all(header.as_bytes()).await.map_err(io)?;
    out.flush().await.map_err(io)?;
    if !ack(input).await? {
        f.close(ctx, Some("the client refused the file".into()));
        return Err(Step::Failed);
    }
    let sent_bytes = ctx.bytes(crate::telemetry::Direction::Out);
    let mut sent = 0u64;
    let mut trouble: Option<String> = None;
    while sent < size {
        let want = usize::try_from((size - sent).min(CHUNK as u64)).unwrap_or(CHUNK);
        let chunk = if trouble.is_some() {
            BytesMut::new()
        } else {
            match f.read(want).await {
                Ok(c) if c.is_empty() => {
                    trouble = Some("the file shrank while it was read".into());
                    c
                }
                Ok(c) => c,
                Err(e) => {
                    trouble = Some(e.to_string());
                    BytesMut::new()
                }
            }
        };
        // The size was announced: pad, then report the error instead of the final `\0`.
        let chunk = if chunk.is_empty() {
            BytesMut::zeroed(want)
        } else {
            chunk
        };
        let n = chunk.len();
        // Owned bytes go to the channel without another copy.
        ctx.write
            .data_bytes(chunk.freeze())
            .await
            .map_err(|_| Step::Fatal)?;
        sent_bytes.inc_by(n as u64);
        ctx.clock.touch();
        sent += n as u64;
    }
    let served = f.bytes();
    match &trouble {
        None => out.write_all(b"\0").await.map_err(io)?,
        Some(t) => out
            .write_all(format!("\x01jitsh: {path}: {t}\n").as_bytes())
            .await
            .map_err(io)?,
    }
    out.flush().await.map_err(io)?;
    f.close(ctx, trouble.clone());
    let acked = ack(input).await?;
    if trouble.is_some() || !acked {
        return Err(Step::Failed);
    }
    Ok(served)
}

/// Reads the sink's answer: `\0` → `true`; `\x01message\n` (a warning) → `false`; `\x02...` or
/// the end of the channel → fatal.
pub(crate) async fn ack<R: AsyncRead + Unpin>(input: &mut R) -> Result<bool, Step> {
    let b = input.read_u8().await.map_err(|_| Step::Fatal)?;
    match b {
        0 => Ok(true),
        1 | 2 => {
            // The message: up to a newline (bounded).
            let mut n = 0;
            loop {
                let c = input.read_u8().await.map_err(|_| Step::Fatal)?;
                n += 1;
                if c == b'\n' || n > 4096 {
                    break;
                }
            }
            if b == 1 { Ok(false) } else { Err(Step::Fatal) }
        }
        _ => Err(Step::Fatal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements() {
        let run = |bytes: &'static [u8]| {
            futures::executor::block_on(async {
                let mut r = bytes;
                ack(&mut r).await
            })
        };
        assert!(matches!(run(b"\0"), Ok(true)));
        assert!(matches!(run(b"\x01scp: no space\n"), Ok(false)));
        assert!(matches!(run(b"\x02scp: fatal\n"), Err(Step::Fatal)));
        assert!(matches!(run(b""), Err(Step::Fatal)));
        assert!(matches!(run(b"x"), Err(Step::Fatal)));
        assert!(matches!(run(b"\x01unterminated"), Err(Step::Fatal)));
    }
}
