//! The russh server: certificate-only auth through the certs verifier, exec requests parsed,
//! decided by broker-policy, audited, and run through [`crate::exec`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use jitsh_broker_policy::{Action, Decision, Mode, Policy, Request, Subject, Target};
use jitsh_certs::{Presented, VerifiedIdentity, Verifier};
use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::audit::{AuditLog, redact};
use crate::exec::{self, KubeAccess, Tty};
use crate::intent::{self, Intent};

/// Exit status of a command the policy denied.
pub const DENIED_STATUS: u32 = 126;

/// Everything a connection needs.
#[derive(Debug)]
pub struct Gateway {
    /// Certificate verifier.
    pub verifier: Verifier,
    /// The policy (hot-swappable).
    pub policy: arc_swap::ArcSwap<Policy>,
    /// Audit log.
    pub audit: AuditLog,
    /// Kubernetes access.
    pub kube: KubeAccess,
    /// Namespace when the target names none.
    pub default_namespace: String,
}

/// Accepts connections forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<russh::server::Config>,
    gw: Arc<Gateway>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let handler = Conn {
            gw: gw.clone(),
            peer,
            identity: None,
            channels: HashMap::new(),
            ptys: HashMap::new(),
            resize: HashMap::new(),
            session_id: new_id(),
        };
        let config = config.clone();
        tokio::spawn(async move {
            match russh::server::run_stream(config, stream, handler).await {
                Ok(s) => {
                    let _ = s.await;
                }
                Err(e) => tracing::debug!(%peer, "handshake failed: {e}"),
            }
        });
    }
}

fn new_id() -> String {
    let b: [u8; 12] = rand::random();
    hex::encode(b)
}

struct Conn {
    gw: Arc<Gateway>,
    peer: SocketAddr,
    identity: Option<Arc<VerifiedIdentity>>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    ptys: HashMap<ChannelId, Tty>,
    resize: HashMap<ChannelId, tokio::sync::mpsc::Sender<Tty>>,
    session_id: String,
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let _ = self.gw.audit.record(
            "auth.rejected",
            json!({"session": self.session_id, "user": user, "source": self.peer.to_string(), "reason": "plain public keys are not accepted; a certificate is required"}),
        );
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let presented = Presented {
            certificate,
            username: user,
            peer: Some(self.peer.ip()),
            proven_key: certificate.public_key(),
            now: SystemTime::now(),
        };
        match self.gw.verifier.verify(&presented) {
            Ok(id) => {
                let ok = self.gw.audit.record(
                    "auth.accepted",
                    json!({"session": self.session_id, "user": user, "identity": id.identity(), "groups": id.groups(), "serial": id.serial(), "key_id": id.key_id(), "source": self.peer.to_string()}),
                );
                if let Err(e) = ok {
                    // Commands are refused later with a message the user sees (fail closed).
                    tracing::error!("{e}");
                }
                self.identity = Some(Arc::new(id));
                Ok(Auth::Accept)
            }
            Err(r) => {
                tracing::info!(peer = %self.peer, user, "certificate rejected: {r}");
                let _ = self.gw.audit.record(
                    "auth.rejected",
                    json!({"session": self.session_id, "user": user, "source": self.peer.to_string(), "reason": r.to_string(), "code": r.code()}),
                );
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.ptys.insert(
            channel,
            Tty {
                cols: u16::try_from(col_width).unwrap_or(u16::MAX),
                rows: u16::try_from(row_height).unwrap_or(u16::MAX),
            },
        );
        session.channel_success(channel)?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.resize.get(&channel) {
            let _ = tx.try_send(Tty {
                cols: u16::try_from(col_width).unwrap_or(u16::MAX),
                rows: u16::try_from(row_height).unwrap_or(u16::MAX),
            });
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        if let Some(ch) = self.channels.remove(&channel) {
            tokio::spawn(async move {
                let _ = ch
                    .extended_data_bytes(1, "jitsh: interactive sessions are not supported yet; give a command, e.g. 'ssh jitsh help'\r\n")
                    .await;
                let _ = ch.exit_status(1).await;
                let _ = ch.eof().await;
                let _ = ch.close().await;
            });
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(ch), Some(id)) = (self.channels.remove(&channel), self.identity.clone()) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let tty = self.ptys.get(&channel).copied();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        self.resize.insert(channel, tx);
        let text = String::from_utf8_lossy(data).into_owned();
        let gw = self.gw.clone();
        let sid = self.session_id.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            let deadline = id.valid_before();
            let (read, write) = ch.split();
            let run = run_command(&gw, &id, &sid, peer, &text, tty, rx, read, &write);
            let left = deadline
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let code = match tokio::time::timeout(left, run).await {
                Ok(c) => c,
                Err(_) => {
                    let _ = write
                        .extended_data_bytes(
                            1,
                            "\r\njitsh: session closed: your certificate expired\r\n",
                        )
                        .await;
                    let _ = gw.audit.record(
                        "session.end",
                        json!({"session": sid, "identity": id.identity(), "reason": "certificate expired"}),
                    );
                    255
                }
            };
            let _ = write.exit_status(code).await;
            let _ = write.eof().await;
            let _ = write.close().await;
        });
        Ok(())
    }
}

async fn say(write: &russh::ChannelWriteHalf<Msg>, line: &str) {
    let _ = write
        .extended_data_bytes(1, format!("jitsh: {line}\r\n"))
        .await;
}

#[allow(clippy::too_many_arguments)]
async fn run_command(
    gw: &Gateway,
    id: &VerifiedIdentity,
    sid: &str,
    peer: SocketAddr,
    text: &str,
    tty: Option<Tty>,
    resize: tokio::sync::mpsc::Receiver<Tty>,
    mut read: russh::ChannelReadHalf,
    write: &russh::ChannelWriteHalf<Msg>,
) -> u32 {
    let cid = new_id();
    let intent = match intent::parse(text) {
        Ok(i) => i,
        Err(e) => {
            say(write, &e.to_string()).await;
            return 2;
        }
    };
    let subject = Subject {
        user: id.username().to_owned(),
        groups: id.groups().to_vec(),
    };
    let (target, line) = match intent {
        Intent::Help => {
            say(write, "usage: ssh USER@jitsh [namespace/]pod[/container] [--] command...   |   whoami   |   help").await;
            return 0;
        }
        Intent::Whoami => {
            let until = humantime::format_rfc3339_seconds(id.valid_before());
            let msg = format!(
                "identity: {}\nuser: {}\ngroups: {}\ncertificate serial {} valid until {until}\n",
                id.identity(),
                id.username(),
                id.groups().join(","),
                id.serial()
            );
            let _ = write.data_bytes(msg.into_bytes()).await;
            return 0;
        }
        Intent::Exec { target, line } => (target, line),
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| gw.default_namespace.clone());
    let base = json!({"session": sid, "command": cid, "identity": id.identity(), "user": id.username(), "groups": id.groups(), "serial": id.serial(), "key_id": id.key_id(), "source": peer.to_string(), "namespace": namespace, "pod": target.pod});
    let client = match gw.kube.client_as(id, &cid) {
        Ok(c) => c,
        Err(e) => {
            say(write, &e.to_string()).await;
            return 1;
        }
    };
    let resolved = match exec::resolve(
        &client,
        &namespace,
        &target.pod,
        target.container.as_deref(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            say(write, &e.to_string()).await;
            return 1;
        }
    };
    let tgt = Target {
        namespace: namespace.clone(),
        pod: resolved.pod.clone(),
        labels: resolved.labels.clone(),
        container: resolved.container.clone(),
    };
    let decision = match jitsh_broker_policy::parse_command_line(&line) {
        Ok(cl) => gw.policy.load().decide(&Request {
            subject: &subject,
            target: &tgt,
            mode: Mode::Exec,
            action: Action::Command(&cl),
        }),
        Err(e) => Decision::denied(format!("refused: {e}")),
    };
    let line_words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let mut ev = base.clone();
    ev["container"] = json!(resolved.container);
    ev["argv"] = json!(redact(&line_words));
    let permit = match decision.permit() {
        Ok(p) => p,
        Err(d) => {
            ev["rule"] = json!(d.rule);
            ev["reasons"] = json!(d.reasons);
            if let Err(e) = gw.audit.record("command.denied", ev) {
                tracing::error!("{e}");
            }
            let rule = d.rule.as_deref().unwrap_or("no rule");
            say(
                write,
                &format!(
                    "denied: {} on {namespace}/{} (policy: {rule})",
                    d.reasons.join("; "),
                    resolved.pod
                ),
            )
            .await;
            return DENIED_STATUS;
        }
    };
    ev["rule"] = json!(permit.rule());
    if let Err(e) = gw.audit.record("command.allowed", ev.clone()) {
        say(
            write,
            &format!("refused: the audit log cannot be written ({e})"),
        )
        .await;
        return 1;
    }
    let (stdin_r, mut stdin_w) = tokio::io::duplex(64 * 1024);
    let pump = tokio::spawn(async move {
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } if stdin_w.write_all(&data).await.is_err() => break,
                ChannelMsg::Eof => break,
                _ => {}
            }
        }
        let _ = stdin_w.shutdown().await;
    });
    let started = std::time::Instant::now();
    let res = exec::run(
        &client,
        id,
        &permit,
        &resolved,
        tty,
        Some(resize),
        stdin_r,
        write.make_writer(),
        write.make_writer_ext(Some(1)),
    )
    .await;
    pump.abort();
    let code = match res {
        Ok(c) => c,
        Err(e) => {
            say(write, &e.to_string()).await;
            1
        }
    };
    ev["exit"] = json!(code);
    ev["duration_ms"] = json!(started.elapsed().as_millis() as u64);
    let _ = gw.audit.record("command.exit", ev);
    code
}
