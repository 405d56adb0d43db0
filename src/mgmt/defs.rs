//! GET/POST /api/definitions: export and import in RabbitMQ's definitions format (users,
//! vhosts, permissions, parameters, policies, exchanges, queues, bindings).

use super::cluster::{origin, replicate_cmds, Replayed};
use super::read::VERSION;
use super::{bad_request, not_found, ApiResult, B};
use crate::broker::definitions::{import, snapshot};
use crate::broker::Broker;
use crate::cluster::handle::MetaCmd;
use crate::store::definitions::json_to_table;
use crate::store::definitions::Definitions;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Map, Value};

fn export_json(b: &Broker, vhost: Option<&str>) -> Value {
    let d = serde_json::to_value(snapshot(b)).unwrap_or_else(|_| json!({}));
    let keep = |v: &Value| vhost.is_none_or(|n| v["vhost"] == n);
    // A per-vhost export leaves out the vhost fields, as RabbitMQ's does.
    let strip = |mut x: Value| {
        if vhost.is_some() {
            if let Some(o) = x.as_object_mut() {
                o.remove("vhost");
            }
        }
        x
    };
    let section = |key: &str| -> Value {
        Value::Array(
            d[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| keep(x))
                .cloned()
                .map(strip)
                .collect(),
        )
    };
    let mut out = Map::new();
    out.insert("rabbit_version".into(), json!(VERSION));
    out.insert("rabbitmq_version".into(), json!(VERSION));
    out.insert("product_name".into(), json!(b.config.server_product));
    out.insert("product_version".into(), json!(b.config.server_version));
    if vhost.is_none() {
        out.insert("users".into(), d["users"].clone());
        out.insert("vhosts".into(), d["vhosts"].clone());
        out.insert("permissions".into(), d["permissions"].clone());
        out.insert("topic_permissions".into(), d["topic_permissions"].clone());
        out.insert("global_parameters".into(), json!([]));
    }
    out.insert("parameters".into(), section("parameters"));
    out.insert("policies".into(), section("policies"));
    out.insert("queues".into(), section("queues"));
    out.insert("exchanges".into(), section("exchanges"));
    out.insert("bindings".into(), section("bindings"));
    Value::Object(out)
}

pub async fn export(axum::extract::State(b): B) -> ApiResult {
    Ok(Json(export_json(&b, None)).into_response())
}

pub async fn export_vhost(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    Ok(Json(export_json(&b, Some(&v))).into_response())
}

async fn import_json(
    b: &Broker,
    replayed: Option<axum::Extension<Replayed>>,
    raw: &Bytes,
    vhost: Option<&str>,
) -> ApiResult {
    let mut v: Value =
        serde_json::from_slice(raw).map_err(|e| bad_request(format!("invalid JSON: {e}")))?;
    if let Some(name) = vhost {
        // Per-vhost files carry no vhost fields: every object goes to the named vhost.
        for key in ["queues", "exchanges", "bindings", "policies", "parameters"] {
            if let Some(arr) = v.get_mut(key).and_then(|a| a.as_array_mut()) {
                for o in arr.iter_mut().filter_map(|o| o.as_object_mut()) {
                    o.insert("vhost".into(), json!(name));
                }
            }
        }
    }
    let defs: Definitions =
        serde_json::from_value(v.clone()).map_err(|e| bad_request(e.to_string()))?;
    // An invalid policy refuses the whole file before anything is imported.
    for p in &defs.policies {
        p.to_policy().map_err(bad_request)?;
    }
    let exists = |vhost: &str, name: &str| b.vhost(vhost).and_then(|v| v.queue(name));
    let new: Vec<bool> = defs
        .queues
        .iter()
        .map(|q| exists(&q.vhost, &q.name).is_none())
        .collect();
    let errors = import(b, &defs);
    b.definitions_changed.notify_one();
    if !errors.is_empty() {
        return Err(bad_request(errors.join("; ")));
    }
    if let Some(meta) = origin(b, &replayed) {
        // Replicated as made here: the queues this import created with their home,
        // Raft group or stream placement, as AMQP declares of them would be.
        let mut defs = defs;
        let mut streams = Vec::new();
        for (qd, new) in defs.queues.iter_mut().zip(new) {
            let Some(q) = exists(&qd.vhost, &qd.name).filter(|_| new) else {
                continue;
            };
            let args = json_to_table(&qd.arguments);
            match crate::channel::replicate::new_queue(&meta, &qd.vhost, &q, &args) {
                Some(MetaCmd::Import(d)) => {
                    if let Some(made) = d.queues.into_iter().next() {
                        *qd = made;
                    }
                }
                Some(MetaCmd::Stream { placement, .. }) => streams.push(placement),
                _ => {}
            }
        }
        let mut cmds = vec![MetaCmd::Import(defs)];
        cmds.extend(streams.into_iter().map(|placement| MetaCmd::Stream {
            defs: None,
            placement,
        }));
        replicate_cmds(&meta, cmds).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn import_all(
    axum::extract::State(b): B,
    replayed: Option<axum::Extension<Replayed>>,
    raw: Bytes,
) -> ApiResult {
    import_json(&b, replayed, &raw, None).await
}

pub async fn import_vhost(
    axum::extract::State(b): B,
    replayed: Option<axum::Extension<Replayed>>,
    Path(v): Path<String>,
    raw: Bytes,
) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    import_json(&b, replayed, &raw, Some(&v)).await
}
