//! Request handlers: discovery, pods (get/list/watch, log, exec, attach, portforward), access
//! reviews, and the generic store behind namespaces, RBAC objects and AccessRequests.

use axum::body::Body;
use axum::extract::{FromRequestParts, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::object;
use crate::rbac::{self, Attributes, UserInfo};
use crate::resources::{self, ResourceDef};
use crate::runtime::{ContainerRef, LogOptions, PodRef};
use crate::server::{Ctx, flag, param};
use crate::status::ApiError;
use crate::store::{FieldSelector, LabelSelector};
use crate::streams;
use crate::table::{self, Convertor, Target};

/// The store key of CustomResourceDefinitions.
const CRD_KEY: &str = "customresourcedefinitions.apiextensions.k8s.io";

/// Largest request body accepted.
const MAX_BODY: usize = 3 * 1024 * 1024;

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, axum::Json(v)).into_response()
}

/// Routes an authorized request.
pub(crate) async fn dispatch(ctx: Ctx) -> Result<Response, ApiError> {
    if !ctx.info.is_resource {
        return discovery(ctx.parts.uri.path());
    }
    let info = &ctx.info;
    let def = resources::find(&info.group, &info.version, &info.resource)
        .ok_or_else(ApiError::no_route)?;
    if def.namespaced != info.namespace.is_some()
        && !(def.namespaced && info.name.is_none() && info.namespace.is_none())
    {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = &info.subresource
        && !def.subresources.contains(&sub.as_str())
    {
        return Err(ApiError::no_route());
    }
    if !def.verbs.contains(&info.verb.as_str()) && info.subresource.is_none() {
        return Err(ApiError::method_not_allowed(ctx.parts.method.as_str()));
    }
    match (def.plural, info.subresource.as_deref()) {
        ("selfsubjectaccessreviews" | "subjectaccessreviews", _) => access_review(ctx, def).await,
        ("pods", Some("log")) => pod_log(ctx),
        ("pods", Some("exec" | "attach" | "portforward")) => pod_stream(ctx).await,
        _ => stored(ctx, def).await,
    }
}

fn discovery(path: &str) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let v = match segs.as_slice() {
        ["version"] => json!({
            "major": "1", "minor": "36", "gitVersion": "v1.36.0-kube-sim", "gitCommit": "0000000",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
            "compiler": "gc", "platform": "linux/amd64"}),
        ["api"] => resources::api_versions(),
        ["api", v] => resources::resource_list("", v).ok_or_else(ApiError::no_route)?,
        ["apis"] => resources::api_group_list(),
        ["apis", g] => resources::api_group(g).ok_or_else(ApiError::no_route)?,
        ["apis", g, v] => resources::resource_list(g, v).ok_or_else(ApiError::no_route)?,
        ["healthz" | "livez" | "readyz"] => return Ok((StatusCode::OK, "ok").into_response()),
        _ => return Err(ApiError::no_route()),
    };
    Ok(json_response(StatusCode::OK, &v))
}

async fn read_json(body: Body) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            "the request body is too large",
        )
    })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(v)
}

fn with_type(mut obj: Value, def: &ResourceDef) -> Value {
    object::set(&mut obj, &["apiVersion"], def.api_version().into());
    object::set(&mut obj, &["kind"], def.kind.into());
    obj
}

/// Pods carry the runtime's live container statuses.
fn refresh_pod(ctx: &Ctx, mut pod: Value) -> Value {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(statuses) = ctx.sim.runtime.container_statuses(&ns, &name)
        && let Ok(v) = serde_json::to_value(statuses)
    {
        object::set(&mut pod, &["status", "containerStatuses"], v);
    }
    pod
}

fn store_key(def: &ResourceDef) -> String {
    def.qualified()
}

fn selectors(ctx: &Ctx) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(param(&ctx.query, "labelSelector").unwrap_or_default())?,
        FieldSelector::parse(param(&ctx.query, "fieldSelector").unwrap_or_default())?,
    ))
}

/// The table convertor for `def`, from the stored CRDs.
fn convertor(ctx: &Ctx, def: &ResourceDef) -> Convertor {
    let (crds, _) = ctx.sim.store.list(CRD_KEY, None);
    Convertor::for_resource(def, &crds)
}

/// What the requested object or list is called in a 406 for a mismatched PartialObjectMetadata.
fn go_type(def: &ResourceDef, list: bool) -> String {
    let list = if list { "List" } else { "" };
    format!("{}, Kind={}{list}", def.api_version(), def.kind)
}

/// One (typed) object, in the negotiated representation.
fn present_object(
    ctx: &Ctx,
    def: &ResourceDef,
    target: Target,
    obj: Value,
) -> Result<Value, ApiError> {
    match target {
        Target::Plain => Ok(obj),
        Target::Table { version, include } => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Ok(table::table(
                &convertor(ctx, def),
                &[obj],
                &rv,
                version,
                include,
                true,
            ))
        }
        Target::Partial {
            version,
            list: false,
        } => Ok(table::partial(&obj, version)),
        Target::Partial { list: true, .. } => Err(ApiError::new(
            406,
            "NotAcceptable",
            format!(
                "you requested PartialObjectMetadataList, but the requested object is not a list ({})",
                go_type(def, false)
            ),
        )),
    }
}

/// A list of (typed) objects, in the negotiated representation.
fn present_list(
    ctx: &Ctx,
    def: &ResourceDef,
    target: Target,
    items: Vec<Value>,
    rv: &str,
) -> Result<Value, ApiError> {
    match target {
        Target::Plain => Ok(
            json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(),
                   "metadata": {"resourceVersion": rv}, "items": items}),
        ),
        Target::Table { version, include } => Ok(table::table(
            &convertor(ctx, def),
            &items,
            rv,
            version,
            include,
            true,
        )),
        Target::Partial {
            version,
            list: true,
        } => Ok(table::partial_list(&items, rv, version)),
        Target::Partial { list: false, .. } => Err(ApiError::new(
            406,
            "NotAcceptable",
            format!(
                "you requested PartialObjectMetadata, but the requested object is a list ({})",
                go_type(def, true)
            ),
        )),
    }
}

async fn stored(ctx: Ctx, def: &'static ResourceDef) -> Result<Response, ApiError> {
    let key = store_key(def);
    let ns = ctx.info.namespace.clone().unwrap_or_default();
    let name = ctx.info.name.clone();
    let status_sub = ctx.info.subresource.as_deref() == Some("status");
    let target = match ctx.info.verb.as_str() {
        "get" | "list" | "watch" => {
            let accept = ctx
                .parts
                .headers
                .get("accept")
                .and_then(|v| v.to_str().ok());
            table::negotiate(accept, &ctx.query)?
        }
        _ => Target::Plain,
    };
    match (ctx.info.verb.as_str(), name) {
        ("get", Some(name)) => {
            let obj = ctx
                .sim
                .store
                .get(&key, &ns, &name)
                .ok_or_else(|| ApiError::not_found(&key, &name))?;
            let obj = if def.plural == "pods" {
                refresh_pod(&ctx, obj)
            } else {
                obj
            };
            let out = present_object(&ctx, def, target, with_type(obj, def))?;
            Ok(json_response(StatusCode::OK, &out))
        }
        ("list", None) => {
            let (ls, fs) = selectors(&ctx)?;
            let (items, rv) = ctx.sim.store.list(&key, ctx.info.namespace.as_deref());
            let items: Vec<Value> = items
                .into_iter()
                .filter(|o| ls.matches(o) && fs.matches(o))
                .map(|o| {
                    if def.plural == "pods" {
                        refresh_pod(&ctx, o)
                    } else {
                        o
                    }
                })
                .map(|o| with_type(o, def))
                .collect();
            let list = present_list(&ctx, def, target, items, &rv.to_string())?;
            Ok(json_response(StatusCode::OK, &list))
        }
        ("watch", name) => watch(ctx, def, name, target),
        ("create", None) => {
            let mut obj = read_json(ctx.body).await?;
            check_type(&obj, def)?;
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            validate_name(def, &name)?;
            if let Some(body_ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str)
                && def.namespaced
                && body_ns != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if def.namespaced && ctx.sim.store.get("namespaces", "", &ns).is_none() {
                return Err(ApiError::not_found("namespaces", &ns));
            }
            if def.subresources.contains(&"status")
                && let Some(o) = obj.as_object_mut()
            {
                o.remove("status");
            }
            if let Some(m) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let created = ctx.sim.store.create(&key, &ns, obj)?;
            Ok(json_response(StatusCode::CREATED, &with_type(created, def)))
        }
        ("update", Some(name)) => {
            let new = read_json(ctx.body).await?;
            check_type(&new, def)?;
            if new.pointer("/metadata/name").and_then(Value::as_str) != Some(name.as_str()) {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            let has_status = def.subresources.contains(&"status");
            let updated = ctx.sim.store.update(&key, &ns, &name, |cur| {
                Ok(split_status(cur, new.clone(), has_status, status_sub))
            })?;
            Ok(json_response(StatusCode::OK, &with_type(updated, def)))
        }
        ("patch", Some(name)) => {
            let ct = ctx
                .parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let ct_base = ct.split(';').next().unwrap_or_default().trim().to_owned();
            if !matches!(
                ct_base.as_str(),
                "application/merge-patch+json" | "application/strategic-merge-patch+json"
            ) {
                return Err(ApiError::unsupported_media_type(&ct));
            }
            let patch = read_json(ctx.body).await?;
            let has_status = def.subresources.contains(&"status");
            let updated = ctx.sim.store.update(&key, &ns, &name, |cur| {
                let mut next = cur.clone();
                merge_patch(&mut next, &patch);
                if patch.pointer("/metadata/resourceVersion").is_none()
                    && let Some(m) = next.pointer_mut("/metadata").and_then(Value::as_object_mut)
                {
                    m.remove("resourceVersion");
                }
                Ok(split_status(cur, next, has_status, status_sub))
            })?;
            Ok(json_response(StatusCode::OK, &with_type(updated, def)))
        }
        ("delete", Some(name)) => {
            let obj = ctx.sim.store.delete(&key, &ns, &name)?;
            Ok(json_response(StatusCode::OK, &with_type(obj, def)))
        }
        (_, _) => Err(ApiError::method_not_allowed(ctx.parts.method.as_str())),
    }
}

/// With a status subresource, the main resource ignores status changes and `/status` changes
/// only status (as the API server's strategies do).
fn split_status(current: &Value, mut next: Value, has_status: bool, status_sub: bool) -> Value {
    if !has_status {
        return next;
    }
    if status_sub {
        let mut out = current.clone();
        object::set(
            &mut out,
            &["status"],
            next.get("status").cloned().unwrap_or(Value::Null),
        );
        if let Some(rv) = next.pointer("/metadata/resourceVersion").cloned() {
            object::set(&mut out, &["metadata", "resourceVersion"], rv);
        } else if let Some(m) = out.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        out
    } else {
        match current.get("status") {
            Some(s) => object::set(&mut next, &["status"], s.clone()),
            None => {
                if let Some(o) = next.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        next
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn check_type(obj: &Value, def: &ResourceDef) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != def.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind {kind:?} of the request body does not match the resource {:?} (expected {:?})",
            def.plural, def.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != def.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the apiVersion {av:?} of the request body does not match {:?}",
            def.api_version()
        )));
    }
    Ok(())
}

fn validate_name(def: &ResourceDef, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid(
            def.kind,
            "",
            "metadata.name: Required value: name or generateName is required",
        ));
    }
    let ok = name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok || (def.group == "rbac.authorization.k8s.io" && name.contains('/')) {
        return Err(ApiError::invalid(
            def.kind,
            name,
            format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    Ok(())
}

fn watch(
    ctx: Ctx,
    def: &'static ResourceDef,
    name: Option<String>,
    target: Target,
) -> Result<Response, ApiError> {
    let (ls, mut fs) = selectors(&ctx)?;
    if let Some(n) = name {
        fs = FieldSelector::parse(&format!("metadata.name={n}"))?;
    }
    let since: u64 = match param(&ctx.query, "resourceVersion").unwrap_or("") {
        "" | "0" => 0,
        v => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
    };
    let timeout = match param(&ctx.query, "timeoutSeconds") {
        None => 1800,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {v:?}")))?,
    };
    let key = store_key(def);
    let ns = ctx.info.namespace.clone();
    let store_rv = ctx.sim.store.resource_version();
    // Without a resourceVersion a watch starts with the current state, as ADDED events.
    let (initial, mut rx) = if since == 0 {
        let (_, rx) = ctx.sim.store.watch(store_rv)?;
        let (items, _) = ctx.sim.store.list(&key, ns.as_deref());
        let evs: Vec<(String, Value)> =
            items.into_iter().map(|o| ("ADDED".to_owned(), o)).collect();
        (evs, rx)
    } else {
        let (past, rx) = ctx.sim.store.watch(since)?;
        let evs = past
            .into_iter()
            .filter(|e| e.resource == key && ns.as_ref().is_none_or(|n| *n == e.namespace))
            .map(|e| (e.kind.to_owned(), e.object))
            .collect();
        (evs, rx)
    };
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let table_convertor = matches!(target, Target::Table { .. }).then(|| convertor(&ctx, def));
    // As on the API server, each event's object is transformed; a Table carries its column
    // definitions in the first event only.
    let mut headers = true;
    let mut encode = move |kind: &str, obj: Value| -> Bytes {
        let obj = with_type(obj, def);
        let obj = match (target, &table_convertor) {
            (Target::Table { version, include }, Some(c)) => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let t = table::table(c, &[obj], &rv, version, include, headers);
                headers = false;
                t
            }
            (
                Target::Partial {
                    version,
                    list: false,
                },
                _,
            ) => table::partial(&obj, version),
            _ => obj,
        };
        let mut line = json!({"type": kind, "object": obj}).to_string();
        line.push('\n');
        Bytes::from(line)
    };
    let matches = move |o: &Value| ls.matches(o) && fs.matches(o);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(timeout));
        tokio::pin!(deadline);
        for (kind, obj) in initial {
            if matches(&obj) && tx.send(Ok(encode(&kind, obj))).await.is_err() {
                return;
            }
        }
        let mut last = store_rv.max(since);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                ev = rx.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= last || e.resource != key || ns.as_ref().is_some_and(|n| *n != e.namespace) {
                            continue;
                        }
                        last = e.rv;
                        if matches(&e.object) && tx.send(Ok(encode(e.kind, e.object))).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(
        out,
        |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
    );
    Ok((
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Resolves the container of a pod request: the `container` parameter, or the only container.
fn resolve_container(
    ctx: &Ctx,
    requested: Option<String>,
) -> Result<(String, String, String), ApiError> {
    let ns = ctx.info.namespace.clone().unwrap_or_default();
    let name = ctx.info.name.clone().unwrap_or_default();
    let pod = ctx
        .sim
        .store
        .get("pods", &ns, &name)
        .ok_or_else(|| ApiError::not_found("pods", &name))?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let container = match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(&c) => c,
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None => match containers.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        },
    };
    Ok((ns, name, container))
}

fn pod_log(ctx: Ctx) -> Result<Response, ApiError> {
    let q = &ctx.query;
    let num = |k: &str| -> Result<Option<u64>, ApiError> {
        match param(q, k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| Some(n.unsigned_abs()))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "PodLogOptions",
                        "",
                        format!("{k}: Invalid value: {v:?}: must be a non-negative integer"),
                    )
                }),
        }
    };
    let options = LogOptions {
        follow: flag(q, "follow")?,
        tail_lines: num("tailLines")?,
        since_seconds: num("sinceSeconds")?,
        timestamps: flag(q, "timestamps")?,
        previous: flag(q, "previous")?,
        limit_bytes: num("limitBytes")?,
        ..LogOptions::default()
    };
    let (ns, pod, container) = resolve_container(&ctx, param(q, "container").map(str::to_owned))?;
    let stream = ctx
        .sim
        .runtime
        .logs(&ns, &pod, &container, options)
        .map_err(runtime_error)?;
    Ok((
        StatusCode::OK,
        [("content-type", "text/plain")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn runtime_error(e: crate::runtime::RuntimeError) -> ApiError {
    let code = e.http_status();
    let reason = match code {
        400 => "BadRequest",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        _ => "InternalError",
    };
    ApiError::new(code, reason, e.to_string())
}

async fn pod_stream(ctx: Ctx) -> Result<Response, ApiError> {
    let Ctx {
        sim,
        info,
        query,
        parts,
        ..
    } = ctx;
    let raw = parts.uri.query().unwrap_or_default().to_owned();
    let mut parts = parts;
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|_| {
            ApiError::bad_request(
                "Upgrade request required (kube-sim speaks only WebSocket streams)",
            )
        })?;
    let offered = streams::offered_protocols(&parts.headers);
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let sub = info.subresource.clone().unwrap_or_default();
    let protocol = if sub == "portforward" {
        streams::negotiate_portforward_protocol(&offered)
    } else {
        streams::negotiate_protocol(&offered)
    }
    .ok_or_else(|| ApiError::bad_request(format!("unsupported streaming protocols {offered:?}")))?;
    let ws = ws.max_message_size(4 << 20).max_frame_size(4 << 20);
    let ctx2 = Ctx {
        sim: sim.clone(),
        info: info.clone(),
        query,
        user: UserInfo::new("", []),
        parts,
        body: Body::empty(),
    };
    let runtime = sim.runtime.clone();
    match sub.as_str() {
        "exec" => {
            let (container, options) = streams::parse_exec_query(&raw)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            if options.command.is_empty() {
                return Err(ApiError::bad_request("you must specify at least 1 command"));
            }
            let (ns, pod, container) = resolve_container(&ctx2, container)?;
            let target = ContainerRef::new(ns, pod, container);
            Ok(ws
                .protocols([protocol.as_str()])
                .on_upgrade(move |ws| streams::serve_exec(ws, protocol, runtime, target, options)))
        }
        "attach" => {
            let (container, options) = streams::parse_attach_query(&raw)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let (ns, pod, container) = resolve_container(&ctx2, container)?;
            let target = ContainerRef::new(ns, pod, container);
            Ok(ws.protocols([protocol.as_str()]).on_upgrade(move |ws| {
                streams::serve_attach(ws, protocol, runtime, target, options)
            }))
        }
        _ => {
            let ports = streams::parse_portforward_ports(&raw)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let ns = info.namespace.clone().unwrap_or_default();
            let name = info.name.clone().unwrap_or_default();
            if sim.store.get("pods", &ns, &name).is_none() {
                return Err(ApiError::not_found("pods", &name));
            }
            Ok(ws.protocols([protocol.as_str()]).on_upgrade(move |ws| {
                streams::serve_portforward(ws, protocol, runtime, PodRef::new(ns, name), ports)
            }))
        }
    }
}

async fn access_review(ctx: Ctx, def: &'static ResourceDef) -> Result<Response, ApiError> {
    if ctx.info.verb != "create" {
        return Err(ApiError::method_not_allowed(ctx.parts.method.as_str()));
    }
    let ct = ctx
        .parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut review = if ct.starts_with("application/vnd.kubernetes.protobuf") {
        let bytes = axum::body::to_bytes(ctx.body, MAX_BODY)
            .await
            .map_err(|_| {
                ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    "the request body is too large",
                )
            })?;
        crate::proto::decode_access_review(&bytes).ok_or_else(|| {
            ApiError::bad_request("the protobuf body of the request could not be decoded")
        })?
    } else {
        read_json(ctx.body).await?
    };
    check_type(&review, def)?;
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let subject = if def.plural == "subjectaccessreviews" {
        let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
        let groups: Vec<String> = spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if user.is_empty() && groups.is_empty() {
            return Err(ApiError::invalid(
                def.kind,
                "",
                "spec.user: Invalid value: \"\": at least one of user or group must be specified",
            ));
        }
        UserInfo {
            username: user.to_owned(),
            groups,
            uid: None,
        }
    } else {
        ctx.user.clone()
    };
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
    };
    let attrs = if let Some(ra) = spec.get("resourceAttributes") {
        Attributes {
            verb: s(ra, "verb").unwrap_or_default(),
            group: s(ra, "group").unwrap_or_default(),
            resource: s(ra, "resource").unwrap_or_default(),
            subresource: s(ra, "subresource"),
            namespace: s(ra, "namespace"),
            name: s(ra, "name"),
            path: None,
        }
    } else if let Some(nra) = spec.get("nonResourceAttributes") {
        Attributes {
            verb: s(nra, "verb").unwrap_or_default(),
            path: s(nra, "path"),
            ..Attributes::default()
        }
    } else {
        return Err(ApiError::invalid(
            def.kind,
            "",
            "spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    };
    let allowed = rbac::authorize(&ctx.sim.store, &subject, &attrs);
    let status = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by kube-sim"})
    } else {
        json!({"allowed": false})
    };
    object::set(&mut review, &["status"], status);
    Ok(json_response(StatusCode::CREATED, &with_type(review, def)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }
}
