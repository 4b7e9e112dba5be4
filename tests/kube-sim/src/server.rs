//! The HTTPS server: TLS accept loop, authentication, impersonation, authorization, audit, and
//! dispatch to the handlers. One handler for every path, like the API server's handler chain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, AuditRecord};
use crate::handlers;
use crate::rbac::{self, Attributes, UserInfo};
use crate::resources::{self, RequestInfo};
use crate::runtime::Runtime;
use crate::status::ApiError;
use crate::store::Store;

/// The shared state of one simulated cluster.
pub(crate) struct Sim {
    pub store: Store,
    pub runtime: Runtime,
    pub tokens: HashMap<String, UserInfo>,
    pub client_certs: Mutex<HashMap<Vec<u8>, UserInfo>>,
    pub audit: Option<AuditLog>,
}

/// The TLS peer of a connection.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    cert: Option<Vec<u8>>,
}

/// Serves connections until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    sim: Arc<Sim>,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let router = Router::new().fallback(handle).with_state(sim);
    loop {
        let (tcp, addr) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await;
            let Ok(Ok(tls)) = handshake else {
                return;
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            let svc = router.layer(Extension(Peer { addr, cert }));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc))
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn authenticate(sim: &Sim, peer: &Peer, headers: &HeaderMap) -> Option<UserInfo> {
    if let Some(auth) = header(headers, "authorization") {
        let token = auth.strip_prefix("Bearer ")?.trim();
        return sim.tokens.get(token).cloned();
    }
    let cert = peer.cert.as_ref()?;
    sim.client_certs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(cert)
        .cloned()
}

/// Applies `Impersonate-*` headers: the effective user, after checking the caller may impersonate.
fn impersonate(
    sim: &Sim,
    caller: &UserInfo,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, ApiError> {
    let user = header(headers, "impersonate-user");
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let uid = header(headers, "impersonate-uid");
    let has_extra = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-"));
    let Some(user) = user else {
        if !groups.is_empty() || uid.is_some() || has_extra {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, uid or extra without impersonating a user",
            ));
        }
        return Ok(None);
    };
    let check = |group: &str, resource: &str, name: &str, namespace: Option<&str>| {
        let a = Attributes {
            verb: "impersonate".into(),
            group: group.into(),
            resource: resource.into(),
            name: Some(name.into()),
            namespace: namespace.map(str::to_owned),
            ..Attributes::default()
        };
        if rbac::authorize(&sim.store, caller, &a) {
            Ok(())
        } else {
            Err(ApiError::new(
                403,
                "Forbidden",
                a.forbidden_message(&caller.username),
            ))
        }
    };
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => check("", "serviceaccounts", name, Some(ns))?,
        None => check("", "users", user, None)?,
    }
    for g in &groups {
        check("", "groups", g, None)?;
    }
    if let Some(uid) = uid {
        check("authentication.k8s.io", "uids", uid, None)?;
    }
    if has_extra {
        return Err(ApiError::new(
            403,
            "Forbidden",
            "impersonating user extras is not supported by kube-sim",
        ));
    }
    let mut info = UserInfo::new(user, groups);
    info.uid = uid.map(str::to_owned);
    Ok(Some(info))
}

fn new_audit_id() -> String {
    let a: u128 = rand::random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Query parameters as pairs.
pub(crate) type Query = Vec<(String, String)>;

/// Whether a Go-style boolean query parameter is set.
pub(crate) fn flag(q: &Query, name: &str) -> Result<bool, ApiError> {
    match q
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
    {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "invalid boolean value {v:?} for query parameter {name:?}"
        ))),
    }
}

/// A query parameter's value.
pub(crate) fn param<'a>(q: &'a Query, name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// What the handlers get for a request that passed authentication and authorization.
pub(crate) struct Ctx {
    pub sim: Arc<Sim>,
    pub info: RequestInfo,
    pub query: Query,
    pub user: UserInfo,
    pub parts: axum::http::request::Parts,
    pub body: Body,
}

async fn handle(
    State(sim): State<Arc<Sim>>,
    Extension(peer): Extension<Peer>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let audit_id = header(&parts.headers, "audit-id")
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(new_audit_id);
    let request_uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let query: Query =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let user_agent = header(&parts.headers, "user-agent")
        .unwrap_or_default()
        .to_owned();
    let mut info = RequestInfo {
        verb: parts.method.as_str().to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    let mut user = None;
    let mut impersonated = None;
    let mut decision = None;
    let result: Result<Response, ApiError> = async {
        let authed =
            authenticate(&sim, &peer, &parts.headers).ok_or_else(ApiError::unauthorized)?;
        user = Some(authed.clone());
        impersonated = impersonate(&sim, &authed, &parts.headers)?;
        let effective = impersonated.clone().unwrap_or(authed);
        let watch = flag(&query, "watch")?;
        info = resources::parse(parts.method.as_str(), parts.uri.path(), watch)?;
        let allowed = authorize(&sim, &effective, &info, parts.uri.path());
        decision = Some(allowed.is_ok());
        allowed?;
        let ctx = Ctx {
            sim: sim.clone(),
            info: info.clone(),
            query,
            user: effective,
            parts,
            body,
        };
        handlers::dispatch(ctx).await
    }
    .await;
    let (response, message) = match result {
        Ok(r) => (r, None),
        Err(e) => {
            let m = e.message.clone();
            (e.into_response(), Some(m))
        }
    };
    if let Some(audit) = &sim.audit {
        audit.write(&AuditRecord {
            audit_id: &audit_id,
            request_uri: &request_uri,
            info: &info,
            user: user.as_ref(),
            impersonated: impersonated.as_ref(),
            source_ip: &peer.addr.ip().to_string(),
            user_agent: &user_agent,
            code: response.status().as_u16(),
            decision,
            message: message.as_deref(),
        });
    }
    let mut response = response;
    if let Ok(v) = axum::http::HeaderValue::from_str(&audit_id) {
        response.headers_mut().insert("audit-id", v);
    }
    response
}

/// Authorizes the request. WebSocket streams (`pods/exec`, `pods/attach`, `pods/portforward`
/// requested with GET) need both `get` and `create`, as in Kubernetes 1.36.
fn authorize(sim: &Sim, user: &UserInfo, info: &RequestInfo, path: &str) -> Result<(), ApiError> {
    let verbs: Vec<&str> = if !info.is_resource {
        vec!["get"]
    } else if matches!(
        info.subresource.as_deref(),
        Some("exec" | "attach" | "portforward")
    ) && info.verb == "get"
    {
        vec!["create", "get"]
    } else {
        vec![info.verb.as_str()]
    };
    for verb in verbs {
        let a = if info.is_resource {
            Attributes {
                verb: verb.into(),
                group: info.group.clone(),
                resource: info.resource.clone(),
                subresource: info.subresource.clone(),
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                path: None,
            }
        } else {
            Attributes {
                verb: verb.into(),
                path: Some(path.to_owned()),
                ..Attributes::default()
            }
        };
        if !rbac::authorize(&sim.store, user, &a) {
            let mut e = ApiError::new(403, "Forbidden", a.forbidden_message(&user.username));
            if let Some(name) = &info.name {
                e.details = Some(serde_json::json!({"name": name, "kind": info.resource}));
            }
            return Err(e);
        }
    }
    Ok(())
}
