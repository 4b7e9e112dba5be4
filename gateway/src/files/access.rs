//! The tree's operations as the user: every pod lookup, listing and read is an impersonated API
//! call, every container path is decided by the policy, and every open is audited before the
//! first byte and after the last.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, BytesMut};

use jitsh_broker_policy::permit::Kind as PermitKind;
use jitsh_broker_policy::{
    Action, Decision, Effect, FilePermit, LogsPermit, Mode, Permit, Request, Subject,
};

use super::FileError;
use super::reader::{self, Attr, Kind, Proc, Reader};
use super::tree::{self, Loc, LogKind, Node};
use crate::audit::Event;
use crate::ids::CommandId;
use crate::kube::{Impersonated, Resolved};
use crate::session::{Ctx, Hold};

/// How long a pod lookup is reused within one SFTP or scp session.
const POD_CACHE: Duration = Duration::from_secs(10);
/// A forward seek up to this far is served by reading on; farther ones restart the reader.
const SKIP_MAX: u64 = 1024 * 1024;
/// Most entries of one directory listing.
const MAX_ENTRIES: usize = 50_000;

/// One SFTP or scp session's view of the tree.
pub(crate) struct Files<'c> {
    ctx: &'c Ctx<'c>,
    via: &'static str,
    cid: CommandId,
    client: Impersonated,
    pods: HashMap<Loc, (Instant, Resolved)>,
    now: u32,
    /// Files opened.
    pub opened: u64,
}

/// Where an open file's bytes come from.
enum Source {
    Exec(Proc),
    Log(Pin<Box<dyn futures::AsyncBufRead + Send>>),
}

/// How to restart an open file's reader at an offset.
enum Origin {
    Fs {
        client: Impersonated,
        permit: FilePermit,
    },
    Log {
        client: Impersonated,
        permit: LogsPermit,
        previous: bool,
        limit: Option<u64>,
    },
}

/// An open file: a streamed reader in the pod (or a pods/log stream), audited on close.
pub(crate) struct OpenFile {
    /// Its attributes at open (the size from `stat`, or the counted log size).
    pub attr: Attr,
    /// The last component of its virtual path (what scp names the copy).
    pub name: String,
    source: Option<Source>,
    origin: Origin,
    pos: u64,
    eof: bool,
    bytes: u64,
    seeks: u64,
    error: Option<String>,
    event: Event,
    started: Instant,
    _hold: Hold,
}

impl<'c> Files<'c> {
    /// A session view: one impersonating client whose `Audit-ID` is the session's command id.
    pub(crate) fn new(
        ctx: &'c Ctx<'c>,
        via: &'static str,
        cid: &CommandId,
    ) -> Result<Self, FileError> {
        let client = ctx.impersonate(cid)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        Ok(Files {
            ctx,
            via,
            cid: cid.clone(),
            client,
            pods: HashMap::new(),
            now,
            opened: 0,
        })
    }

    /// The attributes of `node` (`follow`: a final symbolic link is followed, as `stat` does).
    pub(crate) async fn stat(&mut self, node: &Node, follow: bool) -> Result<Attr, FileError> {
        let dir = Attr::dir(self.now);
        match node {
            Node::Root => Ok(dir),
            Node::Namespace(ns) => {
                if self.namespaces().await.contains(ns) {
                    Ok(dir)
                } else {
                    Err(FileError::NotFound(format!("no such namespace: /{ns}")))
                }
            }
            Node::Pod(ns, pod) => {
                self.containers(ns, pod).await?;
                Ok(dir)
            }
            Node::Container(loc) => {
                self.pod(loc).await?;
                Ok(dir)
            }
            Node::LogsDir(loc) => {
                let target = self.pod(loc).await?;
                self.allow_logs(&target)
                    .map_err(|d| self.denied(node, "stat", &d))?;
                Ok(dir)
            }
            Node::Log(loc, _) => {
                let target = self.pod(loc).await?;
                self.allow_logs(&target)
                    .map_err(|d| self.denied(node, "stat", &d))?;
                Ok(Attr::file(self.now, None))
            }
            Node::Fs(loc, path) => {
                let target = self.pod(loc).await?;
                match self.allow_file(&target, path) {
                    Ok(permit) => {
                        let out = reader::spawn(&self.client, &permit, Reader::Stat { follow })
                            .await?
                            .collect(4096)
                            .await?;
                        reader::parse_stat(&out)
                    }
                    Err(d) => {
                        if tree::glob_children(&self.globs(&target), path).is_some() {
                            Ok(dir)
                        } else {
                            Err(self.denied(node, "stat", &d))
                        }
                    }
                }
            }
        }
    }

    /// The entries of directory `node`.
    pub(crate) async fn list(&mut self, node: &Node) -> Result<Vec<(String, Attr)>, FileError> {
        let dir = Attr::dir(self.now);
        let dirs = |names: Vec<String>| names.into_iter().map(|n| (n, dir)).collect::<Vec<_>>();
        match node {
            Node::Root => Ok(dirs(self.namespaces().await.into_iter().collect())),
            Node::Namespace(ns) => Ok(dirs(crate::kube::pods::names(&self.client, ns).await?)),
            Node::Pod(ns, pod) => Ok(dirs(self.containers(ns, pod).await?)),
            Node::Container(loc) => {
                let target = self.pod(loc).await?;
                let mut names = Vec::new();
                if self.allow_logs(&target).is_ok() {
                    names.push("logs".to_owned());
                }
                if self.decide(&target, Mode::Files).effect() == Effect::Allow {
                    names.push("fs".to_owned());
                }
                Ok(dirs(names))
            }
            Node::LogsDir(loc) => {
                let target = self.pod(loc).await?;
                self.allow_logs(&target)
                    .map_err(|d| self.denied(node, "list", &d))?;
                // previous.log only when the container has restarted (its lastState).
                let restarted = crate::kube::pods::restarted(
                    &self.client,
                    &loc.namespace,
                    &loc.pod,
                    &loc.container,
                )
                .await?;
                let mut kinds = vec![LogKind::Current];
                if restarted {
                    kinds.push(LogKind::Previous);
                }
                Ok(kinds
                    .into_iter()
                    .map(|k| (k.file_name().to_owned(), Attr::file(self.now, None)))
                    .collect())
            }
            Node::Log(..) => Err(FileError::Failure(format!("{node}: not a directory"))),
            Node::Fs(loc, path) => self.list_fs(node, loc, path).await,
        }
    }

    async fn list_fs(
        &mut self,
        node: &Node,
        loc: &Loc,
        path: &str,
    ) -> Result<Vec<(String, Attr)>, FileError> {
        let target = self.pod(loc).await?;
        let globs = self.globs(&target);
        match self.allow_file(&target, path) {
            Ok(permit) => {
                let permit = self.canonical(node, &target, permit, "list").await?;
                let ev = Event {
                    rule: Some(permit.rule().to_owned()),
                    file: Some(permit.path().to_owned()),
                    ..self.event(&CommandId::new(), node, &target)
                };
                self.audit("file.list", &ev)?;
                let out = reader::spawn(&self.client, &permit, Reader::List)
                    .await?
                    .collect(reader::MAX_LISTING)
                    .await?;
                let mut entries = reader::parse_listing(&out)?;
                // Only what the policy would let the user reach is shown.
                entries.retain(|(name, _)| {
                    let p = tree::join(path, name);
                    self.allow_file(&target, &p).is_ok()
                        || tree::glob_children(&globs, &p).is_some()
                });
                entries.truncate(MAX_ENTRIES);
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(entries)
            }
            Err(d) => {
                let Some(children) = tree::glob_children(&globs, path) else {
                    return Err(self.denied(node, "list", &d));
                };
                // A directory on the way to what the policy allows: its names come from the
                // policy; an allowed one is stat'ed for real (and left out if it is missing).
                let mut out = Vec::new();
                for name in children {
                    let p = tree::join(path, &name);
                    match self.allow_file(&target, &p) {
                        Ok(permit) => {
                            let stat = async {
                                let out = reader::spawn(
                                    &self.client,
                                    &permit,
                                    Reader::Stat { follow: false },
                                )
                                .await?
                                .collect(4096)
                                .await?;
                                reader::parse_stat(&out)
                            };
                            match stat.await {
                                Ok(a) => out.push((name, a)),
                                Err(FileError::NotFound(_)) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        Err(_) => out.push((name, Attr::dir(self.now))),
                    }
                }
                Ok(out)
            }
        }
    }

    /// Opens a file for reading from its start. `need_size`: a log's bytes are counted first and
    /// exactly that many are served (a legacy scp client announces the size before the data).
    pub(crate) async fn open(
        &mut self,
        node: &Node,
        need_size: bool,
    ) -> Result<OpenFile, FileError> {
        match node {
            Node::Fs(loc, path) => self.open_fs(node, loc, path).await,
            Node::Log(loc, kind) => self.open_log(node, loc, *kind, need_size).await,
            Node::Root
            | Node::Namespace(_)
            | Node::Pod(..)
            | Node::Container(_)
            | Node::LogsDir(_) => {
                // Looked up so a missing pod reads as missing, not as a directory.
                self.stat(node, true).await?;
                Err(FileError::Failure(format!("{node}: is a directory")))
            }
        }
    }

    async fn open_fs(&mut self, node: &Node, loc: &Loc, path: &str) -> Result<OpenFile, FileError> {
        let target = self.pod(loc).await?;
        let permit = match self.allow_file(&target, path) {
            Ok(p) => p,
            Err(d) => return Err(self.denied(node, "read", &d)),
        };
        let permit = self.canonical(node, &target, permit, "read").await?;
        let out = reader::spawn(&self.client, &permit, Reader::Stat { follow: true })
            .await?
            .collect(4096)
            .await?;
        let attr = reader::parse_stat(&out)?;
        match attr.kind {
            Kind::File => {}
            Kind::Dir => return Err(FileError::Failure(format!("{node}: is a directory"))),
            _ => return Err(FileError::Failure(format!("{node}: not a regular file"))),
        }
        let fcid = CommandId::new();
        let mut ev = Event {
            rule: Some(permit.rule().to_owned()),
            file: Some(permit.path().to_owned()),
            size: attr.size,
            ..self.event(&fcid, node, &target)
        };
        self.audit("file.open", &ev)?;
        self.tighten(&permit);
        let hold = self.ctx.clock.hold(&permit);
        // The read runs with the open's own command id as its Kubernetes Audit-ID.
        let client = self.ctx.impersonate(&fcid)?;
        let proc = reader::spawn(&client, &permit, Reader::Cat).await;
        let proc = match proc {
            Ok(p) => p,
            Err(e) => {
                ev.error = Some(e.to_string());
                ev.bytes = Some(0);
                self.ctx.gw.record("file.read", &ev);
                return Err(e);
            }
        };
        self.opened += 1;
        Ok(OpenFile {
            attr,
            name: last_component(node),
            source: Some(Source::Exec(proc)),
            origin: Origin::Fs { client, permit },
            pos: 0,
            eof: false,
            bytes: 0,
            seeks: 0,
            error: None,
            event: ev,
            started: Instant::now(),
            _hold: hold,
        })
    }

    async fn open_log(
        &mut self,
        node: &Node,
        loc: &Loc,
        kind: LogKind,
        need_size: bool,
    ) -> Result<OpenFile, FileError> {
        let target = self.pod(loc).await?;
        let permit = self
            .allow_logs(&target)
            .map_err(|d| self.denied(node, "read", &d))?;
        let previous = kind == LogKind::Previous;
        let fcid = CommandId::new();
        let ev = Event {
            rule: Some(permit.rule().to_owned()),
            log: Some(if previous { "previous" } else { "current" }.to_owned()),
            ..self.event(&fcid, node, &target)
        };
        self.audit("file.open", &ev)?;
        self.tighten(&permit);
        let hold = self.ctx.clock.hold(&permit);
        let client = self.ctx.impersonate(&fcid)?;
        // A log's size is only known by reading it: a client that must announce it first
        // (legacy scp) gets one counting pass, then exactly that many bytes.
        let limit = if need_size {
            Some(
                crate::kube::logs::size(&client, &permit, previous)
                    .await
                    .map_err(|e| log_error(e, previous))?,
            )
        } else {
            None
        };
        let stream = crate::kube::logs::open(&client, &permit, previous, limit)
            .await
            .map_err(|e| log_error(e, previous))?;
        self.opened += 1;
        Ok(OpenFile {
            attr: Attr::file(self.now, limit),
            name: last_component(node),
            source: Some(Source::Log(stream)),
            origin: Origin::Log {
                client,
                permit,
                previous,
                limit,
            },
            pos: 0,
            eof: false,
            bytes: 0,
            seeks: 0,
            error: None,
            event: ev,
            started: Instant::now(),
            _hold: hold,
        })
    }

    /// Records and returns the refusal of a write-like operation (the tree is read-only).
    pub(crate) fn read_only(&self, path: &str, op: &str) -> FileError {
        let ev = Event {
            via: Some(self.via.to_owned()),
            path: Some(path.to_owned()),
            op: Some(op.to_owned()),
            reasons: Some(vec!["the gateway's file tree is read-only".to_owned()]),
            ..self.ctx.event(&CommandId::new())
        };
        self.ctx.gw.record("file.denied", &ev);
        FileError::Denied(format!(
            "denied: {op} {path}: the gateway's file tree is read-only"
        ))
    }

    /// The namespaces the policy grants files or logs in (all the user may list when a rule
    /// names `*`).
    async fn namespaces(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut any = false;
        for g in self.ctx.gw.policy().grants(&self.subject()) {
            if !g
                .modes
                .iter()
                .any(|m| matches!(m, Mode::Files | Mode::Logs))
            {
                continue;
            }
            for ns in g.namespaces {
                if ns == "*" {
                    any = true;
                } else {
                    out.insert(ns);
                }
            }
        }
        if any {
            out.extend(crate::kube::pods::namespaces(&self.client).await);
        }
        out
    }

    /// The `files` globs of the rules granting files in the target's namespace (used only to
    /// show the directories leading to them; access is always decided path by path).
    fn globs(&self, target: &Resolved) -> Vec<String> {
        self.ctx
            .gw
            .policy()
            .grants(&self.subject())
            .into_iter()
            .filter(|g| g.modes.contains(&Mode::Files))
            .filter(|g| {
                g.namespaces
                    .iter()
                    .any(|n| n == "*" || *n == target.namespace)
            })
            .flat_map(|g| g.files)
            .collect()
    }

    /// The pod (and container) as the user, cached briefly.
    async fn pod(&mut self, loc: &Loc) -> Result<Resolved, FileError> {
        if let Some((at, r)) = self.pods.get(loc)
            && at.elapsed() < POD_CACHE
        {
            return Ok(r.clone());
        }
        let p = crate::kube::pods::get(&self.client, &loc.namespace, &loc.pod).await?;
        if !p.containers.contains(&loc.container) {
            return Err(FileError::NotFound(format!(
                "pod {}/{} has no container '{}'",
                loc.namespace, loc.pod, loc.container
            )));
        }
        let r = Resolved {
            namespace: loc.namespace.clone(),
            pod: loc.pod.clone(),
            container: loc.container.clone(),
            labels: p.labels,
        };
        self.pods.insert(loc.clone(), (Instant::now(), r.clone()));
        Ok(r)
    }

    async fn containers(&self, ns: &str, pod: &str) -> Result<Vec<String>, FileError> {
        Ok(crate::kube::pods::get(&self.client, ns, pod)
            .await?
            .containers)
    }

    /// Resolves symbolic links in the container (`realpath -e`) and asks the policy about the
    /// real path too: a link under an allowed directory that points elsewhere is refused.
    async fn canonical(
        &self,
        node: &Node,
        target: &Resolved,
        permit: FilePermit,
        op: &str,
    ) -> Result<FilePermit, FileError> {
        let asked = permit.path().to_owned();
        let out = reader::spawn(&self.client, &permit, Reader::Realpath)
            .await?
            .collect(8192)
            .await?;
        let real = reader::parse_realpath(&out)?;
        if real == asked {
            return Ok(permit);
        }
        match self.allow_file(target, &real) {
            Ok(p) => Ok(p),
            Err(d) => {
                let why = format!(
                    "'{asked}' resolves to '{real}', which is not an allowed file on {}/{}",
                    target.namespace, target.pod
                );
                Err(self.denied_because(node, op, d.rule(), vec![why]))
            }
        }
    }

    fn subject(&self) -> Subject {
        self.ctx.subject()
    }

    /// A mode's decision on the target as a whole (whether its directory is shown).
    fn decide(&self, target: &Resolved, mode: Mode) -> Decision {
        self.ctx.gw.policy().decide(&Request {
            subject: &self.subject(),
            target: &target.policy_target(),
            mode,
            action: Action::Session,
        })
    }

    fn allow_file(&self, target: &Resolved, path: &str) -> Result<FilePermit, Decision> {
        self.ctx
            .gw
            .policy()
            .permit_file(&self.subject(), &target.policy_target(), path)
    }

    fn allow_logs(&self, target: &Resolved) -> Result<LogsPermit, Decision> {
        self.ctx
            .gw
            .policy()
            .permit_logs(&self.subject(), &target.policy_target())
    }

    /// Records a denial (`file.denied`) and returns it as one line for the user.
    fn denied(&self, node: &Node, op: &str, d: &Decision) -> FileError {
        self.denied_because(node, op, d.rule(), d.reasons().to_vec())
    }

    fn denied_because(
        &self,
        node: &Node,
        op: &str,
        rule: Option<&str>,
        reasons: Vec<String>,
    ) -> FileError {
        let mut ev = Event {
            via: Some(self.via.to_owned()),
            path: Some(node.to_string()),
            op: Some(op.to_owned()),
            rule: rule.map(str::to_owned),
            reasons: Some(reasons.clone()),
            ..self.ctx.event(&CommandId::new())
        };
        if let Node::Fs(loc, _) | Node::Log(loc, _) = node {
            ev.namespace = Some(loc.namespace.clone());
            ev.pod = Some(loc.pod.clone());
            ev.container = Some(loc.container.clone());
        }
        if let Node::Fs(_, p) = node {
            ev.file = Some(p.clone());
        }
        self.ctx.gw.record("file.denied", &ev);
        let rule = rule.unwrap_or("no rule");
        FileError::Denied(format!("denied: {} (policy: {rule})", reasons.join("; ")))
    }

    fn event(&self, cid: &CommandId, node: &Node, target: &Resolved) -> Event {
        Event {
            session_command: Some(self.cid.clone()),
            via: Some(self.via.to_owned()),
            path: Some(node.to_string()),
            ..self.ctx.target_event(cid, target)
        }
    }

    /// Writes an event that authorises what follows; a failure refuses it (fail closed).
    fn audit(&self, kind: &str, ev: &Event) -> Result<(), FileError> {
        self.ctx
            .gw
            .audit_first(kind, ev)
            .map_err(|e| FileError::Failure(e.to_string()))
    }

    fn tighten<K: PermitKind>(&self, permit: &Permit<K>) {
        let l = permit.limits();
        self.ctx.clock.tighten(l.max_session, l.idle_timeout);
    }
}

fn last_component(node: &Node) -> String {
    let s = node.to_string();
    s.rsplit('/').next().unwrap_or_default().to_owned()
}

/// A log that cannot be read: a previous log that does not exist is a 400 from the API server
/// (the request is otherwise well-formed), reported as missing.
fn log_error(e: crate::kube::KubeError, previous: bool) -> FileError {
    match e.status() {
        Some(400) if previous => FileError::NotFound(e.to_string()),
        _ => e.into(),
    }
}

impl OpenFile {
    /// Reads up to `max` bytes at `offset` (fewer only at the end; none past it) into a buffer
    /// that starts with `headroom` zero bytes for the caller's framing. A forward gap is read
    /// over; anything else restarts the reader at `offset` (`tail -c +N` for files).
    pub(crate) async fn read_at(
        &mut self,
        offset: u64,
        max: usize,
        headroom: usize,
    ) -> Result<BytesMut, FileError> {
        let mut out = BytesMut::with_capacity(headroom + max);
        out.resize(headroom, 0);
        if offset != self.pos {
            if self.eof && offset >= self.pos {
                return Ok(out);
            }
            if offset > self.pos && offset - self.pos <= SKIP_MAX {
                let gap = usize::try_from(offset - self.pos).unwrap_or(0);
                let mut skip = BytesMut::with_capacity(gap);
                let n = self.fill(&mut skip, gap).await?;
                self.pos += n as u64;
                if self.pos < offset {
                    return Ok(out);
                }
            } else {
                self.restart(offset).await?;
            }
        }
        let n = self.fill(&mut out, max).await?;
        self.pos += n as u64;
        self.bytes += n as u64;
        Ok(out)
    }

    /// Reads the next (up to) `max` bytes; empty at the end.
    pub(crate) async fn read(&mut self, max: usize) -> Result<BytesMut, FileError> {
        let pos = self.pos;
        self.read_at(pos, max, 0).await
    }

    /// Appends up to `want` bytes to `out` (fewer only at the end); the bytes appended. File
    /// data is read straight into `out`: it is sent from there without another copy.
    async fn fill(&mut self, out: &mut BytesMut, want: usize) -> Result<usize, FileError> {
        let start = out.len();
        while out.len() - start < want && !self.eof {
            let left = want - (out.len() - start);
            let m = match &mut self.source {
                Some(Source::Exec(p)) => p.read_buf(&mut (&mut *out).limit(left)).await,
                Some(Source::Log(s)) => {
                    let at = out.len();
                    out.resize(at + left.min(64 * 1024), 0);
                    let tail = out.get_mut(at..).unwrap_or_default();
                    let r = futures::AsyncReadExt::read(s, tail).await;
                    out.truncate(at + r.as_ref().map_or(0, |n| *n));
                    r
                }
                None => Ok(0),
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => return Err(self.fail(format!("kubernetes: reading from the pod: {e}"))),
            };
            if m == 0 {
                self.eof = true;
                // A reader that failed part-way must not look like a shorter file.
                if let Some(Source::Exec(p)) = self.source.take()
                    && let Err(e) = p.finish().await
                {
                    return Err(self.fail(e.to_string()));
                }
                break;
            }
        }
        Ok(out.len() - start)
    }

    fn fail(&mut self, msg: String) -> FileError {
        self.error = Some(msg.clone());
        self.source = None;
        self.eof = true;
        FileError::Failure(msg)
    }

    async fn restart(&mut self, offset: u64) -> Result<(), FileError> {
        self.source = None;
        self.seeks += 1;
        self.eof = false;
        let (source, pos) = match &self.origin {
            Origin::Fs { client, permit } => {
                let p = reader::spawn(client, permit, Reader::From(offset)).await?;
                (Source::Exec(p), offset)
            }
            // pods/log has no offset: read from the start up to it.
            Origin::Log {
                client,
                permit,
                previous,
                limit,
            } => (
                Source::Log(
                    crate::kube::logs::open(client, permit, *previous, *limit)
                        .await
                        .map_err(|e| log_error(e, *previous))?,
                ),
                0,
            ),
        };
        self.source = Some(source);
        self.pos = pos;
        let mut skip = BytesMut::with_capacity(64 * 1024);
        while self.pos < offset {
            skip.clear();
            let want = usize::try_from((offset - self.pos).min(64 * 1024)).unwrap_or(0);
            let n = self.fill(&mut skip, want).await?;
            if n == 0 {
                break;
            }
            self.pos += n as u64;
        }
        Ok(())
    }

    /// Bytes served so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records `file.read` with the bytes served (one event per opened file).
    pub(crate) fn close(mut self, ctx: &Ctx<'_>, error: Option<String>) {
        let mut ev = std::mem::take(&mut self.event);
        ev.bytes = Some(self.bytes);
        let whole = self.eof || self.attr.size == Some(self.bytes);
        ev.complete = Some(whole && self.error.is_none() && error.is_none());
        if self.seeks > 0 {
            ev.restarts = Some(self.seeks);
        }
        ev.error = error.or(self.error.take());
        ev.duration_ms =
            Some(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        ctx.gw.record("file.read", &ev);
    }
}
