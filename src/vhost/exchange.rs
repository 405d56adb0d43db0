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

#[derive(Debug)]
pub struct Exchange {
    pub name: Arc<str>,
    pub kind: ExchangeKind,
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
        Arc::new(Exchange {
            name: name.into(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: RwLock::new(BindingTable::new(kind)),
            policy_alternate: RwLock::new(None),
            deleted: Default::default(),
        })
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
