//! The access broker: per-command approvals kept as AccessRequests in the Kubernetes API.
//!
//! A request's life: **Pending** (made when a command that needs approval is run, or by the
//! `request` word) → **Approved** once enough distinct approvers from the rule's groups (never
//! the requester) approved it, or at once when an `autoApprove` condition holds → **Consumed**
//! when the command runs, once. **Denied** by an approver, **Revoked** by the requester or an
//! approver, **Expired** when nobody approved it in time or the approval went unused. Expiry is
//! settled by whoever next reads the request (every replica reads the same object).
//!
//! Who may approve and what an approval permits is the policy's (`broker-policy`); this module
//! keeps the state and its transitions, each one written with the object's resourceVersion.

mod notify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use jitsh_broker_policy::{Approvals, Policy, Principal, Subject, Target};
use jitsh_certs::VerifiedIdentity;
use sha2::{Digest, Sha256};

use crate::audit::Event;
use crate::gateway::Gateway;
use crate::ids::CommandId;
use crate::kube::requests::{
    AccessRequest, ApprovalRecord, AutoApproved, Denial, KEY_LABEL, Person, REQUESTER_LABEL,
    RequestCommand, RequestSpec, RequestStatus, RequestTarget, Requests, Revocation,
};
use crate::kube::{KubeError, Resolved};

pub(crate) use notify::Notifier;

/// The longest reason or comment, in characters.
pub(crate) const MAX_TEXT: usize = 512;

/// A request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Waiting for approvals.
    Pending,
    /// Approved and not yet used.
    Approved,
    /// An approver said no.
    Denied,
    /// Nobody approved in time, or the approval went unused.
    Expired,
    /// The approved command ran.
    Consumed,
    /// Withdrawn by the requester or an approver.
    Revoked,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Pending => "Pending",
            State::Approved => "Approved",
            State::Denied => "Denied",
            State::Expired => "Expired",
            State::Consumed => "Consumed",
            State::Revoked => "Revoked",
        }
    }
    fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Approved,
            State::Denied,
            State::Expired,
            State::Consumed,
            State::Revoked,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
    /// Whether nothing more can happen to it.
    pub(crate) fn is_final(self) -> bool {
        !matches!(self, State::Pending | State::Approved)
    }
}

/// Why a broker action was refused: one line for the user.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("no request {0}")]
    Unknown(String),
    #[error("request {id} is {}, not pending", .state.as_str().to_lowercase())]
    NotPending { id: String, state: State },
    #[error("request {id} is {}: nothing to revoke", .state.as_str().to_lowercase())]
    Over { id: String, state: State },
    #[error("{0}")]
    Policy(#[from] jitsh_broker_policy::ApprovalRefused),
    #[error("you already approved request {0}")]
    AlreadyApproved(String),
    #[error("only the requester or an approver may revoke request {0}")]
    NotYours(String),
    #[error("{0}")]
    Kube(#[from] KubeError),
}

/// The broker's shared state: its settings and the feed of request changes every waiter and
/// session reads.
#[derive(Debug)]
pub(crate) struct Broker {
    changes: tokio::sync::broadcast::Sender<Arc<AccessRequest>>,
    notifier: Notifier,
    /// Every request the replica's watch has seen, by id (grants are looked up here on every
    /// decision; the API server is the source, this is its latest copy).
    seen: Mutex<HashMap<String, Arc<AccessRequest>>>,
}

impl Broker {
    pub(crate) fn new(notify: Vec<String>) -> Broker {
        Broker {
            changes: tokio::sync::broadcast::Sender::new(256),
            notifier: Notifier::new(notify),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AccessRequest>>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The grants `who` holds now under `policy`: `(rule, request id)` of each approved,
    /// unexpired grant whose approvals the policy still counts as enough.
    pub(crate) fn held(&self, policy: &Policy, who: &Principal) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .seen()
            .values()
            .filter(|r| r.spec.duration.is_some() && state_of(r) == State::Approved)
            .filter(|r| as_principal(&r.spec.requester).same_person(who))
            .filter(|r| {
                policy.grant_stands(
                    &r.spec.rule,
                    &as_principal(&r.spec.requester),
                    &approvals_of(r),
                    r.spec.incident.as_deref(),
                )
            })
            .map(|r| (r.spec.rule.clone(), id_of(r).to_owned()))
            .collect();
        out.sort();
        out
    }

    /// How many pending requests `who` may approve, from the replica's copy (no API call: it is
    /// asked on every `whoami` and every prompt).
    pub(crate) fn waiting_for(&self, policy: &Policy, who: &Principal) -> usize {
        self.seen()
            .values()
            .filter(|r| state_of(r) == State::Pending)
            .filter(|r| {
                policy
                    .may_approve(&r.spec.rule, &as_principal(&r.spec.requester), who)
                    .is_ok()
            })
            .count()
    }

    /// How a grant ended, for the line that ends its sessions.
    pub(crate) fn how_it_ended(&self, id: &str) -> String {
        let Some(r) = self.seen().get(id).cloned() else {
            return "it is gone".to_owned();
        };
        match state_of(&r) {
            State::Revoked => {
                let by = r
                    .status
                    .as_ref()
                    .and_then(|s| s.revocation.as_ref())
                    .map_or("-", |v| v.by.as_str())
                    .to_owned();
                format!("revoked by {by}")
            }
            State::Expired => "expired".to_owned(),
            other => other.as_str().to_lowercase(),
        }
    }

    /// Every change to a request, as the replica's watch sees it.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<AccessRequest>> {
        self.changes.subscribe()
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}

/// Runs the replica's watch on AccessRequests, feeding [`Broker::subscribe`] and the grant
/// lookups; every change wakes the live sessions (a grant that ended ends the sessions it
/// allowed), and a request whose time runs out is marked Expired. Never returns.
pub(crate) async fn watch(gw: Arc<Gateway>) {
    use futures::StreamExt;
    let ns = gw.settings().broker.namespace.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        match gw.kube().watch_requests(&ns) {
            Ok(s) => {
                let mut s = std::pin::pin!(s);
                loop {
                    tokio::select! {
                        got = s.next() => {
                            let Some(o) = got else { break };
                            let o = Arc::new(o);
                            gw.broker().seen().insert(id_of(&o).to_owned(), o.clone());
                            let _ = gw.broker().changes.send(o);
                            gw.wake_sessions();
                        }
                        _ = tick.tick() => expire_due(&gw).await,
                    }
                }
            }
            Err(e) => tracing::warn!("accessrequests watch: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Marks every request past its time as Expired (each replica tries; the resourceVersion makes
/// one write win, and that replica audits it), and wakes the sessions when a grant ran out.
async fn expire_due(gw: &Arc<Gateway>) {
    let due: Vec<Arc<AccessRequest>> = gw
        .broker()
        .seen()
        .values()
        .filter(|r| {
            state_of(r) == State::Expired
                && r.status
                    .as_ref()
                    .is_some_and(|s| s.state != State::Expired.as_str())
        })
        .cloned()
        .collect();
    if due.is_empty() {
        return;
    }
    gw.wake_sessions();
    let cid = CommandId::new();
    let Ok(api) = gw
        .kube()
        .own_requests(&gw.settings().broker.namespace, cid.as_str())
    else {
        return;
    };
    for r in due {
        if let Err(e) = settle(gw, &api, &Event::default(), (*r).clone()).await {
            tracing::warn!("expiring request {}: {e}", id_of(&r));
        }
    }
}

/// A person as the policy sees them, from their certificate.
pub(crate) fn principal(id: &VerifiedIdentity) -> Principal {
    Principal {
        identity: id.identity().to_owned(),
        subject: Subject {
            user: id.username().to_owned(),
            groups: id.groups().to_vec(),
            grants: Vec::new(),
        },
    }
}

fn person(id: &VerifiedIdentity) -> Person {
    Person {
        user: id.username().to_owned(),
        identity: id.identity().to_owned(),
        groups: id.groups().to_vec(),
    }
}

fn as_principal(p: &Person) -> Principal {
    Principal {
        identity: p.identity.clone(),
        subject: Subject {
            user: p.user.clone(),
            groups: p.groups.clone(),
            grants: Vec::new(),
        },
    }
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.len().to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize()).chars().take(40).collect()
}

fn requester_label(identity: &str) -> String {
    digest(&["requester", identity])
}

fn request_key(identity: &str, t: &RequestTarget, stages: &[Vec<String>]) -> String {
    let argv = serde_json::to_string(stages).unwrap_or_default();
    digest(&[identity, &t.namespace, &t.pod, &t.container, &argv])
}

/// A fresh request id: `ar-` and ten characters that read unambiguously.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut id = String::from("ar-");
    for _ in 0..10 {
        let i = rand::random_range(0..ALPHABET.len());
        id.push(ALPHABET.get(i).copied().map_or('a', char::from));
    }
    id
}

/// Whether text could be a request id (checked before anything is asked of Kubernetes).
pub(crate) fn is_id(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with("ar-")
        && s.len() > 3
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Checks a reason or comment: at most [`MAX_TEXT`] characters, no control characters.
pub(crate) fn check_text(what: &str, text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.chars().count() > MAX_TEXT {
        return Err(format!("{what} is longer than {MAX_TEXT} characters"));
    }
    if t.chars().any(char::is_control) {
        return Err(format!("{what} may not contain control characters"));
    }
    Ok(t.to_owned())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn later(d: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + d).to_string()
}

/// The state a request is in now: a pending or approved one past its `expiresAt` has expired.
pub(crate) fn state_of(r: &AccessRequest) -> State {
    let Some(st) = &r.status else {
        return State::Pending;
    };
    let state = State::parse(&st.state).unwrap_or(State::Pending);
    let due = st
        .expires_at
        .as_deref()
        .and_then(|e| humantime::parse_rfc3339(e).ok())
        .is_some_and(|e| e <= SystemTime::now());
    if due && !state.is_final() {
        State::Expired
    } else {
        state
    }
}

/// The request's id.
pub(crate) fn id_of(r: &AccessRequest) -> &str {
    r.metadata.name.as_deref().unwrap_or_default()
}

/// `have/need`.
pub(crate) fn progress(r: &AccessRequest) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.progress.clone())
        .unwrap_or_else(|| "-".into())
}

/// One request's audit event (`approval.*`), on top of the actor's identity fields.
pub(crate) fn event(base: Event, r: &AccessRequest) -> Event {
    let st = r.status.clone().unwrap_or_default();
    Event {
        request: Some(id_of(r).to_owned()),
        requester: Some(r.spec.requester.identity.clone()),
        namespace: Some(r.spec.target.namespace.clone()),
        pod: Some(r.spec.target.pod.clone()),
        container: Some(r.spec.target.container.clone()),
        rule: Some(r.spec.rule.clone()),
        stages: r.spec.command.as_ref().map(|c| c.stages.clone()),
        state: Some(state_of(r).as_str().to_owned()),
        approvals: Some(u32::try_from(st.approvals.len()).unwrap_or(u32::MAX)),
        approvals_required: st.approvals_required,
        expires: st.expires_at.clone(),
        incident: r.spec.incident.clone(),
        ..base
    }
}

/// A request's access on behalf of `id` (the gateway's own client, the command's Audit-ID).
pub(crate) fn requests(
    gw: &Gateway,
    id: &VerifiedIdentity,
    cid: &CommandId,
) -> Result<Requests, KubeError> {
    gw.kube()
        .requests(id, &gw.settings().broker.namespace, cid.as_str())
}

/// Marks a request whose time ran out as Expired (audited and notified once, by whichever
/// replica writes it); returns the request as it now stands.
pub(crate) async fn settle(
    gw: &Arc<Gateway>,
    api: &Requests,
    base: &Event,
    r: AccessRequest,
) -> Result<AccessRequest, KubeError> {
    let stored = r
        .status
        .as_ref()
        .and_then(|s| State::parse(&s.state))
        .unwrap_or(State::Pending);
    if state_of(&r) != State::Expired || stored == State::Expired {
        return Ok(r);
    }
    let mut wrote = false;
    let res = api
        .update_status(id_of(&r), |o| {
            wrote = false;
            if state_of(o) == State::Expired
                && let Some(st) = &mut o.status
                && st.state != State::Expired.as_str()
            {
                st.state = State::Expired.as_str().to_owned();
                wrote = true;
            }
            Ok::<(), ()>(())
        })
        .await?;
    let out = match res {
        Ok(Some(o)) => o,
        _ => r,
    };
    if wrote {
        changed(gw, "approval.expired", base.clone(), &out);
    }
    Ok(out)
}

/// Audits a change and tells the webhooks.
pub(crate) fn changed(gw: &Arc<Gateway>, kind: &str, base: Event, r: &AccessRequest) {
    gw.record(kind, &event(base, r));
    gw.broker().notifier().send(gw, kind, r);
}

/// What asking for an approval found or made.
pub(crate) struct Asked {
    /// The request.
    pub(crate) request: AccessRequest,
    /// Whether it was made now (rather than an identical one found).
    pub(crate) created: bool,
}

/// What a new request is for.
pub(crate) struct Ask<'a> {
    pub(crate) what: What<'a>,
    pub(crate) rule: &'a str,
    pub(crate) reason: Option<&'a str>,
    pub(crate) incident: Option<&'a str>,
}

/// One exact command on one target, or a grant of a rule for a while.
pub(crate) enum What<'a> {
    Command {
        resolved: &'a Resolved,
        stages: &'a [Vec<String>],
    },
    Grant(Duration),
}

/// How long a grant request lasts once approved.
pub(crate) fn grant_duration(r: &AccessRequest) -> Option<Duration> {
    r.spec
        .duration
        .as_deref()
        .and_then(|d| humantime::parse_duration(d).ok())
}

/// `30m`, `2h`: a duration as the CRD's pattern wants it (whole minutes or seconds).
fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Finds this person's request for exactly this command on this target that is still open
/// (pending, or approved and unused), or makes one — approved at once when the rule's
/// `autoApprove` condition holds.
pub(crate) async fn ask(
    gw: &Arc<Gateway>,
    id: &VerifiedIdentity,
    api: &Requests,
    base: &Event,
    ask: Ask<'_>,
) -> Result<Asked, KubeError> {
    let (target, stages, duration) = match &ask.what {
        What::Command { resolved, stages } => (
            RequestTarget {
                namespace: resolved.namespace.clone(),
                pod: resolved.pod.clone(),
                container: resolved.container.clone(),
            },
            Some(*stages),
            None,
        ),
        What::Grant(d) => (RequestTarget::default(), None, Some(short(*d))),
    };
    let key = match stages {
        Some(st) => request_key(id.identity(), &target, st),
        None => digest(&["grant", id.identity(), ask.rule]),
    };
    let mut found = None;
    for r in api.list(&format!("{KEY_LABEL}={key}")).await? {
        let r = settle(gw, api, base, r).await?;
        // The label is a digest: the spec itself must match too.
        let same = r.spec.requester.identity == id.identity()
            && r.spec.target == target
            && r.spec.rule == ask.rule
            && r.spec.command.as_ref().map(|c| c.stages.as_slice()) == stages
            && r.spec.duration.is_some() == duration.is_some();
        // An identical open request is reused (a grant: a pending one; an approved grant in
        // force is not asked for again).
        if same && !state_of(&r).is_final() {
            found = Some(r);
        }
    }
    if let Some(request) = found {
        return Ok(Asked {
            request,
            created: false,
        });
    }
    let policy = gw.policy();
    let approval = policy.approval_of(ask.rule);
    let need = approval.map_or(1, |a| a.approvers);
    let from = approval.map(|a| a.from.clone()).unwrap_or_default();
    let summary = match (stages, &duration) {
        (Some(st), _) => st
            .iter()
            .map(|s| jitsh_broker_policy::quote(&gw.redactor().redact(s)))
            .collect::<Vec<_>>()
            .join(" | "),
        (None, d) => format!("grant {} for {}", ask.rule, d.as_deref().unwrap_or("-")),
    };
    let target_ref = match stages {
        Some(_) => format!("{}/{}/{}", target.namespace, target.pod, target.container),
        None => format!("rule {}", ask.rule),
    };
    let name = new_id();
    let grant_for = match &ask.what {
        What::Grant(d) => Some(*d),
        What::Command { .. } => None,
    };
    let mut obj = AccessRequest::new(
        &name,
        RequestSpec {
            requester: person(id),
            target_ref,
            target,
            mode: if stages.is_some() { "exec" } else { "grant" }.into(),
            rule: ask.rule.to_owned(),
            command: stages.map(|st| RequestCommand {
                stages: st.to_vec(),
            }),
            duration,
            summary,
            reason: ask
                .reason
                .unwrap_or("asked for by running the command")
                .to_owned(),
            incident: ask.incident.map(str::to_owned),
        },
    );
    obj.metadata.labels = Some(
        [
            (KEY_LABEL.to_owned(), key),
            (REQUESTER_LABEL.to_owned(), requester_label(id.identity())),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "jitsh".to_owned(),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let created = api.create(&obj).await?;
    let auto = policy.auto_approval(ask.rule, &principal(id).subject, ask.incident);
    let b = &gw.settings().broker;
    let res = api
        .update_status(id_of(&created), |o| {
            o.status = Some(match &auto {
                Some(condition) => RequestStatus {
                    state: State::Approved.as_str().to_owned(),
                    approvals_required: Some(need),
                    approvers: from.clone(),
                    progress: Some(format!("auto/{need}")),
                    auto_approved: Some(AutoApproved {
                        condition: condition.clone(),
                        at: now(),
                    }),
                    expires_at: Some(later(grant_for.unwrap_or(b.approved_for))),
                    ..RequestStatus::default()
                },
                None => RequestStatus {
                    state: State::Pending.as_str().to_owned(),
                    approvals_required: Some(need),
                    approvers: from.clone(),
                    progress: Some(format!("0/{need}")),
                    expires_at: Some(later(b.pending_for)),
                    ..RequestStatus::default()
                },
            });
            Ok::<(), ()>(())
        })
        .await?;
    let request = match res {
        Ok(Some(o)) => o,
        _ => created,
    };
    changed(gw, "approval.requested", base.clone(), &request);
    if let Some(condition) = &auto {
        let ev = Event {
            reason: Some(format!("auto-approved: {condition}")),
            ..base.clone()
        };
        changed(gw, "approval.approved", ev, &request);
    }
    Ok(Asked {
        request,
        created: true,
    })
}

/// Who approved a stored request, as the policy counts them.
fn approvals_of(r: &AccessRequest) -> Vec<Principal> {
    r.status
        .as_ref()
        .map(approvals_of_status)
        .unwrap_or_default()
}

/// The exec permit a request's approvals give its requester for `line` on `target` (the policy
/// checks requester, target, argv and the approvals under the policy in force).
pub(crate) fn permit(
    policy: &Policy,
    id: &VerifiedIdentity,
    target: &Target,
    line: &jitsh_broker_policy::CommandLine,
    r: &AccessRequest,
) -> Result<jitsh_broker_policy::ExecPermit, jitsh_broker_policy::Decision> {
    let requester = as_principal(&r.spec.requester);
    let asked_target = Target {
        namespace: r.spec.target.namespace.clone(),
        pod: r.spec.target.pod.clone(),
        container: r.spec.target.container.clone(),
        labels: Default::default(),
    };
    let stages = r
        .spec
        .command
        .as_ref()
        .map(|c| c.stages.clone())
        .unwrap_or_default();
    let approvals = approvals_of(r);
    policy.permit_approved_exec(
        &principal(id),
        target,
        line,
        &Approvals {
            requester: &requester,
            target: &asked_target,
            stages: &stages,
            approvals: &approvals,
            incident: r.spec.incident.as_deref(),
        },
    )
}

/// Marks an approved request as used by command `cid`: `Ok(true)` for exactly one caller.
pub(crate) async fn consume(
    gw: &Arc<Gateway>,
    api: &Requests,
    base: &Event,
    r: &AccessRequest,
    cid: &CommandId,
) -> Result<bool, KubeError> {
    let res = api
        .update_status(id_of(r), |o| {
            if state_of(o) != State::Approved {
                return Err(());
            }
            if let Some(st) = &mut o.status {
                st.state = State::Consumed.as_str().to_owned();
                st.consumed_at = Some(now());
                st.consumed_by = Some(cid.as_str().to_owned());
            }
            Ok(())
        })
        .await?;
    match res {
        Ok(Some(o)) => {
            changed(gw, "approval.consumed", base.clone(), &o);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// One change a person makes to a request: read it, settle its expiry, apply `change` to the
/// latest copy (retried on conflicts; `change` may refuse), then audit and notify `kind` with
/// `reason`.
async fn transition(
    gw: &Arc<Gateway>,
    api: &Requests,
    base: &Event,
    rid: &str,
    kind: &str,
    reason: Option<String>,
    change: impl FnMut(&mut AccessRequest) -> Result<(), Refused>,
) -> Result<AccessRequest, Refused> {
    let found = api
        .get(rid)
        .await?
        .ok_or_else(|| Refused::Unknown(rid.into()))?;
    settle(gw, api, base, found).await?;
    let r = api
        .update_status(rid, change)
        .await??
        .ok_or_else(|| Refused::Unknown(rid.into()))?;
    let ev = Event {
        reason,
        ..base.clone()
    };
    changed(gw, kind, ev, &r);
    Ok(r)
}

/// Refuses a change to a request that is not pending.
fn pending(o: &AccessRequest, rid: &str) -> Result<(), Refused> {
    match state_of(o) {
        State::Pending => Ok(()),
        state => Err(Refused::NotPending {
            id: rid.into(),
            state,
        }),
    }
}

/// Approves request `rid` as `id`: eligible (the policy's approver groups, never the
/// requester), once per person; enough approvals make it Approved. Returns the request.
pub(crate) async fn approve(
    gw: &Arc<Gateway>,
    id: &VerifiedIdentity,
    api: &Requests,
    base: &Event,
    rid: &str,
    comment: Option<String>,
) -> Result<AccessRequest, Refused> {
    let me = principal(id);
    let approved_for = gw.settings().broker.approved_for;
    transition(
        gw,
        api,
        base,
        rid,
        "approval.approved",
        comment.clone(),
        |o| {
            pending(o, rid)?;
            let policy = gw.policy();
            let requester = as_principal(&o.spec.requester);
            policy.may_approve(&o.spec.rule, &requester, &me)?;
            let lasts = grant_duration(o).unwrap_or(approved_for);
            let st = o.status.get_or_insert_with(RequestStatus::default);
            if st.approvals.iter().any(|a| a.identity == me.identity) {
                return Err(Refused::AlreadyApproved(rid.into()));
            }
            st.approvals.push(ApprovalRecord {
                by: me.subject.user.clone(),
                identity: me.identity.clone(),
                groups: me.subject.groups.clone(),
                at: now(),
                comment: comment.clone(),
            });
            let (have, need) =
                policy.approvals_counted(&o.spec.rule, &requester, &approvals_of_status(st));
            st.approvals_required = Some(need);
            st.progress = Some(format!("{have}/{need}"));
            if have >= need {
                st.state = State::Approved.as_str().to_owned();
                // A grant runs from its approval; an approved command waits to be run.
                st.expires_at = Some(later(lasts));
            }
            Ok(())
        },
    )
    .await
}

fn approvals_of_status(st: &RequestStatus) -> Vec<Principal> {
    st.approvals
        .iter()
        .map(|a| Principal {
            identity: a.identity.clone(),
            subject: Subject {
                user: a.by.clone(),
                groups: a.groups.clone(),
                grants: Vec::new(),
            },
        })
        .collect()
}

/// Denies pending request `rid` as `id` (an eligible approver), with a reason.
pub(crate) async fn deny(
    gw: &Arc<Gateway>,
    id: &VerifiedIdentity,
    api: &Requests,
    base: &Event,
    rid: &str,
    reason: String,
) -> Result<AccessRequest, Refused> {
    let me = principal(id);
    transition(
        gw,
        api,
        base,
        rid,
        "approval.denied",
        Some(reason.clone()),
        |o| {
            pending(o, rid)?;
            gw.policy()
                .may_approve(&o.spec.rule, &as_principal(&o.spec.requester), &me)?;
            let st = o.status.get_or_insert_with(RequestStatus::default);
            st.state = State::Denied.as_str().to_owned();
            st.denial = Some(Denial {
                by: me.subject.user.clone(),
                identity: me.identity.clone(),
                at: now(),
                reason: reason.clone(),
            });
            Ok(())
        },
    )
    .await
}

/// Revokes request `rid` (pending or approved) as its requester or an eligible approver.
pub(crate) async fn revoke(
    gw: &Arc<Gateway>,
    id: &VerifiedIdentity,
    api: &Requests,
    base: &Event,
    rid: &str,
) -> Result<AccessRequest, Refused> {
    let me = principal(id);
    transition(gw, api, base, rid, "approval.revoked", None, |o| {
        let state = state_of(o);
        if state.is_final() {
            return Err(Refused::Over {
                id: rid.into(),
                state,
            });
        }
        let requester = as_principal(&o.spec.requester);
        let own = requester.same_person(&me);
        if !own
            && gw
                .policy()
                .may_approve(&o.spec.rule, &requester, &me)
                .is_err()
        {
            return Err(Refused::NotYours(rid.into()));
        }
        let st = o.status.get_or_insert_with(RequestStatus::default);
        st.state = State::Revoked.as_str().to_owned();
        st.revocation = Some(Revocation {
            by: me.subject.user.clone(),
            identity: me.identity.clone(),
            at: now(),
        });
        Ok(())
    })
    .await
}

/// The requests `id` sees: their own, and the pending ones they may approve (`all`: also the
/// finished ones).
pub(crate) async fn visible(
    gw: &Arc<Gateway>,
    id: &VerifiedIdentity,
    api: &Requests,
    base: &Event,
    all: bool,
) -> Result<Vec<AccessRequest>, KubeError> {
    let me = principal(id);
    let policy = gw.policy();
    let mut out = Vec::new();
    for r in api.list("app.kubernetes.io/managed-by=jitsh").await? {
        let r = settle(gw, api, base, r).await?;
        let state = state_of(&r);
        let mine = as_principal(&r.spec.requester).same_person(&me);
        let approver = policy
            .may_approve(&r.spec.rule, &as_principal(&r.spec.requester), &me)
            .is_ok();
        let open = match state {
            State::Pending => true,
            State::Approved => mine,
            _ => false,
        };
        if (mine || approver) && (all || open) {
            out.push(r);
        }
    }
    out.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    Ok(out)
}
