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
use amq_protocol::types::generation::gen_value;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::Bytes;
use std::sync::{Arc, Weak};

/// Why a message died (the `reason` of its x-death entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Rejected,
    Expired,
    Maxlen,
    /// A quorum queue's message returned more often than `x-delivery-limit`.
    DeliveryLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
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
/// Returns which of `msgs` reached no queue (all of them without a dead-letter exchange).
pub(crate) fn dead_letter(
    queue: &Arc<Queue>,
    vhost: &Weak<VHost>,
    msgs: &[QueuedMessage],
    reason: Reason,
) -> Vec<bool> {
    let mut unrouted = vec![true; msgs.len()];
    let Some((dlx, dlrk)) = queue.dead_letter_target() else {
        return unrouted;
    };
    let dlx = dlx.as_str();
    let Some(vhost) = vhost.upgrade() else {
        return unrouted;
    };
    // A missing dead-letter exchange drops the message, as RabbitMQ does.
    let Some(x) = vhost.exchange(dlx) else {
        return unrouted;
    };
    let mut targets = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let original = &m.msg;
        let rk = dlrk
            .clone()
            .unwrap_or_else(|| original.routing_key.as_str().to_string());
        let override_key = dlrk.is_some();
        let (props, deaths, headers) =
            rewrite_properties(original, queue.name(), reason, override_key);
        let dead = Arc::new(Message {
            exchange: ShortStr::copy_from(dlx),
            routing_key: ShortStr::copy_from(&rk),
            properties: props,
            body: original.body.clone(),
            priority: original.priority,
            expiration: None,
            persistent: original.persistent,
            persist_id: 0,
        });
        targets.clear();
        vhost.route(&x, &rk, Some(&headers), &mut targets);
        if !override_key {
            for cc in properties::routing_key_list(&headers, "CC") {
                vhost.route(&x, &cc, Some(&headers), &mut targets);
            }
        }
        targets.retain(|t| {
            let cycle = reason != Reason::Rejected && is_cycle(t.name(), &deaths);
            if cycle {
                tracing::debug!(queue = %t.name(), "dead-letter cycle: message dropped");
            }
            !cycle
        });
        unrouted[i] = targets.is_empty();
        super::enqueue(dead, &mut targets, None, None, None);
    }
    unrouted
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
    // RabbitMQ writes the first death in its own key order; an entry added in front of
    // earlier deaths (or an incremented one) goes out sorted, the earlier ones unchanged.
    let front_sorted = existing.is_some() || deaths.len() > 1;
    let bytes =
        encode_properties(&props, &headers, front_sorted).unwrap_or_else(|| msg.properties.clone());
    (bytes, deaths, headers)
}

/// The key order RabbitMQ writes an x-death entry in (amq-protocol's FieldTable would sort
/// them; RabbitMQ sends other tables sorted, and so do we).
const DEATH_KEY_ORDER: &[&str] = &[
    "count",
    "reason",
    "queue",
    "time",
    "exchange",
    "routing-keys",
    "original-expiration",
];

fn put_value(out: &mut Vec<u8>, v: &AMQPValue) -> Option<()> {
    let (bytes, _) = cookie_factory::gen(gen_value(v), Vec::new()).ok()?;
    out.extend_from_slice(&bytes);
    Some(())
}

fn put_key(out: &mut Vec<u8>, k: &str) {
    out.push(k.len().min(255) as u8);
    out.extend_from_slice(&k.as_bytes()[..k.len().min(255)]);
}

/// A field table body (length-prefixed), keys in the given order.
fn put_table(out: &mut Vec<u8>, entries: &[(&str, &AMQPValue)], front_sorted: bool) -> Option<()> {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    for &(k, v) in entries {
        put_key(out, k);
        match (k, v) {
            ("x-death", AMQPValue::FieldArray(a)) => {
                out.push(b'A');
                let arr_at = out.len();
                out.extend_from_slice(&[0, 0, 0, 0]);
                for (i, item) in a.as_slice().iter().enumerate() {
                    match item {
                        AMQPValue::FieldTable(t) if i > 0 || !front_sorted => {
                            out.push(b'F');
                            let ordered: Vec<(&str, &AMQPValue)> = DEATH_KEY_ORDER
                                .iter()
                                .filter_map(|k| t.inner().get(*k).map(|v| (*k, v)))
                                .collect();
                            put_table(out, &ordered, false)?;
                        }
                        other => put_value(out, other)?,
                    }
                }
                let len = (out.len() - arr_at - 4) as u32;
                out[arr_at..arr_at + 4].copy_from_slice(&len.to_be_bytes());
            }
            _ => put_value(out, v)?,
        }
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Some(())
}

/// Properties without `expiration` and with `headers`, the headers written by hand so the new
/// x-death entry keeps RabbitMQ's key order.
fn encode_properties(
    props: &AMQPProperties,
    headers: &FieldTable,
    front_sorted: bool,
) -> Option<Bytes> {
    let base = without_expiration(props);
    let (mut v, _) = cookie_factory::gen(gen_properties(&base), Vec::new()).ok()?;
    // The headers field comes right after content-type and content-encoding.
    let mut at = 2;
    if let Some(ct) = base.content_type() {
        at += 1 + ct.as_str().len();
    }
    if let Some(ce) = base.content_encoding() {
        at += 1 + ce.as_str().len();
    }
    let mut table = Vec::new();
    let entries: Vec<(&str, &AMQPValue)> = headers
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    put_table(&mut table, &entries, front_sorted)?;
    v[0] |= 0x20; // the headers flag (bit 13 of the flag word)
    v.splice(at..at, table);
    Some(Bytes::from(v))
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
