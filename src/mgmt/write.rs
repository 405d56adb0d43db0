//! PUT, POST and DELETE handlers of the management API, by resource: exchanges, queues,
//! bindings and connections here; publishing and getting messages (and the aliveness test)
//! in [`messages`]; vhosts, users, permissions, vhost limits and policies (the broker's
//! registries) in [`registries`].

use super::cluster::{origin, replicate_cmds, Replayed};
use super::json as mj;
use super::read::dest_kind;
use super::{amqp_error, bad_request, created_or_updated, not_found, ApiResult, B};
use crate::broker::Broker;
use crate::store::definitions::json_to_table;
use crate::vhost::{ExchangeDeclare, QueueDeclare, VHost};
use amq_protocol::types::FieldTable;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

mod messages;
pub use messages::*;
mod registries;
pub use registries::*;

/// The default exchange is `amq.default` in URLs.
pub fn exchange_name(n: &str) -> &str {
    if n == "amq.default" {
        ""
    } else {
        n
    }
}

fn vhost(b: &Broker, v: &str) -> ApiResult<Arc<VHost>> {
    b.vhost(v).ok_or_else(not_found)
}

/// A JSON body; an absent or empty body is `{}`.
fn body(raw: &Bytes) -> ApiResult<Map<String, Value>> {
    if raw.iter().all(|c| c.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("Bad Request")),
        Err(e) => Err(bad_request(e.to_string())),
    }
}

fn flag(m: &Map<String, Value>, k: &str, default: bool) -> bool {
    match m.get(k) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => default,
    }
}

fn args(m: &Map<String, Value>) -> FieldTable {
    match m.get("arguments") {
        Some(Value::Object(a)) => json_to_table(a),
        _ => FieldTable::default(),
    }
}

pub async fn close_connection(
    axum::extract::State(b): B,
    axum::Extension(me): axum::Extension<super::auth::Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let c = b.stats.connection_by_name(&name).ok_or_else(not_found)?;
    // Administrators close any connection, others only their own (RabbitMQ's
    // is_authorized_user for DELETE).
    if !me.is_admin() && me.0.name != c.user {
        return Err(super::refused("User not authorised to access object"));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin")
        .to_string();
    tracing::info!(conn = c.id, peer = %c.peer, user = %c.user, %reason, "closing connection via management");
    b.close_connection(
        c.id,
        crate::error::AmqpError::connection_forced(format_args!("{reason}")),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn declare_exchange(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let m = body(&raw)?;
    let kind = m
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad_request("[{type,not_provided}]"))?
        .to_string();
    let existed = vh.exchange(&name).is_some();
    vh.declare_exchange(&ExchangeDeclare {
        name: exchange_name(&name).to_string(),
        kind,
        passive: false,
        durable: flag(&m, "durable", false),
        auto_delete: flag(&m, "auto_delete", false),
        internal: flag(&m, "internal", false),
        arguments: args(&m),
    })
    .map_err(amqp_error)?;
    Ok(created_or_updated(!existed))
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

pub async fn delete_exchange(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let name = exchange_name(&name);
    vh.exchange(name).ok_or_else(not_found)?;
    vh.delete_exchange(name, q.if_unused.as_deref() == Some("true"))
        .map_err(amqp_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/queues/{vhost}/{name}`. In a cluster a new durable queue is replicated as
/// an AMQP declare's is (`channel::replicate::new_queue`): a classic queue homed here, a
/// quorum queue's Raft group, a stream led by this node.
pub async fn declare_queue(
    axum::extract::State(b): B,
    replayed: Option<axum::Extension<Replayed>>,
    Path((v, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let m = body(&raw)?;
    if name.is_empty() {
        return Err(not_found());
    }
    let arguments = args(&m);
    let (q, created) = vh
        .declare_queue(
            &QueueDeclare {
                name,
                server_named: false,
                passive: false,
                durable: flag(&m, "durable", false),
                exclusive: false,
                auto_delete: flag(&m, "auto_delete", false),
                arguments: arguments.clone(),
            },
            0,
        )
        .map_err(amqp_error)?;
    if let Some(meta) = origin(&b, &replayed).filter(|_| created) {
        if let Some(cmd) = crate::channel::replicate::new_queue(&meta, &v, &q, &arguments) {
            replicate_cmds(&meta, vec![cmd]).await?;
        }
    }
    Ok(created_or_updated(created))
}

/// `DELETE /api/queues/{vhost}/{name}`: in a cluster, a queue whose definition every
/// node has is deleted everywhere (as an AMQP queue.delete).
pub async fn delete_queue(
    axum::extract::State(b): B,
    replayed: Option<axum::Extension<Replayed>>,
    Path((v, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let queue = vh.queue(&name).ok_or_else(not_found)?;
    let shared =
        queue.config.durable && queue.config.exclusive_owner.is_none() && !queue.config.auto_delete;
    vh.delete_queue(
        &name,
        q.if_unused.as_deref() == Some("true"),
        q.if_empty.as_deref() == Some("true"),
        0,
    )
    .map_err(amqp_error)?;
    if let Some(meta) = origin(&b, &replayed).filter(|_| shared) {
        let cmd = crate::cluster::handle::MetaCmd::DeleteQueue { vhost: v, name };
        replicate_cmds(&meta, vec![cmd]).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn purge_queue(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let q = vh.queue(&name).ok_or_else(not_found)?;
    q.purge();
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn bind(
    axum::extract::State(b): B,
    Path((v, source, kind, dest)): Path<(String, String, String, String)>,
    raw: Bytes,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let kind = dest_kind(&kind).ok_or_else(not_found)?;
    let m = body(&raw)?;
    let rk = m
        .get("routing_key")
        .and_then(|r| r.as_str())
        .unwrap_or("")
        .to_string();
    let a = args(&m);
    vh.exchange(exchange_name(&source)).ok_or_else(not_found)?;
    let r = if kind == "queue" {
        vh.queue(&dest).ok_or_else(not_found)?;
        vh.bind_queue(&dest, exchange_name(&source), &rk, &a, 0)
    } else {
        vh.exchange(&dest).ok_or_else(not_found)?;
        vh.bind_exchange(&dest, exchange_name(&source), &rk, &a)
    };
    r.map_err(amqp_error)?;
    let loc = format!(
        "{}/{}",
        mj::percent_encode(&dest),
        mj::percent_encode(&mj::properties_key(&rk, &a))
    );
    let mut resp = StatusCode::CREATED.into_response();
    if let Ok(h) = axum::http::HeaderValue::from_str(&loc) {
        resp.headers_mut().insert(axum::http::header::LOCATION, h);
    }
    Ok(resp)
}

pub async fn unbind(
    axum::extract::State(b): B,
    Path((v, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let kind = dest_kind(&kind).ok_or_else(not_found)?;
    let x = vh.exchange(exchange_name(&source)).ok_or_else(not_found)?;
    let found = x.bindings.read().bindings().into_iter().find(|(rk, a, d)| {
        d.kind() == kind && d.name() == dest && mj::properties_key(rk, a) == props
    });
    let Some((rk, a, _)) = found else {
        return Err(not_found());
    };
    let r = if kind == "queue" {
        vh.unbind_queue(&dest, &x.name, &rk, &a, 0)
    } else {
        vh.unbind_exchange(&dest, &x.name, &rk, &a)
    };
    r.map_err(amqp_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
