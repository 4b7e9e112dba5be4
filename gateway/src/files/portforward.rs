//! Local port-forward (`ssh -L LOCAL:POD.NAMESPACE:PORT`, `ssh -W`): a `direct-tcpip` channel
//! to `POD.NAMESPACE:PORT` or `NAMESPACE/POD:PORT` becomes pods/portforward as the user, for
//! ports the policy lists; anything else is refused when the channel opens, with the reason
//! (OpenSSH prints `open failed: administratively prohibited: jitsh: denied: ...`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, atomic::AtomicBool};
use std::time::Instant;

use jitsh_certs::VerifiedIdentity;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audit::Event;
use crate::gateway::Gateway;
use crate::ids::{CommandId, SessionId};
use crate::intent::is_dns_label;
use crate::kube::portforward::Forward;
use crate::session::{Ctx, Live};

/// A forward's destination as the client named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Port in the pod.
    pub port: u16,
}

/// Parses `POD.NAMESPACE` or `NAMESPACE/POD` and the port (pod names may contain dots, a
/// namespace may not: the last dot separates them).
pub(crate) fn destination(host: &str, port: u32) -> Result<Destination, String> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {port} is not a TCP port"))?;
    let (namespace, pod) = if let Some((ns, pod)) = host.split_once('/') {
        (ns, pod)
    } else if let Some((pod, ns)) = host.rsplit_once('.') {
        (ns, pod)
    } else {
        return Err(format!(
            "'{host}' names no pod: forward to POD.NAMESPACE:PORT or NAMESPACE/POD:PORT"
        ));
    };
    if !is_dns_label(pod) || !is_dns_label(namespace) || namespace.contains('.') {
        return Err(format!(
            "'{host}' names no pod: forward to POD.NAMESPACE:PORT or NAMESPACE/POD:PORT"
        ));
    }
    Ok(Destination {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        port,
    })
}

/// What `channel_open_direct_tcpip` was given.
pub(crate) struct Asked {
    /// `host_to_connect`.
    pub(crate) host: String,
    /// `port_to_connect`.
    pub(crate) port: u32,
    /// `originator_address:originator_port`.
    pub(crate) originator: String,
}

/// Refuses the channel with the reason (OpenSSH prints it after "open failed").
pub(crate) async fn refuse(reply: ChannelOpenHandle, reason: &str) {
    reply
        .reject(ChannelOpenFailure::Other {
            code: 1,
            reason: format!("jitsh: {reason}"),
        })
        .await;
}

/// Decides, audits and (when allowed) bridges one `direct-tcpip` channel, inside the session
/// `live`: the forward ends with the session (certificate, limits, idle, a policy that no
/// longer allows the port, shutdown).
#[expect(
    clippy::too_many_arguments,
    reason = "the connection's parts and the channel's"
)]
pub(crate) async fn run(
    gw: &Arc<Gateway>,
    id: &VerifiedIdentity,
    sid: &SessionId,
    peer: SocketAddr,
    live: &Live,
    asked: Asked,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
) {
    let (ssh_r, ssh_w) = channel.split();
    let ctx = Ctx {
        merged: AtomicBool::new(false),
        gw,
        id,
        sid,
        peer,
        write: &ssh_w,
        clock: live.clock(),
        gone: live.gone(),
        via: "portforward",
        tty: false,
    };
    let cid = CommandId::new();
    let mut ev = Event {
        destination: Some(format!("{}:{}", asked.host, asked.port)),
        originator: Some(asked.originator.clone()),
        ..ctx.event(&cid)
    };
    match prepare(&ctx, &cid, &asked, &mut ev).await {
        Err(reason) => refuse(reply, &reason).await,
        Ok(ready) => {
            reply.accept().await;
            bridge(&ctx, ready, ssh_r, ev).await;
        }
    }
}

struct Ready {
    forward: Forward,
    _hold: crate::session::Hold,
}

async fn prepare(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    asked: &Asked,
    ev: &mut Event,
) -> Result<Ready, String> {
    let denied = |ev: &mut Event, reasons: Vec<String>, rule: Option<String>| {
        ev.reasons = Some(reasons.clone());
        ev.rule = rule.clone();
        ctx.gw.record("portforward.denied", ev);
        let rule = rule.unwrap_or_else(|| "no rule".into());
        format!("denied: {} (policy: {rule})", reasons.join("; "))
    };
    if ctx.id.force_command().is_some() {
        return Err(denied(
            ev,
            vec!["your certificate allows only its forced command".into()],
            None,
        ));
    }
    if !ctx.id.permits_port_forwarding() {
        return Err(denied(
            ev,
            vec![
                "your certificate does not permit port forwarding (no permit-port-forwarding)"
                    .into(),
            ],
            None,
        ));
    }
    let dest = match destination(&asked.host, asked.port) {
        Ok(d) => d,
        Err(e) => return Err(denied(ev, vec![e], None)),
    };
    ev.namespace = Some(dest.namespace.clone());
    ev.pod = Some(dest.pod.clone());
    ev.port = Some(dest.port);
    let k = ctx.impersonate(cid).map_err(|e| e.to_string())?;
    let target = crate::kube::pods::resolve(&k, &dest.namespace, &dest.pod, None)
        .await
        .map_err(|e| denied(ev, vec![e.to_string()], None))?;
    let tgt = target.policy_target();
    let decision = ctx.gw.policy().permit_port(&ctx.subject(), &tgt, dest.port);
    let permit = match decision {
        Ok(p) => p,
        Err(d) => {
            return Err(denied(
                ev,
                d.reasons().to_vec(),
                d.rule().map(str::to_owned),
            ));
        }
    };
    ev.rule = Some(permit.rule().to_owned());
    ctx.gw
        .audit_first("portforward.allowed", ev)
        .map_err(|e| e.to_string())?;
    ctx.clock
        .tighten(permit.limits().max_session, permit.limits().idle_timeout);
    let hold = ctx.clock.hold(&permit);
    match crate::kube::portforward::open(&k, &permit).await {
        Ok(forward) => Ok(Ready {
            forward,
            _hold: hold,
        }),
        Err(e) => {
            ev.error = Some(e.to_string());
            ctx.gw.record("portforward.end", ev);
            Err(e.to_string())
        }
    }
}

async fn bridge(ctx: &Ctx<'_>, mut ready: Ready, mut ssh_r: russh::ChannelReadHalf, mut ev: Event) {
    let started = Instant::now();
    let Some((pod, errors)) = ready.forward.take() else {
        ev.error = Some("kubernetes: no stream for the port".into());
        ctx.gw.record("portforward.end", &ev);
        return;
    };
    let (mut pod_r, mut pod_w) = tokio::io::split(pod);
    let bytes_in = ctx.bytes(crate::telemetry::Direction::In);
    let bytes_out = ctx.bytes(crate::telemetry::Direction::Out);
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let clock = ctx.clock;
    // Client → pod until the client closes the channel. Its EOF is not passed on: the
    // WebSocket port-forward protocol cannot half-close (kube-rs would end the whole forward
    // and drop the answer in flight), so the pod's side decides when the connection ends.
    let to_pod = async {
        while let Some(msg) = ssh_r.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    if pod_w.write_all(&data).await.is_err() {
                        break;
                    }
                    clock.touch();
                    bytes_in.inc_by(data.len() as u64);
                    sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    };
    // Pod → client until the pod's side closes, then EOF and close.
    let from_pod = async {
        let mut w = ctx.write.make_writer();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pod_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Some(chunk) = buf.get(..n) else { break };
            if w.write_all(chunk).await.is_err() {
                break;
            }
            clock.touch();
            bytes_out.inc_by(n as u64);
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
        let _ = w.flush().await;
    };
    tokio::pin!(to_pod, from_pod, errors);
    let mut error = None;
    let mut watch_errors = true;
    let relay = async {
        loop {
            tokio::select! {
                () = &mut to_pod => break,
                () = &mut from_pod => break,
                e = &mut errors, if watch_errors => match e {
                    Some(e) => { error = Some(e); break; }
                    None => watch_errors = false,
                },
            }
        }
    };
    if let Err(reason) = ctx.race(relay).await {
        ctx.ended(&reason).await;
        error = Some(format!("session closed: {reason}"));
    }
    if error.is_none() && watch_errors {
        // A port that could not be reached says so just before the stream closes.
        error = futures::FutureExt::now_or_never(&mut errors).flatten();
    }
    let _ = ctx.write.eof().await;
    let _ = ctx.write.close().await;
    ready.forward.abort();
    ev.bytes_in = Some(sent.load(Ordering::Relaxed));
    ev.bytes_out = Some(received.load(Ordering::Relaxed));
    ev.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    ev.error = error;
    ctx.gw.record("portforward.end", &ev);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = destination("api-0.payments", 8080).unwrap();
        assert_eq!(
            (d.namespace.as_str(), d.pod.as_str(), d.port),
            ("payments", "api-0", 8080)
        );
        let d = destination("payments/api-0", 22).unwrap();
        assert_eq!(
            (d.namespace.as_str(), d.pod.as_str(), d.port),
            ("payments", "api-0", 22)
        );
        let d = destination("web.v2.payments", 80).unwrap();
        assert_eq!(
            (d.namespace.as_str(), d.pod.as_str()),
            ("payments", "web.v2")
        );
        for (host, port) in [
            ("localhost", 8080),
            ("api-0.payments", 0),
            ("api-0.payments", 70000),
            ("Api.payments", 80),
            ("a/b/c", 80),
            ("payments/", 80),
            (".payments", 80),
        ] {
            assert!(destination(host, port).is_err(), "{host}:{port}");
        }
    }
}
