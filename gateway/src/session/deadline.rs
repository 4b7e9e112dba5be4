//! When a session must end: the certificate's expiry or revocation, the rule's maximum, a grant's
//! end, the idle timeout, shutdown — and a policy reload that no longer allows what the session
//! holds. Each live permit is *held* on the session's [`Clock`]; every change of policy or
//! revocations decides each held permit again.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use jitsh_broker_policy::{Principal, Recheck};
use jitsh_certs::VerifiedIdentity;

use crate::gateway::Gateway;

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The certificate's validity ended.
    CertificateExpired,
    /// The certificate's serial or key ID was revoked.
    Revoked,
    /// The rule's maximum session length.
    PolicyMaximum,
    /// A break-glass grant's duration.
    GrantExpired,
    /// No bytes either way for this long.
    Idle(Duration),
    /// The gateway is stopping.
    Shutdown,
    /// A policy reload no longer allows what the session holds (the policy's reason).
    NoLongerAllowed(String),
    /// The client closed the channel or dropped the connection.
    ClientGone,
    /// The session's recording cannot be written (evidence first: the session ends).
    RecordingFailed(String),
    /// The grant the session depended on ended (its id, and how: expired, revoked by X).
    GrantEnded(String, String),
}

impl EndReason {
    /// A fixed label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            EndReason::CertificateExpired => "certificate-expired",
            EndReason::Revoked => "revoked",
            EndReason::PolicyMaximum => "policy-maximum",
            EndReason::GrantExpired => "grant-expired",
            EndReason::Idle(_) => "idle",
            EndReason::Shutdown => "shutdown",
            EndReason::NoLongerAllowed(_) => "policy-changed",
            EndReason::ClientGone => "client-gone",
            EndReason::RecordingFailed(_) => "recording-failed",
            EndReason::GrantEnded(..) => "grant-ended",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::CertificateExpired => f.write_str("your certificate expired"),
            EndReason::Revoked => f.write_str("your certificate was revoked"),
            EndReason::PolicyMaximum => {
                f.write_str("the policy's maximum session length was reached")
            }
            EndReason::GrantExpired => f.write_str("the break-glass grant expired"),
            EndReason::Idle(d) => write!(f, "idle for {}", humantime::format_duration(*d)),
            EndReason::Shutdown => f.write_str("the gateway is shutting down"),
            EndReason::NoLongerAllowed(why) => {
                write!(f, "the policy no longer allows this ({why})")
            }
            EndReason::ClientGone => f.write_str("the client went away"),
            EndReason::RecordingFailed(why) => write!(f, "{why}"),
            EndReason::GrantEnded(id, how) => write!(f, "your grant {id} ended ({how})"),
        }
    }
}

/// Whether the revocation list now names a certificate (its serial or key id).
pub(crate) fn revoked(gw: &Gateway, serial: u64, key_id: &str) -> bool {
    let v = gw.verifier();
    let list = &v.config().revocations;
    list.is_serial_revoked(serial) || list.is_key_id_revoked(key_id)
}

/// A held permit, decided again under each new policy.
type Held = Arc<dyn Recheck>;

struct Fixed {
    end: Instant,
    why: EndReason,
    idle: Duration,
}

/// A session's clock: its fixed end, its idle timer and the permits it holds.
pub(crate) struct Clock {
    started: Instant,
    /// Milliseconds since `started` of the last byte in either direction.
    last_activity: AtomicU64,
    fixed: Mutex<Fixed>,
    changed: tokio::sync::Notify,
    serial: u64,
    key_id: String,
    /// Who the session's permits were issued to (whose grants count).
    who: Principal,
    /// The grants (rule, id) the session's permits could rest on when last decided.
    grants_seen: Mutex<Vec<(String, String)>>,
    holds: Mutex<Vec<(u64, Held)>>,
    next_hold: AtomicU64,
}

/// A permit held by a session; dropping it lets go.
pub(crate) struct Hold {
    clock: Arc<Clock>,
    id: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.clock
            .holds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(id, _)| *id != self.id);
    }
}

impl Clock {
    /// A clock that ends at the certificate's expiry, idle after the gateway's timeout.
    pub(crate) fn new(gw: &Gateway, id: &VerifiedIdentity) -> Arc<Self> {
        let now = Instant::now();
        let left = id
            .valid_before()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Arc::new(Clock {
            started: now,
            last_activity: AtomicU64::new(0),
            fixed: Mutex::new(Fixed {
                end: now + left,
                why: EndReason::CertificateExpired,
                idle: gw.settings().limits.idle_timeout,
            }),
            changed: tokio::sync::Notify::new(),
            serial: id.serial(),
            key_id: id.key_id().to_owned(),
            who: crate::broker::principal(id),
            grants_seen: Mutex::new(
                gw.broker()
                    .held(&gw.policy(), &crate::broker::principal(id)),
            ),
            holds: Mutex::new(Vec::new()),
            next_hold: AtomicU64::new(0),
        })
    }

    /// Marks activity (a byte in either direction).
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(ms, Ordering::Relaxed);
    }

    /// Applies a rule's limits (only ever shortens).
    pub(crate) fn tighten(&self, max_session: Duration, idle: Duration) {
        self.tighten_with(max_session, idle, EndReason::PolicyMaximum);
    }

    /// Shortens the session to `max_session` from its start (ending with `why`) and the idle
    /// timeout to `idle`.
    pub(crate) fn tighten_with(&self, max_session: Duration, idle: Duration, why: EndReason) {
        let mut f = self.fixed.lock().unwrap_or_else(PoisonError::into_inner);
        let end = self.started + max_session;
        if end < f.end {
            f.end = end;
            f.why = why;
        }
        f.idle = f.idle.min(idle);
        drop(f);
        self.changed.notify_waiters();
    }

    /// Holds a permit for as long as the returned guard lives: each policy change decides it
    /// again, and the session ends when it no longer holds.
    pub(crate) fn hold<P: Recheck + Clone + 'static>(self: &Arc<Self>, permit: &P) -> Hold {
        let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
        self.holds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, Arc::new(permit.clone())));
        Hold {
            clock: self.clone(),
            id,
        }
    }

    fn revoked(&self, gw: &Gateway) -> bool {
        revoked(gw, self.serial, &self.key_id)
    }

    /// Decides every held permit again, with the grants the person holds now. A permit that no
    /// longer holds ends the session: with the grant that ended, when one did.
    fn still_allowed(&self, gw: &Gateway) -> Result<(), EndReason> {
        let checks: Vec<Held> = self
            .holds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, c)| c.clone())
            .collect();
        let policy = gw.policy();
        let held = gw.broker().held(&policy, &self.who);
        let ended: Vec<String> = {
            let mut seen = self
                .grants_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let ended = seen
                .iter()
                .filter(|g| !held.contains(g))
                .map(|(_, id)| id.clone())
                .collect();
            seen.clone_from(&held);
            ended
        };
        let rules: Vec<String> = held.into_iter().map(|(rule, _)| rule).collect();
        checks
            .iter()
            .try_for_each(|c| c.recheck(&policy, &rules))
            .map_err(|d| match ended.first() {
                Some(id) => EndReason::GrantEnded(id.clone(), gw.broker().how_it_ended(id)),
                None => EndReason::NoLongerAllowed(d.reasons().join("; ")),
            })
    }

    /// Resolves with the reason when the session must end; one minute before a fixed end
    /// (certificate, grant, policy maximum) it calls `warn` with a one-line warning.
    pub(crate) async fn expired<W, F>(&self, gw: &Gateway, mut warn: W) -> EndReason
    where
        W: FnMut(String) -> F,
        F: Future<Output = ()>,
    {
        const WARN: Duration = Duration::from_secs(60);
        let mut warned = false;
        let mut changes = gw.changes();
        loop {
            let changed = self.changed.notified();
            if self.revoked(gw) {
                return EndReason::Revoked;
            }
            if let Err(why) = self.still_allowed(gw) {
                return why;
            }
            let (end, why, idle) = {
                let f = self.fixed.lock().unwrap_or_else(PoisonError::into_inner);
                (f.end, f.why.clone(), f.idle)
            };
            let last =
                self.started + Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
            let now = Instant::now();
            if now >= end {
                return why;
            }
            if now >= last + idle {
                return EndReason::Idle(idle);
            }
            let warn_at = end.checked_sub(WARN).unwrap_or(now);
            if !warned && now >= warn_at && self.started + WARN < end {
                warned = true;
                let left = humantime::format_duration(Duration::from_secs((end - now).as_secs()));
                warn(format!("warning: this session ends in {left} ({why})")).await;
            }
            let mut wake = end.min(last + idle);
            if !warned && warn_at > now {
                wake = wake.min(warn_at);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = changed => {}
                r = changes.changed() => {
                    if r.is_err() {
                        // The gateway is gone; nothing will change again.
                        return EndReason::Shutdown;
                    }
                }
                () = gw.killed() => return EndReason::Shutdown,
            }
        }
    }
}
