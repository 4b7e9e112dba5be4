//! Processes started by exec: pipes or a pseudo-terminal, resize, exit status.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use super::pods::Ctx;
use super::{ProcessRegistry, RuntimeError};

/// Size of a terminal in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// What [`super::Runtime::exec`] runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// argv (not run through a shell).
    pub command: Vec<String>,
    /// Give the process a stdin pipe (else `/dev/null`).
    pub stdin: bool,
    /// Run it on a new pseudo-terminal (as its controlling terminal); stdout and stderr are then
    /// the one terminal output.
    pub tty: bool,
    /// Initial terminal size (with `tty`).
    pub terminal_size: Option<TerminalSize>,
}

/// A running exec'd process. Dropping it kills the process (and its process group).
#[derive(Debug)]
pub struct ExecProcess {
    /// Its input, when [`ExecSpec::stdin`] was set.
    pub stdin: Option<ExecStdin>,
    /// Its standard output (the terminal with `tty`).
    pub stdout: Option<ExecOutput>,
    /// Its standard error (`None` with `tty`).
    pub stderr: Option<ExecOutput>,
    /// Resizes the terminal (`Some` with `tty`).
    pub resizer: Option<Resizer>,
    child: Child,
    pgid: Option<u32>,
    registry: Arc<ProcessRegistry>,
    registry_id: u64,
}

/// Exit of an exec'd process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecExit {
    /// The exit code; 128 + signal number when killed by a signal (what shells report).
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
}

impl ExecProcess {
    pub(crate) async fn spawn(
        mut cmd: tokio::process::Command,
        spec: &ExecSpec,
        ptmx: Option<&std::path::Path>,
        ctx: &Ctx,
    ) -> Result<Self, RuntimeError> {
        let registry = Arc::clone(&ctx.processes);
        let io_err = |e: io::Error| RuntimeError::io(format!("exec {:?}", spec.command), e);
        cmd.kill_on_drop(true);
        let (stdin, stdout, stderr, resizer, pgid_leader);
        if spec.tty {
            let (master, slave) = open_pty(spec.terminal_size, ptmx).map_err(io_err)?;
            cmd.stdin(slave.try_clone().map_err(io_err)?)
                .stdout(slave.try_clone().map_err(io_err)?)
                .stderr(slave);
            // No own process group: `setsid` makes the command a session leader itself.
            pgid_leader = false;
            stdin = if spec.stdin {
                let dup = master.try_clone().map_err(io_err)?;
                Some(ExecStdin::Pty(
                    pipe::Sender::from_file_unchecked(File::from(dup)).map_err(io_err)?,
                ))
            } else {
                None
            };
            resizer = Some(Resizer(Arc::new(master.try_clone().map_err(io_err)?)));
            stdout = Some(ExecOutput::Pty(
                pipe::Receiver::from_file_unchecked(File::from(master)).map_err(io_err)?,
            ));
            stderr = None;
        } else {
            cmd.stdin(if spec.stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
            pgid_leader = true;
            stdin = None;
            stdout = None;
            stderr = None;
            resizer = None;
        }
        // The spawner thread drops the command right after spawning: it holds the pty slave,
        // which must close for EOF on the master.
        let mut child = ctx.spawn(cmd).await?;
        let pid = child.id();
        let (stdin, stdout, stderr) = if spec.tty {
            (stdin, stdout, stderr)
        } else {
            (
                child.stdin.take().map(ExecStdin::Pipe),
                child.stdout.take().map(ExecOutput::Stdout),
                child.stderr.take().map(ExecOutput::Stderr),
            )
        };
        let pgid = if pgid_leader { pid } else { None };
        let registry_id = registry.add(pid, pgid);
        Ok(Self {
            stdin,
            stdout,
            stderr,
            resizer,
            child,
            pgid,
            registry,
            registry_id,
        })
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> io::Result<ExecExit> {
        let status = self.child.wait().await?;
        self.registry.remove(self.registry_id);
        Ok(exit_of(status))
    }

    /// Kills the process (and its process group).
    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid {
            super::kill_group(pgid);
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        // Only when it did not exit yet.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        self.registry.remove(self.registry_id);
    }
}

pub(crate) fn exit_of(status: std::process::ExitStatus) -> ExecExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExecExit { code, signal: None },
        (None, Some(sig)) => ExecExit {
            code: 128 + sig,
            signal: Some(sig),
        },
        (None, None) => ExecExit {
            code: 1,
            signal: None,
        },
    }
}

/// A pseudo-terminal pair. With `ptmx` (the container's `/dev/ptmx`, reached through
/// `/proc/<pid>/root`), the terminal belongs to the container's own devpts instance, so
/// `tty` and `ttyname` work inside it; otherwise it is one of the host's.
fn open_pty(
    size: Option<TerminalSize>,
    ptmx: Option<&std::path::Path>,
) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::OpenptFlags;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = match ptmx {
        Some(path) => rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?,
        None => rustix::pty::openpt(flags)?,
    };
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    if let Some(size) = size {
        set_size(&master, size)?;
    }
    // The master is driven by the tokio reactor: non-blocking (shared by its duplicates).
    rustix::io::ioctl_fionbio(&master, true)?;
    Ok((master, slave))
}

fn set_size(fd: impl std::os::fd::AsFd, size: TerminalSize) -> io::Result<()> {
    let winsize = rustix::termios::Winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, winsize)?;
    Ok(())
}

/// Resizes an exec'd process's terminal (the kernel then sends it `SIGWINCH`).
#[derive(Debug, Clone)]
pub struct Resizer(Arc<OwnedFd>);

impl Resizer {
    /// Sets the terminal size.
    pub fn resize(&self, size: TerminalSize) -> io::Result<()> {
        set_size(&*self.0, size)
    }
}

/// Input of an exec'd process.
#[derive(Debug)]
pub enum ExecStdin {
    /// A pipe.
    Pipe(ChildStdin),
    /// The pseudo-terminal.
    Pty(pipe::Sender),
}

impl ExecStdin {
    /// Signals end of input: closes the pipe, or types the terminal's EOF character (Ctrl-D).
    pub async fn close(self) -> io::Result<()> {
        match self {
            Self::Pipe(pipe) => {
                drop(pipe);
                Ok(())
            }
            Self::Pty(mut pty) => pty.write_all(&[0x04]).await,
        }
    }
}

impl AsyncWrite for ExecStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut *self {
            Self::Pipe(p) => Pin::new(p).poll_write(cx, buf),
            Self::Pty(p) => Pin::new(p).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Self::Pipe(p) => Pin::new(p).poll_flush(cx),
            Self::Pty(p) => Pin::new(p).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Self::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            Self::Pty(_) => Poll::Ready(Ok(())),
        }
    }
}

/// Output of an exec'd process.
#[derive(Debug)]
pub enum ExecOutput {
    /// Its stdout pipe.
    Stdout(ChildStdout),
    /// Its stderr pipe.
    Stderr(ChildStderr),
    /// The pseudo-terminal (ends when every process holding the terminal closed it).
    Pty(pipe::Receiver),
}

impl AsyncRead for ExecOutput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut *self {
            Self::Stdout(p) => Pin::new(p).poll_read(cx, buf),
            Self::Stderr(p) => Pin::new(p).poll_read(cx, buf),
            Self::Pty(p) => match ready!(Pin::new(p).poll_read(cx, buf)) {
                // EIO: the last terminal descriptor closed (the process exited): end of output.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    Poll::Ready(Ok(()))
                }
                other => Poll::Ready(other),
            },
        }
    }
}
