//! Pods and namespaces as the user: lookups, listings and picking the container.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;

use super::{Impersonated, KubeError};

/// The resolved pod and container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
}

impl Resolved {
    /// The target as the policy sees it.
    pub fn policy_target(&self) -> jitsh_broker_policy::Target {
        jitsh_broker_policy::Target {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            labels: self.labels.clone(),
            container: self.container.clone(),
        }
    }
}

/// What the gateway needs of a pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// Container names, in spec order.
    pub containers: Vec<String>,
    /// The `kubectl.kubernetes.io/default-container` annotation.
    pub default_container: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// Gets a pod as the user.
pub async fn get(k: &Impersonated, namespace: &str, pod: &str) -> Result<PodInfo, KubeError> {
    let api = k.api::<Pod>(namespace);
    let p = api.get(pod).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => KubeError::PodNotFound {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
        },
        other => other.into(),
    })?;
    Ok(PodInfo {
        containers: p
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default(),
        default_container: p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubectl.kubernetes.io/default-container").cloned()),
        labels: p.metadata.labels.unwrap_or_default(),
    })
}

/// Looks the pod up as the user and picks the container (the one named, else the annotated
/// default, else the first).
pub async fn resolve(
    k: &Impersonated,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<Resolved, KubeError> {
    let info = get(k, namespace, pod).await?;
    let chosen = match container {
        Some(c) if info.containers.iter().any(|n| n == c) => c.to_owned(),
        Some(c) => {
            return Err(KubeError::NoSuchContainer {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
                container: c.to_owned(),
                has: info.containers.join(", "),
            });
        }
        None => info
            .default_container
            .filter(|a| info.containers.contains(a))
            .or_else(|| info.containers.first().cloned())
            .ok_or_else(|| KubeError::NoContainers {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
            })?,
    };
    Ok(Resolved {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: chosen,
        labels: info.labels,
    })
}

/// One pod of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Name.
    pub name: String,
    /// Phase.
    pub phase: String,
    /// Container names.
    pub containers: Vec<String>,
}

/// Lists pods in `namespace` as the user.
pub async fn list(k: &Impersonated, namespace: &str) -> Result<Vec<Listed>, KubeError> {
    let list = k.api::<Pod>(namespace).list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .map(|p| Listed {
            name: p.metadata.name.unwrap_or_default(),
            phase: p
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "Unknown".into()),
            containers: p
                .spec
                .map(|s| s.containers.into_iter().map(|c| c.name).collect())
                .unwrap_or_default(),
        })
        .collect())
}

/// The namespaces the user may list (empty when they may not).
pub async fn namespaces(k: &Impersonated) -> BTreeSet<String> {
    let api: kube::Api<Namespace> = kube::Api::all(k.client.clone());
    match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// The names of the pods in `namespace` the user may list.
pub async fn names(k: &Impersonated, namespace: &str) -> Result<Vec<String>, KubeError> {
    let list = k.api::<Pod>(namespace).list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect())
}

/// Whether `container` of the pod has restarted (has a terminated last state), so a previous
/// log exists.
pub async fn restarted(
    k: &Impersonated,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<bool, KubeError> {
    let p = k.api::<Pod>(namespace).get(pod).await?;
    Ok(p.status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.name == container && c.last_state.and_then(|l| l.terminated).is_some()))
}
