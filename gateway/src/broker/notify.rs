//! Webhook notifications of request changes: JSON with a human `text` field (so Slack and
//! Mattermost incoming webhooks take it as is) and the request's fields. Sent in the
//! background; each delivery is audited as `approval.notify`.

use std::sync::Arc;

use crate::audit::Event;
use crate::gateway::Gateway;
use crate::kube::requests::AccessRequest;

/// Where notifications go.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    urls: Arc<Vec<String>>,
}

#[derive(serde::Serialize)]
struct Body<'a> {
    text: String,
    event: &'a str,
    request: &'a str,
    state: &'a str,
    requester: &'a str,
    target: &'a str,
    what: &'a str,
    reason: &'a str,
    progress: String,
}

impl Notifier {
    pub(crate) fn new(urls: Vec<String>) -> Notifier {
        Notifier {
            urls: Arc::new(urls),
        }
    }

    /// Tells every webhook of `kind` on `r` (in the background).
    pub(crate) fn send(&self, gw: &Arc<Gateway>, kind: &str, r: &AccessRequest) {
        if self.urls.is_empty() {
            return;
        }
        let (urls, gw, kind, r) = (self.urls.clone(), gw.clone(), kind.to_owned(), r.clone());
        tokio::spawn(async move {
            let id = super::id_of(&r);
            let state = super::state_of(&r).as_str();
            let body = Body {
                text: text(&kind, &r),
                event: &kind,
                request: id,
                state,
                requester: &r.spec.requester.user,
                target: &r.spec.target_ref,
                what: &r.spec.summary,
                reason: &r.spec.reason,
                progress: super::progress(&r),
            };
            for url in urls.iter() {
                let (ok, detail) = crate::webhook::post(url, &body).await;
                let ev = Event {
                    request: Some(id.to_owned()),
                    url: Some(url.clone()),
                    delivered: Some(ok),
                    status: Some(detail),
                    reason: Some(kind.clone()),
                    ..Event::default()
                };
                gw.record("approval.notify", &ev);
            }
        });
    }
}

/// One line a person reads in a chat channel.
fn text(kind: &str, r: &AccessRequest) -> String {
    let id = super::id_of(r);
    let who = &r.spec.requester.user;
    let what = format!("`{}` on {}", r.spec.summary, r.spec.target_ref);
    let st = r.status.clone().unwrap_or_default();
    match kind {
        "approval.requested" => format!(
            "{who} asks to run {what} (request {id}, reason: {}); {} approval(s) needed from {}: ssh GATEWAY approve {id}",
            r.spec.reason,
            st.approvals_required.unwrap_or(1),
            st.approvers.join(", ")
        ),
        "approval.approved" => {
            let by = st
                .approvals
                .last()
                .map_or("policy (autoApprove)", |a| a.by.as_str());
            format!(
                "{by} approved request {id} by {who} to run {what} ({})",
                super::progress(r)
            )
        }
        "approval.denied" => {
            let d = st.denial.unwrap_or_default();
            format!(
                "{} denied request {id} by {who} to run {what}: {}",
                d.by, d.reason
            )
        }
        "approval.revoked" => {
            let v = st.revocation.unwrap_or_default();
            format!("{} revoked request {id} by {who} to run {what}", v.by)
        }
        "approval.expired" => format!("request {id} by {who} to run {what} expired"),
        "approval.consumed" => format!("{who} ran {what} under request {id}"),
        other => format!("request {id}: {other}"),
    }
}
