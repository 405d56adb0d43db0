//! An exchange: its declared shape and the bindings whose source it is.

use crate::queue::Queue;
use crate::routing::{BindingTable, ExchangeKind};
use amq_protocol::types::{AMQPValue, FieldTable};
use parking_lot::RwLock;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Where a binding leads: a queue (by handle, so routing needs no lookup) or another exchange
/// (by name, resolved when routing, so exchanges never own each other).
#[derive(Debug, Clone)]
pub enum Dest {
    Queue(Arc<Queue>),
    Exchange(Arc<str>),
}

impl PartialEq for Dest {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Dest::Queue(a), Dest::Queue(b)) => Arc::ptr_eq(a, b),
            (Dest::Exchange(a), Dest::Exchange(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Dest {}

impl Hash for Dest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Dest::Queue(q) => (Arc::as_ptr(q) as usize).hash(state),
            Dest::Exchange(n) => n.hash(state),
        }
    }
}

impl Dest {
    pub fn name(&self) -> &str {
        match self {
            Dest::Queue(q) => q.name(),
            Dest::Exchange(n) => n,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Dest::Queue(_) => "queue",
            Dest::Exchange(_) => "exchange",
        }
    }
}

/// What a consistent-hash exchange hashes (its `hash-header` / `hash-property` argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    RoutingKey,
    Header(String),
    Property(String),
}

/// The message properties `hash-property` may name (the plugin's list).
const HASH_PROPERTIES: [&str; 3] = ["correlation_id", "message_id", "timestamp"];

fn string_arg(args: &FieldTable, key: &str) -> Option<String> {
    match args.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

impl HashOn {
    /// The consistent-hash exchange's `validate/1`: RabbitMQ's texts (406).
    pub fn from_args(args: &FieldTable) -> Result<HashOn, String> {
        match (
            string_arg(args, "hash-header"),
            string_arg(args, "hash-property"),
        ) {
            (None, None) => Ok(HashOn::RoutingKey),
            (None, Some(p)) if HASH_PROPERTIES.contains(&p.as_str()) => Ok(HashOn::Property(p)),
            (None, Some(p)) => Err(format!("Unsupported property: {p}")),
            (Some(h), None) => Ok(HashOn::Header(h)),
            (Some(_), Some(_)) => {
                Err("hash-header and hash-property are mutually exclusive".to_string())
            }
        }
    }
}

/// The bytes a header value hashes as: strings as themselves, numbers in decimal.
fn value_bytes(v: &AMQPValue) -> Vec<u8> {
    match v {
        AMQPValue::LongString(s) => s.as_bytes().to_vec(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
        AMQPValue::ShortShortInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortShortUInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortUInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongUInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongLongInt(n) => n.to_string().into_bytes(),
        AMQPValue::Timestamp(n) => n.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    }
}

#[derive(Debug)]
pub struct Exchange {
    pub name: Arc<str>,
    /// How it routes; for an `x-delayed-message` exchange, its `x-delayed-type`.
    pub kind: ExchangeKind,
    /// An `x-delayed-message` exchange: messages with a positive `x-delay` header wait in
    /// the delay store (`crate::delayed`) before being routed.
    pub delayed: bool,
    /// Consistent-hash exchanges: what is hashed.
    pub hash_on: HashOn,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// Bindings with this exchange as source. Read on every publish, written on bind/unbind;
    /// the lock is held only for the synchronous lookup.
    pub bindings: RwLock<BindingTable<Dest>>,
    /// The `alternate-exchange` of the exchange's policy; the argument wins over it.
    /// Read only when a message matched no binding.
    policy_alternate: RwLock<Option<String>>,
    /// Set once the exchange is removed from its vhost: a channel that cached it for
    /// publishing (see `Channel::publish`) looks it up again.
    deleted: std::sync::atomic::AtomicBool,
}

impl Exchange {
    pub fn new(
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Arc<Exchange> {
        Self::new_typed(name, kind, false, durable, auto_delete, internal, arguments)
    }

    /// An exchange that may be an `x-delayed-message` one routing as `kind`.
    pub fn new_typed(
        name: &str,
        kind: ExchangeKind,
        delayed: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Arc<Exchange> {
        let hash_on = match kind {
            ExchangeKind::ConsistentHash => {
                HashOn::from_args(&arguments).unwrap_or(HashOn::RoutingKey)
            }
            _ => HashOn::RoutingKey,
        };
        Arc::new(Exchange {
            name: name.into(),
            kind,
            delayed,
            hash_on,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: RwLock::new(BindingTable::new(kind)),
            policy_alternate: RwLock::new(None),
            deleted: Default::default(),
        })
    }

    /// The type clients declared: `x-delayed-message` or the routing kind's name.
    pub fn type_name(&self) -> &'static str {
        if self.delayed {
            crate::routing::DELAYED_TYPE
        } else {
            self.kind.as_str()
        }
    }

    /// Appends the destinations of this exchange's own bindings that the message matches.
    /// `properties` (the raw content properties) is read only by consistent-hash
    /// exchanges with a `hash-property`.
    pub fn route_into(
        &self,
        rk: &str,
        headers: Option<&FieldTable>,
        properties: Option<&[u8]>,
        out: &mut Vec<Dest>,
    ) {
        let b = self.bindings.read();
        if self.kind != ExchangeKind::ConsistentHash {
            return b.route(rk, headers, out);
        }
        // A missing header or property hashes as one fixed value (the plugin hashes
        // `undefined`), so such messages all reach one destination.
        let value = match &self.hash_on {
            HashOn::RoutingKey => return b.route(rk, headers, out),
            HashOn::Header(h) => headers
                .and_then(|t| t.inner().get(h.as_str()))
                .map(value_bytes),
            HashOn::Property(p) => properties.and_then(|raw| property_bytes(raw, p)),
        };
        b.route_hashed(value.as_deref().unwrap_or(b"undefined"), out);
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The alternate exchange: the `alternate-exchange` argument when it is a string,
    /// else the policy's (RabbitMQ's `rabbit_policy:get_arg`: the argument wins).
    pub fn alternate(&self) -> Option<String> {
        match self.arguments.inner().get("alternate-exchange") {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
            _ => self.policy_alternate.read().clone(),
        }
    }

    /// Takes the `alternate-exchange` of the exchange's current policy in `vhost`.
    pub fn apply_policy(&self, vhost: &str, policies: &crate::policy::Policies) {
        if self.name.is_empty() {
            return; // the default exchange has no alternate
        }
        // Matched under the write lock, so concurrent changes cannot leave a stale one.
        let mut slot = self.policy_alternate.write();
        *slot = policies
            .matching(vhost, &self.name, "exchanges")
            .and_then(|p| {
                p.definition
                    .get("alternate-exchange")?
                    .as_str()
                    .map(String::from)
            });
    }
}

/// A `hash-property` value of raw content properties (timestamps in decimal, as the plugin).
fn property_bytes(raw: &[u8], name: &str) -> Option<Vec<u8>> {
    let (_, p) = amq_protocol::protocol::basic::parse_properties(raw).ok()?;
    match name {
        "message_id" => p
            .message_id()
            .as_ref()
            .map(|s| s.as_str().as_bytes().to_vec()),
        "correlation_id" => p
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().as_bytes().to_vec()),
        "timestamp" => (*p.timestamp()).map(|t| t.to_string().into_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    fn args(pairs: &[(&str, &str)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
        }
        t
    }

    #[test]
    fn hash_arguments_are_validated_as_the_plugin_does() {
        assert_eq!(HashOn::from_args(&args(&[])), Ok(HashOn::RoutingKey));
        assert_eq!(
            HashOn::from_args(&args(&[("hash-header", "h")])),
            Ok(HashOn::Header("h".into()))
        );
        assert_eq!(
            HashOn::from_args(&args(&[("hash-property", "message_id")])),
            Ok(HashOn::Property("message_id".into()))
        );
        assert_eq!(
            HashOn::from_args(&args(&[("hash-property", "app_id")])),
            Err("Unsupported property: app_id".into())
        );
        assert_eq!(
            HashOn::from_args(&args(&[
                ("hash-header", "h"),
                ("hash-property", "timestamp")
            ])),
            Err("hash-header and hash-property are mutually exclusive".into())
        );
    }
}
