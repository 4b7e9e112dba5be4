//! Authentication results and RBAC authorization over real Role/ClusterRole/RoleBinding/
//! ClusterRoleBinding objects from the store.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde_json::Value;

use crate::store::Store;

/// An authenticated (or impersonated) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub username: String,
    /// Groups (including `system:authenticated`).
    pub groups: Vec<String>,
    /// UID, if known.
    pub uid: Option<String>,
}

impl UserInfo {
    /// A user with the given groups plus `system:authenticated`.
    pub fn new(username: impl Into<String>, groups: impl IntoIterator<Item = String>) -> Self {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_owned());
        }
        UserInfo {
            username: username.into(),
            groups,
            uid: None,
        }
    }
}

/// What is being asked for.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    /// Verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource.
    pub subresource: Option<String>,
    /// Namespace (None: cluster scope).
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// For non-resource requests: the path.
    pub path: Option<String>,
}

impl Attributes {
    /// The message the API server gives when this is forbidden for `user`.
    pub fn forbidden_message(&self, user: &str) -> String {
        if let Some(path) = &self.path {
            return format!(
                "forbidden: User \"{user}\" cannot {} path \"{path}\"",
                self.verb
            );
        }
        let res = match &self.subresource {
            Some(s) => format!("{}/{}", self.resource, s),
            None => self.resource.clone(),
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        let prefix = match &self.name {
            Some(n) => format!(
                "{} \"{n}\" is forbidden",
                qualified(&self.resource, &self.group)
            ),
            None => format!("{} is forbidden", qualified(&self.resource, &self.group)),
        };
        format!(
            "{prefix}: User \"{user}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
            self.verb, self.group
        )
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

fn from_values<T: serde::de::DeserializeOwned>(items: Vec<Value>) -> Vec<T> {
    items
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

fn subject_matches(s: &Subject, user: &UserInfo, binding_ns: Option<&str>) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.username,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s.namespace.as_deref().or(binding_ns).unwrap_or_default();
            user.username == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let has = |list: &Option<Vec<String>>, v: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == "*" || x == v))
    };
    if !rule.verbs.iter().any(|v| v == "*" || *v == a.verb) {
        return false;
    }
    if let Some(path) = &a.path {
        return rule.non_resource_urls.as_ref().is_some_and(|urls| {
            urls.iter().any(|u| {
                u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            })
        });
    }
    if !has(&rule.api_groups, &a.group) {
        return false;
    }
    let resource_ok = rule.resources.as_ref().is_some_and(|rs| {
        rs.iter().any(|r| match &a.subresource {
            None => r == "*" || *r == a.resource,
            Some(sub) => {
                r == "*"
                    || *r == format!("{}/{}", a.resource, sub)
                    || *r == format!("{}/*", a.resource)
                    || *r == format!("*/{sub}")
            }
        })
    });
    if !resource_ok {
        return false;
    }
    match &rule.resource_names {
        Some(names) if !names.is_empty() => a.name.as_ref().is_some_and(|n| names.contains(n)),
        _ => true,
    }
}

/// Decides whether `user` may do `a`, from the RBAC objects in `store`.
/// Members of `system:masters` may do anything, as in Kubernetes.
pub fn authorize(store: &Store, user: &UserInfo, a: &Attributes) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let cluster_roles: Vec<ClusterRole> =
        from_values(store.list("clusterroles.rbac.authorization.k8s.io", None).0);
    let cluster_role_rules = |name: &str| -> Vec<PolicyRule> {
        cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .and_then(|r| r.rules.clone())
            .unwrap_or_default()
    };
    let crbs: Vec<ClusterRoleBinding> = from_values(
        store
            .list("clusterrolebindings.rbac.authorization.k8s.io", None)
            .0,
    );
    for b in &crbs {
        let bound = b
            .subjects
            .iter()
            .flatten()
            .any(|s| subject_matches(s, user, None));
        if bound
            && b.role_ref.kind == "ClusterRole"
            && cluster_role_rules(&b.role_ref.name)
                .iter()
                .any(|r| rule_allows(r, a))
        {
            return true;
        }
    }
    let Some(ns) = a.namespace.as_deref() else {
        return false;
    };
    let roles: Vec<Role> = from_values(store.list("roles.rbac.authorization.k8s.io", Some(ns)).0);
    let rbs: Vec<RoleBinding> = from_values(
        store
            .list("rolebindings.rbac.authorization.k8s.io", Some(ns))
            .0,
    );
    for b in &rbs {
        if !b
            .subjects
            .iter()
            .flatten()
            .any(|s| subject_matches(s, user, Some(ns)))
        {
            continue;
        }
        let rules = match b.role_ref.kind.as_str() {
            "Role" => roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
                .and_then(|r| r.rules.clone())
                .unwrap_or_default(),
            "ClusterRole" => cluster_role_rules(&b.role_ref.name),
            _ => Vec::new(),
        };
        if rules.iter().any(|r| rule_allows(r, a)) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_message_reads_like_the_api_server() {
        let a = Attributes {
            verb: "create".into(),
            resource: "pods".into(),
            subresource: Some("exec".into()),
            namespace: Some("payments".into()),
            name: Some("api-0".into()),
            ..Attributes::default()
        };
        assert_eq!(
            a.forbidden_message("mallory"),
            "pods \"api-0\" is forbidden: User \"mallory\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"payments\""
        );
    }
}
