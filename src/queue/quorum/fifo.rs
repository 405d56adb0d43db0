//! The quorum queue's state machine, in the spirit of RabbitMQ's `rabbit_fifo`: the whole
//! state of a quorum queue (ready messages in order, what each consumer has checked out,
//! delivery counts, consumer credit, held at-least-once dead letters) changes only by
//! [`Fifo::apply`]ing a [`Command`], and every decision it takes comes back as an
//! [`Effect`] for the caller to carry out (send deliveries, republish dead letters, forget
//! stored messages).
//!
//! It is pure: no clock (each command is applied at a time the caller gives, the way
//! `rabbit_fifo` reads the timestamp from the Raft entry's metadata), no I/O, no locks. Two
//! replicas that apply the same commands at the same times reach the same state and take
//! the same decisions, which is what lets a cluster replicate the command log through Raft
//! and lets one node rebuild the state from its log.
//!
//! Messages are generic ([`FifoMsg`]), so the machine is unit- and property-tested on plain
//! values.

use crate::queue::args::Overflow;
use crate::queue::deadletter::Reason;
use std::collections::{BTreeMap, HashMap};

/// A message's identity in the queue: its enqueue index (never reused).
pub type MsgId = u64;

/// A consumer's identity, chosen by the caller (unique per consumer).
pub type ConsumerKey = u64;

/// The key basic.get checks messages out under.
pub const GET_KEY: ConsumerKey = 0;

/// What the machine needs to know of a message.
pub trait FifoMsg: Clone {
    /// Bytes it counts for against `x-max-length-bytes` (the body).
    fn size(&self) -> usize;
    /// Its own expiration (`expiration` property), in milliseconds.
    fn expiration_ms(&self) -> Option<u64>;
}

/// The settings the machine acts on (the queue's arguments merged with its policy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub delivery_limit: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub message_ttl: Option<u64>,
    pub single_active_consumer: bool,
    /// At-least-once dead-lettering: a dead letter stays here until the caller says a
    /// target queue has it ([`Command::DlxSettle`]).
    pub at_least_once: bool,
}

/// How a consumer takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Consumer priority (`x-priority`): higher first while they have credit.
    pub priority: i64,
    /// Messages it may have checked out at once; 0 = no limit. For a no-ack consumer, the
    /// credit it starts with (topped up by [`Command::Credit`]).
    pub prefetch: u32,
    /// Deliveries are settled as they are made.
    pub no_ack: bool,
}

/// A message in the queue or checked out from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<M> {
    pub id: MsgId,
    pub msg: M,
    pub redelivered: bool,
    /// Times a consumer gave it back (`x-delivery-count`).
    pub delivery_count: u32,
    /// When it expires (milliseconds, the callers' clock), fixed at enqueue.
    pub expires_at: Option<u64>,
    /// Its place in the ready order.
    pos: u64,
}

/// A state change. Each is applied at a time (milliseconds) given with it.
#[derive(Debug, Clone)]
pub enum Command<M> {
    /// A published message (or one read back at start, with the marks it had then).
    Enqueue {
        msg: M,
        /// When it was published: expiry counts from here.
        enqueued_at: u64,
        redelivered: bool,
        delivery_count: u32,
    },
    /// A consumer attaches.
    Checkout {
        key: ConsumerKey,
        spec: ConsumerSpec,
    },
    /// A consumer leaves; what it has checked out stays checked out until settled or
    /// returned. With `dispatch` false nothing is delivered now (a closing channel returns
    /// its messages first, so the next consumer sees them in order).
    Cancel { key: ConsumerKey, dispatch: bool },
    /// More credit for a no-ack consumer (its earlier deliveries were written out).
    Credit { key: ConsumerKey, credit: u32 },
    /// Acknowledged by consumer `key`: the messages leave the queue.
    ///
    /// Settlements (this, [`Command::Return`], [`Command::Discard`]) name the consumer
    /// and act only on messages checked out to it, as `rabbit_fifo`'s `settle`, `return`
    /// and `discard` do: a late one from a consumer whose checkout was taken back (its
    /// node was declared [`Command::Down`]) leaves the message's new holder alone.
    Settle { key: ConsumerKey, ids: Vec<MsgId> },
    /// Given back by consumer `key`. `counted`: a consumer returned them (nack/reject
    /// with requeue, channel closed with them unacknowledged): the delivery count goes
    /// up. Not counted: they never reached the consumer, and go back exactly as they were.
    Return {
        key: ConsumerKey,
        ids: Vec<MsgId>,
        counted: bool,
    },
    /// Rejected by consumer `key` without requeue: dead-lettered.
    Discard { key: ConsumerKey, ids: Vec<MsgId> },
    /// basic.get.
    Dequeue { no_ack: bool },
    /// basic.get on a replicated queue (`rabbit_fifo`'s `{dequeue, settled | unsettled}`
    /// checkout): the head message, checked out to `key` (its owner: the node and run
    /// of the channel that asked, so a [`Command::Down`] of that node returns it) unless
    /// `settled` (no-ack: it leaves the queue at once).
    DequeueFor { key: ConsumerKey, settled: bool },
    /// queue.purge: every ready message goes.
    Purge,
    /// Time passed: expire due messages at the head.
    Tick,
    /// Held dead letters that reached a target queue leave.
    DlxSettle { ids: Vec<MsgId> },
    /// Held dead letters are offered again (an effect for each).
    DlxRetry,
    /// The settings changed (a policy).
    SetConfig(Config),
    /// The consumers of a node are gone (it is down; or it restarted, and `keep` is its
    /// new incarnation, whose consumers stay): they are removed and what they had
    /// checked out goes back to ready, marked redelivered (`rabbit_fifo`'s `down`).
    /// Keys are read as [`super::wire::consumer_key`] builds them.
    Down { node: u16, keep: Option<u16> },
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<M> {
    /// Send these to the consumer, in order.
    Deliver {
        key: ConsumerKey,
        msgs: Vec<Entry<M>>,
    },
    /// Republish these to the dead-letter exchange. `held`: at-least-once, they stay in
    /// the queue until [`Command::DlxSettle`]; otherwise they are gone.
    DeadLetter {
        reason: Reason,
        msgs: Vec<Entry<M>>,
        held: bool,
    },
    /// These left the queue for good (settled, delivered without ack, purged): forget
    /// them in storage.
    Release { msgs: Vec<M> },
}

/// The direct answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<M> {
    Ok,
    /// Enqueue refused by `x-overflow: reject-publish`.
    Rejected,
    /// basic.get: the message (if any) and how many stay ready.
    Dequeued(Option<(Entry<M>, u32)>),
    /// queue.purge: how many went.
    Purged(u32),
}

#[derive(Debug, Clone)]
struct ConsumerState {
    key: ConsumerKey,
    spec: ConsumerSpec,
    /// Messages it has checked out (acknowledging consumers).
    out: u32,
    /// Deliveries a no-ack consumer may still take.
    credit: u32,
}

impl ConsumerState {
    fn has_credit(&self) -> bool {
        if self.spec.no_ack {
            self.credit > 0
        } else {
            self.spec.prefetch == 0 || self.out < self.spec.prefetch
        }
    }
}

/// The quorum queue's state.
#[derive(Debug, Clone)]
pub struct Fifo<M> {
    config: Config,
    /// Ready messages by position.
    ready: BTreeMap<u64, Entry<M>>,
    ready_bytes: usize,
    /// Checked out, with whom.
    checked_out: HashMap<MsgId, (ConsumerKey, Entry<M>)>,
    /// Attached consumers, highest priority first (registration order for single active
    /// consumer); within a priority, the front is next in the round robin.
    consumers: Vec<ConsumerState>,
    /// At-least-once dead letters not yet taken by a target queue.
    dlx_held: BTreeMap<MsgId, (Entry<M>, Reason)>,
    next_id: MsgId,
    next_pos: u64,
}

impl<M: FifoMsg> Fifo<M> {
    pub fn new(config: Config) -> Self {
        Fifo {
            config,
            ready: BTreeMap::new(),
            ready_bytes: 0,
            checked_out: HashMap::new(),
            consumers: Vec::new(),
            dlx_held: BTreeMap::new(),
            next_id: 1,
            next_pos: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Ready messages.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Body bytes of the ready messages.
    pub fn ready_bytes(&self) -> usize {
        self.ready_bytes
    }

    /// Messages checked out to consumers or basic.get, not yet settled.
    pub fn checked_out_len(&self) -> usize {
        self.checked_out.len()
    }

    /// Held at-least-once dead letters (management's `messages_dlx`).
    pub fn dlx_len(&self) -> usize {
        self.dlx_held.len()
    }

    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// When the head message expires (only the head expires, as in RabbitMQ).
    pub fn next_expiry(&self) -> Option<u64> {
        self.ready.values().next().and_then(|e| e.expires_at)
    }

    /// The attached consumers' keys.
    pub fn consumer_keys(&self) -> impl Iterator<Item = ConsumerKey> + '_ {
        self.consumers.iter().map(|c| c.key)
    }

    /// The keys that hold checked-out messages (consumers', and gets' owners).
    pub fn holder_keys(&self) -> impl Iterator<Item = ConsumerKey> + '_ {
        self.checked_out.values().map(|(k, _)| *k)
    }

    /// A consumer that has no credit left (the caller tops a no-ack one up).
    pub fn out_of_credit(&self, key: ConsumerKey) -> bool {
        self.consumers
            .iter()
            .any(|c| c.key == key && !c.has_credit())
    }

    /// Everything the queue holds, for deletion: ready, checked out and held.
    pub fn drain_all(&mut self) -> Vec<M> {
        let mut out: Vec<M> = std::mem::take(&mut self.ready)
            .into_values()
            .map(|e| e.msg)
            .collect();
        self.ready_bytes = 0;
        out.extend(self.checked_out.drain().map(|(_, (_, e))| e.msg));
        out.extend(
            std::mem::take(&mut self.dlx_held)
                .into_values()
                .map(|(e, _)| e.msg),
        );
        self.consumers.clear();
        out
    }

    /// Applies one command at time `now`; effects are appended to `fx` in the order the
    /// caller must carry them out.
    pub fn apply(&mut self, now: u64, cmd: Command<M>, fx: &mut Vec<Effect<M>>) -> Reply<M> {
        let reply = match cmd {
            Command::Enqueue {
                msg,
                enqueued_at,
                redelivered,
                delivery_count,
            } => return self.enqueue(now, msg, enqueued_at, redelivered, delivery_count, fx),
            Command::Checkout { key, spec } => {
                // A consumer that checks out again keeps what it has out.
                let out = match self.consumers.iter().position(|o| o.key == key) {
                    Some(i) => self.consumers.remove(i).out,
                    None => 0,
                };
                let c = ConsumerState {
                    key,
                    spec,
                    out,
                    credit: spec.prefetch,
                };
                let at = if self.config.single_active_consumer {
                    self.consumers.len()
                } else {
                    self.consumers
                        .iter()
                        .position(|o| o.spec.priority < spec.priority)
                        .unwrap_or(self.consumers.len())
                };
                self.consumers.insert(at, c);
                Reply::Ok
            }
            Command::Cancel { key, dispatch } => {
                self.consumers.retain(|c| c.key != key);
                if !dispatch {
                    return Reply::Ok;
                }
                // A single active consumer queue's next consumer takes over.
                Reply::Ok
            }
            Command::Credit { key, credit } => {
                if let Some(c) = self.consumers.iter_mut().find(|c| c.key == key) {
                    c.credit = c.credit.saturating_add(credit);
                }
                Reply::Ok
            }
            Command::Settle { key, ids } => {
                let mut gone = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(e) = self.take_checked_out(key, id) {
                        self.credit_back(key);
                        gone.push(e.msg);
                    }
                }
                if !gone.is_empty() {
                    fx.push(Effect::Release { msgs: gone });
                }
                Reply::Ok
            }
            Command::Return { key, ids, counted } => {
                let mut poisoned = Vec::new();
                for id in ids {
                    let Some(mut e) = self.take_checked_out(key, id) else {
                        continue;
                    };
                    self.credit_back(key);
                    if !counted {
                        self.push_ready(e);
                        continue;
                    }
                    e.redelivered = true;
                    e.delivery_count = e.delivery_count.saturating_add(1);
                    match self.config.delivery_limit {
                        Some(l) if u64::from(e.delivery_count) > l => poisoned.push(e),
                        // With a limit the message keeps its place.
                        Some(_) => self.push_ready(e),
                        // Without one it goes to the back, so a poison message cannot
                        // block the head (RabbitMQ 3.13).
                        None => {
                            e.pos = self.take_pos();
                            self.push_ready(e);
                        }
                    }
                }
                self.dead_letter(Reason::DeliveryLimit, poisoned, fx);
                self.drop_over_limit(fx);
                Reply::Ok
            }
            Command::Discard { key, ids } => {
                let mut dead = Vec::new();
                for id in ids {
                    if let Some(e) = self.take_checked_out(key, id) {
                        self.credit_back(key);
                        dead.push(e);
                    }
                }
                self.dead_letter(Reason::Rejected, dead, fx);
                Reply::Ok
            }
            Command::Dequeue { no_ack } => return self.dequeue(now, GET_KEY, no_ack, fx),
            Command::DequeueFor { key, settled } => return self.dequeue(now, key, settled, fx),
            Command::Purge => {
                let n = self.ready.len() as u32;
                let gone: Vec<M> = std::mem::take(&mut self.ready)
                    .into_values()
                    .map(|e| e.msg)
                    .collect();
                self.ready_bytes = 0;
                if !gone.is_empty() {
                    fx.push(Effect::Release { msgs: gone });
                }
                return Reply::Purged(n);
            }
            Command::Tick => {
                self.expire_head(now, fx);
                Reply::Ok
            }
            Command::DlxSettle { ids } => {
                let gone: Vec<M> = ids
                    .iter()
                    .filter_map(|id| self.dlx_held.remove(id))
                    .map(|(e, _)| e.msg)
                    .collect();
                if !gone.is_empty() {
                    fx.push(Effect::Release { msgs: gone });
                }
                return Reply::Ok;
            }
            Command::DlxRetry => {
                for reason in [
                    Reason::Rejected,
                    Reason::Expired,
                    Reason::Maxlen,
                    Reason::DeliveryLimit,
                ] {
                    let msgs: Vec<Entry<M>> = self
                        .dlx_held
                        .values()
                        .filter(|(_, r)| *r == reason)
                        .map(|(e, _)| e.clone())
                        .collect();
                    if !msgs.is_empty() {
                        fx.push(Effect::DeadLetter {
                            reason,
                            msgs,
                            held: true,
                        });
                    }
                }
                return Reply::Ok;
            }
            Command::Down { node, keep } => {
                use super::wire::{key_incarnation, key_node};
                let gone = |k: ConsumerKey| {
                    k != GET_KEY && key_node(k) == node && Some(key_incarnation(k)) != keep
                };
                self.consumers.retain(|c| !gone(c.key));
                let mut ids: Vec<MsgId> = self
                    .checked_out
                    .iter()
                    .filter(|(_, (k, _))| gone(*k))
                    .map(|(id, _)| *id)
                    .collect();
                // In id order, whatever the map's order: every replica does the same.
                ids.sort_unstable();
                for id in ids {
                    if let Some((_, mut e)) = self.checked_out.remove(&id) {
                        e.redelivered = true;
                        self.push_ready(e);
                    }
                }
                Reply::Ok
            }
            Command::SetConfig(config) => {
                self.config = config;
                self.drop_over_limit(fx);
                self.expire_head(now, fx);
                Reply::Ok
            }
        };
        self.checkout(now, fx);
        reply
    }

    fn enqueue(
        &mut self,
        now: u64,
        msg: M,
        enqueued_at: u64,
        redelivered: bool,
        delivery_count: u32,
        fx: &mut Vec<Effect<M>>,
    ) -> Reply<M> {
        let ttl = match (self.config.message_ttl, msg.expiration_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_at = ttl.map(|t| enqueued_at.saturating_add(t));
        if self.config.overflow != Overflow::DropHead && self.over_limit(1, msg.size()) {
            if self.config.overflow == Overflow::RejectPublishDlx {
                let e = self.new_entry(msg, redelivered, delivery_count, expires_at);
                self.dead_letter(Reason::Maxlen, vec![e], fx);
            }
            return Reply::Rejected;
        }
        let e = self.new_entry(msg, redelivered, delivery_count, expires_at);
        self.push_ready(e);
        self.checkout(now, fx);
        self.drop_over_limit(fx);
        if expires_at.is_some() {
            // TTL 0 means "deliver now or drop": anything already due goes now.
            self.expire_head(now, fx);
        }
        Reply::Ok
    }

    /// The head message for a get, checked out to `key` unless `no_ack`; with how many
    /// stay ready.
    fn dequeue(
        &mut self,
        now: u64,
        key: ConsumerKey,
        no_ack: bool,
        fx: &mut Vec<Effect<M>>,
    ) -> Reply<M> {
        self.expire_head(now, fx);
        let Some((_, e)) = self.ready.pop_first() else {
            return Reply::Dequeued(None);
        };
        self.ready_bytes -= e.msg.size();
        if no_ack {
            fx.push(Effect::Release {
                msgs: vec![e.msg.clone()],
            });
        } else {
            self.checked_out.insert(e.id, (key, e.clone()));
        }
        // The new head may be due.
        let left = self.ready.len() as u32;
        Reply::Dequeued(Some((e, left)))
    }

    fn new_entry(
        &mut self,
        msg: M,
        redelivered: bool,
        delivery_count: u32,
        expires_at: Option<u64>,
    ) -> Entry<M> {
        let id = self.next_id;
        self.next_id += 1;
        let pos = self.take_pos();
        Entry {
            id,
            msg,
            redelivered,
            delivery_count,
            expires_at,
            pos,
        }
    }

    fn take_pos(&mut self) -> u64 {
        let p = self.next_pos;
        self.next_pos += 1;
        p
    }

    fn push_ready(&mut self, e: Entry<M>) {
        self.ready_bytes += e.msg.size();
        self.ready.insert(e.pos, e);
    }

    fn over_limit(&self, extra: usize, extra_bytes: usize) -> bool {
        self.config
            .max_length
            .is_some_and(|m| (self.ready.len() + extra) as u64 > m)
            || self
                .config
                .max_length_bytes
                .is_some_and(|m| (self.ready_bytes + extra_bytes) as u64 > m)
    }

    /// drop-head: the oldest ready messages go while the queue is over its limit.
    fn drop_over_limit(&mut self, fx: &mut Vec<Effect<M>>) {
        if self.config.overflow != Overflow::DropHead {
            return;
        }
        let mut dropped = Vec::new();
        while self.over_limit(0, 0) {
            match self.ready.pop_first() {
                Some((_, e)) => {
                    self.ready_bytes -= e.msg.size();
                    dropped.push(e);
                }
                None => break,
            }
        }
        self.dead_letter(Reason::Maxlen, dropped, fx);
    }

    /// Expires head messages due at `now` (expiry at or before it).
    fn expire_head(&mut self, now: u64, fx: &mut Vec<Effect<M>>) {
        let mut dead = Vec::new();
        while let Some(entry) = self.ready.first_entry() {
            if entry.get().expires_at.is_none_or(|t| t > now) {
                break;
            }
            let e = entry.remove();
            self.ready_bytes -= e.msg.size();
            dead.push(e);
        }
        self.dead_letter(Reason::Expired, dead, fx);
    }

    fn dead_letter(&mut self, reason: Reason, msgs: Vec<Entry<M>>, fx: &mut Vec<Effect<M>>) {
        if msgs.is_empty() {
            return;
        }
        let held = self.config.at_least_once;
        if held {
            for e in &msgs {
                self.dlx_held.insert(e.id, (e.clone(), reason));
            }
        }
        fx.push(Effect::DeadLetter { reason, msgs, held });
    }

    /// Takes message `id` back from consumer `key`, if it has it checked out (a
    /// settlement from anyone else is ignored).
    fn take_checked_out(&mut self, key: ConsumerKey, id: MsgId) -> Option<Entry<M>> {
        match self.checked_out.get(&id) {
            Some((k, _)) if *k == key => self.checked_out.remove(&id).map(|(_, e)| e),
            _ => None,
        }
    }

    /// Who has message `id` checked out, and the message as it is now.
    pub fn holder(&self, id: MsgId) -> Option<(ConsumerKey, &Entry<M>)> {
        self.checked_out.get(&id).map(|(k, e)| (*k, e))
    }

    fn credit_back(&mut self, key: ConsumerKey) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.key == key) {
            c.out = c.out.saturating_sub(1);
        }
    }

    /// Picks the consumer for the next delivery: the highest priority with credit,
    /// round-robin among equals; only the first on a single-active-consumer queue.
    fn choose(&self) -> Option<usize> {
        if self.config.single_active_consumer {
            return self.consumers.first().filter(|c| c.has_credit()).map(|_| 0);
        }
        self.consumers.iter().position(ConsumerState::has_credit)
    }

    /// Hands ready messages to consumers with credit. A message found expired on the
    /// way (strictly before `now`) dies instead: one due exactly now may still go to a
    /// waiting consumer (TTL 0).
    fn checkout(&mut self, now: u64, fx: &mut Vec<Effect<M>>) {
        let mut expired = Vec::new();
        let mut released = Vec::new();
        while !self.ready.is_empty() {
            let Some(idx) = self.choose() else { break };
            let Some((_, e)) = self.ready.pop_first() else {
                break;
            };
            self.ready_bytes -= e.msg.size();
            if e.expires_at.is_some_and(|t| t < now) {
                expired.push(e);
                continue;
            }
            let c = &mut self.consumers[idx];
            let key = c.key;
            let no_ack = c.spec.no_ack;
            if no_ack {
                c.credit -= 1;
            } else {
                c.out += 1;
            }
            // Round robin: the consumer goes behind the others of its priority.
            let prio = c.spec.priority;
            if !self.config.single_active_consumer {
                let end = self.consumers[idx..]
                    .iter()
                    .position(|o| o.spec.priority != prio)
                    .map(|p| p + idx)
                    .unwrap_or(self.consumers.len());
                if end - idx > 1 {
                    let moved = self.consumers.remove(idx);
                    self.consumers.insert(end - 1, moved);
                }
            }
            if no_ack {
                released.push(e.msg.clone());
            } else {
                self.checked_out.insert(e.id, (key, e.clone()));
            }
            match fx.last_mut() {
                Some(Effect::Deliver { key: k, msgs }) if *k == key => msgs.push(e),
                _ => fx.push(Effect::Deliver { key, msgs: vec![e] }),
            }
        }
        if !released.is_empty() {
            fx.push(Effect::Release { msgs: released });
        }
        self.dead_letter(Reason::Expired, expired, fx);
    }
}

pub mod image;

#[cfg(test)]
mod tests;
