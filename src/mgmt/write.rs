//! PUT, POST and DELETE handlers of the management API: declare, delete, bind, publish,
//! get, purge, close connections, vhosts and policies.

use super::auth::Caller;
use super::json as mj;
use super::read::dest_kind;
use super::{amqp_error, bad_request, created_or_updated, not_found, ApiResult, B};
use crate::broker::Broker;
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::queue::QueuedMessage;
use crate::store::definitions::json_to_table;
use crate::vhost::{ExchangeDeclare, QueueDeclare, VHost};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

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

pub async fn declare_queue(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let m = body(&raw)?;
    if name.is_empty() {
        return Err(not_found());
    }
    let (_, created) = vh
        .declare_queue(
            &QueueDeclare {
                name,
                server_named: false,
                passive: false,
                durable: flag(&m, "durable", false),
                exclusive: false,
                auto_delete: flag(&m, "auto_delete", false),
                arguments: args(&m),
            },
            0,
        )
        .map_err(amqp_error)?;
    Ok(created_or_updated(created))
}

pub async fn delete_queue(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    vh.queue(&name).ok_or_else(not_found)?;
    vh.delete_queue(
        &name,
        q.if_unused.as_deref() == Some("true"),
        q.if_empty.as_deref() == Some("true"),
        0,
    )
    .map_err(amqp_error)?;
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

/// AMQP properties as the API shows them (only the ones set).
fn properties_json(props: &[u8]) -> Value {
    let Some(p) = crate::protocol::properties::decode(props) else {
        return json!({});
    };
    let mut m = Map::new();
    let s = |v: &amq_protocol::types::ShortString| Value::String(v.as_str().to_string());
    if let Some(v) = p.content_type() {
        m.insert("content_type".into(), s(v));
    }
    if let Some(v) = p.content_encoding() {
        m.insert("content_encoding".into(), s(v));
    }
    if let Some(v) = p.headers() {
        m.insert("headers".into(), mj::field_table(v));
    }
    if let Some(v) = p.delivery_mode() {
        m.insert("delivery_mode".into(), json!(v));
    }
    if let Some(v) = p.priority() {
        m.insert("priority".into(), json!(v));
    }
    if let Some(v) = p.correlation_id() {
        m.insert("correlation_id".into(), s(v));
    }
    if let Some(v) = p.reply_to() {
        m.insert("reply_to".into(), s(v));
    }
    if let Some(v) = p.expiration() {
        m.insert("expiration".into(), s(v));
    }
    if let Some(v) = p.message_id() {
        m.insert("message_id".into(), s(v));
    }
    if let Some(v) = p.timestamp() {
        m.insert("timestamp".into(), json!(v));
    }
    if let Some(v) = p.kind() {
        m.insert("type".into(), s(v));
    }
    if let Some(v) = p.user_id() {
        m.insert("user_id".into(), s(v));
    }
    if let Some(v) = p.app_id() {
        m.insert("app_id".into(), s(v));
    }
    Value::Object(m)
}

fn properties_from_json(m: &Map<String, Value>) -> ApiResult<AMQPProperties> {
    let mut p = AMQPProperties::default();
    let st = |v: &Value| v.as_str().map(|s| s.into());
    for (k, v) in m {
        p = match k.as_str() {
            "content_type" => st(v).map_or(p.clone(), |s| p.clone().with_content_type(s)),
            "content_encoding" => st(v).map_or(p.clone(), |s| p.clone().with_content_encoding(s)),
            "correlation_id" => st(v).map_or(p.clone(), |s| p.clone().with_correlation_id(s)),
            "reply_to" => st(v).map_or(p.clone(), |s| p.clone().with_reply_to(s)),
            "expiration" => st(v).map_or(p.clone(), |s| p.clone().with_expiration(s)),
            "message_id" => st(v).map_or(p.clone(), |s| p.clone().with_message_id(s)),
            "type" => st(v).map_or(p.clone(), |s| p.clone().with_type(s)),
            "user_id" => st(v).map_or(p.clone(), |s| p.clone().with_user_id(s)),
            "app_id" => st(v).map_or(p.clone(), |s| p.clone().with_app_id(s)),
            "delivery_mode" => match v.as_u64().or_else(|| v.as_str()?.parse().ok()) {
                Some(n) => p.with_delivery_mode(n as u8),
                None => return Err(bad_request("delivery_mode must be a number")),
            },
            "priority" => match v.as_u64().or_else(|| v.as_str()?.parse().ok()) {
                Some(n) => p.with_priority(n as u8),
                None => return Err(bad_request("priority must be a number")),
            },
            "timestamp" => match v.as_u64() {
                Some(n) => p.with_timestamp(n),
                None => return Err(bad_request("timestamp must be a number")),
            },
            "headers" => match v {
                Value::Object(h) => p.with_headers(json_to_table(h)),
                _ => return Err(bad_request("headers must be an object")),
            },
            _ => p,
        };
    }
    Ok(p)
}

pub async fn publish(
    axum::extract::State(b): B,
    Extension(caller): Extension<Caller>,
    Path((v, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let m = body(&raw)?;
    let x = vh.exchange(exchange_name(&name)).ok_or_else(not_found)?;
    let rk = m
        .get("routing_key")
        .and_then(|r| r.as_str())
        .ok_or_else(|| bad_request("routing_key missing"))?
        .to_string();
    let payload = m.get("payload").and_then(|p| p.as_str()).unwrap_or("");
    let body = match m.get("payload_encoding").and_then(|e| e.as_str()) {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| bad_request("payload is not base64"))?,
        _ => payload.as_bytes().to_vec(),
    };
    let empty = Map::new();
    let props_json = match m.get("properties") {
        Some(Value::Object(p)) => p,
        _ => &empty,
    };
    let props = properties_from_json(props_json)?;
    if let Some(uid) = props.user_id() {
        if uid.as_str() != caller.0.name {
            return Err(bad_request(format!(
                "user_id property set to '{uid}' but authenticated user was '{}'",
                caller.0.name
            )));
        }
    }
    let expiration = match props.expiration() {
        Some(e) => Some(
            e.as_str()
                .parse::<u64>()
                .map_err(|_| bad_request(format!("invalid expiration '{e}'")))?,
        ),
        None => None,
    };
    let (bin, _) = cookie_factory::gen(
        amq_protocol::protocol::basic::gen_properties(&props),
        Vec::new(),
    )
    .map_err(|_| bad_request("cannot encode properties"))?;
    let to_short = |s: &str| {
        ShortStr::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
            .map_err(|_| bad_request("not UTF-8"))
    };
    let msg = Arc::new(Message {
        exchange: to_short(&x.name)?,
        routing_key: to_short(&rk)?,
        properties: Bytes::from(bin),
        body: Bytes::from(body),
        priority: props.priority().unwrap_or(0),
        expiration,
        persistent: props.delivery_mode() == &Some(2),
        persist_id: 0,
    });
    let headers = props.headers().clone();
    let mut routed = Vec::new();
    vh.route(&x, &rk, headers.as_ref(), &mut routed);
    crate::stats::Counters::bump(&b.stats.retired.publish, 1);
    let was_routed = !routed.is_empty();
    // Stored like an AMQP publish (persistent message, durable queue).
    crate::queue::enqueue(msg, &mut routed, None);
    Ok(Json(json!({"routed": was_routed})).into_response())
}

pub async fn get_messages(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let q = vh.queue(&name).ok_or_else(not_found)?;
    let m = body(&raw)?;
    let count = m
        .get("count")
        .and_then(|c| c.as_u64().or_else(|| c.as_str()?.parse().ok()))
        .ok_or_else(|| bad_request("count missing"))?;
    let ackmode = m
        .get("ackmode")
        .and_then(|a| a.as_str())
        .ok_or_else(|| bad_request("ackmode missing"))?
        .to_string();
    let encoding = m.get("encoding").and_then(|e| e.as_str()).unwrap_or("auto");
    let truncate = m
        .get("truncate")
        .and_then(|t| t.as_u64().or_else(|| t.as_str()?.parse().ok()));
    if !matches!(
        ackmode.as_str(),
        "ack_requeue_true" | "ack_requeue_false" | "reject_requeue_true" | "reject_requeue_false"
    ) {
        return Err(bad_request(format!("Unknown ackmode: {ackmode}")));
    }
    let mut taken: Vec<QueuedMessage> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..count {
        let Some((qm, remaining)) = q.get(false) else {
            break;
        };
        let bytes = &qm.msg.body;
        let shown = match truncate {
            Some(t) if (t as usize) < bytes.len() => &bytes[..t as usize],
            _ => &bytes[..],
        };
        let (payload, enc) = match (encoding, std::str::from_utf8(shown)) {
            ("auto", Ok(s)) => (s.to_string(), "string"),
            _ => (
                base64::engine::general_purpose::STANDARD.encode(shown),
                "base64",
            ),
        };
        out.push(json!({
            "payload_bytes": bytes.len(),
            "redelivered": qm.redelivered,
            "exchange": qm.msg.exchange.as_str(),
            "routing_key": qm.msg.routing_key.as_str(),
            "message_count": remaining,
            "properties": properties_json(&qm.msg.properties),
            "payload": payload,
            "payload_encoding": enc,
        }));
        taken.push(qm);
    }
    match ackmode.as_str() {
        "ack_requeue_true" | "reject_requeue_true" => q.requeue(taken),
        "reject_requeue_false" => q.rejected(taken),
        _ => q.acked(
            taken.len() as u64,
            taken
                .iter()
                .map(|m| m.msg.persist_id)
                .filter(|id| *id != 0)
                .collect(),
        ),
    }
    Ok(Json(Value::Array(out)).into_response())
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

pub async fn put_vhost(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    let existed = b.vhost(&v).is_some();
    b.add_vhost(&v);
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

/// Declares `aliveness-test`, publishes to it and gets the message back, as RabbitMQ does.
pub async fn aliveness(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    let vh = vhost(&b, &v)?;
    let (q, _) = vh
        .declare_queue(
            &QueueDeclare {
                name: "aliveness-test".into(),
                server_named: false,
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
            0,
        )
        .map_err(amqp_error)?;
    let msg = Arc::new(Message {
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("aliveness-test"),
        properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(b"test_message"),
        priority: 0,
        expiration: None,
        persistent: false,
        persist_id: 0,
    });
    q.publish(msg);
    match q.get(true) {
        Some((m, _)) if &m.msg.body[..] == b"test_message" => {
            Ok(Json(json!({"status": "ok"})).into_response())
        }
        _ => Ok(
            Json(json!({"status": "failed", "reason": "aliveness test message not received"}))
                .into_response(),
        ),
    }
}
