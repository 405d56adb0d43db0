//! Access rules through the management API, with RabbitMQ 3.10.8's paths, shapes and
//! refusals: topic permissions (`/api/topic-permissions`), per-user limits
//! (`/api/user-limits`) and operator policies (`/api/operator-policies`). Administrators
//! only (see `auth::admin_only`).

use super::{bad_request, created_or_updated, not_found, ApiResult, B};
use crate::broker::Broker;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Map, Value};

fn list(v: Vec<Value>) -> ApiResult {
    Ok(Json(Value::Array(v)).into_response())
}

fn body(raw: &Bytes) -> ApiResult<Map<String, Value>> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("not a JSON object")),
        Err(e) => Err(bad_request(format!("invalid JSON: {e}"))),
    }
}

/// RabbitMQ's `[{key_missing,exchange},…]` for required keys that are absent.
fn require(m: &Map<String, Value>, keys: &[&str]) -> ApiResult<()> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !m.contains_key(**k))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(bad_request(format!("[{}]", missing.join(","))))
    }
}

// ---------- topic permissions ----------

fn topic_json(b: &Broker) -> Vec<Value> {
    b.auth
        .topic_permissions()
        .into_iter()
        .map(|(user, vhost, p)| {
            json!({"user": user, "vhost": vhost, "exchange": p.exchange,
                   "write": p.write, "read": p.read})
        })
        .collect()
}

pub async fn topic_permissions(axum::extract::State(b): B) -> ApiResult {
    list(topic_json(&b))
}

pub async fn topic_permissions_of(
    axum::extract::State(b): B,
    Path((v, u)): Path<(String, String)>,
) -> ApiResult {
    if b.vhost(&v).is_none() || b.user(&u).is_none() {
        return Err(not_found());
    }
    list(
        topic_json(&b)
            .into_iter()
            .filter(|p| p["vhost"] == v.as_str() && p["user"] == u.as_str())
            .collect(),
    )
}

pub async fn user_topic_permissions(
    axum::extract::State(b): B,
    Path(u): Path<String>,
) -> ApiResult {
    b.user(&u).ok_or_else(not_found)?;
    list(
        topic_json(&b)
            .into_iter()
            .filter(|p| p["user"] == u.as_str())
            .collect(),
    )
}

pub async fn vhost_topic_permissions(
    axum::extract::State(b): B,
    Path(v): Path<String>,
) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    list(
        topic_json(&b)
            .into_iter()
            .filter(|p| p["vhost"] == v.as_str())
            .collect(),
    )
}

/// PUT /api/topic-permissions/{vhost}/{user} with `{"exchange", "write", "read"}`.
pub async fn put_topic_permission(
    axum::extract::State(b): B,
    Path((v, u)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    let m = body(&raw)?;
    require(&m, &["exchange", "write", "read"])?;
    if b.vhost(&v).is_none() || b.user(&u).is_none() {
        return Err(bad_request("vhost_or_user_not_found"));
    }
    let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let new = b
        .set_topic_permission(&u, &v, &get("exchange"), &get("write"), &get("read"))
        .map_err(|e| bad_request(e.to_string()))?;
    Ok(created_or_updated(new))
}

/// DELETE /api/topic-permissions/{vhost}/{user}: every exchange's.
pub async fn delete_topic_permissions(
    axum::extract::State(b): B,
    Path((v, u)): Path<(String, String)>,
) -> ApiResult {
    if !b.clear_topic_permissions(&u, &v, None) {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// DELETE /api/topic-permissions/{vhost}/{user}/{exchange}.
pub async fn delete_topic_permission(
    axum::extract::State(b): B,
    Path((v, u, x)): Path<(String, String, String)>,
) -> ApiResult {
    if !b.clear_topic_permissions(&u, &v, Some(&x)) {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------- user limits ----------

fn user_limits_json(b: &Broker, only: Option<&str>) -> Vec<Value> {
    b.limits
        .users()
        .into_iter()
        .filter(|(u, _)| only.is_none_or(|o| o == u))
        .map(|(u, l)| json!({"user": u, "value": l.to_json()}))
        .collect()
}

pub async fn user_limits(axum::extract::State(b): B) -> ApiResult {
    list(user_limits_json(&b, None))
}

pub async fn user_limits_of(axum::extract::State(b): B, Path(u): Path<String>) -> ApiResult {
    b.user(&u).ok_or_else(not_found)?;
    list(user_limits_json(&b, Some(&u)))
}

/// PUT /api/user-limits/{user}/{max-connections|max-channels} with `{"value": N}`.
pub async fn put_user_limit(
    axum::extract::State(b): B,
    Path((u, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    let m = body(&raw)?;
    require(&m, &["value"])?;
    let value = m.get("value").cloned().unwrap_or(Value::Null);
    edit_user_limits(&b, &u, |l| {
        l.insert(name, value);
    })
}

pub async fn delete_user_limit(
    axum::extract::State(b): B,
    Path((u, name)): Path<(String, String)>,
) -> ApiResult {
    edit_user_limits(&b, &u, |l| {
        l.remove(&name);
    })
}

fn edit_user_limits(b: &Broker, u: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> ApiResult {
    if b.user(u).is_none() {
        return Err(bad_request(format!("[\"no_such_user\",\"{u}\"]")));
    }
    let mut current = b.limits.user(u).to_json();
    edit(&mut current);
    let l = crate::limits::UserLimits::from_json(&current).map_err(bad_request)?;
    b.set_user_limits(u, l)
        .map_err(|e| bad_request(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------- operator policies ----------

pub async fn operator_policies(axum::extract::State(b): B) -> ApiResult {
    list(
        b.policies
            .operator()
            .all()
            .iter()
            .map(|p| p.to_json())
            .collect(),
    )
}

pub async fn operator_policies_vhost(
    axum::extract::State(b): B,
    Path(v): Path<String>,
) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    list(
        b.policies
            .operator()
            .all()
            .iter()
            .filter(|p| p.vhost == v)
            .map(|p| p.to_json())
            .collect(),
    )
}

pub async fn operator_policy(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let p = b.policies.operator().get(&v, &name).ok_or_else(not_found)?;
    Ok(Json(p.to_json()).into_response())
}

pub async fn put_operator_policy(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
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
    let p = crate::policy::Policy::new_operator(&v, &name, pattern, apply_to, priority, definition)
        .map_err(bad_request)?;
    let created = b.policies.operator().put(p);
    b.apply_policies(&v);
    Ok(created_or_updated(created))
}

pub async fn delete_operator_policy(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    if !b.policies.operator().delete(&v, &name) {
        return Err(not_found());
    }
    b.apply_policies(&v);
    Ok(StatusCode::NO_CONTENT.into_response())
}
