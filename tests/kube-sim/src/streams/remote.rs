//! pods/exec and pods/attach over `v5.channel.k8s.io` / `v4.channel.k8s.io`.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use futures::stream::SplitStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT};
use super::{AttachOptions, CHUNK, ExecOptions, Protocol, frame, start_writer};
use crate::runtime::{
    AttachStdin, ContainerRef, ExecExit, ExecOutput, ExecSpec, ExecStdin, OutputStream, Resizer,
    Runtime, RuntimeError, TerminalSize,
};

/// How long output may keep flowing after the process exited (a background child holding the
/// pipes) before the status is sent anyway.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Serves one pods/exec WebSocket until the command exits and its status was sent.
///
/// The first frame is an empty one on the lowest output channel asked for (as the kubelet
/// does); the last is the status on channel 3, then a normal close. If the client goes away
/// first, the process is killed.
pub async fn serve_exec(
    ws: WebSocket,
    protocol: Protocol,
    runtime: Runtime,
    target: ContainerRef,
    options: ExecOptions,
) {
    let (tx, stream, writer) = start_writer(ws);
    let spec = ExecSpec {
        command: options.command.clone(),
        stdin: options.stdin,
        tty: options.tty,
        terminal_size: None,
    };
    let mut process = match runtime.exec(&target, spec).await {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(frame(ERROR, &error_status(&e))).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let first = if options.stdout {
        STDOUT
    } else if options.stderr && !options.tty {
        STDERR
    } else {
        ERROR
    };
    let _ = tx.send(frame(first, &[])).await;

    let reader = tokio::spawn(read_exec_input(
        stream,
        protocol,
        process.stdin.take(),
        process.resizer.take(),
    ));
    let out = pump(process.stdout.take(), STDOUT, options.stdout, tx.clone());
    let err = pump(process.stderr.take(), STDERR, options.stderr, tx.clone());
    let outputs = async {
        tokio::join!(out, err);
    };
    tokio::pin!(outputs);
    tokio::pin!(reader);

    let mut exit: Option<ExecExit> = None;
    let mut outputs_done = false;
    let mut client_gone = false;
    let grace = tokio::time::sleep(OUTPUT_GRACE);
    tokio::pin!(grace);
    while !(outputs_done && exit.is_some()) {
        tokio::select! {
            () = &mut outputs, if !outputs_done => outputs_done = true,
            status = process.wait(), if exit.is_none() => {
                exit = Some(status.unwrap_or(ExecExit { code: 1, signal: None }));
                grace.as_mut().reset(tokio::time::Instant::now() + OUTPUT_GRACE);
            },
            _ = &mut reader, if !client_gone => {
                // The client closed the socket: nobody is left to talk to.
                client_gone = true;
                process.kill();
            },
            () = &mut grace, if exit.is_some() => break,
        }
    }
    if !client_gone && let Some(exit) = exit {
        let status = if exit.code == 0 {
            success_status()
        } else {
            exit_status(&options.command, exit.code)
        };
        let _ = tx.send(frame(ERROR, &status)).await;
    }
    drop(tx);
    let _ = writer.await;
    reader.abort();
}

/// Serves one pods/attach WebSocket until the client leaves or the container exits.
///
/// Output is the main process's output from the moment of attaching (read from its log);
/// stdin goes to the main process. A client closing stdin (v5) closes the process's stdin only
/// when the container has `stdinOnce: true`. Resize frames are accepted and ignored: simulated
/// containers have no terminal.
pub async fn serve_attach(
    ws: WebSocket,
    protocol: Protocol,
    runtime: Runtime,
    target: ContainerRef,
    options: AttachOptions,
) {
    let (tx, stream, writer) = start_writer(ws);
    let attached = match runtime.attach(&target, options.stdin).await {
        Ok(a) => a,
        Err(e) => {
            let _ = tx.send(frame(ERROR, &error_status(&e))).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let first = if options.stdout {
        STDOUT
    } else if options.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = tx.send(frame(first, &[])).await;
    let reader = tokio::spawn(read_attach_input(stream, protocol, attached.stdin));
    tokio::pin!(reader);
    let mut output = attached.output;
    let mut client_gone = false;
    loop {
        tokio::select! {
            item = output.next() => match item {
                Some(Ok((stream, data))) => {
                    let (channel, wanted) = match stream {
                        OutputStream::Stdout => (STDOUT, options.stdout),
                        OutputStream::Stderr => (STDERR, options.stderr),
                    };
                    if wanted && tx.send(frame(channel, &data)).await.is_err() {
                        client_gone = true;
                        break;
                    }
                }
                Some(Err(_)) | None => break,
            },
            _ = &mut reader => {
                client_gone = true;
                break;
            }
        }
    }
    if !client_gone {
        let _ = tx.send(frame(ERROR, &success_status())).await;
    }
    drop(tx);
    let _ = writer.await;
    reader.abort();
}

/// Forwards one output of the process to its channel (or drains it when not asked for).
async fn pump(output: Option<ExecOutput>, channel: u8, forward: bool, tx: mpsc::Sender<Message>) {
    let Some(mut output) = output else {
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    let mut forward = forward;
    loop {
        let n = match read(&mut output, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if forward
            && let Some(data) = buf.get(..n)
            && tx.send(frame(channel, data)).await.is_err()
        {
            // The socket is gone; keep draining so the process never blocks on a full pipe.
            forward = false;
        }
    }
}

async fn read<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    r.read(buf).await
}

/// Client → process: stdin data, stdin close (v5), terminal resize. Returns when the client
/// closes the socket.
async fn read_exec_input(
    mut stream: SplitStream<WebSocket>,
    protocol: Protocol,
    mut stdin: Option<ExecStdin>,
    resizer: Option<Resizer>,
) {
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            STDIN => {
                if let Some(pipe) = stdin.as_mut()
                    && pipe.write_all(payload).await.is_err()
                {
                    // The process closed its stdin; further input has nowhere to go.
                    stdin = None;
                }
            }
            RESIZE => {
                if let (Some(resizer), Ok(size)) =
                    (&resizer, serde_json::from_slice::<TerminalSize>(payload))
                {
                    let _ = resizer.resize(size);
                }
            }
            CLOSE if protocol == Protocol::V5Channel && payload.first() == Some(&STDIN) => {
                if let Some(pipe) = stdin.take() {
                    let _ = pipe.close().await;
                }
            }
            _ => {}
        }
    }
}

async fn read_attach_input(
    mut stream: SplitStream<WebSocket>,
    protocol: Protocol,
    stdin: Option<AttachStdin>,
) {
    let mut stdin = stdin;
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            STDIN => {
                if let Some(s) = &stdin
                    && s.write(payload).await.is_err()
                {
                    stdin = None;
                }
            }
            CLOSE if protocol == Protocol::V5Channel && payload.first() == Some(&STDIN) => {
                if let Some(s) = stdin.take() {
                    s.close().await;
                }
            }
            _ => {}
        }
    }
    if let Some(s) = stdin {
        s.close().await;
    }
}

/// `{"metadata":{},"status":"Success"}`.
pub(crate) fn success_status() -> Vec<u8> {
    serde_json::json!({"metadata": {}, "status": "Success"})
        .to_string()
        .into_bytes()
}

/// The kubelet's status for a command that exited non-zero.
pub(crate) fn exit_status(command: &[String], code: i32) -> Vec<u8> {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
    .to_string()
    .into_bytes()
}

/// A failure to start the command or attach.
pub(crate) fn error_status(error: &RuntimeError) -> Vec<u8> {
    let code = error.http_status();
    let reason = match code {
        404 => "NotFound",
        400 => "BadRequest",
        _ => "InternalError",
    };
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": error.to_string(),
        "reason": reason,
        "code": code,
    })
    .to_string()
    .into_bytes()
}
