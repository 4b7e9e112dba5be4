//! The CustomResourceDefinitions kube-sim serves: the deploy files themselves, embedded at build
//! time and parsed once. Each CRD is stored as an `apiextensions.k8s.io/v1` object (so
//! `kubectl get crd` works), its names and scope become the discovery entry and the routing of its
//! custom resources, and its `additionalPrinterColumns` drive their Table output.

use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::resources::ResourceDef;

/// The AccessRequest CRD, as deployed (`deploy/kubernetes/accessrequest-crd.yaml`).
const ACCESSREQUEST_CRD: (&str, &str) = (
    "deploy/kubernetes/accessrequest-crd.yaml",
    include_str!("../../../deploy/kubernetes/accessrequest-crd.yaml"),
);

/// The verbs served on custom resources.
const CR_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

static BUILTIN: LazyLock<Result<Vec<Value>, String>> = LazyLock::new(|| {
    [ACCESSREQUEST_CRD]
        .iter()
        .map(|(path, text)| parse(text).map_err(|e| format!("{path}: {e}")))
        .collect()
});

/// The embedded CRDs, parsed (an error names the file and what is wrong with it).
pub(crate) fn builtin() -> Result<&'static [Value], String> {
    BUILTIN.as_deref().map_err(Clone::clone)
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Result<&'v str, String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{} is required", pointer.trim_start_matches('/')))
}

/// Parses and checks one CRD document.
fn parse(text: &str) -> Result<Value, String> {
    let crd: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    if crd.get("apiVersion").and_then(Value::as_str) != Some("apiextensions.k8s.io/v1")
        || crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition")
    {
        return Err("not an apiextensions.k8s.io/v1 CustomResourceDefinition".to_owned());
    }
    let group = str_at(&crd, "/spec/group")?;
    let plural = str_at(&crd, "/spec/names/plural")?;
    str_at(&crd, "/spec/names/kind")?;
    if str_at(&crd, "/metadata/name")? != format!("{plural}.{group}") {
        return Err("metadata.name must be spec.names.plural + \".\" + spec.group".to_owned());
    }
    if !matches!(str_at(&crd, "/spec/scope")?, "Namespaced" | "Cluster") {
        return Err("spec.scope must be Namespaced or Cluster".to_owned());
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions is required")?;
    for v in versions {
        str_at(v, "/name")?;
        for col in v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = str_at(col, "/jsonPath")?;
            if crate::table::JsonPath::parse(path).is_none() {
                return Err(format!("unsupported printer column jsonPath {path:?}"));
            }
        }
    }
    Ok(crd)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The served resource of each served version of a (checked) CRD. Called once per CRD, for the
/// process-wide resource table: the names are leaked into `&'static str`s on purpose.
pub(crate) fn resource_defs(crd: &Value) -> Vec<ResourceDef> {
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let short_names: Vec<&'static str> = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    let short_names: &'static [&'static str] = Box::leak(short_names.into_boxed_slice());
    let plural = leak(s("/spec/names/plural"));
    let singular = match s("/spec/names/singular") {
        "" => plural,
        x => leak(x),
    };
    let (group, kind) = (leak(s("/spec/group")), leak(s("/spec/names/kind")));
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .map(|v| {
            let subresources: &'static [&'static str] =
                if v.pointer("/subresources/status").is_some() {
                    &["status"]
                } else {
                    &[]
                };
            ResourceDef {
                group,
                version: leak(v.get("name").and_then(Value::as_str).unwrap_or_default()),
                plural,
                singular,
                kind,
                namespaced: s("/spec/scope") == "Namespaced",
                verbs: CR_VERBS,
                subresources,
                short_names,
            }
        })
        .collect()
}

/// The CRD as the API server stores it once established: names accepted, stored versions.
pub(crate) fn established(crd: &Value) -> Value {
    let mut crd = crd.clone();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let now = crate::store::now_rfc3339();
    crate::object::set(
        &mut crd,
        &["status"],
        json!({
            "acceptedNames": names,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                 "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": now,
                 "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}],
            "storedVersions": stored,
        }),
    );
    crd
}

/// The `additionalPrinterColumns` of one version of the CRD that defines `def`, or the
/// API server's default (`Age` from `.metadata.creationTimestamp`) when it defines none.
pub(crate) fn printer_columns(crds: &[Value], def: &ResourceDef) -> Vec<Value> {
    let columns = crds
        .iter()
        .filter(|c| {
            c.pointer("/spec/group").and_then(Value::as_str) == Some(def.group)
                && c.pointer("/spec/names/plural").and_then(Value::as_str) == Some(def.plural)
        })
        .flat_map(|c| {
            c.pointer("/spec/versions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .find(|v| v.get("name").and_then(Value::as_str) == Some(def.version))
        .and_then(|v| {
            v.get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
        })
        .unwrap_or_default();
    if columns.is_empty() {
        vec![
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
                    "description": crate::table::CREATION_TIMESTAMP_DESCRIPTION}),
        ]
    } else {
        columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_crd_parses_and_rejects_what_is_not_a_crd() {
        let crds = builtin().unwrap();
        assert_eq!(
            crds[0]["metadata"]["name"], "accessrequests.jitsh.dev",
            "the deploy file's CRD"
        );
        assert!(parse("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n").is_err());
        let wrong_name = ACCESSREQUEST_CRD
            .1
            .replace("name: accessrequests.jitsh.dev", "name: other.jitsh.dev");
        assert!(parse(&wrong_name).unwrap_err().contains("metadata.name"));
    }
}
