//! pods/portforward over WebSocket (`v4.channel.k8s.io` framing, as the kubelet serves it).
//!
//! Port `i` of the `ports` query uses channel `2*i` for data (both ways) and `2*i+1` for
//! errors (server → client). The first frame the server sends on each of those channels is the
//! port number as two little-endian bytes. A failure to reach the port is reported as text on
//! its error channel. The socket closes once every port's connection has closed (or failed),
//! or when the client closes it.

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use futures::stream::SplitStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{CHUNK, Protocol, frame, start_writer};
use crate::runtime::{PodRef, Runtime};

/// Serves one pods/portforward WebSocket for `ports` (the `ports` query parameter, in order).
pub async fn serve_portforward(
    ws: WebSocket,
    protocol: Protocol,
    runtime: Runtime,
    pod: PodRef,
    ports: Vec<u16>,
) {
    let _ = protocol;
    let (tx, stream, writer) = start_writer(ws);
    let mut writers: Vec<Option<OwnedWriteHalf>> = Vec::with_capacity(ports.len());
    let mut pumps = JoinSet::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (Some(data), Some(error)) = (channel_of(i, 0), channel_of(i, 1)) else {
            writers.push(None);
            continue;
        };
        let prefix = port.to_le_bytes();
        if tx.send(frame(data, &prefix)).await.is_err()
            || tx.send(frame(error, &prefix)).await.is_err()
        {
            break;
        }
        match runtime.connect_port(&pod.namespace, &pod.pod, port).await {
            Ok(conn) => {
                let (read_half, write_half) = conn.into_split();
                writers.push(Some(write_half));
                pumps.spawn(pump_from_pod(read_half, data, tx.clone()));
            }
            Err(e) => {
                let message = format!("error forwarding port {port} to pod {}, uid : {e}", pod.pod);
                let _ = tx.send(frame(error, message.as_bytes())).await;
                writers.push(None);
            }
        }
    }
    let reader = tokio::spawn(pump_to_pod(stream, writers));
    tokio::pin!(reader);
    loop {
        tokio::select! {
            done = pumps.join_next() => if done.is_none() { break },
            _ = &mut reader => break,
        }
    }
    pumps.abort_all();
    drop(tx);
    let _ = writer.await;
    reader.abort();
}

/// Channel `2*i + offset`, if it fits in the channel byte.
fn channel_of(i: usize, offset: usize) -> Option<u8> {
    i.checked_mul(2)
        .and_then(|c| c.checked_add(offset))
        .and_then(|c| u8::try_from(c).ok())
        .filter(|c| *c != super::channel::CLOSE)
}

async fn pump_from_pod(mut conn: OwnedReadHalf, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Some(data) = buf.get(..n) else { return };
                if tx.send(frame(channel, data)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn pump_to_pod(mut stream: SplitStream<WebSocket>, mut writers: Vec<Option<OwnedWriteHalf>>) {
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        if channel % 2 != 0 {
            continue;
        }
        let index = usize::from(channel / 2);
        if let Some(slot) = writers.get_mut(index)
            && let Some(w) = slot.as_mut()
            && w.write_all(payload).await.is_err()
        {
            *slot = None;
        }
    }
    for w in writers.iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
}
