//! Local port-forward (`ssh -L LOCAL:POD.NAMESPACE:PORT`, `ssh -W`): a `direct-tcpip` channel
//! to `POD.NAMESPACE:PORT` or `NAMESPACE/POD:PORT` becomes pods/portforward as the user, for
//! ports the policy lists; anything else is refused when the channel opens, with the reason
//! (OpenSSH prints `open failed: administratively prohibited: jitsh: denied: ...`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use jitsh_broker_policy::{Action, Mode, Request};
use jitsh_certs::VerifiedIdentity;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::label;
use crate::exec::{self, Resolved};
use crate::intent::is_dns_label;
use crate::server::{Clock, Gateway, new_id, target_of};

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
pub(crate) struct Opening {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// The connection's identity.
    pub id: Arc<VerifiedIdentity>,
    /// The connection's session id.
    pub sid: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// `host_to_connect`.
    pub host: String,
    /// `port_to_connect`.
    pub port: u32,
    /// `originator_address:originator_port`.
    pub originator: String,
}

/// Decides, audits and (when allowed) bridges one `direct-tcpip` channel in its own task.
pub(crate) fn spawn(o: Opening, channel: Channel<Msg>, reply: ChannelOpenHandle) {
    tokio::spawn(async move {
        let cid = new_id();
        let mut ev = json!({"session": o.sid, "command": cid, "identity": o.id.identity(), "user": o.id.username(), "groups": o.id.groups(), "serial": o.id.serial(), "key_id": o.id.key_id(), "source": o.peer.to_string(), "destination": format!("{}:{}", o.host, o.port), "originator": o.originator});
        match prepare(&o, &cid, &mut ev).await {
            Err(reason) => {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: format!("jitsh: {reason}"),
                    })
                    .await;
            }
            Ok(ready) => {
                reply.accept().await;
                bridge(&o, ready, channel, ev).await;
            }
        }
    });
}

struct Ready {
    forwarder: kube::api::Portforwarder,
    port: u16,
    clock: Arc<Clock>,
}

async fn prepare(o: &Opening, cid: &str, ev: &mut Value) -> Result<Ready, String> {
    let denied = |ev: &mut Value, reasons: Vec<String>, rule: Option<String>| {
        ev["reasons"] = json!(reasons);
        ev["rule"] = json!(rule);
        o.gw.record("portforward.denied", ev.clone());
        let rule = rule.unwrap_or_else(|| "no rule".into());
        format!("denied: {} (policy: {rule})", reasons.join("; "))
    };
    if o.id.force_command().is_some() {
        return Err(denied(
            ev,
            vec!["your certificate allows only its forced command".into()],
            None,
        ));
    }
    let dest = match destination(&o.host, o.port) {
        Ok(d) => d,
        Err(e) => return Err(denied(ev, vec![e], None)),
    };
    ev["namespace"] = json!(dest.namespace);
    ev["pod"] = json!(dest.pod);
    ev["port"] = json!(dest.port);
    let client = o.gw.kube.client_as(&o.id, cid).map_err(|e| e.to_string())?;
    let target: Resolved = exec::resolve(&client, &dest.namespace, &dest.pod, None)
        .await
        .map_err(|e| denied(ev, vec![e.to_string()], None))?;
    let decision = o.gw.policy.load().decide(&Request {
        subject: &jitsh_broker_policy::Subject {
            user: o.id.username().to_owned(),
            groups: o.id.groups().to_vec(),
        },
        target: &target_of(&target),
        mode: Mode::PortForward,
        action: Action::Port(dest.port),
    });
    let permit = match decision.permit() {
        Ok(p) => p,
        Err(d) => return Err(denied(ev, d.reasons, d.rule)),
    };
    ev["rule"] = json!(permit.rule());
    o.gw.audit
        .record("portforward.allowed", ev.clone())
        .map_err(|e| format!("refused: the audit log cannot be written ({e})"))?;
    let clock = Arc::new(Clock::new(&o.gw, &o.id));
    clock.tighten(permit.limits().max_session, permit.limits().idle_timeout);
    let api: Api<Pod> = Api::namespaced(client, &target.namespace);
    match api.portforward(&target.pod, &[dest.port]).await {
        Ok(forwarder) => Ok(Ready {
            forwarder,
            port: dest.port,
            clock,
        }),
        Err(e) => {
            let msg = match e {
                kube::Error::Api(s) => format!("kubernetes: {} ({})", s.message, s.code),
                other => format!("kubernetes: {other}"),
            };
            ev["error"] = json!(msg);
            o.gw.record("portforward.end", ev.clone());
            Err(msg)
        }
    }
}

async fn bridge(o: &Opening, mut ready: Ready, channel: Channel<Msg>, mut ev: Value) {
    let started = Instant::now();
    let (Some(pod), Some(errors)) = (
        ready.forwarder.take_stream(ready.port),
        ready.forwarder.take_error(ready.port),
    ) else {
        ev["error"] = json!("kubernetes: no stream for the port");
        o.gw.record("portforward.end", ev);
        return;
    };
    let (mut pod_r, mut pod_w) = tokio::io::split(pod);
    let (mut ssh_r, ssh_w) = channel.split();
    let m = &o.gw.metrics;
    // One statement each: the family's guard must be gone before the next lookup may insert.
    let bytes_in = m.bytes.get_or_create(&label("direction", "in")).clone();
    let bytes_out = m.bytes.get_or_create(&label("direction", "out")).clone();
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let clock = &ready.clock;
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
        let mut w = ssh_w.make_writer();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pod_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if w.write_all(&buf[..n]).await.is_err() {
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
    loop {
        tokio::select! {
            () = &mut to_pod => break,
            () = &mut from_pod => break,
            e = &mut errors, if watch_errors => match e {
                Some(e) => { error = Some(e); break; }
                None => watch_errors = false,
            },
            reason = clock.expired_warning(&o.gw, &o.id, None) => { error = Some(format!("session closed: {reason}")); break; }
        }
    }
    if error.is_none() && watch_errors {
        // A port that could not be reached says so just before the stream closes.
        error = futures::FutureExt::now_or_never(&mut errors).flatten();
    }
    let _ = ssh_w.eof().await;
    let _ = ssh_w.close().await;
    ready.forwarder.abort();
    ev["bytes_in"] = json!(sent.load(Ordering::Relaxed));
    ev["bytes_out"] = json!(received.load(Ordering::Relaxed));
    ev["duration_ms"] = json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    if let Some(e) = error {
        ev["error"] = json!(e);
    }
    o.gw.record("portforward.end", ev);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
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
