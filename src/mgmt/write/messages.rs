//! Messages through the management API: publish to an exchange, get from a queue, and the
//! aliveness test (declare, publish, get).

use super::{body, exchange_name, vhost};
use crate::message::Message;
use crate::mgmt::auth::Caller;
use crate::mgmt::json as mj;
use crate::mgmt::{amqp_error, bad_request, not_found, ApiResult, B};
use crate::protocol::codec::ShortStr;
use crate::queue::QueuedMessage;
use crate::store::definitions::json_to_table;
use crate::vhost::QueueDeclare;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::Arc;

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
    crate::queue::enqueue(msg, &mut routed, None, None);
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
        _ => {
            // A quorum queue settles by its own ids (and the key they were taken under).
            let quorum = q.is_quorum();
            let (ids, holders): (Vec<u64>, Vec<u64>) = taken
                .iter()
                .map(|m| (if quorum { m.seq } else { m.msg.persist_id }, m.holder))
                .filter(|(id, _)| *id != 0)
                .unzip();
            q.acked_by(taken.len() as u64, ids, &holders)
        }
    }
    Ok(Json(Value::Array(out)).into_response())
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
