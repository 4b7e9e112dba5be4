//! The object store: every stored object as JSON, one resourceVersion counter, and a bounded
//! event history that watches replay from.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::status::ApiError;

/// How many past events a watch can resume from.
const HISTORY: usize = 4096;

/// Identifies a stored object: (qualified resource, namespace or "", name).
pub type Key = (String, String, String);

/// One change to a stored object.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The qualified resource (`pods`, `accessrequests.jitsh.dev`).
    pub resource: String,
    /// Namespace or "".
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (before it, for `DELETED`).
    pub object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: std::collections::VecDeque<Event>,
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(HISTORY);
        Store {
            inner: Mutex::new(Inner::default()),
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Gets one object.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Lists objects of a resource, in one namespace or all (`None`), with the list's resourceVersion.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((r, ns, _), _)| r == resource && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    fn record(inner: &mut Inner, tx: &broadcast::Sender<Event>, event: Event) {
        if inner.history.len() >= HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        let _ = tx.send(event);
    }

    /// Creates an object; it must not exist. Sets resourceVersion, uid and creationTimestamp.
    pub fn create(
        &self,
        resource: &str,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut inner = self.lock();
        let key = (resource.to_owned(), namespace.to_owned(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(resource, &name));
        }
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), rv.to_string().into());
            meta.insert("uid".into(), uid(rv).into());
            meta.entry("creationTimestamp")
                .or_insert_with(|| now_rfc3339().into());
            meta.insert("generation".into(), 1.into());
            if !namespace.is_empty() {
                meta.insert("namespace".into(), namespace.into());
            }
        }
        inner.objects.insert(key, obj.clone());
        Self::record(
            &mut inner,
            &self.tx,
            Event {
                rv,
                resource: resource.to_owned(),
                namespace: namespace.to_owned(),
                kind: "ADDED",
                object: obj.clone(),
            },
        );
        Ok(obj)
    }

    /// Replaces an object through `update`, which computes the new object from the current one.
    /// A `resourceVersion` in the new object that is not the current one is a 409 Conflict.
    pub fn update(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        update: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let key = (resource.to_owned(), namespace.to_owned(), name.to_owned());
        let Some(current) = inner.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(resource, name));
        };
        let mut next = update(&current)?;
        if let Some(rv) = rv_of(&next)
            && Some(rv) != rv_of(&current)
        {
            return Err(ApiError::conflict(resource, name));
        }
        inner.rv += 1;
        let rv = inner.rv;
        let spec_changed = current.get("spec") != next.get("spec");
        if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), rv.to_string().into());
            for keep in ["uid", "creationTimestamp", "namespace", "name"] {
                if let Some(v) = current.pointer(&format!("/metadata/{keep}")) {
                    meta.insert(keep.into(), v.clone());
                }
            }
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            meta.insert(
                "generation".into(),
                (generation + u64::from(spec_changed)).into(),
            );
        }
        inner.objects.insert(key, next.clone());
        Self::record(
            &mut inner,
            &self.tx,
            Event {
                rv,
                resource: resource.to_owned(),
                namespace: namespace.to_owned(),
                kind: "MODIFIED",
                object: next.clone(),
            },
        );
        Ok(next)
    }

    /// Deletes an object, returning it.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let key = (resource.to_owned(), namespace.to_owned(), name.to_owned());
        let Some(obj) = inner.objects.remove(&key) else {
            return Err(ApiError::not_found(resource, name));
        };
        inner.rv += 1;
        let rv = inner.rv;
        Self::record(
            &mut inner,
            &self.tx,
            Event {
                rv,
                resource: resource.to_owned(),
                namespace: namespace.to_owned(),
                kind: "DELETED",
                object: obj.clone(),
            },
        );
        Ok(obj)
    }

    /// Starts a watch: the events after `since` (410 Gone when they are no longer kept),
    /// and a receiver for later ones.
    pub fn watch(&self, since: u64) -> Result<(Vec<Event>, broadcast::Receiver<Event>), ApiError> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        if let Some(first) = inner.history.front()
            && since + 1 < first.rv
            && since < inner.rv
        {
            return Err(ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {since} ({})", first.rv - 1),
            ));
        }
        let past = inner
            .history
            .iter()
            .filter(|e| e.rv > since)
            .cloned()
            .collect();
        Ok((past, rx))
    }
}

fn uid(rv: u64) -> String {
    let r: u64 = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (r >> 32) as u32,
        (r >> 16) as u16,
        (r & 0xfff) as u16,
        (rv & 0xfff) as u16,
        rv
    )
}

/// Now as RFC 3339 (seconds), as the API server writes timestamps.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&fmt).unwrap_or_default()
}

/// A parsed label selector (equality, inequality, set and existence requirements).
#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<Req>);

#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e,!f,g in (x,y),h notin (z)`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::bad_request(format!(
                "unable to parse requirement: invalid label selector: {s:?}"
            ))
        };
        let mut reqs = Vec::new();
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.checked_sub(1).ok_or_else(bad)?,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, ApiError> {
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            let req = if let Some((k, v)) = p.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Req::In(k.trim().into(), set(rest)?)
            } else if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else {
                Req::Exists(p.into())
            };
            let key = match &req {
                Req::Eq(k, _)
                | Req::Ne(k, _)
                | Req::In(k, _)
                | Req::NotIn(k, _)
                | Req::Exists(k)
                | Req::NotExists(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's labels match.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector (`metadata.name`, `metadata.namespace`, `status.phase`, `spec.nodeName`).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `metadata.name=x,status.phase!=Failed`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {s:?}"
                )));
            };
            if !matches!(
                k,
                "metadata.name" | "metadata.namespace" | "status.phase" | "spec.nodeName"
            ) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            out.push((k.to_owned(), eq, v.to_owned()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether an object's fields match.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let ptr = format!("/{}", k.replace('.', "/"));
            let got = obj.pointer(&ptr).and_then(Value::as_str).unwrap_or("");
            (got == v) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors() {
        let pod = json!({"metadata": {"name": "api-0", "labels": {"app": "api", "tier": "web"}}, "status": {"phase": "Running"}});
        for (sel, want) in [
            ("app=api", true),
            ("app!=api", false),
            ("app in (api,x)", true),
            ("tier notin (web)", false),
            ("app", true),
            ("!app", false),
            ("app=api,tier=web", true),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&pod),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in (x").is_err());
        assert!(
            FieldSelector::parse("metadata.name=api-0")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("status.phase!=Running")
                .unwrap()
                .matches(&pod)
        );
        assert!(FieldSelector::parse("spec.bogus=1").is_err());
    }

    #[test]
    fn optimistic_concurrency() {
        let s = Store::new();
        let obj = s
            .create("x", "ns", json!({"metadata": {"name": "a"}, "spec": {}}))
            .unwrap();
        let stale = obj.clone();
        s.update("x", "ns", "a", |_| Ok(obj.clone())).unwrap();
        let e = s.update("x", "ns", "a", |_| Ok(stale.clone())).unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(
            s.create("x", "ns", json!({"metadata": {"name": "a"}}))
                .unwrap_err()
                .code,
            409
        );
        let (past, _rx) = s.watch(0).unwrap();
        assert_eq!(
            past.iter().map(|e| e.kind).collect::<Vec<_>>(),
            ["ADDED", "MODIFIED"]
        );
    }
}
