//! GET/POST /api/definitions: export and import in RabbitMQ's definitions format.

use super::read::{permissions_of, user_json, users_of, VERSION};
use super::{bad_request, not_found, ApiResult, B};
use crate::broker::Broker;
use crate::store::definitions::{restore, snapshot, Definitions};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

fn export_json(b: &Broker, vhost: Option<&str>) -> Value {
    let d = snapshot(b);
    let keep = |v: &str| vhost.is_none_or(|n| n == v);
    let strip = |mut x: Value| {
        if vhost.is_some() {
            if let Some(o) = x.as_object_mut() {
                o.remove("vhost");
            }
        }
        x
    };
    let to = |v: Value| v.as_array().cloned().unwrap_or_default();
    let queues: Vec<Value> = to(json!(d.queues))
        .into_iter()
        .filter(|q| keep(q["vhost"].as_str().unwrap_or("")))
        .map(strip)
        .collect();
    let exchanges: Vec<Value> = to(json!(d.exchanges))
        .into_iter()
        .filter(|q| keep(q["vhost"].as_str().unwrap_or("")))
        .map(strip)
        .collect();
    let bindings: Vec<Value> = to(json!(d.bindings))
        .into_iter()
        .filter(|q| keep(q["vhost"].as_str().unwrap_or("")))
        .map(strip)
        .collect();
    let policies: Vec<Value> = b
        .policies
        .all()
        .iter()
        .filter(|p| keep(&p.vhost))
        .map(|p| strip(p.to_json()))
        .collect();
    if vhost.is_some() {
        return json!({
            "rabbit_version": VERSION,
            "rabbitmq_version": VERSION,
            "product_name": "Warren",
            "product_version": env!("CARGO_PKG_VERSION"),
            "parameters": [],
            "policies": policies,
            "queues": queues,
            "exchanges": exchanges,
            "bindings": bindings,
        });
    }
    let mut vs: Vec<_> = b.vhosts().iter().map(|v| v.name.clone()).collect();
    vs.sort();
    json!({
        "rabbit_version": VERSION,
        "rabbitmq_version": VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users_of(b).iter().map(user_json).collect::<Vec<_>>(),
        "vhosts": vs.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        "permissions": permissions_of(b),
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

pub async fn export(axum::extract::State(b): B) -> ApiResult {
    Ok(Json(export_json(&b, None)).into_response())
}

pub async fn export_vhost(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    Ok(Json(export_json(&b, Some(&v))).into_response())
}

fn import(b: &Broker, raw: &Bytes, vhost: Option<&str>) -> ApiResult {
    let mut v: Value =
        serde_json::from_slice(raw).map_err(|e| bad_request(format!("invalid JSON: {e}")))?;
    if let Some(name) = vhost {
        // Per-vhost files carry no vhost fields: every object goes to the named vhost.
        for key in ["queues", "exchanges", "bindings", "policies"] {
            if let Some(arr) = v.get_mut(key).and_then(|a| a.as_array_mut()) {
                for o in arr.iter_mut().filter_map(|o| o.as_object_mut()) {
                    o.insert("vhost".into(), json!(name));
                }
            }
        }
    }
    let defs: Definitions =
        serde_json::from_value(v.clone()).map_err(|e| bad_request(e.to_string()))?;
    for p in v
        .get("policies")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let s = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or("");
        let pol = crate::policy::Policy::new(
            s("vhost"),
            s("name"),
            s("pattern"),
            p.get("apply-to").and_then(|x| x.as_str()).unwrap_or("all"),
            p.get("priority").and_then(|x| x.as_i64()).unwrap_or(0),
            p.get("definition").cloned().unwrap_or(json!({})),
        )
        .map_err(bad_request)?;
        b.add_vhost(&pol.vhost);
        b.policies.put(pol);
    }
    restore(b, &defs);
    b.definitions_changed.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn import_all(axum::extract::State(b): B, raw: Bytes) -> ApiResult {
    import(&b, &raw, None)
}

pub async fn import_vhost(
    axum::extract::State(b): B,
    Path(v): Path<String>,
    raw: Bytes,
) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    import(&b, &raw, Some(&v))
}
