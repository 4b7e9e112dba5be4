//! The resources kube-sim serves and the parsing of a request path into request attributes
//! (the API server's `RequestInfo`).

use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::crd;
use crate::object;
use crate::status::ApiError;

/// A served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Plural name, e.g. `pods`.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Verbs served on the collection/objects.
    pub verbs: &'static [&'static str],
    /// Subresources served (`status`, `log`, `exec`, ...).
    pub subresources: &'static [&'static str],
    /// Short names for kubectl.
    pub short_names: &'static [&'static str],
}

const CRUD: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const READ: &[&str] = &["get", "list", "watch"];

/// The built-in resources.
const BUILTIN: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        verbs: READ,
        subresources: &[],
        short_names: &["ns"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        verbs: READ,
        subresources: &["log", "exec", "attach", "portforward"],
        short_names: &["po"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        verbs: READ,
        subresources: &[],
        short_names: &["ev"],
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        verbs: CRUD,
        subresources: &[],
        short_names: &[],
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        verbs: CRUD,
        subresources: &[],
        short_names: &[],
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        verbs: CRUD,
        subresources: &[],
        short_names: &[],
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        verbs: CRUD,
        subresources: &[],
        short_names: &[],
    },
    ResourceDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        verbs: &["create"],
        subresources: &[],
        short_names: &[],
    },
    ResourceDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
        verbs: &["create"],
        subresources: &[],
        short_names: &[],
    },
    ResourceDef {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        verbs: READ,
        subresources: &[],
        short_names: &["crd", "crds"],
    },
];

/// Every resource kube-sim serves: the built-in ones, then the custom resources of the embedded
/// CRDs (see [`crate::crd`]), named as their CRD names them.
static RESOURCES: LazyLock<Vec<ResourceDef>> = LazyLock::new(|| {
    let mut all = BUILTIN.to_vec();
    // A CRD that does not parse is reported by `SimBuilder::start`, which then refuses to start.
    for crd in crd::builtin().unwrap_or_default() {
        all.extend(crd::resource_defs(crd));
    }
    all
});

/// Every served resource.
pub fn all() -> &'static [ResourceDef] {
    &RESOURCES
}

impl ResourceDef {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `plural` or `plural.group`, as the API server names the resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// Whether objects of this type are stored (rather than computed).
    pub fn stored(&self) -> bool {
        self.group != "authorization.k8s.io"
    }
}

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    all()
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Request attributes, as the API server derives them from the method and path.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// Whether the path names a resource (else: a non-resource URL such as `/api`).
    pub is_resource: bool,
    /// The verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`).
    pub verb: String,
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace, if any.
    pub namespace: Option<String>,
    /// Plural resource.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
}

/// Parses a request path like the API server's request-info resolver.
pub fn parse(method: &str, path: &str, watch: bool) -> Result<RequestInfo, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => {
            return Ok(RequestInfo {
                verb: method.to_ascii_lowercase(),
                ..RequestInfo::default()
            });
        }
    };
    if rest.iter().any(|s| s.is_empty()) {
        return Err(ApiError::no_route());
    }
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some((*ns).to_owned()), more),
        other => (None, other),
    };
    let (resource, name, subresource) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let verb = match (method, name.is_some()) {
        ("GET" | "HEAD", true) => {
            if watch {
                "watch"
            } else {
                "get"
            }
        }
        ("GET" | "HEAD", false) => {
            if watch {
                "watch"
            } else {
                "list"
            }
        }
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => return Err(ApiError::method_not_allowed(m)),
    };
    Ok(RequestInfo {
        is_resource: true,
        verb: verb.to_owned(),
        group: group.to_owned(),
        version: version.to_owned(),
        namespace,
        resource: resource.to_owned(),
        subresource: subresource.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

/// `/api` (legacy core group versions).
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}],
    })
}

fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in all() {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// `/apis` (the group list).
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(group_json).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn group_json(group: &str) -> Value {
    let version = all()
        .iter()
        .find(|r| r.group == group)
        .map(|r| r.version)
        .unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis/{group}` (one group), if served.
pub fn api_group(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let mut v = group_json(group);
        object::set(&mut v, &["kind"], "APIGroup".into());
        object::set(&mut v, &["apiVersion"], "v1".into());
        v
    })
}

/// `/api/v1` or `/apis/{group}/{version}` (the resource list), if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in defs {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs, "shortNames": r.short_names,
        }));
        for sub in r.subresources {
            let (kind, verbs): (&str, &[&str]) = match *sub {
                "status" => (r.kind, &["get", "patch", "update"]),
                "log" => ("Pod", &["get"]),
                "exec" => ("PodExecOptions", &["create", "get"]),
                "attach" => ("PodAttachOptions", &["create", "get"]),
                _ => ("PodPortForwardOptions", &["create", "get"]),
            };
            resources.push(json!({
                "name": format!("{}/{}", r.plural, sub), "singularName": "",
                "namespaced": r.namespaced, "kind": kind, "verbs": verbs,
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_like_the_api_server() {
        let i = parse("GET", "/api/v1/namespaces/payments/pods/api-0/exec", false).unwrap();
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_deref(),
                i.resource.as_str(),
                i.name.as_deref(),
                i.subresource.as_deref()
            ),
            ("get", Some("payments"), "pods", Some("api-0"), Some("exec"))
        );
        let i = parse("GET", "/api/v1/namespaces/payments", false).unwrap();
        assert_eq!(
            (i.resource.as_str(), i.name.as_deref(), i.namespace),
            ("namespaces", Some("payments"), None)
        );
        let i = parse("GET", "/api/v1/pods", true).unwrap();
        assert_eq!(i.verb, "watch");
        let i = parse(
            "PATCH",
            "/apis/jitsh.dev/v1alpha1/namespaces/p/accessrequests/r/status",
            false,
        )
        .unwrap();
        assert_eq!(
            (i.group.as_str(), i.verb.as_str(), i.subresource.as_deref()),
            ("jitsh.dev", "patch", Some("status"))
        );
        assert!(!parse("GET", "/apis", false).unwrap().is_resource);
        assert!(parse("GET", "/api/v1/a/b/c/d", false).is_err());
        assert!(parse("TRACE", "/api/v1/pods", false).is_err());
    }

    /// What discovery and routing use for AccessRequests is what the deploy file's CRD says.
    #[test]
    fn accessrequests_are_served_as_the_crd_file_defines_them() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kubernetes/accessrequest-crd.yaml"
        ))
        .unwrap();
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        let spec = &crd["spec"];
        let version = spec["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["storage"] == true)
            .unwrap();
        let def = find(
            spec["group"].as_str().unwrap(),
            version["name"].as_str().unwrap(),
            spec["names"]["plural"].as_str().unwrap(),
        )
        .expect("a ResourceDef for the CRD's group, storage version and plural");
        // The gateway writes accessrequests.jitsh.dev/v1alpha1: the file must keep saying so.
        assert_eq!(
            (def.group, def.version, def.plural),
            ("jitsh.dev", "v1alpha1", "accessrequests")
        );
        assert_eq!(def.singular, spec["names"]["singular"]);
        assert_eq!(def.kind, spec["names"]["kind"]);
        let short: Vec<&str> = spec["names"]["shortNames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(def.short_names, short.as_slice());
        assert_eq!(def.namespaced, spec["scope"] == "Namespaced");
        assert_eq!(
            def.subresources.contains(&"status"),
            version["subresources"].get("status").is_some()
        );
        assert_eq!(
            def.api_version(),
            format!(
                "{}/{}",
                spec["group"].as_str().unwrap(),
                version["name"].as_str().unwrap()
            )
        );

        // Discovery reports the same, with the status subresource.
        let list = resource_list(def.group, def.version).unwrap();
        let entries = list["resources"].as_array().unwrap();
        let main = entries.iter().find(|r| r["name"] == def.plural).unwrap();
        assert_eq!(main["kind"], spec["names"]["kind"]);
        assert_eq!(main["shortNames"], spec["names"]["shortNames"]);
        assert_eq!(main["namespaced"], spec["scope"] == "Namespaced");
        assert!(
            entries
                .iter()
                .any(|r| r["name"] == format!("{}/status", def.plural))
        );
        assert!(
            api_group_list()["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "apiextensions.k8s.io")
        );
    }
}
