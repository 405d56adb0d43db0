//! Dead-lettering: a message that is rejected (requeue=false), expires, or is dropped by a
//! length limit is republished to the queue's dead-letter exchange with RabbitMQ's `x-death`
//! history in its headers.
//!
//! The message's properties are decoded and re-encoded here (only here): the headers gain
//! `x-death` and the `x-first-death-*` keys, and a per-message `expiration` moves into the
//! death record as `original-expiration` so the dead letter does not expire again.

use super::{Queue, QueuedMessage};
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::protocol::properties;
use crate::vhost::VHost;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::Bytes;
use std::sync::{Arc, Weak};

/// Why a message died (the `reason` of its x-death entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Rejected,
    Expired,
    Maxlen,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
        }
    }
}

fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Republishes dead messages of `queue` to its dead-letter exchange, if it has one.
pub(crate) fn dead_letter(
    queue: &Arc<Queue>,
    vhost: &Weak<VHost>,
    msgs: Vec<QueuedMessage>,
    reason: Reason,
) {
    let Some(dlx) = queue.args.dead_letter_exchange.as_deref() else {
        return;
    };
    let Some(vhost) = vhost.upgrade() else { return };
    // A missing dead-letter exchange drops the message, as RabbitMQ does.
    let Some(x) = vhost.exchange(dlx) else { return };
    let mut targets = Vec::new();
    for m in msgs {
        let original = &m.msg;
        let rk = queue
            .args
            .dead_letter_routing_key
            .clone()
            .unwrap_or_else(|| original.routing_key.as_str().to_string());
        let override_key = queue.args.dead_letter_routing_key.is_some();
        let (props, deaths, headers) =
            rewrite_properties(original, queue.name(), reason, override_key);
        let dead = Arc::new(Message {
            exchange: ShortStr::copy_from(dlx),
            routing_key: ShortStr::copy_from(&rk),
            properties: props,
            body: original.body.clone(),
            priority: original.priority,
            expiration: None,
        });
        targets.clear();
        vhost.route(&x, &rk, Some(&headers), &mut targets);
        if !override_key {
            for cc in properties::routing_key_list(&headers, "CC") {
                vhost.route(&x, &cc, Some(&headers), &mut targets);
            }
        }
        for t in targets.drain(..) {
            if reason != Reason::Rejected && is_cycle(t.name(), &deaths) {
                tracing::debug!(queue = %t.name(), "dead-letter cycle: message dropped");
                continue;
            }
            t.publish(dead.clone());
        }
    }
}

/// RabbitMQ's cycle rule: a dead letter does not go back to a queue it already died in
/// unless a rejection happened somewhere in between (a cycle that needs a client is fine).
fn is_cycle(queue: &str, deaths: &[FieldTable]) -> bool {
    for (i, d) in deaths.iter().enumerate() {
        if text(d.inner().get("queue")).as_deref() == Some(queue) {
            return deaths[..=i]
                .iter()
                .all(|d| text(d.inner().get("reason")).as_deref() != Some("rejected"));
        }
    }
    false
}

/// New property bytes with the death recorded; also the death list and headers.
fn rewrite_properties(
    msg: &Message,
    queue: &str,
    reason: Reason,
    override_key: bool,
) -> (Bytes, Vec<FieldTable>, FieldTable) {
    let props = properties::decode(&msg.properties).unwrap_or_default();
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut deaths: Vec<FieldTable> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::FieldTable(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let exchange = msg.exchange.as_str().to_string();
    let existing = deaths.iter().position(|d| {
        text(d.inner().get("queue")).as_deref() == Some(queue)
            && text(d.inner().get("reason")).as_deref() == Some(reason.as_str())
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut entry = match existing {
        Some(i) => {
            let mut e = deaths.remove(i);
            let count = match e.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n + 1,
                Some(AMQPValue::LongInt(n)) => *n as i64 + 1,
                _ => 1,
            };
            e.insert("count".into(), AMQPValue::LongLongInt(count));
            e
        }
        None => {
            let mut e = FieldTable::default();
            e.insert("count".into(), AMQPValue::LongLongInt(1));
            e.insert("reason".into(), lstr(reason.as_str()));
            e.insert("queue".into(), lstr(queue));
            e.insert("exchange".into(), lstr(&exchange));
            let mut keys = vec![lstr(msg.routing_key.as_str())];
            keys.extend(
                properties::routing_key_list(&headers, "CC")
                    .iter()
                    .map(|k| lstr(k)),
            );
            e.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(keys)),
            );
            e
        }
    };
    entry.insert("time".into(), AMQPValue::Timestamp(now));
    if override_key {
        // A dead-letter routing key replaces the original keys, CC included.
        let mut inner = headers.inner().clone();
        inner.remove("CC");
        headers = inner.into();
    }
    if let Some(exp) = props.expiration() {
        entry.insert("original-expiration".into(), lstr(exp.as_str()));
    }
    deaths.insert(0, entry);
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(
            deaths
                .iter()
                .cloned()
                .map(AMQPValue::FieldTable)
                .collect::<Vec<_>>(),
        )),
    );
    for (k, v) in [
        ("x-first-death-reason", reason.as_str()),
        ("x-first-death-queue", queue),
        ("x-first-death-exchange", &exchange),
    ] {
        if !headers.contains_key(k) {
            headers.insert(k.into(), lstr(v));
        }
    }
    let rebuilt = without_expiration(&props).with_headers(headers.clone());
    let bytes = match cookie_factory::gen(gen_properties(&rebuilt), Vec::new()) {
        Ok((v, _)) => Bytes::from(v),
        Err(_) => msg.properties.clone(),
    };
    (bytes, deaths, headers)
}

/// A copy of the properties without `expiration` (the dead letter must not expire again).
fn without_expiration(p: &AMQPProperties) -> AMQPProperties {
    let mut n = AMQPProperties::default();
    if let Some(v) = p.content_type() {
        n = n.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        n = n.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        n = n.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        n = n.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        n = n.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        n = n.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        n = n.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        n = n.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        n = n.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        n = n.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        n = n.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        n = n.with_cluster_id(v.clone());
    }
    n
}
