//! pods/log as the user: streamed to the client (`logs`) or read as a file (the file tree's
//! `current.log` / `previous.log`).

use std::pin::Pin;

use jitsh_broker_policy::LogsPermit;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Impersonated, KubeError};
use crate::intent::LogOptions;

/// Streams the permit's container's log into `out`; returns the bytes copied.
pub async fn stream<O>(
    k: &Impersonated,
    permit: &LogsPermit,
    options: &LogOptions,
    mut out: O,
) -> Result<u64, KubeError>
where
    O: AsyncWrite + Unpin,
{
    use futures::AsyncReadExt as _;
    let target = permit.target();
    let lp = LogParams {
        container: Some(target.container.clone()),
        follow: options.follow,
        tail_lines: options.tail,
        since_seconds: options.since_seconds,
        previous: options.previous,
        timestamps: options.timestamps,
        ..Default::default()
    };
    let reader = k
        .api::<Pod>(&target.namespace)
        .log_stream(&target.pod, &lp)
        .await?;
    let mut reader = std::pin::pin!(reader);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await.map_err(KubeError::Read)?;
        if n == 0 {
            break;
        }
        let Some(chunk) = buf.get(..n) else { break };
        if out.write_all(chunk).await.is_err() {
            break;
        }
        total += n as u64;
    }
    let _ = out.flush().await;
    Ok(total)
}

/// A log read as a file: a stream of at most `limit` bytes (the whole log when `None`).
pub async fn open(
    k: &Impersonated,
    permit: &LogsPermit,
    previous: bool,
    limit: Option<u64>,
) -> Result<Pin<Box<dyn futures::AsyncBufRead + Send>>, KubeError> {
    let target = permit.target();
    if limit == Some(0) {
        return Ok(Box::pin(futures::io::empty()));
    }
    let lp = LogParams {
        container: Some(target.container.clone()),
        previous,
        limit_bytes: limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    let s = k
        .api::<Pod>(&target.namespace)
        .log_stream(&target.pod, &lp)
        .await?;
    Ok(Box::pin(s))
}

/// The size of a log in bytes (read through once).
pub async fn size(k: &Impersonated, permit: &LogsPermit, previous: bool) -> Result<u64, KubeError> {
    use futures::AsyncReadExt as _;
    let mut s = open(k, permit, previous, None).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let m = s.read(&mut buf).await.map_err(KubeError::Read)?;
        if m == 0 {
            return Ok(n);
        }
        n += m as u64;
    }
}
