//! The API server's HTTP surface: discovery, get/list/watch/create/replace/
//! delete on the stored kinds, TokenRequest and TokenReview, each behind the
//! RBAC check, with errors as Kubernetes `Status` objects.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::SinkExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use super::auth::{self, Access, Caller, TokenClaims};
use super::kinds::{self, Kind};
use super::store::{Selector, StoreError};

/// A response body: a whole JSON document or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body read.
const MAX_BODY: usize = 1 << 20;
/// Longest watch the server keeps open (clients ask for less).
const MAX_WATCH: Duration = Duration::from_secs(1800);

/// Answers one request from `caller`.
pub async fn handle(shared: Arc<Shared>, caller: Caller, req: Request<Incoming>) -> Response<Body> {
    let path: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["healthz" | "readyz" | "livez"] => text(StatusCode::OK, "ok"),
        ["version"] => document(StatusCode::OK, &version()),
        _ if caller == Caller::Anonymous => status(401, "Unauthorized", "Unauthorized"),
        ["api"] => document(StatusCode::OK, &kinds::core_versions(&shared.address)),
        ["apis"] => document(StatusCode::OK, &kinds::group_list()),
        ["api", v] => discovery("", v),
        ["apis", g, v] => discovery(g, v),
        ["api", "v1", rest @ ..] => resource(&shared, &caller, req, "", "v1", rest, &query).await,
        ["apis", g, v, rest @ ..] => resource(&shared, &caller, req, g, v, rest, &query).await,
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn discovery(group: &str, version: &str) -> Response<Body> {
    match kinds::resource_list(group, version) {
        Some(list) => document(StatusCode::OK, &list),
        None => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-probemesh-lab", "platform": "linux/amd64"})
}

/// What a resource path names.
struct Target<'a> {
    kind: Kind,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn parse_target<'a>(group: &str, version: &str, rest: &[&'a str]) -> Option<Target<'a>> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if Kind::from_path(group, version, plural).is_some_and(Kind::namespaced) =>
        {
            (Some(*ns), [&[*plural][..], more].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let kind = Kind::from_path(group, version, rest.first()?)?;
    Some(Target {
        kind,
        namespace,
        name: rest.get(1).copied(),
        subresource: rest.get(2).copied(),
    })
    .filter(|_| rest.len() <= 3)
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: &Shared,
    caller: &Caller,
    req: Request<Incoming>,
    group: &str,
    version: &str,
    rest: &[&str],
    query: &[(String, String)],
) -> Response<Body> {
    let param = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    if (group, version, rest)
        == (
            kinds::TOKEN_REVIEWS.0,
            kinds::TOKEN_REVIEWS.1,
            &[kinds::TOKEN_REVIEWS.2][..],
        )
    {
        let access = Access {
            verb: "create",
            group,
            resource: "tokenreviews",
        };
        if req.method() != Method::POST {
            return status(405, "MethodNotAllowed", "tokenreviews only accept POST");
        }
        if !auth::allowed(caller, access) {
            return status(
                403,
                "Forbidden",
                &auth::forbidden_message(caller, access, None),
            );
        }
        return match read_json(req).await {
            Ok(body) => token_review(shared, body),
            Err(e) => e,
        };
    }
    let Some(target) = parse_target(group, version, rest) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let watching = matches!(param("watch"), Some("1" | "true"));
    let table = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(kinds::wants_table);
    let verb = match (req.method().clone(), target.name, watching) {
        (Method::GET, _, true) => "watch",
        (Method::GET, Some(_), false) => "get",
        (Method::GET, None, false) => "list",
        (Method::POST, _, _) => "create",
        (Method::PUT, Some(_), _) => "update",
        (Method::DELETE, Some(_), _) => "delete",
        (Method::PATCH, _, _) => {
            return status(
                405,
                "MethodNotAllowed",
                "the lab API server does not support PATCH: use PUT (kubectl replace)",
            );
        }
        _ => return status(405, "MethodNotAllowed", "method not allowed on this path"),
    };
    let resource = match target.subresource {
        Some(sub) => format!("{}/{sub}", target.kind.plural()),
        None => target.kind.plural().to_owned(),
    };
    let access = Access {
        verb,
        group,
        resource: &resource,
    };
    if !auth::allowed(caller, access) {
        return status(
            403,
            "Forbidden",
            &auth::forbidden_message(caller, access, target.namespace),
        );
    }
    let namespace = target.namespace.unwrap_or_default();
    let store = &shared.store;
    let answer = |r: Result<Value, StoreError>, code: StatusCode| match r {
        Ok(v) => document(code, &target.kind.stamp(v)),
        Err(e) => store_error(&e),
    };
    match (verb, target.name, target.subresource) {
        ("watch", _, None) => {
            let selector = match selector(param("labelSelector"), param("fieldSelector")) {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", &e),
            };
            let since = param("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| store.version());
            let timeout = param("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .map_or(MAX_WATCH, Duration::from_secs)
                .min(MAX_WATCH);
            let bookmarks = matches!(param("allowWatchBookmarks"), Some("1" | "true"));
            watch(
                shared,
                target.kind,
                target.namespace.map(str::to_owned),
                selector,
                since,
                bookmarks,
                timeout,
            )
        }
        ("list", None, None) => {
            let selector = match selector(param("labelSelector"), param("fieldSelector")) {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", &e),
            };
            let (items, rv) = store.list(target.kind, target.namespace, &selector);
            if table {
                return document(StatusCode::OK, &kinds::table(target.kind, &items, rv));
            }
            let items: Vec<Value> = items.into_iter().map(|v| target.kind.stamp(v)).collect();
            document(
                StatusCode::OK,
                &json!({
                    "kind": format!("{}List", target.kind.kind()),
                    "apiVersion": target.kind.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }),
            )
        }
        ("get", Some(name), None | Some("status")) => {
            answer(store.get(target.kind, namespace, name), StatusCode::OK)
        }
        ("create", None, None) => match read_json(req).await {
            Ok(body) => answer(
                store.create(target.kind, namespace, body),
                StatusCode::CREATED,
            ),
            Err(e) => e,
        },
        ("create", Some(sa), Some("token")) if target.kind == Kind::ServiceAccount => {
            match read_json(req).await {
                Ok(body) => token_request(shared, namespace, sa, &body),
                Err(e) => e,
            }
        }
        ("update", Some(name), None | Some("status")) => match read_json(req).await {
            Ok(body) => answer(
                store.replace(target.kind, namespace, name, body),
                StatusCode::OK,
            ),
            Err(e) => e,
        },
        ("delete", Some(name), None) => {
            answer(store.delete(target.kind, namespace, name), StatusCode::OK)
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

/// A list's or watch's label selector; field selectors are refused.
fn selector(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, String> {
    if fields.is_some_and(|f| !f.is_empty()) {
        return Err("fieldSelector is not supported by the lab API server".to_owned());
    }
    Selector::parse(labels.unwrap_or_default())
}

/// The watch stream: history after `since`, then live changes, bookmarks
/// when asked, until `timeout`, the client leaves or the server stops.
fn watch(
    shared: &Shared,
    kind: Kind,
    namespace: Option<String>,
    selector: Selector,
    since: u64,
    bookmarks: bool,
    timeout: Duration,
) -> Response<Body> {
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let started = shared.store.watch(kind, since);
    let mut stop = shared.stop.clone();
    let bookmark_every = shared.bookmark_every;
    tokio::spawn(async move {
        let line = |event_type: &str, object: Value| {
            let mut bytes = serde_json::to_vec(&json!({"type": event_type, "object": object}))
                .unwrap_or_default();
            bytes.push(b'\n');
            Ok(Frame::data(Bytes::from(bytes)))
        };
        let wanted = |e: &super::store::Event| {
            e.key.0 == kind
                && namespace.as_deref().is_none_or(|ns| ns == e.key.1)
                && selector.matches(&e.object)
        };
        let (replay, mut live) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(line("ERROR", status_object(&e))).await;
                return;
            }
        };
        let mut seen = since;
        for e in replay {
            seen = seen.max(e.rv);
            if wanted(&e)
                && tx
                    .send(line(e.kind.as_str(), kind.stamp(e.object.clone())))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        loop {
            let sent = tokio::select! {
                event = live.recv() => match event {
                    Ok(e) if e.rv > seen => {
                        seen = e.rv;
                        if wanted(&e) {
                            tx.send(line(e.kind.as_str(), kind.stamp(e.object.clone()))).await
                        } else {
                            Ok(())
                        }
                    }
                    Ok(_) => Ok(()),
                    Err(RecvError::Lagged(_)) => {
                        let gone = StoreError::Gone { asked: seen, oldest: seen + 1 };
                        let _ = tx.send(line("ERROR", status_object(&gone))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let object = kind.stamp(json!({"metadata": {"resourceVersion": seen.to_string()}}));
                    tx.send(line("BOOKMARK", object)).await
                }
                () = &mut deadline => return,
                _ = stop.changed() => return,
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(StreamBody::new(rx).boxed());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST .../serviceaccounts/NAME/token`: a token for the ServiceAccount,
/// bound to a pod when `boundObjectRef` names one.
fn token_request(shared: &Shared, namespace: &str, sa: &str, body: &Value) -> Response<Body> {
    let sa_object = match shared.store.get(Kind::ServiceAccount, namespace, sa) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    let spec = &body["spec"];
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| vec![auth::API_AUDIENCE.to_owned()]);
    let seconds = spec["expirationSeconds"].as_u64().unwrap_or(3600);
    if Duration::from_secs(seconds) < auth::MIN_TOKEN_LIFETIME {
        return status(
            422,
            "Invalid",
            "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        );
    }
    let mut claims = TokenClaims {
        namespace: namespace.to_owned(),
        service_account: sa.to_owned(),
        service_account_uid: sa_object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        audiences,
        expires: SystemTime::now() + Duration::from_secs(seconds),
        pod: None,
        node: None,
    };
    let bound = &spec["boundObjectRef"];
    if bound["kind"] == "Pod" {
        let name = bound["name"].as_str().unwrap_or_default();
        let pod = match shared.store.get(Kind::Pod, namespace, name) {
            Ok(p) => p,
            Err(e) => return store_error(&e),
        };
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if bound["uid"].as_str().is_some_and(|u| u != uid) {
            return status(
                409,
                "Conflict",
                &format!(
                    "the UID in the bound object reference ({}) does not match the UID in record ({uid})",
                    bound["uid"]
                ),
            );
        }
        let node = pod["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let node_uid = shared
            .store
            .get(Kind::Node, "", &node)
            .ok()
            .and_then(|n| n["metadata"]["uid"].as_str().map(str::to_owned))
            .unwrap_or_default();
        claims.pod = Some((name.to_owned(), uid));
        claims.node = (!node.is_empty()).then_some((node, node_uid));
    }
    let expires = super::store::rfc3339(claims.expires);
    let token = shared.tokens.mint(claims);
    document(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": namespace},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    )
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
fn token_review(shared: &Shared, body: Value) -> Response<Body> {
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let audiences: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let claims = shared.tokens.claims(token);
    let pod_uid = claims.as_ref().and_then(|c| {
        let (pod, _) = c.pod.as_ref()?;
        let p = shared.store.get(Kind::Pod, &c.namespace, pod).ok()?;
        p["metadata"]["uid"].as_str().map(str::to_owned)
    });
    let status = auth::review_status(
        claims.as_ref(),
        &audiences,
        SystemTime::now(),
        pod_uid.as_deref(),
    );
    document(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": body["spec"],
            "status": status,
        }),
    )
}

async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| status(413, "RequestEntityTooLarge", &format!("request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        status(
            400,
            "BadRequest",
            &format!("the body is not a JSON object: {e}"),
        )
    })
}

fn status_object(e: &StoreError) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": e.to_string(), "reason": e.reason(), "code": e.code(),
    })
}

fn store_error(e: &StoreError) -> Response<Body> {
    status(e.code(), e.reason(), &e.to_string())
}

/// A `Status` response.
pub fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let code_status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    document(
        code_status,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

fn document(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(serde_json::to_vec(value).unwrap_or_default())).boxed(),
    );
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_kinds_namespaces_and_subresources() {
        let t = parse_target(
            "",
            "v1",
            &["namespaces", "default", "pods", "web-0", "status"],
        )
        .expect("pod status");
        assert_eq!(
            (t.kind, t.namespace, t.name, t.subresource),
            (Kind::Pod, Some("default"), Some("web-0"), Some("status"))
        );
        let all = parse_target("", "v1", &["pods"]).expect("all pods");
        assert_eq!((all.kind, all.namespace), (Kind::Pod, None));
        let ns = parse_target("", "v1", &["namespaces", "default"]).expect("one namespace");
        assert_eq!((ns.kind, ns.name), (Kind::Namespace, Some("default")));
        let slices = parse_target(
            "discovery.k8s.io",
            "v1",
            &["namespaces", "kube-system", "endpointslices"],
        )
        .expect("slices");
        assert_eq!(
            (slices.kind, slices.namespace),
            (Kind::EndpointSlice, Some("kube-system"))
        );
        assert!(parse_target("", "v1", &["secrets"]).is_none());
        assert!(parse_target("", "v1", &["pods", "a", "b", "c"]).is_none());
    }
}
