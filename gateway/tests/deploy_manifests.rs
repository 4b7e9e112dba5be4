//! The Kubernetes manifests in `deploy/kubernetes`: every document parses into its typed
//! k8s-openapi object with no field left over (a misspelt key fails here, not in a cluster),
//! and the settings the gateway's security rests on hold: impersonation-only RBAC for the
//! gateway, `get` + `create` on the streaming subresources for users, a locked-down pod, and
//! volumes that back every path `config.yaml` names.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed assertion is the report"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One manifest document, typed by its `kind`.
#[expect(
    clippy::large_enum_variant,
    reason = "a dozen objects, loaded once per test: boxing buys nothing"
)]
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    Deployment(Deployment),
    Service(Service),
    NetworkPolicy(NetworkPolicy),
    Crd(Box<CustomResourceDefinition>),
}

/// Every object in `deploy/kubernetes`, in file order.
struct Manifests {
    objects: Vec<Object>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn manifest_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

/// The `.yaml` files beside `kustomization.yaml`; any other file is an error.
fn resource_files() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(manifest_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(
            entry.file_type().unwrap().is_file() && name.ends_with(".yaml"),
            "deploy/kubernetes/{name}: only .yaml manifests belong here (docs go to docs/deploy.md)"
        );
        if name != "kustomization.yaml" {
            out.insert(name);
        }
    }
    out
}

fn load() -> Manifests {
    let mut objects = Vec::new();
    for name in resource_files() {
        let path = manifest_dir().join(&name);
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
        assert!(!docs.is_empty(), "{name}: no documents");
        for (i, doc) in docs.into_iter().enumerate() {
            let what = format!("{name} document {}", i + 1);
            objects.push(typed_object(&what, doc).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    Manifests { objects }
}

/// Dispatches on `apiVersion` + `kind`; unknown kinds are an error.
fn typed_object(what: &str, doc: Value) -> Result<Object, String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
    Ok(match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => Object::Namespace(typed(what, doc)?),
        ("v1", "ServiceAccount") => Object::ServiceAccount(typed(what, doc)?),
        ("v1", "ConfigMap") => Object::ConfigMap(typed(what, doc)?),
        ("v1", "Service") => Object::Service(typed(what, doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(typed(what, doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(typed(what, doc)?)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(typed(what, doc)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(typed(what, doc)?),
        ("apps/v1", "Deployment") => Object::Deployment(typed(what, doc)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(typed(what, doc)?),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            Object::Crd(Box::new(typed(what, doc)?))
        }
        _ => {
            return Err(format!(
                "{what}: unexpected object {api_version:?} {kind:?}"
            ));
        }
    })
}

/// Deserializes into `T`, then serializes back: a key `T` does not know (a typo such as
/// `readOnlyRootFileSystem`) would be silently dropped by serde, so any difference is an error.
fn typed<T: DeserializeOwned + Serialize>(what: &str, doc: Value) -> Result<T, String> {
    let object: T = serde_json::from_value(doc.clone())
        .map_err(|e| format!("{what}: does not parse as its kind: {e}"))?;
    let back = serde_json::to_value(&object).map_err(|e| format!("{what}: {e}"))?;
    match first_difference(&doc, &back, String::new()) {
        Some(path) => Err(format!(
            "{what}: {path} is not part of the typed object (misspelt or misplaced key?)"
        )),
        None => Ok(object),
    }
}

/// The JSON path of the first place where `a` (as written) and `b` (round-tripped) differ.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, av) in a {
                let here = format!("{path}/{key}");
                match b.get(key) {
                    None => return Some(here),
                    Some(bv) => {
                        if let Some(p) = first_difference(av, bv, here) {
                            return Some(p);
                        }
                    }
                }
            }
            b.keys()
                .find(|k| !a.contains_key(*k))
                .map(|k| format!("{path}/{k} (added)"))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (av, bv))| first_difference(av, bv, format!("{path}/{i}"))),
        _ if a == b => None,
        // A JSON Schema `minimum: 1` is a float in the typed object: the same number.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ => Some(format!("{path} ({a} became {b})")),
    }
}

impl Manifests {
    fn kinds(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for o in &self.objects {
            let kind = match o {
                Object::Namespace(_) => "Namespace",
                Object::ServiceAccount(_) => "ServiceAccount",
                Object::ClusterRole(_) => "ClusterRole",
                Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
                Object::Role(_) => "Role",
                Object::RoleBinding(_) => "RoleBinding",
                Object::ConfigMap(_) => "ConfigMap",
                Object::Deployment(_) => "Deployment",
                Object::Service(_) => "Service",
                Object::NetworkPolicy(_) => "NetworkPolicy",
                Object::Crd(_) => "CustomResourceDefinition",
            };
            *out.entry(kind).or_insert(0) += 1;
        }
        out
    }

    fn namespace(&self, name: &str) -> &Namespace {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::Namespace(x) if x.metadata.name.as_deref() == Some(name) => Some(x),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Namespace {name}"))
    }

    fn service_account(&self) -> &ServiceAccount {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::ServiceAccount(x) => Some(x),
                _ => None,
            })
            .expect("no ServiceAccount")
    }

    fn cluster_role(&self, name: &str) -> &ClusterRole {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::ClusterRole(x) if x.metadata.name.as_deref() == Some(name) => Some(x),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no ClusterRole {name}"))
    }

    fn role(&self, namespace: &str, name: &str) -> &Role {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::Role(x)
                    if x.metadata.name.as_deref() == Some(name)
                        && x.metadata.namespace.as_deref() == Some(namespace) =>
                {
                    Some(x)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Role {namespace}/{name}"))
    }

    fn config_map(&self) -> &ConfigMap {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::ConfigMap(x) if x.metadata.name.as_deref() == Some("jitsh-config") => {
                    Some(x)
                }
                _ => None,
            })
            .expect("no ConfigMap jitsh-config")
    }

    fn config_file(&self, key: &str) -> &str {
        self.config_map()
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("ConfigMap jitsh-config has no {key}"))
    }

    /// `config.yaml` as untyped YAML (the typed config lives in the gateway).
    fn config(&self) -> Value {
        serde_saphyr::from_str(self.config_file("config.yaml")).unwrap()
    }

    fn deployment(&self) -> &Deployment {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::Deployment(x) if x.metadata.name.as_deref() == Some("jitsh-gateway") => {
                    Some(x)
                }
                _ => None,
            })
            .expect("no Deployment jitsh-gateway")
    }

    fn pod(&self) -> &PodSpec {
        self.deployment().spec.template.spec.as_ref().unwrap()
    }

    fn gateway_container(&self) -> &Container {
        let pod = self.pod();
        assert_eq!(pod.containers.len(), 1, "one container: the gateway");
        &pod.containers[0]
    }

    fn service(&self) -> &Service {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::Service(x) => Some(x),
                _ => None,
            })
            .expect("no Service")
    }

    fn network_policy(&self) -> &NetworkPolicy {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::NetworkPolicy(x) => Some(x),
                _ => None,
            })
            .expect("no NetworkPolicy")
    }
}

/// The container port a probe or Service names, by number or by name.
fn container_port(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

/// The port of a `host:port` listen address in config.yaml.
fn listen_port(v: &Value) -> i32 {
    let s = v.as_str().unwrap();
    s.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn strings(v: &Option<Vec<String>>) -> BTreeSet<&str> {
    v.iter().flatten().map(String::as_str).collect()
}

#[test]
fn every_document_is_a_typed_kubernetes_object() {
    let m = load();
    let kinds = m.kinds();
    let expected: BTreeMap<&str, usize> = [
        ("Namespace", 1),
        ("ServiceAccount", 1),
        ("ClusterRole", 1),
        ("ClusterRoleBinding", 1),
        ("Role", 2),
        ("RoleBinding", 2),
        ("ConfigMap", 1),
        ("CustomResourceDefinition", 1),
        ("Deployment", 1),
        ("Service", 1),
        ("NetworkPolicy", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn the_access_request_crd_has_its_status_subresource_and_printer_columns() {
    let m = load();
    let crd = m
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Crd(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("accessrequests.jitsh.dev")
    );
    assert_eq!(crd.spec.group, "jitsh.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    let [v] = crd.spec.versions.as_slice() else {
        panic!("one version")
    };
    assert_eq!(v.name, "v1alpha1");
    assert!(v.served && v.storage);
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Requester",
            "Target",
            "What",
            "State",
            "Approvals",
            "Expires",
            "Age"
        ]
    );
    // The states the gateway writes are the schema's.
    let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
    let states = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["state"]["enum"];
    assert_eq!(
        states,
        &serde_json::json!([
            "Pending", "Approved", "Denied", "Expired", "Consumed", "Revoked"
        ])
    );
}

#[test]
fn a_misspelt_key_or_an_unknown_kind_is_caught() {
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c",
            "securityContext": {"readOnlyRootFileSystem": true}}]}}}
    });
    let err = typed_object("test", deployment).err().unwrap();
    assert!(
        err.contains("/spec/template/spec/containers/0/securityContext/readOnlyRootFileSystem"),
        "{err}"
    );
    let pdb = serde_json::json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget"});
    assert!(
        typed_object("test", pdb)
            .err()
            .unwrap()
            .contains("unexpected object")
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(manifest_dir().join("kustomization.yaml")).unwrap();
    let k: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(k["kind"], "Kustomization");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, resource_files());
}

#[test]
fn gateway_cluster_role_only_impersonates_users_and_groups() {
    let m = load();
    let role = m.cluster_role("jitsh-gateway");
    assert!(role.aggregation_rule.is_none());
    let rules = role.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "exactly one rule: {rules:?}");
    let PolicyRule {
        api_groups,
        non_resource_urls,
        resource_names,
        resources,
        verbs,
    } = &rules[0];
    assert_eq!(strings(api_groups), BTreeSet::from([""]));
    assert_eq!(strings(resources), BTreeSet::from(["groups", "users"]));
    assert_eq!(verbs, &["impersonate"]);
    assert!(non_resource_urls.is_none() && resource_names.is_none());

    // Bound to the gateway's ServiceAccount, and that account is bound to nothing else.
    let sa = m.service_account();
    assert_eq!(sa.metadata.name.as_deref(), Some("gateway"));
    assert_eq!(sa.metadata.namespace.as_deref(), Some("jitsh"));
    let is_gateway = |s: &k8s_openapi::api::rbac::v1::Subject| {
        s.kind == "ServiceAccount" && s.name == "gateway" && s.namespace.as_deref() == Some("jitsh")
    };
    let mut bound = Vec::new();
    for o in &m.objects {
        match o {
            Object::ClusterRoleBinding(b) if b.subjects.iter().flatten().any(is_gateway) => {
                bound.push(format!("{}/{}", b.role_ref.kind, b.role_ref.name));
            }
            Object::RoleBinding(b) if b.subjects.iter().flatten().any(is_gateway) => {
                let ns = b.metadata.namespace.as_deref().unwrap_or_default();
                bound.push(format!("{ns}:{}/{}", b.role_ref.kind, b.role_ref.name));
            }
            _ => {}
        }
    }
    assert_eq!(
        bound,
        [
            "ClusterRole/jitsh-gateway",
            "jitsh:Role/jitsh-gateway-accessrequests"
        ]
    );
    // Its one namespaced role: the access broker's AccessRequests in its own namespace, and
    // exactly the verbs the broker uses.
    let role = m
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Role(r)
                if r.metadata.name.as_deref() == Some("jitsh-gateway-accessrequests") =>
            {
                Some(r)
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(role.metadata.namespace.as_deref(), Some("jitsh"));
    let rules = role.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(strings(&rules[0].api_groups), BTreeSet::from(["jitsh.dev"]));
    assert_eq!(
        strings(&rules[0].resources),
        BTreeSet::from(["accessrequests", "accessrequests/status"])
    );
    assert_eq!(
        rules[0]
            .verbs
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["create", "get", "list", "patch", "update", "watch"])
    );
    assert!(rules[0].resource_names.is_none());
}

#[test]
fn debug_role_grants_get_and_create_on_the_streaming_subresources() {
    let m = load();
    let role = m.role("payments", "jitsh-debug");
    let rules = role.rules.as_deref().unwrap_or_default();
    let verbs_on = |resource: &str| -> BTreeSet<&str> {
        rules
            .iter()
            .filter(|r| strings(&r.api_groups).contains(""))
            .filter(|r| strings(&r.resources).contains(resource))
            .flat_map(|r| r.verbs.iter().map(String::as_str))
            .collect()
    };
    for sub in ["pods/exec", "pods/attach", "pods/portforward"] {
        // WebSocket upgrades are GETs that Kubernetes >= 1.35 also authorizes as create.
        assert_eq!(verbs_on(sub), BTreeSet::from(["create", "get"]), "{sub}");
    }
    assert_eq!(verbs_on("pods"), BTreeSet::from(["get", "list", "watch"]));
    assert_eq!(verbs_on("pods/log"), BTreeSet::from(["get"]));
    for r in rules {
        assert!(
            !r.verbs.contains(&"*".to_owned()) && !strings(&r.resources).contains("*"),
            "no wildcards: {r:?}"
        );
    }

    let binding = m
        .objects
        .iter()
        .find_map(|o| match o {
            Object::RoleBinding(b) if b.metadata.name.as_deref() == Some("jitsh-debug") => Some(b),
            _ => None,
        })
        .expect("no RoleBinding jitsh-debug");
    assert_eq!(binding.metadata.namespace.as_deref(), Some("payments"));
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", "jitsh-debug")
    );
    let groups: BTreeSet<&str> = binding
        .subjects
        .iter()
        .flatten()
        .map(|s| {
            assert_eq!(s.kind, "Group");
            s.name.as_str()
        })
        .collect();
    assert_eq!(
        groups,
        BTreeSet::from(["oncall-payments", "payments-leads", "sre"])
    );
}

#[test]
fn gateway_pod_is_locked_down() {
    let m = load();
    let ns = m.namespace("jitsh");
    let labels = ns.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        m.service_account().automount_service_account_token,
        Some(true)
    );

    let pod = m.pod();
    assert_eq!(pod.service_account_name.as_deref(), Some("gateway"));
    assert_eq!(pod.automount_service_account_token, Some(true));
    assert_ne!(pod.host_network, Some(true));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.is_some_and(|u| u != 0));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );

    let c = m.gateway_container();
    assert_eq!(c.image.as_deref(), Some("ghcr.io/jitsh/jitsh:0.1.0"));
    assert_eq!(
        c.args.as_deref().unwrap_or_default(),
        ["serve", "--config", "/etc/jitsh/config.yaml"]
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref().unwrap_or_default(), ["ALL"]);
    assert!(caps.add.as_deref().unwrap_or_default().is_empty());
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );

    let res = c.resources.as_ref().unwrap();
    for key in ["cpu", "memory"] {
        assert!(
            res.requests.as_ref().unwrap().contains_key(key),
            "request {key}"
        );
        assert!(
            res.limits.as_ref().unwrap().contains_key(key),
            "limit {key}"
        );
    }
}

#[test]
fn probes_hit_healthz_and_readyz_on_the_admin_port() {
    let m = load();
    let c = m.gateway_container();
    let admin_port = listen_port(&m.config()["admin"]["listen"]);
    let probe = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        let get = p.unwrap().http_get.as_ref().unwrap();
        (
            get.path.clone().unwrap_or_default(),
            container_port(c, &get.port),
        )
    };
    assert_eq!(
        probe(c.liveness_probe.as_ref()),
        ("/healthz".to_owned(), admin_port)
    );
    assert_eq!(
        probe(c.readiness_probe.as_ref()),
        ("/readyz".to_owned(), admin_port)
    );
    assert_eq!(admin_port, 9090);
    assert_eq!(
        container_port(c, &IntOrString::String("ssh".into())),
        listen_port(&m.config()["listen"])
    );
}

#[test]
fn config_uses_the_gateway_schema_and_the_grace_period_fits() {
    let m = load();
    // the gateway's own typed configuration accepts it (unknown keys are errors there)
    let typed: jitsh_gateway::config::Config =
        serde_saphyr::from_str(m.config_file("config.yaml")).unwrap();
    assert_eq!(typed.kubernetes.in_cluster, Some(true));
    assert!(typed.admin.is_some());
    let config = m.config();
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    let allowed: BTreeSet<String> = [
        "listen",
        "hostKey",
        "hostCertificate",
        "trustedUserCAs",
        "revocations",
        "policy",
        "kubernetes",
        "defaultNamespace",
        "audit",
        "recordings",
        "limits",
        "admin",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys(&config), allowed);
    assert_eq!(config["kubernetes"], serde_json::json!({"inCluster": true}));
    assert!(
        keys(&config["audit"]).is_subset(&["file", "stdout", "redact"].map(String::from).into())
    );
    let limit_keys: BTreeSet<String> = [
        "preAuthTimeout",
        "maxConnectionsPerIp",
        "maxAuthFailuresPerIp",
        "authFailureWindow",
        "maxSessions",
        "maxSessionsPerUser",
        "idleTimeout",
        "shutdownGrace",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys(&config["limits"]), limit_keys);
    for key in [
        "preAuthTimeout",
        "authFailureWindow",
        "idleTimeout",
        "shutdownGrace",
    ] {
        humantime::parse_duration(config["limits"][key].as_str().unwrap())
            .unwrap_or_else(|e| panic!("limits.{key}: {e}"));
    }

    let grace =
        humantime::parse_duration(config["limits"]["shutdownGrace"].as_str().unwrap()).unwrap();
    let period = m.pod().termination_grace_period_seconds.unwrap();
    assert!(
        Duration::from_secs(period.try_into().unwrap()) >= grace + Duration::from_secs(5),
        "terminationGracePeriodSeconds {period} < shutdownGrace {grace:?} + 5s"
    );
}

/// Every file `config.yaml` names is backed by the right volume: ConfigMap keys and Secrets
/// read-only, the audit log and recordings on a writable emptyDir.
#[test]
fn volumes_back_every_configured_path() {
    let m = load();
    let config = m.config();
    let pod = m.pod();
    let c = m.gateway_container();
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    let volume = |name: &str| -> &Volume {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    // (volume, path relative to its mount, writable) for the deepest mount holding `path`.
    let backing = |path: &str| {
        let mount = mounts
            .iter()
            .filter(|mt| Path::new(path).starts_with(&mt.mount_path))
            .max_by_key(|mt| mt.mount_path.len())
            .unwrap_or_else(|| panic!("{path} is on the read-only root filesystem"));
        let rel = Path::new(path)
            .strip_prefix(&mount.mount_path)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        (volume(&mount.name), rel, mount.read_only != Some(true))
    };

    let read_only_files = [
        ("/etc/jitsh/config.yaml", "config.yaml"),
        (config["policy"].as_str().unwrap(), "policy.yaml"),
        (config["revocations"].as_str().unwrap(), "revoked"),
    ];
    for (path, key) in read_only_files {
        let (v, rel, writable) = backing(path);
        assert_eq!(
            v.config_map.as_ref().unwrap().name,
            "jitsh-config",
            "{path}"
        );
        assert_eq!(rel, key);
        assert!(!writable, "{path} must be read-only");
        m.config_file(key);
    }

    let secret_files = [
        (config["hostKey"].as_str().unwrap(), "jitsh-host-key", 0o400),
        (
            config["hostCertificate"].as_str().unwrap(),
            "jitsh-host-key",
            0o400,
        ),
        (
            config["trustedUserCAs"][0].as_str().unwrap(),
            "jitsh-user-ca",
            0o444,
        ),
    ];
    for (path, secret, mode) in secret_files {
        let (v, _, writable) = backing(path);
        let s = v
            .secret
            .as_ref()
            .unwrap_or_else(|| panic!("{path} is not from a Secret"));
        assert_eq!(s.secret_name.as_deref(), Some(secret), "{path}");
        assert_eq!(s.default_mode, Some(mode), "{path}: mode");
        assert!(!writable, "{path} must be read-only");
    }

    for path in [
        config["audit"]["file"].as_str().unwrap(),
        config["recordings"].as_str().unwrap(),
    ] {
        let (v, _, writable) = backing(path);
        assert!(v.empty_dir.is_some(), "{path} must be on an emptyDir");
        assert!(writable, "{path} must be writable");
    }
    let state = mounts
        .iter()
        .find(|mt| mt.mount_path == "/var/lib/jitsh")
        .expect("an emptyDir at /var/lib/jitsh");
    assert!(volume(&state.name).empty_dir.is_some());
}

#[test]
fn config_map_carries_the_demo_policy_and_a_valid_revocation_list() {
    let m = load();
    let policy = m.config_file("policy.yaml");
    let demo = std::fs::read_to_string(repo_root().join("deploy/policy/demo.yaml")).unwrap();
    assert!(
        policy == demo,
        "the ConfigMap's policy.yaml drifted from deploy/policy/demo.yaml: copy it again"
    );
    jitsh_broker_policy::Policy::from_yaml(policy).unwrap_or_else(|e| panic!("policy.yaml: {e}"));
    jitsh_certs::RevocationList::parse(m.config_file("revoked"))
        .unwrap_or_else(|e| panic!("revoked: {e}"));
}

#[test]
fn service_and_network_policy_expose_only_ssh() {
    let m = load();
    let c = m.gateway_container();
    let pod_labels = m
        .deployment()
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selects_gateway = |sel: &BTreeMap<String, String>| {
        !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
    };

    let svc = m.service().spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(svc.external_traffic_policy.as_deref(), Some("Local"));
    assert!(selects_gateway(svc.selector.as_ref().unwrap()));
    let ports = svc.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1, "only SSH is exposed");
    assert_eq!(ports[0].port, 22);
    assert_eq!(
        container_port(c, ports[0].target_port.as_ref().unwrap()),
        2222
    );

    let np = m.network_policy();
    assert_eq!(np.metadata.namespace.as_deref(), Some("jitsh"));
    let spec = np.spec.as_ref().unwrap();
    assert!(selects_gateway(
        spec.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()
    ));
    assert!(strings(&spec.policy_types).contains("Ingress"));
    let mut seen = BTreeMap::new();
    for rule in spec.ingress.iter().flatten() {
        for p in rule.ports.iter().flatten() {
            let port = match p.port.as_ref().unwrap() {
                IntOrString::Int(n) => *n,
                other => container_port(c, other),
            };
            seen.insert(port, rule.from.clone());
        }
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [2222, 9090]);
    assert!(
        seen[&2222].as_deref().unwrap_or_default().is_empty(),
        "SSH is open to all"
    );
    let admin_from = seen[&9090].as_deref().unwrap_or_default();
    assert_eq!(admin_from.len(), 1);
    let peer = &admin_from[0];
    assert!(peer.pod_selector.is_none() && peer.ip_block.is_none());
    let ns_labels = peer
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_labels
        .clone()
        .unwrap();
    assert_eq!(
        ns_labels,
        BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            "monitoring".to_owned()
        )])
    );
}
