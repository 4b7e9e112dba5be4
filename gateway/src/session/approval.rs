//! Approvals in a session: a command that needs approval asks for it and waits, and runs once
//! when approved; the words `requests`, `approve`, `deny`, `revoke` and `request`.

use std::time::{Duration, Instant, SystemTime};

use jitsh_broker_policy::{CommandLine, Decision, ExecPermit};

use super::{Ctx, DENIED_STATUS};
use crate::audit::Event;
use crate::broker::{self, Ask, Refused, State};
use crate::ids::CommandId;
use crate::intent::TargetSpec;
use crate::kube::Resolved;
use crate::kube::requests::{AccessRequest, Requests};

/// Exit status of a command still waiting for approval when the wait ended (`EX_TEMPFAIL`:
/// run it again later).
pub(crate) const WAITING_STATUS: u32 = 75;

/// How often a waiter reads its request even without a watch event (the watch is the fast
/// path; this bounds the wait when it is down).
const POLL: Duration = Duration::from_secs(5);

/// What a request asks, beyond the command itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Why<'a> {
    /// Asked for with the `request` word (else: by running a command that needs approval).
    pub(crate) explicit: bool,
    pub(crate) reason: Option<&'a str>,
    pub(crate) incident: Option<&'a str>,
    /// Wait for the approval (else: make the request and return).
    pub(crate) wait: bool,
}

impl<'a> Why<'a> {
    /// Asked for with the `request` word.
    pub(crate) fn asked(reason: &'a str, incident: Option<&'a str>, wait: bool) -> Why<'a> {
        Why {
            explicit: true,
            reason: Some(reason),
            incident,
            wait,
        }
    }

    /// A command run as usual: asks when it needs approval, and waits.
    pub(crate) const RUN: Why<'static> = Why {
        explicit: false,
        reason: None,
        incident: None,
        wait: true,
    };
}

/// The result of asking.
pub(crate) enum Obtained {
    /// Approved and consumed by this command: run it with this permit.
    Run(Box<ExecPermit>, String),
    /// Not (yet) approved: exit with this status.
    Exit(u32),
}

/// A command the policy says needs approval: finds or makes its request, waits for it (up to
/// `broker.wait`), and consumes it — once — when approved.
pub(crate) async fn obtain(
    ctx: &Ctx<'_>,
    resolved: &Resolved,
    parsed: &CommandLine,
    d: &Decision,
    ev: &Event,
    why: Why<'_>,
) -> Obtained {
    let gw = ctx.gw;
    let cid = ev.command.clone().unwrap_or_else(CommandId::new);
    let base = ctx.event(&cid);
    let api = match broker::requests(gw, ctx.id, &cid) {
        Ok(a) => a,
        Err(e) => return fail(ctx, &e.to_string()).await,
    };
    let rule = d.rule().unwrap_or_default();
    let asked = broker::ask(
        gw,
        ctx.id,
        &api,
        &base,
        Ask {
            what: broker::What::Command {
                resolved,
                stages: d.held_stages(),
            },
            rule,
            reason: why.reason,
            incident: why.incident,
        },
    )
    .await;
    let asked = match asked {
        Ok(a) => a,
        Err(e) => {
            return fail(ctx, &format!("the approval request could not be made: {e}")).await;
        }
    };
    let r = asked.request;
    let id = broker::id_of(&r).to_owned();
    if !why.wait {
        // `request` without --wait: say what there is and leave it to be approved.
        let state = broker::state_of(&r);
        ctx.print(&format!(
            "{id}\t{}\t{}\n",
            state.as_str(),
            broker::progress(&r)
        ))
        .await;
        let from = r
            .status
            .as_ref()
            .map(|s| s.approvers.join(", "))
            .unwrap_or_default();
        let line = match state {
            State::Approved => format!(
                "request {id} is approved: run the same command (or 'request ... --wait') to run it once"
            ),
            _ => format!(
                "request {id} {} {from}; once approved, run the same command (or 'request ... --wait') to run it once",
                if asked.created {
                    "sent to"
                } else {
                    "already waits at"
                }
            ),
        };
        ctx.say(&line).await;
        return Obtained::Exit(0);
    }
    let from = r
        .status
        .as_ref()
        .map(|s| s.approvers.join(", "))
        .unwrap_or_default();
    if broker::state_of(&r) == State::Pending {
        let verb = if asked.created {
            "sent to"
        } else {
            "still waiting at"
        };
        ctx.say(&format!(
            "approval needed: request {id} {verb} {from} ({} approvals); waiting …",
            broker::progress(&r)
        ))
        .await;
    }
    match wait(ctx, &api, &base, r).await {
        Waited::Decided(r) if broker::state_of(&r) == State::Approved => {
            run_approved(ctx, &api, &base, resolved, parsed, &r, &cid).await
        }
        Waited::Decided(r) => exit(ctx, &ended_line(&r)).await,
        Waited::TimedOut(r) => {
            ctx.say(&format!(
                "no approval yet for request {id} ({}); it stays open — run the same command again once it is approved",
                broker::progress(&r)
            ))
            .await;
            Obtained::Exit(WAITING_STATUS)
        }
        Waited::Failed(code) => Obtained::Exit(code),
    }
}

/// How a wait for a request ended.
enum Waited {
    /// It is no longer pending.
    Decided(AccessRequest),
    /// `broker.wait` passed and it is still pending.
    TimedOut(AccessRequest),
    /// It could not be read (said already): exit with this status.
    Failed(u32),
}

/// Why a request that is over did not give what was asked.
fn ended_line(r: &AccessRequest) -> String {
    let id = broker::id_of(r);
    let st = r.status.clone().unwrap_or_default();
    match broker::state_of(r) {
        State::Denied => {
            let d = st.denial.unwrap_or_default();
            format!("request {id} was denied by {}: {}", d.by, d.reason)
        }
        State::Revoked => {
            let v = st.revocation.unwrap_or_default();
            format!("request {id} was revoked by {}", v.by)
        }
        State::Expired => format!("request {id} expired before it was approved"),
        State::Consumed => {
            format!("request {id} was used by another command; run it again to ask anew")
        }
        State::Pending | State::Approved => format!(
            "request {id} is {}",
            broker::state_of(r).as_str().to_lowercase()
        ),
    }
}

/// Waits until a pending request is decided (the replica's watch, a periodic read, its own
/// expiry) or `broker.wait` passes, keeping the session alive and, on a terminal, a status line
/// up to date.
async fn wait(ctx: &Ctx<'_>, api: &Requests, base: &Event, mut r: AccessRequest) -> Waited {
    let gw = ctx.gw;
    let id = broker::id_of(&r).to_owned();
    let until = Instant::now() + gw.settings().broker.wait;
    let mut changes = gw.broker().subscribe();
    let done = |w: Waited| async move {
        if ctx.tty {
            ctx.status("").await;
        }
        w
    };
    loop {
        if broker::state_of(&r) != State::Pending {
            return done(Waited::Decided(r)).await;
        }
        if Instant::now() >= until {
            return done(Waited::TimedOut(r)).await;
        }
        let expires = r
            .status
            .as_ref()
            .and_then(|s| s.expires_at.as_deref())
            .and_then(|e| humantime::parse_rfc3339(e).ok())
            .map(|e| Instant::now() + e.duration_since(SystemTime::now()).unwrap_or_default());
        let next = match expires {
            Some(e) if e < until => e,
            _ => until,
        };
        let poll = Instant::now() + POLL;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let fresh = loop {
            tokio::select! {
                got = changes.recv() => match got {
                    Ok(o) if broker::id_of(&o) == id => break Some((*o).clone()),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(poll.into()).await;
                        break None;
                    }
                },
                _ = ticker.tick() => {
                    ctx.clock.touch();
                    if ctx.tty {
                        let left = until.saturating_duration_since(Instant::now()).as_secs();
                        ctx.status(&format!(
                            "waiting for approval of {id} ({}) — {}m{:02}s left",
                            broker::progress(&r),
                            left / 60,
                            left % 60
                        ))
                        .await;
                    }
                }
                () = tokio::time::sleep_until(poll.into()) => break None,
                () = tokio::time::sleep_until(next.into()) => break None,
            }
        };
        r = match fresh {
            Some(o) => o,
            None => match api.get(&id).await {
                Ok(Some(o)) => o,
                Ok(None) => {
                    ctx.say(&format!("request {id} is gone")).await;
                    return done(Waited::Failed(DENIED_STATUS)).await;
                }
                Err(e) => {
                    ctx.say(&e.to_string()).await;
                    return done(Waited::Failed(1)).await;
                }
            },
        };
        if let Ok(settled) = broker::settle(gw, api, base, r.clone()).await {
            r = settled;
        }
    }
}

/// An approved request: the policy issues the permit for exactly this command, then the
/// request is consumed (exactly one command wins it).
async fn run_approved(
    ctx: &Ctx<'_>,
    api: &Requests,
    base: &Event,
    resolved: &Resolved,
    parsed: &CommandLine,
    r: &AccessRequest,
    cid: &CommandId,
) -> Obtained {
    let id = broker::id_of(r).to_owned();
    let permit = match broker::permit(
        &ctx.gw.policy(),
        ctx.id,
        &resolved.policy_target(),
        parsed,
        r,
    ) {
        Ok(p) => p,
        Err(d) => {
            return exit(ctx, &format!("request {id}: {}", d.reasons().join("; "))).await;
        }
    };
    match broker::consume(ctx.gw, api, base, r, cid).await {
        Ok(true) => {
            ctx.say(&format!(
                "request {id} approved ({}); running it once",
                broker::progress(r)
            ))
            .await;
            Obtained::Run(Box::new(permit), id)
        }
        Ok(false) => {
            exit(
                ctx,
                &format!("request {id} was used by another command; run it again to ask anew"),
            )
            .await
        }
        Err(e) => fail(ctx, &e.to_string()).await,
    }
}

async fn exit(ctx: &Ctx<'_>, line: &str) -> Obtained {
    if ctx.tty {
        ctx.status("").await;
    }
    ctx.say(line).await;
    Obtained::Exit(DENIED_STATUS)
}

async fn fail(ctx: &Ctx<'_>, line: &str) -> Obtained {
    ctx.say(line).await;
    Obtained::Exit(1)
}

/// `request TARGET --reason TEXT [--incident ID] [--wait] -- COMMAND`.
pub(crate) async fn request(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    target: &TargetSpec,
    line: &str,
    why: Why<'_>,
    read: super::command::Channel,
) -> u32 {
    let (reason, incident) = match reason_and_incident(ctx, why).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let why = Why {
        explicit: true,
        reason: Some(&reason),
        incident: incident.as_deref(),
        wait: why.wait,
    };
    super::command::one_shot(ctx, cid, target, line, why, read).await
}

/// `request --rule NAME [--for D] --reason TEXT [--incident ID] [--wait]`: asks for a grant of
/// a grant-only rule, for at most the rule's `maxGrant`.
pub(crate) async fn grant(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    rule: &str,
    asked_for: Option<Duration>,
    why: Why<'_>,
) -> u32 {
    let (reason, incident) = match reason_and_incident(ctx, why).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let policy = ctx.gw.policy();
    let longest = match policy.grantable(&ctx.subject(), rule) {
        Ok(d) => d,
        Err(e) => {
            ctx.say(&format!("request: {e}")).await;
            return DENIED_STATUS;
        }
    };
    drop(policy);
    let lasts = asked_for.unwrap_or(longest).min(longest);
    if asked_for.is_some_and(|d| d > longest) {
        ctx.say(&format!(
            "request: policy rule {rule} grants at most {}; asking for that",
            humantime::format_duration(longest)
        ))
        .await;
    }
    let base = ctx.event(cid);
    let api = match broker::requests(ctx.gw, ctx.id, cid) {
        Ok(a) => a,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return 1;
        }
    };
    if let Some((_, id)) = ctx
        .gw
        .broker()
        .held(&ctx.gw.policy(), &broker::principal(ctx.id))
        .into_iter()
        .find(|(r, _)| r == rule)
    {
        ctx.say(&format!(
            "request: you already hold grant {id} for policy rule {rule}"
        ))
        .await;
        return 0;
    }
    let asked = broker::ask(
        ctx.gw,
        ctx.id,
        &api,
        &base,
        Ask {
            what: broker::What::Grant(lasts),
            rule,
            reason: Some(&reason),
            incident: incident.as_deref(),
        },
    )
    .await;
    let r = match asked {
        Ok(a) => a.request,
        Err(e) => {
            ctx.say(&format!("the grant request could not be made: {e}"))
                .await;
            return 1;
        }
    };
    let id = broker::id_of(&r).to_owned();
    let from = r
        .status
        .as_ref()
        .map(|s| s.approvers.join(", "))
        .unwrap_or_default();
    let r = if why.wait && broker::state_of(&r) == State::Pending {
        ctx.say(&format!(
            "approval needed: grant request {id} sent to {from} ({} approvals); waiting …",
            broker::progress(&r)
        ))
        .await;
        match wait(ctx, &api, &base, r).await {
            Waited::Decided(r) | Waited::TimedOut(r) => r,
            Waited::Failed(code) => return code,
        }
    } else {
        r
    };
    let state = broker::state_of(&r);
    let until = r
        .status
        .as_ref()
        .and_then(|s| s.expires_at.clone())
        .unwrap_or_default();
    ctx.print(&format!(
        "{id}\t{}\t{}\n",
        state.as_str(),
        broker::progress(&r)
    ))
    .await;
    match state {
        State::Approved => {
            ctx.say(&format!(
                "grant {id} for policy rule {rule} is in force until {until}"
            ))
            .await;
            0
        }
        State::Pending if why.wait => {
            ctx.say(&format!(
                "no approval yet for grant request {id}; it stays open until {until}"
            ))
            .await;
            WAITING_STATUS
        }
        State::Pending => {
            ctx.say(&format!(
                "grant request {id} sent to {from}; see 'requests' for its state"
            ))
            .await;
            0
        }
        _ => {
            ctx.say(&ended_line(&r)).await;
            DENIED_STATUS
        }
    }
}

/// A reason or comment as given, checked (one line and status 2 when refused).
async fn checked(
    ctx: &Ctx<'_>,
    word: &str,
    what: &str,
    text: Option<&str>,
) -> Result<Option<String>, u32> {
    match text.map(|t| broker::check_text(what, t)) {
        Some(Err(e)) => {
            ctx.say(&format!("{word}: {e}")).await;
            Err(2)
        }
        Some(Ok(t)) => Ok(Some(t)),
        None => Ok(None),
    }
}

/// A request's reason and incident, checked.
async fn reason_and_incident(ctx: &Ctx<'_>, why: Why<'_>) -> Result<(String, Option<String>), u32> {
    let reason = checked(ctx, "request", "the reason", why.reason).await?;
    let incident = checked(ctx, "request", "the incident", why.incident).await?;
    Ok((reason.unwrap_or_default(), incident))
}

/// Says what a change did (`done`; `more` gives what goes after the id and at the end), or why
/// it was refused.
async fn outcome(
    ctx: &Ctx<'_>,
    word: &str,
    done: &str,
    res: Result<AccessRequest, Refused>,
    more: impl Fn(&AccessRequest) -> (String, String),
) -> u32 {
    match res {
        Ok(r) => {
            let (progress, next) = more(&r);
            ctx.print(&format!(
                "{done} request {}{progress}: {} on {} by {}{next}\n",
                broker::id_of(&r),
                r.spec.summary,
                r.spec.target_ref,
                r.spec.requester.user,
            ))
            .await;
            0
        }
        Err(e) => refused(ctx, word, &e).await,
    }
}

/// `approve ID [--comment TEXT]`.
pub(crate) async fn approve(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    id: &str,
    comment: Option<&str>,
) -> u32 {
    let comment = match checked(ctx, "approve", "the comment", comment).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some((api, base)) = prepare(ctx, cid, id).await else {
        return 1;
    };
    let res = broker::approve(ctx.gw, ctx.id, &api, &base, id, comment).await;
    outcome(ctx, "approve", "approved", res, |r| {
        let until = r
            .status
            .as_ref()
            .and_then(|s| s.expires_at.clone())
            .unwrap_or_default();
        let user = &r.spec.requester.user;
        let next = match broker::state_of(r) {
            State::Approved if r.spec.duration.is_some() => {
                format!("{user} holds the grant until {until}")
            }
            State::Approved => format!("{user} may now run it once"),
            _ => "more approvals are needed".to_owned(),
        };
        (format!(" ({})", broker::progress(r)), format!("; {next}"))
    })
    .await
}

/// `deny ID --reason TEXT`.
pub(crate) async fn deny(ctx: &Ctx<'_>, cid: &CommandId, id: &str, reason: &str) -> u32 {
    let reason = match checked(ctx, "deny", "the reason", Some(reason)).await {
        Ok(r) => r.unwrap_or_default(),
        Err(code) => return code,
    };
    let Some((api, base)) = prepare(ctx, cid, id).await else {
        return 1;
    };
    let res = broker::deny(ctx.gw, ctx.id, &api, &base, id, reason).await;
    outcome(ctx, "deny", "denied", res, |_| Default::default()).await
}

/// `revoke ID`.
pub(crate) async fn revoke(ctx: &Ctx<'_>, cid: &CommandId, id: &str) -> u32 {
    let Some((api, base)) = prepare(ctx, cid, id).await else {
        return 1;
    };
    let res = broker::revoke(ctx.gw, ctx.id, &api, &base, id).await;
    outcome(ctx, "revoke", "revoked", res, |_| Default::default()).await
}

/// `requests [--all] [--json]`.
pub(crate) async fn list(ctx: &Ctx<'_>, cid: &CommandId, all: bool, json: bool) -> u32 {
    let base = ctx.event(cid);
    let api = match broker::requests(ctx.gw, ctx.id, cid) {
        Ok(a) => a,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return 1;
        }
    };
    let rs = match broker::visible(ctx.gw, ctx.id, &api, &base, all).await {
        Ok(rs) => rs,
        Err(e) => {
            ctx.say(&format!("requests: {e}")).await;
            return 1;
        }
    };
    if json {
        let items: Vec<serde_json::Value> = rs.iter().map(as_json).collect();
        let text = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into());
        ctx.print(&format!("{text}\n")).await;
        return 0;
    }
    let mut out = String::from("ID\tSTATE\tREQUESTER\tTARGET\tWHAT\tAPPROVALS\tEXPIRES\tREASON\n");
    for r in &rs {
        let st = r.status.clone().unwrap_or_default();
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            broker::id_of(r),
            broker::state_of(r).as_str(),
            r.spec.requester.user,
            r.spec.target_ref,
            r.spec.summary,
            broker::progress(r),
            st.expires_at.as_deref().unwrap_or("-"),
            r.spec.reason
        ));
    }
    ctx.print(&out).await;
    0
}

fn as_json(r: &AccessRequest) -> serde_json::Value {
    let st = r.status.clone().unwrap_or_default();
    serde_json::json!({
        "id": broker::id_of(r),
        "requester": r.spec.requester.user,
        "requesterIdentity": r.spec.requester.identity,
        "target": r.spec.target_ref,
        "command": r.spec.command.as_ref().map(|c| &c.stages),
        "rule": r.spec.rule,
        "summary": r.spec.summary,
        "reason": r.spec.reason,
        "incident": r.spec.incident,
        "state": broker::state_of(r).as_str(),
        "approvals": st.approvals,
        "approvalsRequired": st.approvals_required,
        "approvers": st.approvers,
        "expiresAt": st.expires_at,
        "consumedAt": st.consumed_at,
        "denial": st.denial,
        "revocation": st.revocation,
        "autoApproved": st.auto_approved,
        "created": r.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
    })
}

async fn prepare(ctx: &Ctx<'_>, cid: &CommandId, id: &str) -> Option<(Requests, Event)> {
    if !broker::is_id(id) {
        ctx.say(&format!(
            "no request {id:?}: request ids look like ar-k3x9m2qpzt (see 'requests')"
        ))
        .await;
        return None;
    }
    match broker::requests(ctx.gw, ctx.id, cid) {
        Ok(a) => Some((a, ctx.event(cid))),
        Err(e) => {
            ctx.say(&e.to_string()).await;
            None
        }
    }
}

async fn refused(ctx: &Ctx<'_>, word: &str, e: &Refused) -> u32 {
    ctx.say(&format!("{word}: {e}")).await;
    match e {
        Refused::Kube(_) => 1,
        _ => DENIED_STATUS,
    }
}
