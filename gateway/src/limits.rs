//! Connection and session limits: connections per address, authentication failures per address
//! in a window, sessions in total and per user. Every session kind takes a [`SessionSlot`]; the
//! shutdown drain waits for the slots to be given back.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;

use crate::config::LimitsConfig;

/// Why a connection or a session was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Too many recent authentication failures from the address.
    #[error("too many authentication failures from this address")]
    AuthFailures,
    /// Too many connections from the address.
    #[error("too many connections from this address")]
    ConnectionsPerIp,
    /// The gateway is draining.
    #[error("refused: the gateway is shutting down")]
    ShuttingDown,
    /// The gateway-wide session limit.
    #[error("refused: the gateway is at its limit of {0} sessions; try again shortly")]
    Sessions(usize),
    /// The per-user session limit.
    #[error("refused: you already have {0} sessions open (the limit per user)")]
    SessionsPerUser(usize),
}

impl Refusal {
    /// A fixed label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Refusal::AuthFailures => "auth-failures",
            Refusal::ConnectionsPerIp => "connections-per-ip",
            Refusal::ShuttingDown => "shutting-down",
            Refusal::Sessions(_) => "sessions",
            Refusal::SessionsPerUser(_) => "sessions-per-user",
        }
    }
}

#[derive(Debug, Default)]
struct Tracking {
    conns_by_ip: HashMap<IpAddr, usize>,
    failures_by_ip: HashMap<IpAddr, VecDeque<Instant>>,
    sessions: usize,
    sessions_by_user: HashMap<String, usize>,
}

/// The counters behind the limits.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: LimitsConfig,
    track: Mutex<Tracking>,
    drained: tokio::sync::Notify,
    active: Gauge,
}

impl Limiter {
    /// Counters for `limits`, reporting open sessions to `active`.
    pub(crate) fn new(limits: LimitsConfig, active: Gauge) -> Arc<Self> {
        Arc::new(Limiter {
            limits,
            track: Mutex::new(Tracking::default()),
            drained: tokio::sync::Notify::new(),
            active,
        })
    }

    fn tracking(&self) -> MutexGuard<'_, Tracking> {
        self.track.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let l = &self.limits;
        let mut t = self.tracking();
        if let Some(f) = t.failures_by_ip.get_mut(&ip) {
            let window = l.auth_failure_window;
            while f.front().is_some_and(|at| at.elapsed() > window) {
                f.pop_front();
            }
            if f.len() >= l.max_auth_failures_per_ip {
                return Err(Refusal::AuthFailures);
            }
        }
        let n = t.conns_by_ip.entry(ip).or_default();
        if *n >= l.max_connections_per_ip {
            return Err(Refusal::ConnectionsPerIp);
        }
        *n += 1;
        Ok(ConnGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// Counts an authentication failure from `ip`.
    pub(crate) fn auth_failed(&self, ip: IpAddr) {
        let mut t = self.tracking();
        let f = t.failures_by_ip.entry(ip).or_default();
        f.push_back(Instant::now());
        while f.len() > self.limits.max_auth_failures_per_ip {
            f.pop_front();
        }
    }

    /// Takes a session slot for `user`, or says why not.
    pub(crate) fn open_session(
        self: &Arc<Self>,
        user: &str,
        stopping: bool,
    ) -> Result<SessionSlot, Refusal> {
        if stopping {
            return Err(Refusal::ShuttingDown);
        }
        let l = &self.limits;
        let mut t = self.tracking();
        if t.sessions >= l.max_sessions {
            return Err(Refusal::Sessions(l.max_sessions));
        }
        let mine = t.sessions_by_user.entry(user.to_owned()).or_default();
        if *mine >= l.max_sessions_per_user {
            return Err(Refusal::SessionsPerUser(l.max_sessions_per_user));
        }
        *mine += 1;
        t.sessions += 1;
        self.active.inc();
        Ok(SessionSlot {
            limiter: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Sessions open now.
    pub(crate) fn sessions(&self) -> usize {
        self.tracking().sessions
    }

    /// Resolves when no session is open.
    pub(crate) async fn wait_drained(&self) {
        loop {
            let n = self.drained.notified();
            if self.tracking().sessions == 0 {
                return;
            }
            n.await;
        }
    }
}

/// An admitted connection; dropping it gives the address's count back.
pub(crate) struct ConnGuard {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut t = self.limiter.tracking();
        if let Some(n) = t.conns_by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.conns_by_ip.remove(&self.ip);
            }
        }
    }
}

/// A session's slot; dropping it gives the slot back and wakes the shutdown drain.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    limiter: Arc<Limiter>,
    user: String,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        {
            let mut t = self.limiter.tracking();
            t.sessions = t.sessions.saturating_sub(1);
            if let Some(n) = t.sessions_by_user.get_mut(&self.user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    t.sessions_by_user.remove(&self.user);
                }
            }
        }
        self.limiter.active.dec();
        self.limiter.drained.notify_waiters();
    }
}
