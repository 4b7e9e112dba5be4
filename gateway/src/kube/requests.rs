//! AccessRequests (`jitsh.dev/v1alpha1`): the broker's state, kept in the Kubernetes API and
//! written by the gateway **as its own ServiceAccount** in its namespace — requesters and
//! approvers act through the gateway, identified by their certificates. Every write here is
//! made on behalf of a [`VerifiedIdentity`] and carries its command's `Audit-ID`, so both audit
//! logs correlate. Status changes use the object's resourceVersion: a 409 re-reads, re-checks
//! and retries, so two approvers at once count as two and a deny racing an approve leaves one
//! consistent state.

use futures::StreamExt;
use http::{HeaderName, HeaderValue};
use jitsh_certs::VerifiedIdentity;
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use super::{KubeAccess, KubeError};

/// An AccessRequest's spec: who asked, where, and for what.
#[derive(kube::CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[kube(
    group = "jitsh.dev",
    version = "v1alpha1",
    kind = "AccessRequest",
    namespaced,
    status = "RequestStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct RequestSpec {
    /// Who asked (from the verified certificate).
    pub requester: Person,
    /// Where.
    pub target: RequestTarget,
    /// `namespace/pod/container`, for display.
    pub target_ref: String,
    /// The mode (`exec`).
    pub mode: String,
    /// The policy rule the request is for.
    pub rule: String,
    /// A per-command approval: the exact argv of each stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<RequestCommand>,
    /// A grant: how long it lasts once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The command line or the grant, for display.
    pub summary: String,
    /// Why.
    pub reason: String,
    /// The incident, if one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

/// A person as their certificate names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// SSH user.
    pub user: String,
    /// Identity (the certificate's key id).
    pub identity: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Where a request is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTarget {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    #[serde(default)]
    pub container: String,
}

/// The argv of each stage of one command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCommand {
    /// Stages.
    pub stages: Vec<Vec<String>>,
}

/// An AccessRequest's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// `Pending`, `Approved`, `Denied`, `Expired`, `Consumed`, `Revoked`.
    #[serde(default)]
    pub state: String,
    /// Approvals needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_required: Option<u32>,
    /// The groups whose members may approve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// `have/need`, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Who approved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
    /// The autoApprove condition that approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approved: Option<AutoApproved>,
    /// Who denied it and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<Denial>,
    /// Who revoked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// Pending: when it lapses unapproved; Approved: when the unused approval lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the approved command ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_at: Option<String>,
    /// The audit id of the command that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_by: Option<String>,
}

/// One approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// SSH user.
    pub by: String,
    /// Identity.
    pub identity: String,
    /// Groups at the time.
    #[serde(default)]
    pub groups: Vec<String>,
    /// When.
    pub at: String,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An automatic approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoApproved {
    /// The condition that matched.
    pub condition: String,
    /// When.
    pub at: String,
}

/// A denial.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// SSH user.
    pub by: String,
    /// Identity.
    pub identity: String,
    /// When.
    pub at: String,
    /// Why.
    pub reason: String,
}

/// A revocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// SSH user.
    pub by: String,
    /// Identity.
    pub identity: String,
    /// When.
    pub at: String,
}

/// Label: a digest of requester, target and argv (finds the identical pending request).
pub const KEY_LABEL: &str = "jitsh.dev/request-key";
/// Label: a digest of the requester's identity (finds one's own requests).
pub const REQUESTER_LABEL: &str = "jitsh.dev/requester";

/// The gateway's own access to AccessRequests, on behalf of one verified person.
#[derive(Clone)]
pub struct Requests {
    api: kube::Api<AccessRequest>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests").finish_non_exhaustive()
    }
}

/// How often a status write is retried after a conflict.
const CONFLICT_RETRIES: usize = 8;

impl KubeAccess {
    /// AccessRequests in `namespace` as the gateway itself, acting for `on_behalf` (sending the
    /// command's `Audit-ID`).
    pub fn requests(
        &self,
        on_behalf: &VerifiedIdentity,
        namespace: &str,
        audit_id: &str,
    ) -> Result<Requests, KubeError> {
        tracing::debug!(on_behalf = on_behalf.identity(), "accessrequests client");
        self.own_requests(namespace, audit_id)
    }

    /// AccessRequests as the gateway itself, for its own housekeeping (marking expiries).
    pub fn own_requests(&self, namespace: &str, audit_id: &str) -> Result<Requests, KubeError> {
        let mut c = self.base.clone();
        let v = HeaderValue::from_str(audit_id).map_err(KubeError::AuditId)?;
        c.headers.push((HeaderName::from_static("audit-id"), v));
        Ok(Requests {
            api: kube::Api::namespaced(kube::Client::try_from(c)?, namespace),
        })
    }

    /// Every change to AccessRequests in `namespace`, as the gateway itself (one watch per
    /// replica; it re-lists and resumes on its own).
    pub fn watch_requests(
        &self,
        namespace: &str,
    ) -> Result<impl futures::Stream<Item = AccessRequest> + Send + use<>, KubeError> {
        let api: kube::Api<AccessRequest> =
            kube::Api::namespaced(kube::Client::try_from(self.base.clone())?, namespace);
        let stream = watcher(api, watcher::Config::default())
            .filter_map(|ev| async move {
                match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some(vec![o]),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!("accessrequests watch: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        None
                    }
                }
            })
            .flat_map(futures::stream::iter);
        Ok(stream)
    }
}

impl Requests {
    /// Creates a request (its status is set right after, through the status subresource).
    pub async fn create(&self, req: &AccessRequest) -> Result<AccessRequest, KubeError> {
        Ok(self.api.create(&PostParams::default(), req).await?)
    }

    /// One request; `None` if there is none of that name.
    pub async fn get(&self, name: &str) -> Result<Option<AccessRequest>, KubeError> {
        Ok(self.api.get_opt(name).await?)
    }

    /// Requests matching a label selector (empty: all).
    pub async fn list(&self, selector: &str) -> Result<Vec<AccessRequest>, KubeError> {
        let lp = if selector.is_empty() {
            ListParams::default()
        } else {
            ListParams::default().labels(selector)
        };
        Ok(self.api.list(&lp).await?.items)
    }

    /// Changes a request's status with `change` (which sees the latest copy and may refuse),
    /// retrying on conflicts: the outer error is Kubernetes', the inner one `change`'s.
    /// `Ok(Ok(None))`: there is no such request.
    pub async fn update_status<E>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut AccessRequest) -> Result<(), E>,
    ) -> Result<Result<Option<AccessRequest>, E>, KubeError> {
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut obj) = self.api.get_opt(name).await? else {
                return Ok(Ok(None));
            };
            let before = obj.status.clone();
            if let Err(e) = change(&mut obj) {
                return Ok(Err(e));
            }
            if obj.status == before {
                return Ok(Ok(Some(obj)));
            }
            match self
                .api
                .replace_status(name, &PostParams::default(), &obj)
                .await
            {
                Ok(o) => return Ok(Ok(Some(o))),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KubeError::Api {
            code: 409,
            message: format!("accessrequest {name} kept changing; try again"),
        })
    }
}
