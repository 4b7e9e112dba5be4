//! The client side of pods/exec and pods/attach streams (`v5.channel.k8s.io`, falling back to
//! `v4`): our own message loop over kube's upgraded connection.
//!
//! kube's `AttachedProcess` loses a finished command when the client's stdin ends just as the
//! server closes the stream: its loop may take the stdin branch first, fail to send the
//! stdin-close frame to the closed socket and return without closing stdout, so a reader waits
//! forever and the exit status already received is dropped. This loop reads what the server sent
//! before anything else (`biased`), treats a failed write as "the server has gone" without
//! giving up what it still has to read, and always ends stdout and stderr when it ends.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;

use super::KubeError;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How much of each stream is buffered between the connection and its reader or writer, unless
/// the request's `max_*_buf_size` says.
const BUFFER: usize = 256 * 1024;

/// A process on the other end of an exec or attach stream.
pub(crate) struct Remote {
    /// Its stdin (shut it down for EOF), when asked for.
    pub(crate) stdin: Option<DuplexStream>,
    /// Its stdout (EOF when the stream ends), when asked for.
    pub(crate) stdout: Option<DuplexStream>,
    /// Its stderr, when asked for.
    pub(crate) stderr: Option<DuplexStream>,
    /// Terminal size changes, with a terminal.
    pub(crate) resize: Option<tokio::sync::mpsc::Sender<TerminalSize>>,
    /// The exit status (absent if the stream ended without one).
    pub(crate) status: Option<tokio::sync::oneshot::Receiver<Status>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Remote {
    /// Waits for the message loop to end.
    pub(crate) async fn join(mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Dropping a process ends its stream (and so the command, on our side).
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// What a stream is opened for.
pub(crate) enum Open {
    /// pods/exec of this argv.
    Exec(Vec<String>),
    /// pods/attach to the main process.
    Attach,
}

/// Options for a process that only talks back (no stdin, no terminal), with these buffers.
pub(crate) fn output_only(container: &str, stdout: usize, stderr: usize) -> AttachParams {
    AttachParams {
        container: Some(container.to_owned()),
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
        max_stdin_buf_size: None,
        max_stdout_buf_size: Some(stdout),
        max_stderr_buf_size: Some(stderr),
    }
}

/// Opens an exec or attach stream on `namespace/pod` (kube's request builder and connection)
/// and starts its message loop.
pub(crate) async fn open(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    what: Open,
    ap: &AttachParams,
) -> Result<Remote, KubeError> {
    use kube::Resource;
    let pods = kube::core::Request::new(k8s_openapi::api::core::v1::Pod::url_path(
        &(),
        Some(namespace),
    ));
    let req = match what {
        Open::Exec(argv) => pods.exec(pod, argv, ap),
        Open::Attach => pods.attach(pod, ap),
    }
    .map_err(|e| KubeError::Client(kube::Error::BuildRequest(e)))?;
    connect(client, req, ap).await
}

/// Opens the stream `req` (built by kube's request builder for exec or attach) and starts its
/// message loop.
async fn connect(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
    ap: &AttachParams,
) -> Result<Remote, KubeError> {
    let conn = client.connect(req).await?;
    let stream_close = conn.supports_stream_close();
    let ws = conn.into_stream();
    let pair = |wanted: bool, size: Option<usize>| {
        wanted.then(|| tokio::io::duplex(size.unwrap_or(BUFFER).max(1)))
    };
    let (stdin, stdin_loop) = split(pair(ap.stdin, ap.max_stdin_buf_size));
    let (stdout, stdout_loop) = split(pair(ap.stdout, ap.max_stdout_buf_size));
    let (stderr, stderr_loop) = split(pair(ap.stderr, ap.max_stderr_buf_size));
    let (resize, resize_rx) = if ap.tty {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (status_tx, status) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(message_loop(
        ws,
        stream_close,
        Ends {
            stdin: stdin_loop,
            stdout: stdout_loop,
            stderr: stderr_loop,
            resize: resize_rx,
            status: status_tx,
        },
    ));
    Ok(Remote {
        stdin,
        stdout,
        stderr,
        resize,
        status: Some(status),
        task: Some(task),
    })
}

fn split(p: Option<(DuplexStream, DuplexStream)>) -> (Option<DuplexStream>, Option<DuplexStream>) {
    match p {
        Some((ours, theirs)) => (Some(ours), Some(theirs)),
        None => (None, None),
    }
}

/// The loop's ends of the streams.
struct Ends {
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    resize: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
    status: tokio::sync::oneshot::Sender<Status>,
}

async fn message_loop<S>(ws: S, stream_close: bool, ends: Ends)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin,
{
    let Ends {
        mut stdin,
        mut stdout,
        mut stderr,
        mut resize,
        status,
    } = ends;
    let (mut send, mut recv) = ws.split();
    // Whether the server can still be written to; once a write fails, only reading goes on.
    let mut writable = true;
    let mut status = Some(status);
    let mut buf = vec![0u8; 64 * 1024];
    let mut ping = tokio::time::interval(Duration::from_secs(60));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        let stdin_open = writable && stdin.is_some();
        let resize_open = writable && resize.is_some();
        tokio::select! {
            biased;
            got = recv.next() => match got {
                Some(Ok(Message::Binary(bin))) => {
                    let Some((&channel, data)) = bin.split_first() else { continue };
                    let out = match channel {
                        STDOUT => &mut stdout,
                        STDERR => &mut stderr,
                        STATUS => {
                            if let (Some(tx), Ok(st)) =
                                (status.take(), serde_json::from_slice::<Status>(data))
                            {
                                let _ = tx.send(st);
                            }
                            break;
                        }
                        _ => continue,
                    };
                    if let Some(w) = out.as_mut()
                        && !data.is_empty()
                        && w.write_all(data).await.is_err()
                    {
                        // Nobody reads this stream any more; keep the others going.
                        *out = None;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("exec stream: {e}");
                    break;
                }
            },
            n = read_some(stdin.as_mut(), &mut buf), if stdin_open => {
                let frame = match n {
                    Ok(n) if n > 0 => {
                        let mut f = Vec::with_capacity(n + 1);
                        f.push(STDIN);
                        f.extend_from_slice(buf.get(..n).unwrap_or_default());
                        Some(f)
                    }
                    // End of stdin: v5 says so on the close channel; v4 can only close.
                    _ => {
                        stdin = None;
                        if stream_close {
                            Some(vec![CLOSE, STDIN])
                        } else {
                            writable = send.close().await.is_ok();
                            None
                        }
                    }
                };
                if let Some(f) = frame
                    && send.send(Message::binary(f)).await.is_err()
                {
                    writable = false;
                }
            },
            size = recv_size(resize.as_mut()), if resize_open => match size {
                Some(t) => {
                    let json = serde_json::to_vec(&t).unwrap_or_default();
                    let mut f = Vec::with_capacity(json.len() + 1);
                    f.push(RESIZE);
                    f.extend_from_slice(&json);
                    if send.send(Message::binary(f)).await.is_err() {
                        writable = false;
                    }
                }
                None => resize = None,
            },
            _ = ping.tick(), if writable => {
                if send.send(Message::Ping(Default::default())).await.is_err() {
                    writable = false;
                }
            },
        }
    }
    // The readers see the end of stdout and stderr whatever ended the loop.
    for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = w.shutdown().await;
    }
    let _ = send.close().await;
}

async fn read_some(r: Option<&mut DuplexStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_size(
    rx: Option<&mut tokio::sync::mpsc::Receiver<TerminalSize>>,
) -> Option<TerminalSize> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio_tungstenite::tungstenite::Error as WsError;

    use super::*;

    /// A server that has already sent its frames and closed: reads give them, writes fail.
    struct Closed {
        frames: std::collections::VecDeque<Message>,
    }

    impl futures::Stream for Closed {
        type Item = Result<Message, WsError>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.frames.pop_front().map(Ok))
        }
    }

    impl futures::Sink<Message> for Closed {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Err(WsError::ConnectionClosed))
        }
        fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), WsError> {
            Err(WsError::ConnectionClosed)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Err(WsError::ConnectionClosed))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Err(WsError::ConnectionClosed))
        }
    }

    /// The race kube's loop loses: stdin ends just as the server, done, closes. The output and
    /// the exit status it already sent are delivered, and stdout ends.
    #[tokio::test]
    async fn a_closed_server_and_an_ended_stdin_still_give_output_and_status() {
        for _ in 0..50 {
            let status = br#"{"metadata":{},"status":"Success"}"#;
            let frames = [
                Message::binary(vec![STDOUT]),
                Message::binary([&[STDOUT][..], b"hello\n"].concat()),
                Message::binary([&[STATUS][..], &status[..]].concat()),
            ];
            let (mut stdin, stdin_loop) = tokio::io::duplex(64);
            stdin.shutdown().await.unwrap(); // EOF is ready before the loop starts
            let (mut stdout, stdout_loop) = tokio::io::duplex(64);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let server = Closed {
                frames: frames.into_iter().collect(),
            };
            let ends = Ends {
                stdin: Some(stdin_loop),
                stdout: Some(stdout_loop),
                stderr: None,
                resize: None,
                status: tx,
            };
            let run = tokio::spawn(message_loop(server, true, ends));
            let mut out = String::new();
            stdout.read_to_string(&mut out).await.unwrap();
            assert_eq!(out, "hello\n");
            assert_eq!(rx.await.unwrap().status.as_deref(), Some("Success"));
            run.await.unwrap();
        }
    }
}
