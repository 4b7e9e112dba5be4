//! Server-side output transformations, as the API server's content negotiation offers them:
//! `meta.k8s.io` `Table` (what `kubectl get` asks for), `PartialObjectMetadata` and
//! `PartialObjectMetadataList`.
//!
//! The table convertors follow the API server's: a custom resource's columns are `Name` and its
//! CRD's `additionalPrinterColumns` (simple JSONPath; a missing field is a `null` cell; `date`
//! cells are sent as an age, e.g. `5m`); pods, namespaces, role bindings and cluster role bindings
//! get the columns of their built-in printers; everything else gets the default convertor's
//! `Name` and `Created At` (an RFC 3339 timestamp).

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::resources::ResourceDef;
use crate::server::{Query, param};
use crate::status::ApiError;

/// `ObjectMeta.name`'s description, as the API server's convertors describe the `Name` column.
pub(crate) const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// `ObjectMeta.creationTimestamp`'s description.
pub(crate) const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The media types a real API server serves for built-in resources (kube-sim answers all of
/// them in JSON).
const SERVED_MEDIA_TYPES: &str =
    "application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// What a Table row carries in `object` (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Include {
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
    /// Nothing (`null`).
    None,
}

/// The representation negotiated from the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The object or list itself.
    Plain,
    /// A `meta.k8s.io/{version}` Table.
    Table {
        /// `v1` or `v1beta1`.
        version: &'static str,
        /// What rows carry.
        include: Include,
    },
    /// `meta.k8s.io/{version}` `PartialObjectMetadata` (`list: false`) or
    /// `PartialObjectMetadataList` (`list: true`).
    Partial {
        /// `v1` or `v1beta1`.
        version: &'static str,
        /// Whether the list kind was asked for.
        list: bool,
    },
}

struct Clause<'a> {
    ty: &'a str,
    sub: &'a str,
    q: f64,
    params: Vec<(String, &'a str)>,
}

impl Clause<'_> {
    fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| *v)
    }
}

/// Parses an Accept header like goautoneg: clauses in order of preference (q, then specificity).
fn parse_accept(header: &str) -> Vec<Clause<'_>> {
    let mut out: Vec<Clause<'_>> = Vec::new();
    for part in header.split(',') {
        let mut pieces = part.split(';');
        let range = pieces.next().unwrap_or_default().trim();
        let (ty, sub) = match range.split_once('/') {
            Some((t, s)) => (t.trim(), s.trim()),
            None if range == "*" => ("*", "*"),
            None => continue,
        };
        let mut clause = Clause {
            ty,
            sub,
            q: 1.0,
            params: Vec::new(),
        };
        for p in pieces {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
            if k == "q" {
                clause.q = v.parse().unwrap_or(0.0);
            } else {
                clause.params.push((k, v));
            }
        }
        out.push(clause);
    }
    let rank = |c: &Clause<'_>| (u8::from(c.ty != "*"), u8::from(c.sub != "*"));
    out.sort_by(|a, b| b.q.total_cmp(&a.q).then_with(|| rank(b).cmp(&rank(a))));
    out
}

fn include_object(query: &Query) -> Result<Include, ApiError> {
    match param(query, "includeObject").unwrap_or_default() {
        "" | "Metadata" => Ok(Include::Metadata),
        "Object" => Ok(Include::Object),
        "None" => Ok(Include::None),
        other => Err(ApiError::bad_request(format!(
            "Unable to convert to Table as requested: includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
        ))),
    }
}

/// Negotiates the response of a get, list or watch: the first acceptable clause of `Accept`
/// wins; none acceptable is `406 NotAcceptable`, as on a real API server.
pub(crate) fn negotiate(accept: Option<&str>, query: &Query) -> Result<Target, ApiError> {
    let header = accept.unwrap_or_default().trim();
    if header.is_empty() {
        return Ok(Target::Plain);
    }
    for clause in parse_accept(header) {
        let textual = match (clause.ty, clause.sub) {
            ("application", "json" | "yaml") | ("application" | "*", "*") => true,
            ("application", "vnd.kubernetes.protobuf") => false,
            _ => continue,
        };
        let (kind, group, version) = (clause.param("as"), clause.param("g"), clause.param("v"));
        if kind.is_none() && group.is_none() && version.is_none() {
            return Ok(Target::Plain);
        }
        let version: &'static str = match (group, version) {
            (Some("meta.k8s.io"), Some("v1")) => "v1",
            (Some("meta.k8s.io"), Some("v1beta1")) => "v1beta1",
            _ => continue,
        };
        match kind {
            // Tables are served in JSON and YAML only.
            Some("Table") if textual => {
                return Ok(Target::Table {
                    version,
                    include: include_object(query)?,
                });
            }
            Some(k @ ("PartialObjectMetadata" | "PartialObjectMetadataList")) => {
                return Ok(Target::Partial {
                    version,
                    list: k == "PartialObjectMetadataList",
                });
            }
            _ => {}
        }
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        format!("only the following media types are accepted: {SERVED_MEDIA_TYPES}"),
    ))
}

/// A simple JSONPath, as CRD printer columns allow: `.a.b`, `.a[0].b`, `.a['b.c']`, `.a.b\.c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

impl JsonPath {
    /// Parses a path; `None` when it is not a simple path.
    pub(crate) fn parse(path: &str) -> Option<JsonPath> {
        let mut steps = Vec::new();
        let mut chars = path.trim().chars().peekable();
        chars.peek()?;
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    let mut field = String::new();
                    while let Some(&n) = chars.peek() {
                        match n {
                            '.' | '[' => break,
                            '\\' => {
                                chars.next();
                                field.push(chars.next()?);
                            }
                            _ => {
                                field.push(n);
                                chars.next();
                            }
                        }
                    }
                    if field.is_empty() {
                        return None;
                    }
                    steps.push(Step::Field(field));
                }
                '[' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next()? {
                            ']' => break,
                            x => inner.push(x),
                        }
                    }
                    let inner = inner.trim();
                    let quoted = inner
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                    match quoted {
                        Some(name) if !name.is_empty() => steps.push(Step::Field(name.to_owned())),
                        Some(_) => return None,
                        None => steps.push(Step::Index(inner.parse().ok()?)),
                    }
                }
                _ => return None,
            }
        }
        Some(JsonPath(steps))
    }

    /// The value at the path, if every step exists.
    fn find<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(v, |cur, step| match step {
            Step::Field(f) => cur.as_object()?.get(f),
            Step::Index(i) => cur.as_array()?.get(*i),
        })
    }
}

/// Go's `duration.HumanDuration`: ~2–3 significant figures; more than a second in the future is
/// `<invalid>`.
pub(crate) fn human_duration(d: time::Duration) -> String {
    let seconds = d.whole_seconds();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.whole_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.whole_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// `metav1.Time` from a query-parameter-style string (empty or `null` is the zero time, `None`),
/// or an error for an unparsable one.
fn parse_meta_time(s: &str) -> Result<Option<OffsetDateTime>, ()> {
    match s {
        "" | "null" => Ok(None),
        s => parse_time(s).map(Some).ok_or(()),
    }
}

/// The printers' `translateTimestampSince`: an age, or `<unknown>` for no timestamp.
fn age(now: OffsetDateTime, ts: Option<OffsetDateTime>) -> String {
    match ts {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_owned(),
    }
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn created(obj: &Value) -> Option<OffsetDateTime> {
    parse_time(str_at(obj, "/metadata/creationTimestamp"))
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column("Name", "string", "name", NAME_DESCRIPTION, 0)
}

/// One CRD printer column.
#[derive(Debug, Clone)]
pub(crate) struct CrdColumn {
    definition: Value,
    ty: String,
    path: Option<JsonPath>,
}

/// How objects of one resource become rows.
#[derive(Debug, Clone)]
pub(crate) enum Convertor {
    /// A custom resource: `Name` and its CRD's printer columns.
    Crd(Vec<CrdColumn>),
    /// The pod printer.
    Pod,
    /// The namespace printer.
    Namespace,
    /// The (cluster) role binding printer.
    RoleBinding {
        /// ClusterRoleBinding rather than RoleBinding.
        cluster: bool,
    },
    /// The API server's default: `Name`, `Created At`.
    Default,
}

impl Convertor {
    /// The convertor for `def`; `crds` are the stored CustomResourceDefinitions.
    pub(crate) fn for_resource(def: &ResourceDef, crds: &[Value]) -> Convertor {
        let is_custom = crds.iter().any(|c| {
            str_at(c, "/spec/group") == def.group && str_at(c, "/spec/names/plural") == def.plural
        });
        if is_custom {
            let columns = crate::crd::printer_columns(crds, def)
                .into_iter()
                .map(|c| {
                    let path = str_at(&c, "/jsonPath");
                    CrdColumn {
                        definition: column(
                            str_at(&c, "/name"),
                            str_at(&c, "/type"),
                            str_at(&c, "/format"),
                            match str_at(&c, "/description") {
                                "" => format!(
                                    "Custom resource definition column (in JSONPath format): {path}"
                                ),
                                d => d.to_owned(),
                            }
                            .as_str(),
                            c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        ),
                        ty: str_at(&c, "/type").to_owned(),
                        path: JsonPath::parse(path),
                    }
                })
                .collect();
            return Convertor::Crd(columns);
        }
        match (def.group, def.plural) {
            ("", "pods") => Convertor::Pod,
            ("", "namespaces") => Convertor::Namespace,
            ("rbac.authorization.k8s.io", "rolebindings") => {
                Convertor::RoleBinding { cluster: false }
            }
            ("rbac.authorization.k8s.io", "clusterrolebindings") => {
                Convertor::RoleBinding { cluster: true }
            }
            _ => Convertor::Default,
        }
    }

    /// `columnDefinitions`.
    fn columns(&self) -> Vec<Value> {
        match self {
            Convertor::Crd(cols) => std::iter::once(name_column())
                .chain(cols.iter().map(|c| c.definition.clone()))
                .collect(),
            Convertor::Pod => vec![
                name_column(),
                column(
                    "Ready",
                    "string",
                    "",
                    "The aggregate readiness state of this pod for accepting traffic.",
                    0,
                ),
                column(
                    "Status",
                    "string",
                    "",
                    "The aggregate status of the containers in this pod.",
                    0,
                ),
                column(
                    "Restarts",
                    "string",
                    "",
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                    0,
                ),
                column("Age", "string", "", CREATION_TIMESTAMP_DESCRIPTION, 0),
                column(
                    "IP",
                    "string",
                    "",
                    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                    1,
                ),
                column(
                    "Node",
                    "string",
                    "",
                    "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
                    1,
                ),
                column(
                    "Nominated Node",
                    "string",
                    "",
                    "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
                    1,
                ),
                column(
                    "Readiness Gates",
                    "string",
                    "",
                    "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
                    1,
                ),
            ],
            Convertor::Namespace => vec![
                name_column(),
                column("Status", "string", "", "The status of the namespace", 0),
                column("Age", "string", "", CREATION_TIMESTAMP_DESCRIPTION, 0),
            ],
            Convertor::RoleBinding { cluster } => {
                let (role, kind) = if *cluster {
                    (
                        "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
                        "clusterRoleBinding",
                    )
                } else {
                    (
                        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
                        "roleBinding",
                    )
                };
                vec![
                    name_column(),
                    column("Role", "string", "", role, 0),
                    column("Age", "string", "", CREATION_TIMESTAMP_DESCRIPTION, 0),
                    column("Users", "string", "", &format!("Users in the {kind}"), 1),
                    column("Groups", "string", "", &format!("Groups in the {kind}"), 1),
                    column(
                        "ServiceAccounts",
                        "string",
                        "",
                        &format!("ServiceAccounts in the {kind}"),
                        1,
                    ),
                ]
            }
            Convertor::Default => vec![
                name_column(),
                column("Created At", "date", "", CREATION_TIMESTAMP_DESCRIPTION, 0),
            ],
        }
    }

    /// The cells of one object's row, and the row's conditions (pods that have completed).
    fn row(&self, obj: &Value, now: OffsetDateTime) -> (Vec<Value>, Option<Value>) {
        let name = Value::from(str_at(obj, "/metadata/name"));
        match self {
            Convertor::Crd(cols) => {
                let mut cells = vec![name];
                cells.extend(cols.iter().map(|c| crd_cell(c, obj, now)));
                (cells, None)
            }
            Convertor::Pod => pod_row(obj, now),
            Convertor::Namespace => (
                vec![
                    name,
                    str_at(obj, "/status/phase").into(),
                    age(now, created(obj)).into(),
                ],
                None,
            ),
            Convertor::RoleBinding { .. } => {
                let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
                for s in obj
                    .get("subjects")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let n = str_at(s, "/name");
                    match str_at(s, "/kind") {
                        "ServiceAccount" => sas.push(format!("{}/{n}", str_at(s, "/namespace"))),
                        "User" => users.push(n.to_owned()),
                        "Group" => groups.push(n.to_owned()),
                        _ => {}
                    }
                }
                (
                    vec![
                        name,
                        format!(
                            "{}/{}",
                            str_at(obj, "/roleRef/kind"),
                            str_at(obj, "/roleRef/name")
                        )
                        .into(),
                        age(now, created(obj)).into(),
                        users.join(", ").into(),
                        groups.join(", ").into(),
                        sas.join(", ").into(),
                    ],
                    None,
                )
            }
            Convertor::Default => {
                let ts = created(obj)
                    .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok())
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned());
                (vec![name, ts.into()], None)
            }
        }
    }
}

/// One CRD column's cell, as the apiextensions table convertor computes it.
fn crd_cell(c: &CrdColumn, obj: &Value, now: OffsetDateTime) -> Value {
    let Some(v) = c.path.as_ref().and_then(|p| p.find(obj)) else {
        return Value::Null;
    };
    match (c.ty.as_str(), v) {
        (_, Value::Null) => Value::Null,
        // A string column prints any value: strings as they are, objects and arrays as JSON.
        ("string", Value::String(s)) => s.as_str().into(),
        ("string", other) => other.to_string().into(),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, Value::from),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(b)) => (*b).into(),
        ("date", Value::String(s)) => match parse_meta_time(s) {
            Ok(t) => age(now, t).into(),
            Err(()) => "<invalid>".into(),
        },
        _ => Value::Null,
    }
}

/// The pod printer's row (kube-sim runs no init containers, so they are not considered).
fn pod_row(pod: &Value, now: OffsetDateTime) -> (Vec<Value>, Option<Value>) {
    let status = pod.get("status").unwrap_or(&Value::Null);
    let phase = str_at(status, "/phase");
    let mut reason = match str_at(status, "/reason") {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    let conditions: Vec<&Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if conditions
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_owned();
    }
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let (mut ready, mut restarts, mut has_running) = (0usize, 0i64, false);
    let mut last_restart: Option<OffsetDateTime> = None;
    let statuses: Vec<&Value> = status
        .get("containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    for c in statuses.iter().rev() {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = parse_time(str_at(c, "/lastState/terminated/finishedAt"))
            && last_restart.is_none_or(|l| l < t)
        {
            last_restart = Some(t);
        }
        let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
        if !str_at(c, "/state/waiting/reason").is_empty() {
            reason = str_at(c, "/state/waiting/reason").to_owned();
        } else if let Some(t) = terminated {
            reason = match (
                str_at(t, "/reason"),
                t.get("signal").and_then(Value::as_i64),
            ) {
                ("", Some(sig)) if sig != 0 => format!("Signal:{sig}"),
                ("", _) => format!(
                    "ExitCode:{}",
                    t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                ),
                (r, _) => r.to_owned(),
            };
        } else if c.get("ready").and_then(Value::as_bool) == Some(true)
            && c.pointer("/state/running").is_some_and(Value::is_object)
        {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        let pod_ready = conditions
            .iter()
            .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True");
        reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        if str_at(status, "/reason") == "NodeLost" {
            reason = "Unknown".to_owned();
        } else if !matches!(phase, "Succeeded" | "Failed") {
            reason = "Terminating".to_owned();
        }
    }
    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", age(now, Some(t))),
        _ => restarts.to_string(),
    };
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_owned()
        } else {
            s.to_owned()
        }
    };
    let gates: Vec<&str> = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|g| str_at(g, "/conditionType"))
        .collect();
    let gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| str_at(c, "/type") == **g)
                    .is_some_and(|c| str_at(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    let cells = vec![
        str_at(pod, "/metadata/name").into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        age(now, created(pod)).into(),
        or_none(str_at(status, "/podIPs/0/ip")).into(),
        or_none(str_at(pod, "/spec/nodeName")).into(),
        or_none(str_at(status, "/nominatedNodeName")).into(),
        gates.into(),
    ];
    let row_conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    };
    (cells, row_conditions)
}

/// `meta.k8s.io/{version}` `PartialObjectMetadata` of a (typed) object.
pub(crate) fn partial(obj: &Value, version: &str) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"),
           "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

/// `meta.k8s.io/{version}` `PartialObjectMetadataList`.
pub(crate) fn partial_list(items: &[Value], resource_version: &str, version: &str) -> Value {
    let items: Vec<Value> = items.iter().map(|o| partial(o, version)).collect();
    json!({"kind": "PartialObjectMetadataList", "apiVersion": format!("meta.k8s.io/{version}"),
           "metadata": {"resourceVersion": resource_version}, "items": items})
}

/// A Table of (typed) objects. Without `headers` (watch events after the first), the
/// `columnDefinitions` are `null`, as the API server sends them.
pub(crate) fn table(
    convertor: &Convertor,
    objects: &[Value],
    resource_version: &str,
    version: &str,
    include: Include,
    headers: bool,
) -> Value {
    let now = OffsetDateTime::now_utc();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let (cells, conditions) = convertor.row(obj, now);
            let mut row = Map::new();
            row.insert("cells".into(), cells.into());
            if let Some(c) = conditions {
                row.insert("conditions".into(), c);
            }
            let object = match include {
                Include::Metadata => partial(obj, version),
                Include::Object => obj.clone(),
                Include::None => Value::Null,
            };
            row.insert("object".into(), object);
            Value::Object(row)
        })
        .collect();
    let columns = if headers {
        Value::from(convertor.columns())
    } else {
        Value::Null
    };
    json!({"kind": "Table", "apiVersion": format!("meta.k8s.io/{version}"),
           "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn negotiates_like_the_api_server() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(kubectl), &q(&[])).unwrap(),
            Target::Table {
                version: "v1",
                include: Include::Metadata
            }
        );
        assert_eq!(
            negotiate(
                Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
                &q(&[("includeObject", "None")])
            )
            .unwrap(),
            Target::Table {
                version: "v1beta1",
                include: Include::None
            }
        );
        // An unknown Table version falls through to the next clause, or to 406.
        assert_eq!(
            negotiate(
                Some("application/json;as=Table;v=v9;g=meta.k8s.io, application/json"),
                &q(&[])
            )
            .unwrap(),
            Target::Plain
        );
        assert_eq!(
            negotiate(
                Some("application/json;as=Table;v=v9;g=meta.k8s.io"),
                &q(&[])
            )
            .unwrap_err()
            .code,
            406
        );
        assert_eq!(negotiate(Some("text/html"), &q(&[])).unwrap_err().code, 406);
        // q-values order the clauses; protobuf is served (kube-sim answers it in JSON).
        assert_eq!(
            negotiate(
                Some("application/json;q=0.5, application/json;as=Table;v=v1;g=meta.k8s.io"),
                &q(&[])
            )
            .unwrap(),
            Target::Table {
                version: "v1",
                include: Include::Metadata
            }
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*"), &q(&[])).unwrap(),
            Target::Plain
        );
        assert_eq!(negotiate(None, &q(&[])).unwrap(), Target::Plain);
        assert_eq!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                &q(&[])
            )
            .unwrap(),
            Target::Partial {
                version: "v1",
                list: true
            }
        );
        let e = negotiate(Some(kubectl), &q(&[("includeObject", "All")])).unwrap_err();
        assert_eq!(e.code, 400, "{}", e.message);
    }

    #[test]
    fn simple_json_paths() {
        let v = json!({"spec": {"a.b": 1, "list": [{"x": "y"}], "s": "t"}});
        let get = |p: &str| JsonPath::parse(p).unwrap().find(&v).cloned();
        assert_eq!(get(".spec.s"), Some(json!("t")));
        assert_eq!(get(".spec.list[0].x"), Some(json!("y")));
        assert_eq!(get(".spec['a.b']"), Some(json!(1)));
        assert_eq!(get(r".spec.a\.b"), Some(json!(1)));
        assert_eq!(get(".spec.missing.deeper"), None);
        assert_eq!(get(".spec.list[3]"), None);
        for bad in ["", "spec", ".spec..a", ".spec[*]", ".spec[?(@.x)]", ".a["] {
            assert!(JsonPath::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn human_durations_match_go() {
        let s = time::Duration::seconds;
        for (d, want) in [
            (s(-2), "<invalid>"),
            (s(-1), "0s"),
            (s(0), "0s"),
            (s(119), "119s"),
            (s(120), "2m"),
            (s(125), "2m5s"),
            (s(10 * 60 + 5), "10m"),
            (s(179 * 60), "179m"),
            (s(3 * 3600), "3h"),
            (s(3 * 3600 + 60), "3h1m"),
            (s(8 * 3600 + 60), "8h"),
            (s(48 * 3600), "2d"),
            (s(50 * 3600), "2d2h"),
            (s(8 * 86400), "8d"),
            (s(2 * 365 * 86400), "2y"),
            (s(2 * 365 * 86400 + 86400), "2y1d"),
            (s(9 * 365 * 86400), "9y"),
        ] {
            assert_eq!(human_duration(d), want, "{d}");
        }
    }

    #[test]
    fn crd_cells_follow_the_column_types() {
        let col = |ty: &str, path: &str| CrdColumn {
            definition: Value::Null,
            ty: ty.to_owned(),
            path: JsonPath::parse(path),
        };
        let now = OffsetDateTime::now_utc();
        let past = (now - time::Duration::minutes(30))
            .format(&Rfc3339)
            .unwrap();
        let future = (now + time::Duration::hours(1)).format(&Rfc3339).unwrap();
        let obj = json!({"s": "x", "n": 3, "f": 2.5, "b": true, "o": {"k": 1}, "past": past,
                         "future": future, "bad": "yesterday", "empty": ""});
        let cell = |ty: &str, path: &str| crd_cell(&col(ty, path), &obj, now);
        assert_eq!(cell("string", ".s"), json!("x"));
        assert_eq!(cell("string", ".n"), json!("3"));
        assert_eq!(cell("string", ".o"), json!("{\"k\":1}"));
        assert_eq!(cell("string", ".missing"), Value::Null);
        assert_eq!(cell("integer", ".f"), json!(2));
        assert_eq!(cell("integer", ".s"), Value::Null);
        assert_eq!(cell("number", ".n"), json!(3.0));
        assert_eq!(cell("boolean", ".b"), json!(true));
        assert_eq!(cell("date", ".past"), json!("30m"));
        assert_eq!(cell("date", ".future"), json!("<invalid>"));
        assert_eq!(cell("date", ".bad"), json!("<invalid>"));
        assert_eq!(cell("date", ".empty"), json!("<unknown>"));
    }

    #[test]
    fn pod_rows_read_like_the_pod_printer() {
        let now = OffsetDateTime::now_utc();
        let created = (now - time::Duration::hours(2)).format(&Rfc3339).unwrap();
        let finished = (now - time::Duration::minutes(5)).format(&Rfc3339).unwrap();
        let pod = json!({
            "metadata": {"name": "api-0", "creationTimestamp": created},
            "spec": {"nodeName": "kube-sim", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 2,
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": finished}},
                     "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}});
        let (cells, conditions) = pod_row(&pod, now);
        assert_eq!(
            cells,
            json!([
                "api-0",
                "1/2",
                "Error",
                "2 (5m ago)",
                "120m",
                "127.0.0.1",
                "kube-sim",
                "<none>",
                "<none>"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        assert!(conditions.is_none());
        assert_eq!(Convertor::Pod.columns().len(), cells.len());
    }
}
