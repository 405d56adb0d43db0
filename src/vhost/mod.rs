//! A virtual host: its exchanges, queues and bindings, and the declare/delete/bind rules
//! with RabbitMQ's reply codes and texts.
//!
//! Shared by every connection of the vhost. The name → object maps are DashMaps (sharded,
//! short synchronous locks); each exchange's bindings sit behind that exchange's own
//! RwLock. No lock is held across `.await`, and no DashMap reference is held while touching
//! the same map.

mod equivalence;
pub mod exchange;
mod queues;

use crate::error::{AmqpError, AmqpResult};
use crate::queue::args::QueueArgs;
use crate::queue::{Queue, QueueConfig};
use crate::routing::ExchangeKind;
use amq_protocol::types::{AMQPValue, FieldTable};
use dashmap::DashMap;
pub use exchange::{Dest, Exchange, HashOn};
use std::sync::Arc;

use equivalence::{assert_args_equivalent, inequivalent};

/// The exchanges every vhost has: (name, kind, internal).
const BUILTIN_EXCHANGES: &[(&str, ExchangeKind, bool)] = &[
    ("", ExchangeKind::Direct, false),
    ("amq.direct", ExchangeKind::Direct, false),
    ("amq.fanout", ExchangeKind::Fanout, false),
    ("amq.topic", ExchangeKind::Topic, false),
    ("amq.headers", ExchangeKind::Headers, false),
    ("amq.match", ExchangeKind::Headers, false),
    ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
];

/// A queue.declare request.
#[derive(Debug, Clone)]
pub struct QueueDeclare {
    pub name: String,
    /// The server generated the name (the client sent ""): the `amq.` prefix is ours.
    pub server_named: bool,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// An exchange.declare request.
#[derive(Debug, Clone)]
pub struct ExchangeDeclare {
    pub name: String,
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug)]
pub struct VHost {
    pub name: String,
    /// This vhost, for queues that need to reach it (expiry, dead-lettering).
    me: std::sync::Weak<VHost>,
    /// Looked up on every publish to the default exchange: hashed with foldhash rather
    /// than SipHash. It is randomly seeded, so collisions cannot be precomputed offline
    /// (foldhash claims only minimal DoS resistance; names are capped at 255 bytes).
    exchanges: DashMap<String, Arc<Exchange>, NameHasher>,
    queues: DashMap<String, Arc<Queue>, NameHasher>,
    /// Direct reply-to pseudo-queues (`amq.rabbitmq.reply-to.…`), one per consuming channel;
    /// reachable only through the default exchange, never listed.
    reply_queues: DashMap<String, Arc<Queue>, NameHasher>,
    /// Woken on every change to exchanges, queues or bindings (the definitions writer).
    changed: Arc<tokio::sync::Notify>,
    /// The broker's message log, for durable queues.
    pub(crate) store: crate::queue::StoreCell,
    /// Where queues page their tails out, and their memory budget.
    pub(crate) paging: Option<Arc<crate::queue::pager::Paging>>,
    /// Where streams keep their segment files (`<data>/streams`).
    pub(crate) streams_dir: Option<std::path::PathBuf>,
    /// The broker's policies: applied to each queue and exchange declared here (and to
    /// existing ones on a change, by [`crate::broker::Broker::apply_policies`]).
    policies: Arc<crate::policy::Policies>,
    /// Internal flow control: each queue declared here charges its publishers against it.
    pub(crate) flow: Arc<crate::flow::Load>,
    /// `classic`, `quorum` or `stream` for queues declared without `x-queue-type` (see
    /// [`VHost::with_default_queue_type`]); set through the management API. Read on each
    /// non-passive queue.declare.
    default_queue_type: parking_lot::RwLock<Option<String>>,
    /// Queues declared, created and deleted here (`rabbitmq_queues_*_total`).
    pub queue_counts: QueueCounts,
    /// The cluster link (set in a cluster): durable classic queues homed on another node
    /// are proxies through it ([`crate::queue::remote`]).
    pub(crate) remote: crate::queue::remote::RemoteCell,
}

/// Queue lifecycle counters of a vhost, bumped by its declare and delete paths.
#[derive(Debug, Default)]
pub struct QueueCounts {
    pub declared: std::sync::atomic::AtomicU64,
    pub created: std::sync::atomic::AtomicU64,
    pub deleted: std::sync::atomic::AtomicU64,
}

/// The hasher of name-keyed maps on the publish path.
pub type NameHasher = foldhash::fast::RandomState;

/// The pseudo-queue of direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Formats a boolean the way RabbitMQ's inequivalence messages do.
/// The routing kind of an exchange.declare's type, and whether it is an
/// `x-delayed-message` exchange (routing as its `x-delayed-type`): the plugin's checks
/// and texts.
fn exchange_type(d: &ExchangeDeclare) -> AmqpResult<(ExchangeKind, bool)> {
    let unknown = |t: &str| AmqpError::command_invalid(format_args!("unknown exchange type '{t}'"));
    if d.kind != crate::routing::DELAYED_TYPE {
        return ExchangeKind::parse(&d.kind)
            .map(|k| (k, false))
            .ok_or_else(|| unknown(&d.kind));
    }
    let inner = match d.arguments.inner().get("x-delayed-type") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_string(),
        _ => {
            return Err(AmqpError::precondition_failed(format_args!(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type"
            )))
        }
    };
    if inner == crate::routing::DELAYED_TYPE {
        return Err(AmqpError::precondition_failed(format_args!(
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
        )));
    }
    ExchangeKind::parse(&inner)
        .map(|k| (k, true))
        .ok_or_else(|| unknown(&inner))
}

fn tf(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

impl VHost {
    /// The handles a vhost shares with the broker, one per owner (store, paging,
    /// streams, policies, flow, cluster link).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        changed: Arc<tokio::sync::Notify>,
        store: crate::queue::StoreCell,
        paging: Option<Arc<crate::queue::pager::Paging>>,
        streams_dir: Option<std::path::PathBuf>,
        policies: Arc<crate::policy::Policies>,
        flow: Arc<crate::flow::Load>,
        remote: crate::queue::remote::RemoteCell,
    ) -> Arc<VHost> {
        Arc::new_cyclic(|me| {
            let v = VHost {
                name: name.to_string(),
                me: me.clone(),
                exchanges: DashMap::default(),
                queues: DashMap::default(),
                reply_queues: DashMap::default(),
                changed,
                store,
                paging,
                streams_dir,
                policies,
                flow,
                default_queue_type: Default::default(),
                queue_counts: Default::default(),
                remote,
            };
            for (n, kind, internal) in BUILTIN_EXCHANGES {
                v.exchanges.insert(
                    (*n).to_string(),
                    Exchange::new(n, *kind, true, false, *internal, FieldTable::default()),
                );
            }
            v
        })
    }

    /// The vhost's default queue type (`classic`, `quorum`, `stream`), if set.
    pub fn default_queue_type(&self) -> Option<String> {
        self.default_queue_type.read().clone()
    }

    /// Sets (or clears) the default queue type; the caller has validated the name.
    pub fn set_default_queue_type(&self, t: Option<String>) {
        *self.default_queue_type.write() = t;
        self.changed.notify_one();
    }

    /// `d` with `x-queue-type` set to the vhost's default, when RabbitMQ 3.10.8 would add
    /// it: the vhost has a default and the declare is durable, not exclusive, not
    /// auto-delete, and names no type (others stay classic).
    pub fn with_default_queue_type(&self, d: &QueueDeclare) -> Option<QueueDeclare> {
        let t = self.default_queue_type.read().clone()?;
        if !d.durable || d.exclusive || d.auto_delete || d.arguments.contains_key("x-queue-type") {
            return None;
        }
        let mut typed = d.clone();
        typed.arguments.insert(
            "x-queue-type".into(),
            amq_protocol::types::AMQPValue::LongString(t.into()),
        );
        Some(typed)
    }

    /// Re-applies the policies to every queue and exchange (after a policy change).
    pub fn apply_policies(&self) {
        for q in self.queues() {
            q.apply_policy(&self.policies);
        }
        for x in self.exchanges() {
            x.apply_policy(&self.name, &self.policies);
        }
    }

    // ---------- lookups ----------

    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.get(name).map(|e| e.clone())
    }

    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.get(name).map(|q| q.clone())
    }

    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.iter().map(|e| e.clone()).collect()
    }

    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.iter().map(|q| q.clone()).collect()
    }

    pub fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format_args!(
            "no exchange '{name}' in vhost '{}'",
            self.name
        ))
    }

    pub fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format_args!("no queue '{name}' in vhost '{}'", self.name))
    }

    pub fn existing_exchange(&self, name: &str) -> AmqpResult<Arc<Exchange>> {
        self.exchange(name).ok_or_else(|| self.no_exchange(name))
    }

    /// The queue, if it exists and `conn` may use it (exclusive queues belong to one connection).
    /// A new direct reply-to pseudo-queue for one channel's reply consumer.
    pub fn create_reply_queue(&self) -> Arc<Queue> {
        let name = crate::channel::generated_name(&format!("{REPLY_TO}."));
        let config = QueueConfig {
            name: name.clone(),
            vhost: self.name.clone(),
            durable: false,
            auto_delete: false,
            exclusive_owner: None,
            arguments: FieldTable::default(),
            home: None,
        };
        let q = Queue::new(config, Default::default(), self.me.clone());
        self.reply_queues.insert(name, q.clone());
        q
    }

    pub fn remove_reply_queue(&self, q: &Arc<Queue>) {
        if self
            .reply_queues
            .remove_if(q.name(), |_, v| Arc::ptr_eq(v, q))
            .is_some()
        {
            q.delete();
        }
    }

    pub fn usable_queue(&self, name: &str, conn: u64) -> AmqpResult<Arc<Queue>> {
        let q = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        self.check_exclusive(&q, conn)?;
        if let Some(text) = q.home_down() {
            return Err(AmqpError::not_found(format_args!("{text}")));
        }
        Ok(q)
    }

    fn check_exclusive(&self, q: &Queue, conn: u64) -> AmqpResult<()> {
        match q.config.exclusive_owner {
            Some(owner) if owner != conn => Err(AmqpError::resource_locked(format_args!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                q.name(),
                self.name
            ))),
            _ => Ok(()),
        }
    }

    // ---------- exchanges ----------

    pub fn declare_exchange(&self, d: &ExchangeDeclare) -> AmqpResult<Arc<Exchange>> {
        if d.name.is_empty() {
            return Err(AmqpError::access_refused(format_args!(
                "operation not permitted on the default exchange"
            )));
        }
        if d.passive {
            return self.existing_exchange(&d.name);
        }
        let (kind, delayed) = exchange_type(d)?;
        if let Some(existing) = self.exchange(&d.name) {
            return self
                .assert_exchange_equivalent(&existing, kind, delayed, d)
                .map(|_| existing);
        }
        if d.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        if kind == ExchangeKind::ConsistentHash {
            HashOn::from_args(&d.arguments)
                .map_err(|text| AmqpError::precondition_failed(format_args!("{text}")))?;
        }
        let x = Exchange::new_typed(
            &d.name,
            kind,
            delayed,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        );
        let entry = self.exchanges.entry(d.name.clone()).or_insert(x).clone();
        entry.apply_policy(&self.name, &self.policies);
        self.changed.notify_one();
        self.assert_exchange_equivalent(&entry, kind, delayed, d)?;
        Ok(entry)
    }

    fn assert_exchange_equivalent(
        &self,
        x: &Exchange,
        kind: ExchangeKind,
        delayed: bool,
        d: &ExchangeDeclare,
    ) -> AmqpResult<()> {
        let what = format!("exchange '{}' in vhost '{}'", x.name, self.name);
        if x.kind != kind || x.delayed != delayed {
            let declared = if delayed {
                crate::routing::DELAYED_TYPE
            } else {
                kind.as_str()
            };
            return Err(inequivalent("type", &what, declared, x.type_name()));
        }
        if x.durable != d.durable {
            return Err(inequivalent("durable", &what, tf(d.durable), tf(x.durable)));
        }
        if x.auto_delete != d.auto_delete {
            return Err(inequivalent(
                "auto_delete",
                &what,
                tf(d.auto_delete),
                tf(x.auto_delete),
            ));
        }
        if x.internal != d.internal {
            return Err(inequivalent(
                "internal",
                &what,
                tf(d.internal),
                tf(x.internal),
            ));
        }
        assert_args_equivalent(&what, &d.arguments, &x.arguments, &["alternate-exchange"])
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(format_args!(
                "operation not permitted on the default exchange"
            )));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let Some(x) = self.exchange(name) else {
            // RabbitMQ answers delete-ok for a missing exchange.
            return Ok(());
        };
        if if_unused && !x.bindings.read().is_empty() {
            return Err(AmqpError::precondition_failed(format_args!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.remove_exchange(&x);
        Ok(())
    }

    fn remove_exchange(&self, x: &Arc<Exchange>) {
        if self
            .exchanges
            .remove_if(&*x.name, |_, v| Arc::ptr_eq(v, x))
            .is_none()
        {
            return;
        }
        x.mark_deleted();
        self.changed.notify_one();
        // Bindings with this exchange as destination go too; sources left without
        // bindings are auto-deleted.
        let dest = Dest::Exchange(x.name.clone());
        self.remove_destination(&dest);
    }

    /// Removes every binding to `dest` and auto-deletes source exchanges left empty.
    fn remove_destination(&self, dest: &Dest) {
        let mut emptied = Vec::new();
        for src in self.exchanges() {
            let mut b = src.bindings.write();
            if b.remove_destination(dest) > 0 && b.is_empty() && src.auto_delete {
                emptied.push(src.clone());
            }
        }
        for src in emptied {
            self.remove_exchange(&src);
        }
    }

    // ---------- bindings ----------

    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        rk: &str,
        args: &FieldTable,
        conn: u64,
    ) -> AmqpResult<()> {
        let q = self.usable_queue(queue, conn)?;
        let x = self.bindable_source(exchange, "bind")?;
        self.validate_binding(&x, rk, args)?;
        x.bindings.write().bind(rk, args, Dest::Queue(q));
        self.changed.notify_one();
        Ok(())
    }

    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        rk: &str,
        args: &FieldTable,
        conn: u64,
    ) -> AmqpResult<()> {
        // Unbinding what does not exist is not an error (RabbitMQ 3.x).
        if exchange.is_empty() {
            return Err(AmqpError::access_refused(format_args!(
                "operation not permitted on the default exchange"
            )));
        }
        let (Some(q), Some(x)) = (self.queue(queue), self.exchange(exchange)) else {
            return Ok(());
        };
        self.check_exclusive(&q, conn)?;
        let emptied = {
            let mut b = x.bindings.write();
            self.changed.notify_one();
            b.unbind(rk, args, &Dest::Queue(q)) && b.is_empty()
        };
        if emptied && x.auto_delete {
            self.remove_exchange(&x);
        }
        Ok(())
    }

    pub fn bind_exchange(
        &self,
        dest: &str,
        source: &str,
        rk: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        if dest.is_empty() {
            return Err(AmqpError::access_refused(format_args!(
                "operation not permitted on the default exchange"
            )));
        }
        let d = self.existing_exchange(dest)?;
        let x = self.bindable_source(source, "bind")?;
        self.validate_binding(&x, rk, args)?;
        x.bindings
            .write()
            .bind(rk, args, Dest::Exchange(d.name.clone()));
        self.changed.notify_one();
        Ok(())
    }

    pub fn unbind_exchange(
        &self,
        dest: &str,
        source: &str,
        rk: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        if dest.is_empty() {
            return Err(AmqpError::access_refused(format_args!(
                "operation not permitted on the default exchange"
            )));
        }
        // Unbinding what does not exist is not an error (RabbitMQ 3.x).
        if source.is_empty() {
            return Err(AmqpError::access_refused(format_args!(
                "operation not permitted on the default exchange"
            )));
        }
        let (Some(d), Some(x)) = (self.exchange(dest), self.exchange(source)) else {
            return Ok(());
        };
        let emptied = {
            let mut b = x.bindings.write();
            self.changed.notify_one();
            b.unbind(rk, args, &Dest::Exchange(d.name.clone())) && b.is_empty()
        };
        if emptied && x.auto_delete {
            self.remove_exchange(&x);
        }
        Ok(())
    }

    fn bindable_source(&self, name: &str, _op: &str) -> AmqpResult<Arc<Exchange>> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(format_args!(
                "operation not permitted on the default exchange"
            )));
        }
        self.existing_exchange(name)
    }

    fn validate_binding(&self, x: &Exchange, rk: &str, args: &FieldTable) -> AmqpResult<()> {
        if x.kind == ExchangeKind::ConsistentHash {
            crate::routing::hash_ring::parse_weight(rk)
                .map_err(|text| AmqpError::precondition_failed(format_args!("{text}")))?;
        }
        if x.kind == ExchangeKind::Headers {
            crate::routing::headers::validate_x_match(args).map_err(|text| {
                AmqpError::precondition_failed(format_args!(
                    "{}",
                    text.trim_start_matches("PRECONDITION_FAILED - ")
                ))
            })?;
        }
        Ok(())
    }

    // ---------- routing ----------

    /// The queues a message published to `exchange` reaches, each once: follows
    /// exchange-to-exchange bindings (cycle-safe) and alternate exchanges.
    pub fn route(
        &self,
        exchange: &Arc<Exchange>,
        rk: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<Queue>>,
    ) {
        self.route_message(exchange, rk, headers, None, out)
    }

    /// [`route`](Self::route) with the message's raw content properties, which
    /// consistent-hash exchanges with a `hash-property` read.
    pub fn route_message(
        &self,
        exchange: &Arc<Exchange>,
        rk: &str,
        headers: Option<&FieldTable>,
        properties: Option<&[u8]>,
        out: &mut Vec<Arc<Queue>>,
    ) {
        if exchange.name.is_empty() {
            if let Some(q) = self.queue(rk) {
                out.push(q);
            } else if rk.starts_with(REPLY_TO) {
                if let Some(q) = self.reply_queues.get(rk) {
                    out.push(q.clone());
                }
            }
            return;
        }
        // The common case (one exchange, no exchange-to-exchange edges, no alternate) must
        // not allocate: the destination buffer is per thread, and the visited and pending
        // lists stay empty (`Vec::new` does not allocate) unless an edge is followed.
        thread_local! {
            static DESTS: std::cell::RefCell<Vec<Dest>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut dests = DESTS.with(|d| std::mem::take(&mut *d.borrow_mut()));
        let mut visited: Vec<Arc<str>> = Vec::new();
        let mut pending: Vec<Arc<Exchange>> = Vec::new();
        let seen = |visited: &Vec<Arc<str>>, name: &str| {
            *exchange.name == *name || visited.iter().any(|v| **v == *name)
        };
        let mut next = Some(exchange.clone());
        while let Some(x) = next.take().or_else(|| pending.pop()) {
            if !Arc::ptr_eq(&x, exchange) {
                if seen(&visited, &x.name) {
                    continue;
                }
                visited.push(x.name.clone());
            }
            dests.clear();
            x.route_into(rk, headers, properties, &mut dests);
            if dests.is_empty() {
                if let Some(ae) = x.alternate().and_then(|n| self.exchange(&n)) {
                    pending.push(ae);
                }
                continue;
            }
            for d in dests.drain(..) {
                match d {
                    Dest::Queue(q) => {
                        if !q.is_deleted() && !out.iter().any(|o| Arc::ptr_eq(o, &q)) {
                            out.push(q);
                        }
                    }
                    Dest::Exchange(name) => {
                        if !seen(&visited, &name) {
                            if let Some(next) = self.exchange(&name) {
                                pending.push(next);
                            }
                        }
                    }
                }
            }
        }
        DESTS.with(|d| *d.borrow_mut() = dests);
    }
}
