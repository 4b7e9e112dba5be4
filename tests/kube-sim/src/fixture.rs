//! Fixtures: the objects and users a simulated cluster starts with. `demo` is built in; a file
//! fixture is YAML `{users: [{name, token, groups}], objects: [<Kubernetes objects>]}`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::SimError;

/// Which fixture to load.
#[derive(Debug, Clone, Default)]
pub enum Fixture {
    /// The demo cluster (namespaces `payments` and `default`, users alice, bob, carol, mallory).
    #[default]
    Demo,
    /// A YAML file.
    File(PathBuf),
}

/// A token-authenticated user of the fixture (gets its own kubeconfig context).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureUser {
    /// User name (and context name).
    pub name: String,
    /// Bearer token.
    pub token: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A loaded fixture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureData {
    /// Users with tokens.
    #[serde(default)]
    pub users: Vec<FixtureUser>,
    /// Kubernetes objects (Namespace, Pod, Role, ClusterRole, RoleBinding, ClusterRoleBinding, AccessRequest).
    #[serde(default)]
    pub objects: Vec<Value>,
}

/// The ServiceAccount user the gateway context authenticates as.
pub const GATEWAY_USER: &str = "system:serviceaccount:jitsh:gateway";

impl Fixture {
    /// Loads the fixture.
    pub fn load(&self) -> Result<FixtureData, SimError> {
        match self {
            Fixture::Demo => Ok(demo()),
            Fixture::File(path) => load_file(path),
        }
    }
}

fn load_file(path: &Path) -> Result<FixtureData, SimError> {
    let err = |reason: String| SimError::Fixture {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let data: FixtureData = serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))?;
    for (i, o) in data.objects.iter().enumerate() {
        for field in ["/apiVersion", "/kind", "/metadata/name"] {
            if o.pointer(field).and_then(Value::as_str).is_none() {
                return Err(err(format!("objects[{i}]: missing {}", &field[1..])));
            }
        }
    }
    Ok(data)
}

fn user(name: &str, groups: &[&str]) -> FixtureUser {
    FixtureUser {
        name: name.to_owned(),
        token: format!("{name}-token"),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn container(name: &str, image: &str, ports: &[u16]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"containerPort": p, "protocol": "TCP"}))
        .collect();
    json!({"name": name, "image": image, "ports": ports})
}

/// The demo fixture, exactly as the tests and `jitsh serve --dev` expect it.
pub fn demo() -> FixtureData {
    let ns = |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    let objects = vec![
        ns("default"),
        ns("payments"),
        ns("jitsh"),
        ns("kube-system"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "api-0", "namespace": "payments", "labels": {"app": "api"},
                "annotations": {"kubectl.kubernetes.io/default-container": "app"}},
              "spec": {"containers": [container("app", "kube-sim/app", &[8080]), container("sidecar", "kube-sim/idle", &[])]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "worker-0", "namespace": "payments", "labels": {"app": "worker"}},
              "spec": {"containers": [container("worker", "kube-sim/worker", &[])]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "toolbox", "namespace": "default", "labels": {"app": "toolbox"}},
              "spec": {"containers": [container("toolbox", "kube-sim/idle", &[])]}}),
        // Built-in roles, as a real cluster's bootstrap policy has them.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cluster-admin"},
              "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:discovery"},
              "rules": [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/*"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:basic-user"},
              "rules": [{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "system:discovery"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:discovery"},
              "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "system:basic-user"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:basic-user"},
              "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "cluster-admin"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
              "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
        // The gateway: impersonation only.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "jitsh-gateway-impersonator"},
              "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
                        {"apiGroups": ["authentication.k8s.io"], "resources": ["uids"], "verbs": ["impersonate"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "jitsh-gateway-impersonator"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "jitsh-gateway-impersonator"},
              "subjects": [{"kind": "ServiceAccount", "name": "gateway", "namespace": "jitsh"}]}),
        // The gateway keeps AccessRequests in its own namespace, as its own ServiceAccount.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "jitsh-gateway-accessrequests", "namespace": "jitsh"},
              "rules": [{"apiGroups": ["jitsh.dev"], "resources": ["accessrequests", "accessrequests/status"],
                         "verbs": ["create", "get", "list", "watch", "update", "patch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "jitsh-gateway-accessrequests", "namespace": "jitsh"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "jitsh-gateway-accessrequests"},
              "subjects": [{"kind": "ServiceAccount", "name": "gateway", "namespace": "jitsh"}]}),
        // The Kubernetes blog's on-call debug role, in payments.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "oncall-debug", "namespace": "payments"},
              "rules": [
                {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["get", "create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "oncall-debug", "namespace": "payments"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "oncall-debug"},
              "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "oncall-payments"},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "payments-leads"},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "sre"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "accessrequest-approver", "namespace": "payments"},
              "rules": [{"apiGroups": ["jitsh.dev"], "resources": ["accessrequests", "accessrequests/status"],
                         "verbs": ["get", "list", "watch", "update", "patch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "accessrequest-approver", "namespace": "payments"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "accessrequest-approver"},
              "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "payments-leads"}]}),
    ];
    FixtureData {
        users: vec![
            user("alice", &["oncall-payments"]),
            user("bob", &["payments-leads"]),
            user("carol", &["sre"]),
            user("mallory", &[]),
        ],
        objects,
    }
}
