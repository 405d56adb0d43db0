//! The broker's registries through the management API: vhosts, users, permissions, vhost
//! limits and policies.

use super::{body, vhost};
use crate::mgmt::{bad_request, created_or_updated, not_found, ApiResult, B};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::{Map, Value};

/// PUT /api/vhosts/{name}, with an optional `default_queue_type` (`classic`, `quorum`,
/// `stream`; RabbitMQ 3.11+ reads it here, 3.10.8 only through `rabbitmqctl add_vhost
/// --default-queue-type`).
pub async fn put_vhost(axum::extract::State(b): B, Path(v): Path<String>, raw: Bytes) -> ApiResult {
    let m = body(&raw)?;
    let dqt = match m.get("default_queue_type").and_then(|t| t.as_str()) {
        None | Some("undefined") => None,
        Some(t @ ("classic" | "quorum" | "stream")) => Some(t.to_string()),
        Some(t) => {
            return Err(bad_request(format!(
                "unsupported default queue type '{t}' (classic, quorum or stream)"
            )))
        }
    };
    let existed = b.vhost(&v).is_some();
    let vh = b.add_vhost(&v);
    if dqt.is_some() {
        vh.set_default_queue_type(dqt);
    }
    b.definitions_changed.notify_one();
    Ok(created_or_updated(!existed))
}

pub async fn delete_vhost(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    vhost(&b, &v)?;
    b.delete_vhost(&v).map_err(|e| bad_request(e.to_string()))?;
    b.policies.delete_vhost(&v);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Tags as a list or RabbitMQ's comma-separated string.
fn tags(m: &Map<String, Value>) -> Vec<String> {
    match m.get("tags") {
        Some(Value::String(s)) => crate::auth::parse_tags(s),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

pub async fn put_user(
    axum::extract::State(b): B,
    Path(name): Path<String>,
    raw: Bytes,
) -> ApiResult {
    use crate::auth::{HashingAlgorithm, User};
    let m = body(&raw)?;
    let user = if let Some(p) = m.get("password").and_then(|p| p.as_str()) {
        User::with_password(&name, p, tags(&m))
    } else if let Some(h) = m.get("password_hash").and_then(|p| p.as_str()) {
        let alg = match m.get("hashing_algorithm").and_then(|a| a.as_str()) {
            Some(a) => HashingAlgorithm::parse(a)
                .ok_or_else(|| bad_request(format!("unknown hashing algorithm '{a}'")))?,
            None => HashingAlgorithm::Sha256,
        };
        User::with_hash(&name, h, alg, tags(&m))
    } else {
        return Err(bad_request("Must specify a password or a password hash."));
    };
    Ok(created_or_updated(b.put_user(user)))
}

pub async fn delete_user(axum::extract::State(b): B, Path(name): Path<String>) -> ApiResult {
    b.delete_user(&name).map_err(|_| not_found())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn put_permission(
    axum::extract::State(b): B,
    Path((v, user)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    vhost(&b, &v)?;
    if b.user(&user).is_none() {
        return Err(bad_request(format!("user '{user}' does not exist")));
    }
    let m = body(&raw)?;
    let get = |k: &str| m.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let existed = b
        .permissions()
        .iter()
        .any(|(u, vh, _)| *u == user && *vh == v);
    b.set_permissions(&user, &v, &get("configure"), &get("write"), &get("read"))
        .map_err(|e| bad_request(e.to_string()))?;
    Ok(created_or_updated(!existed))
}

pub async fn delete_permission(
    axum::extract::State(b): B,
    Path((v, user)): Path<(String, String)>,
) -> ApiResult {
    vhost(&b, &v)?;
    if !b.clear_permissions(&user, &v) {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// PUT /api/vhost-limits/{vhost}/{max-connections|max-queues} with `{"value": N}`.
pub async fn put_vhost_limit(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    vhost(&b, &v)?;
    let m = body(&raw)?;
    let value = m
        .get("value")
        .cloned()
        .ok_or_else(|| bad_request("value not provided"))?;
    edit_vhost_limits(&b, &v, |current| {
        current.insert(name, value);
    })
}

/// Applies `edit` to the vhost's limits (as JSON) and stores the result if it is valid.
fn edit_vhost_limits(
    b: &crate::broker::Broker,
    v: &str,
    edit: impl FnOnce(&mut Map<String, Value>),
) -> ApiResult {
    let mut current = b.limits.get(v).to_json();
    edit(&mut current);
    let l = crate::limits::VHostLimits::from_json(&current).map_err(bad_request)?;
    b.set_vhost_limits(v, l)
        .map_err(|e| bad_request(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_vhost_limit(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    vhost(&b, &v)?;
    edit_vhost_limits(&b, &v, |current| {
        current.remove(&name);
    })
}

pub async fn put_policy(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    vhost(&b, &v)?;
    let m = body(&raw)?;
    let pattern = m
        .get("pattern")
        .and_then(|p| p.as_str())
        .ok_or_else(|| bad_request("Validation failed\n\npattern not provided"))?;
    let definition = m
        .get("definition")
        .cloned()
        .ok_or_else(|| bad_request("Validation failed\n\ndefinition not provided"))?;
    let apply_to = m.get("apply-to").and_then(|a| a.as_str()).unwrap_or("all");
    let priority = m
        .get("priority")
        .and_then(|p| p.as_i64().or_else(|| p.as_str()?.parse().ok()))
        .unwrap_or(0);
    let p = crate::policy::Policy::new(&v, &name, pattern, apply_to, priority, definition)
        .map_err(bad_request)?;
    let created = b.policies.put(p);
    b.apply_policies(&v);
    Ok(created_or_updated(created))
}

pub async fn delete_policy(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    vhost(&b, &v)?;
    if !b.policies.delete(&v, &name) {
        return Err(not_found());
    }
    b.apply_policies(&v);
    Ok(StatusCode::NO_CONTENT.into_response())
}
