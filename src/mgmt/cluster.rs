//! The management API in a cluster: management writes replicated through the metadata
//! group, the node list, and Warren's cluster operations (`cluster_status`,
//! `join_cluster`, `forget_cluster_node`).

use super::{bad_request, ApiError, ApiResult, B};
use crate::broker::Broker;
use crate::cluster::handle::{MetaCmd, MetaHandle};
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum::RequestExt;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest management request body replicated.
const MAX_BODY: usize = 64 << 20;

fn unavailable(reason: String) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: "cluster_unavailable",
        reason,
    }
}

/// Marks a request replayed from the metadata group's log ([`apply`]): it changes this
/// node only, never replicates again.
#[derive(Debug, Clone, Copy)]
pub struct Replayed;

/// The metadata group, when this request was made on this node of a cluster (not
/// replayed from the log): the handler replicates what it changed.
pub fn origin(b: &Broker, replayed: &Option<axum::Extension<Replayed>>) -> Option<MetaHandle> {
    match replayed {
        Some(_) => None,
        None => b.meta.get().cloned(),
    }
}

/// Replicates `cmds` in order; 503 when the cluster cannot commit one.
pub async fn replicate_cmds(meta: &MetaHandle, cmds: Vec<MetaCmd>) -> ApiResult<()> {
    for cmd in cmds {
        meta.replicate(cmd).await.map_err(unavailable)?;
    }
    Ok(())
}

/// Whether a management write changes definitions and goes through the metadata group
/// as itself (replayed on every node). `path` is relative to `/api`. Queue declares and
/// deletes and definitions imports are not: their handlers replicate what they made,
/// as an AMQP declare does ([`crate::channel::replicate::new_queue`]), so a queue gets
/// one home, one Raft group, one stream leader for the whole cluster.
pub fn replicated(method: &Method, path: &str) -> bool {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let put_or_delete = *method == Method::PUT || *method == Method::DELETE;
    match seg.first().copied() {
        Some(
            "vhosts" | "users" | "permissions" | "topic-permissions" | "vhost-limits"
            | "user-limits" | "policies" | "operator-policies",
        ) => put_or_delete && seg.len() >= 2,
        Some("exchanges") => put_or_delete && seg.len() == 3,
        Some("bindings") => *method == Method::POST || *method == Method::DELETE,
        _ => false,
    }
}

/// Middleware: a definition-changing request that succeeded here is replicated before
/// its response goes out (503 when the cluster cannot commit it).
pub async fn replicate(State(b): State<Arc<Broker>>, mut req: Request, next: Next) -> Response {
    let Some(meta) = b.meta.get().cloned() else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if !replicated(&method, req.uri().path()) {
        return next.run(req).await;
    }
    let user = if method == Method::PUT && req.uri().path().starts_with("/users/") {
        req.extract_parts::<axum::extract::Path<String>>()
            .await
            .ok()
            .map(|p: axum::extract::Path<String>| p.0)
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return bad_request("request body too large").into_response();
    };
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    let resp = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    if !resp.status().is_success() {
        return resp;
    }
    if let Some(u) = user.and_then(|name: String| b.user(&name)) {
        // The hash computed here, not the password: no plain password in the Raft log,
        // and the same salted hash on every node.
        text = json!({
            "password_hash": u.password_hash,
            "hashing_algorithm": u.hashing_algorithm.as_str(),
            "tags": u.tags,
        })
        .to_string();
    }
    let cmd = MetaCmd::Http {
        method: method.to_string(),
        path,
        body: text,
    };
    match meta.replicate(cmd).await {
        Ok(()) => resp,
        Err(e) => unavailable(e).into_response(),
    }
}

/// Runs a replicated request through `router` (the API without authentication).
pub async fn apply(
    router: axum::Router,
    method: &str,
    path: &str,
    body: String,
) -> Result<(), String> {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .extension(Replayed)
        .body(axum::body::Body::from(body))
        .map_err(|e| e.to_string())?;
    let resp = router.oneshot(req).await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{method} {path}: {}", resp.status()))
    }
}

/// `GET /api/nodes` in a cluster: every member, `running` from the liveness probes.
pub fn nodes(b: &Broker, me: Value) -> Option<Vec<Value>> {
    let meta = b.meta.get()?;
    let st = meta.status();
    Some(
        st.members
            .iter()
            .map(|m| {
                if m.name == st.node {
                    me.clone()
                } else {
                    json!({
                        "name": m.name,
                        "type": "disc",
                        "running": m.running,
                        "being_drained": false,
                        "cluster_links": [],
                    })
                }
            })
            .collect(),
    )
}

/// `GET /api/cluster-status` (Warren's): this node, the leader, the members.
pub async fn status(State(b): B) -> ApiResult {
    let Some(meta) = b.meta.get() else {
        let name = super::json::node_name(&b);
        return Ok(Json(json!({
            "node": name, "leader": Value::Null, "term": 0, "applied": 0,
            "members": [{"name": name, "addr": "", "running": true, "voter": true}],
        }))
        .into_response());
    };
    Ok(Json(meta.status()).into_response())
}

/// `POST /api/cluster/join` `{"node": "n1@127.0.0.1:25672"}`: this node asks that
/// node's cluster to take it in (`warren-ctl join_cluster`).
pub async fn join(State(b): B, Json(body): Json<Value>) -> ApiResult {
    let meta = b
        .meta
        .get()
        .ok_or_else(|| bad_request("this node runs without --cluster-nodes"))?;
    let seed = body
        .get("node")
        .and_then(|n| n.as_str())
        .ok_or_else(|| bad_request("node not given"))?;
    meta.join(seed.to_string()).await.map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/cluster/nodes/{name}` (`warren-ctl forget_cluster_node`).
pub async fn forget(State(b): B, Path(name): Path<String>) -> ApiResult {
    let meta = b
        .meta
        .get()
        .ok_or_else(|| bad_request("this node runs without --cluster-nodes"))?;
    meta.forget(name).await.map_err(bad_request)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_writes_are_replicated_and_nothing_else() {
        for (m, p) in [
            (Method::PUT, "/users/bob"),
            (Method::DELETE, "/vhosts/v1"),
            (Method::PUT, "/permissions/%2F/bob"),
            (Method::PUT, "/policies/%2F/p"),
            (Method::PUT, "/operator-policies/%2F/p"),
            (Method::PUT, "/topic-permissions/%2F/bob"),
            (Method::DELETE, "/user-limits/bob/max-connections"),
            (Method::PUT, "/exchanges/%2F/x"),
            (Method::POST, "/bindings/%2F/e/x/q/q"),
        ] {
            assert!(replicated(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::GET, "/users/bob"),
            (Method::POST, "/exchanges/%2F/x/publish"),
            (Method::POST, "/queues/%2F/q/get"),
            (Method::DELETE, "/queues/%2F/q/contents"),
            (Method::DELETE, "/connections/c1"),
            (Method::POST, "/cluster/join"),
            (Method::PUT, "/users"),
            // Replicated by their handlers, as AMQP declares.
            (Method::PUT, "/queues/%2F/q"),
            (Method::DELETE, "/queues/%2F/q"),
            (Method::POST, "/definitions"),
            (Method::POST, "/definitions/%2F"),
        ] {
            assert!(!replicated(&m, p), "{m} {p}");
        }
    }
}
