//! Shovels through the management API, as rabbitmq_shovel_management 3.10:
//! `/api/parameters/shovel[/{vhost}[/{name}]]` (the definitions) and `/api/shovels[/{vhost}]`
//! (their state). Administrators only (see `auth::admin_only`).

use super::json::node_name;
use super::{bad_request, created_or_updated, not_found, ApiResult, B};
use crate::broker::Broker;
use crate::shovel::config::{Dest, Source};
use crate::shovel::worker::redact;
use crate::shovel::ShovelInfo;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

fn list(v: Vec<Value>) -> ApiResult {
    Ok(Json(Value::Array(v)).into_response())
}

fn parameter_json(s: &ShovelInfo) -> Value {
    json!({"component": "shovel", "vhost": s.vhost, "name": s.name, "value": s.config.value})
}

fn parameters_of(b: &Broker, vhost: Option<&str>) -> Vec<Value> {
    b.shovels
        .list()
        .iter()
        .filter(|s| vhost.is_none_or(|v| v == s.vhost))
        .map(parameter_json)
        .collect()
}

/// GET /api/parameters and /api/parameters/shovel: the shovels (the only component kept
/// as parameters besides vhost limits, listed at /api/vhost-limits).
pub async fn parameters(axum::extract::State(b): B) -> ApiResult {
    list(parameters_of(&b, None))
}

pub async fn parameters_component(
    axum::extract::State(b): B,
    Path(component): Path<String>,
) -> ApiResult {
    if component != "shovel" {
        return list(vec![]);
    }
    list(parameters_of(&b, None))
}

pub async fn parameters_vhost(
    axum::extract::State(b): B,
    Path((component, v)): Path<(String, String)>,
) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    if component != "shovel" {
        return list(vec![]);
    }
    list(parameters_of(&b, Some(&v)))
}

pub async fn parameter(
    axum::extract::State(b): B,
    Path((component, v, name)): Path<(String, String, String)>,
) -> ApiResult {
    if component != "shovel" {
        return Err(not_found());
    }
    b.shovels
        .list()
        .iter()
        .find(|s| s.vhost == v && s.name == name)
        .map(|s| Json(parameter_json(s)).into_response())
        .ok_or_else(not_found)
}

/// PUT /api/parameters/shovel/{vhost}/{name} with `{"value": {...}}`.
pub async fn put_parameter(
    axum::extract::State(b): B,
    Path((component, v, name)): Path<(String, String, String)>,
    raw: Bytes,
) -> ApiResult {
    if component != "shovel" {
        return Err(bad_request(format!(
            "component '{component}' is not supported (Warren keeps 'shovel' parameters)"
        )));
    }
    b.vhost(&v).ok_or_else(not_found)?;
    let body: Value =
        serde_json::from_slice(&raw).map_err(|e| bad_request(format!("invalid JSON: {e}")))?;
    let value = body
        .get("value")
        .ok_or_else(|| bad_request("[{key_missing,value}]"))?;
    let new = b.shovels.put(&v, &name, value).map_err(bad_request)?;
    Ok(created_or_updated(new))
}

pub async fn delete_parameter(
    axum::extract::State(b): B,
    Path((component, v, name)): Path<(String, String, String)>,
) -> ApiResult {
    if component != "shovel" || !b.shovels.delete(&v, &name) {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// RabbitMQ's timestamp format in shovel statuses: `2024-01-31 12:34:56`.
fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn status_json(b: &Broker, s: &ShovelInfo) -> Value {
    let c = &s.config;
    let mut v = json!({
        "node": node_name(b),
        "timestamp": timestamp(s.status.since_ms),
        "name": s.name,
        "vhost": s.vhost,
        "type": "dynamic",
        "state": s.status.state,
        "src_uri": redact(&c.src_uri),
        "src_protocol": "amqp091",
        "dest_uri": redact(&c.dest_uri),
        "dest_protocol": "amqp091",
        "blocked_status": if s.status.state == "running" { "running" } else { "blocked" },
    });
    match &c.src {
        Source::Queue(q) => v["src_queue"] = json!(q),
        Source::Exchange { name, key } => {
            v["src_exchange"] = json!(name);
            v["src_exchange_key"] = json!(key);
        }
    }
    match &c.dest {
        Dest::Queue(q) => v["dest_queue"] = json!(q),
        Dest::Exchange { name, key } => {
            v["dest_exchange"] = json!(name);
            if let Some(k) = key {
                v["dest_exchange_key"] = json!(k);
            }
        }
    }
    if let Some(r) = &s.status.reason {
        v["reason"] = json!(r);
    }
    v
}

pub async fn shovels(axum::extract::State(b): B) -> ApiResult {
    list(
        b.shovels
            .list()
            .iter()
            .map(|s| status_json(&b, s))
            .collect(),
    )
}

pub async fn shovels_vhost(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    list(
        b.shovels
            .list()
            .iter()
            .filter(|s| s.vhost == v)
            .map(|s| status_json(&b, s))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(super::timestamp(1_706_704_496_000), "2024-01-31 12:34:56");
    }
}
