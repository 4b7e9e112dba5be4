//! The Kubernetes audit log: one `audit.k8s.io/v1` Event per request, as JSON lines.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::object;
use crate::rbac::UserInfo;
use crate::resources::RequestInfo;
use crate::store::now_rfc3339;

/// An append-only audit log file.
pub struct AuditLog {
    file: Mutex<std::fs::File>,
}

/// One request's facts for its audit event.
pub struct AuditRecord<'a> {
    /// The audit ID (the incoming `Audit-ID` header, or a fresh one).
    pub audit_id: &'a str,
    /// The request URI (path and query).
    pub request_uri: &'a str,
    /// Request attributes.
    pub info: &'a RequestInfo,
    /// The authenticated user.
    pub user: Option<&'a UserInfo>,
    /// The impersonated user, if any.
    pub impersonated: Option<&'a UserInfo>,
    /// The source address.
    pub source_ip: &'a str,
    /// The user agent.
    pub user_agent: &'a str,
    /// HTTP status code of the response.
    pub code: u16,
    /// Authorization decision, if one was made.
    pub decision: Option<bool>,
    /// Failure message, if any.
    pub message: Option<&'a str>,
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.username, "groups": u.groups});
    if let Some(uid) = &u.uid {
        object::set(&mut v, &["uid"], uid.clone().into());
    }
    v
}

impl AuditLog {
    /// Opens (appends to) the file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog {
            file: Mutex::new(file),
        })
    }

    /// Writes one event.
    pub fn write(&self, r: &AuditRecord<'_>) {
        let now = now_rfc3339();
        let mut ev = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": r.audit_id, "stage": "ResponseComplete", "requestURI": r.request_uri,
            "verb": r.info.verb, "sourceIPs": [r.source_ip], "userAgent": r.user_agent,
            "responseStatus": {"metadata": {}, "code": r.code},
            "requestReceivedTimestamp": now, "stageTimestamp": now,
        });
        let user = r.user.map(user_json).unwrap_or_else(
            || json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}),
        );
        object::set(&mut ev, &["user"], user);
        if let Some(imp) = r.impersonated {
            object::set(&mut ev, &["impersonatedUser"], user_json(imp));
        }
        if r.info.is_resource {
            let mut obj = json!({"resource": r.info.resource, "apiVersion": r.info.version});
            if !r.info.group.is_empty() {
                object::set(&mut obj, &["apiGroup"], r.info.group.clone().into());
            }
            if let Some(ns) = &r.info.namespace {
                object::set(&mut obj, &["namespace"], ns.clone().into());
            }
            if let Some(n) = &r.info.name {
                object::set(&mut obj, &["name"], n.clone().into());
            }
            if let Some(s) = &r.info.subresource {
                object::set(&mut obj, &["subresource"], s.clone().into());
            }
            object::set(&mut ev, &["objectRef"], obj);
        }
        if let Some(m) = r.message {
            object::set(&mut ev, &["responseStatus", "message"], m.into());
            object::set(&mut ev, &["responseStatus", "status"], "Failure".into());
        }
        if let Some(d) = r.decision {
            let decision = if d { "allow" } else { "forbid" };
            object::set(
                &mut ev,
                &["annotations"],
                json!({"authorization.k8s.io/decision": decision}),
            );
        }
        let mut line = ev.to_string();
        line.push('\n');
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = f.write_all(line.as_bytes());
        let _ = f.flush();
    }
}
