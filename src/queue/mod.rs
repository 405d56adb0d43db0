//! A queue: its ready messages, its consumers, and the dispatch that joins them.
//!
//! State is behind one short, synchronous lock per queue (never held across `.await`):
//! publishers route in their own connection task and append under the lock; the lock holder
//! then hands ready messages to consumers with credit by sending them to the consumer's
//! connection task. There is no global lock on this path — two queues never share a lock.
//! Unacknowledged messages live in the channel that received them (it gives them back on
//! ack, reject or close); the queue only counts them.
//!
//! RabbitMQ's extensions live here too: message TTL and queue expiry (driven by a small
//! timer task per queue that needs one), length limits, priorities, consumer priorities and
//! single active consumer. Messages that die are dead-lettered ([`deadletter`]) *after* the
//! lock is released, since dead-lettering publishes to other queues.

pub mod args;
mod classic;
pub mod consumer;
pub mod deadletter;
pub mod pager;
mod policy;
pub mod quorum;
mod ready;
pub mod remote;
pub mod stream;
mod timer;

use crate::message::Message;
use crate::stats::Counters;
use crate::store::log::{MessageLog, Recovered};
use crate::vhost::VHost;
use amq_protocol::types::FieldTable;
use args::{QueueArgs, QueueType};
use consumer::Consumer;
use deadletter::Reason;
use parking_lot::Mutex;
use ready::Ready;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A message in a queue, or out for delivery from it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Position in the queue; a requeued message goes back to where this says.
    pub seq: u64,
    pub msg: Arc<Message>,
    pub redelivered: bool,
    /// When the message expires (queue TTL or per-message expiration), fixed at enqueue.
    pub expires_at: Option<Instant>,
    /// Times a quorum queue got the message back from a consumer (RabbitMQ 3.13's
    /// `delivery_count`, sent as `x-delivery-count` once above 0); 0 in other queues.
    pub delivery_count: u32,
    /// A quorum queue's consumer key the message was checked out to (its settlement
    /// names it: see `quorum::fifo::Command::Settle`); 0 (basic.get's) elsewhere.
    pub holder: u64,
}

impl QueuedMessage {
    /// The content properties to deliver: a quorum queue's redelivery carries
    /// `x-delivery-count` (a `long`, as RabbitMQ's annotation becomes).
    pub fn delivery_properties(&self) -> bytes::Bytes {
        self.properties_counted(self.delivery_count > 0)
    }

    /// The properties for basic.get-ok from a quorum queue: RabbitMQ's dequeue always
    /// sets `x-delivery-count`, 0 on a first delivery.
    pub fn get_properties(&self, quorum: bool) -> bytes::Bytes {
        self.properties_counted(quorum)
    }

    fn properties_counted(&self, counted: bool) -> bytes::Bytes {
        if !counted {
            return self.msg.properties.clone();
        }
        crate::protocol::properties::with_header(
            &self.msg.properties,
            "x-delivery-count",
            amq_protocol::types::AMQPValue::LongLongInt(self.delivery_count as i64),
        )
        .unwrap_or_else(|| self.msg.properties.clone())
    }
}

/// The declared shape of a queue (what a redeclare must match).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// Connection id of the declaring connection when exclusive.
    pub exclusive_owner: Option<u64>,
    pub arguments: FieldTable,
    /// In a cluster, the node holding a durable queue's messages (see [`remote`]); None
    /// outside a cluster and for queues local to each node.
    pub home: Option<String>,
}

#[derive(Debug)]
struct State {
    /// The settings the queue acts on: its declared arguments merged with its policy
    /// ([`QueueArgs::with_policy`]). Here, under the lock the publish path already holds,
    /// because a policy change replaces them while the queue runs.
    eff: QueueArgs,
    /// The policy `eff` was computed from (its JSON), to skip re-applying an unchanged one.
    policy: Option<serde_json::Value>,
    ready: Ready,
    next_seq: u64,
    /// Sorted by consumer priority, highest first (registration order for single active
    /// consumer queues). Within a priority, the front is next in the round robin.
    consumers: Vec<Arc<Consumer>>,
    /// Set once any consumer attached: auto-delete applies only after that.
    had_consumer: bool,
    /// Last declare, get or consumer change (x-expires counts from here).
    last_used: Instant,
    timer_running: bool,
    /// A publisher pushed messages without dispatching and will call `dispatch` (see
    /// `push_deferred`); other publishers need not register the queue again.
    dispatch_pending: bool,
    /// When the timer task will next wake by itself; a publish wakes it earlier only when
    /// its message expires sooner (so a TTL queue does not cost a wake-up per publish).
    timer_deadline: Option<Instant>,
    /// When a quorum queue's held at-least-once dead letters are tried again.
    dlx_retry_at: Option<Instant>,
    /// A quorum queue's state machine (its messages live there, not in `ready`).
    quorum: Option<quorum::QuorumState>,
    /// Internal flow control: whether the queue holds its publishers (see [`crate::flow`]).
    flow: crate::flow::QueueFlow,
}

impl State {
    /// Appends a message at the tail with the next sequence number.
    fn append(&mut self, msg: Arc<Message>, redelivered: bool, expires_at: Option<Instant>) {
        self.append_counted(msg, redelivered, expires_at, 0);
    }

    fn append_counted(
        &mut self,
        msg: Arc<Message>,
        redelivered: bool,
        expires_at: Option<Instant>,
        delivery_count: u32,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready.push_back(QueuedMessage {
            seq,
            msg,
            redelivered,
            expires_at,
            delivery_count,
            holder: 0,
        });
    }
}

#[derive(Debug)]
pub struct Queue {
    pub config: QueueConfig,
    /// The settings the declare arguments ask for; fixed. What the queue acts on is the
    /// effective set in its state (these merged with a policy).
    pub args: QueueArgs,
    vhost: Weak<VHost>,
    state: Mutex<State>,
    unacked: AtomicU64,
    deleted: AtomicBool,
    /// Message counters for management (relaxed atomics; see `stats`).
    pub counters: crate::stats::Counters,
    /// Wakes the timer task (a new head with an expiry, a consumer change).
    timer: Arc<Notify>,
    /// Times the timer task ran (a timer that keeps waking itself shows here).
    timer_runs: AtomicU64,
    /// The broker's message log (set once it is open) and this queue's key in it, for a
    /// durable queue: its persistent messages are recorded there.
    store: Option<(StoreCell, Arc<str>)>,
    /// A stream's log (`x-queue-type: stream`): its messages live there, not in `state`;
    /// with the broker's message log, whose writer syncs the stream's records.
    stream: Option<(Arc<stream::Stream>, StoreCell)>,
    /// The broker's flow-control settings and saturation flag (None outside a vhost).
    flow: Option<Arc<crate::flow::Load>>,
    /// Mirrors `State::credit`'s overrun, for publishers to read without the lock.
    flow_overrun: AtomicBool,
    /// Woken when the queue stops being overrun (publishers in flow wait on it).
    flow_released: Notify,
    /// The cluster link: set in a cluster; used when `config.home` is another node.
    remote: remote::RemoteCell,
    /// A cluster's quorum queue: its Raft group's id (from its definition, never
    /// changes: read on every publish).
    replicated: OnceLock<u64>,
    /// Its member nodes as the definition names them (membership operations change it).
    members: Mutex<Vec<String>>,
    /// This node's member of that group, while it is one.
    group: Mutex<Option<Arc<dyn quorum::wire::Group>>>,
}

/// The broker's message log, shared with queues before it is open (queues from the
/// definitions file exist before recovery starts).
pub type StoreCell = Arc<OnceLock<Arc<MessageLog>>>;

/// How often at-least-once dead letters that reached no queue are tried again.
pub const DLX_RETRY: Duration = Duration::from_secs(1);

/// Consumers one dispatch collects deliveries for before sending them (bounds the search
/// for a consumer's batch when many consumers share a queue).
const MAX_BATCHES: usize = 16;

/// What `basic.consume` may fail with.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumeRefused {
    /// The queue has an exclusive consumer, or an exclusive one was asked for while others exist.
    ExclusiveUse,
}

/// What happened to a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    Enqueued,
    /// Refused by a length limit with `x-overflow: reject-publish(-dlx)`.
    Rejected,
}

impl Queue {
    pub fn new(config: QueueConfig, args: QueueArgs, vhost: Weak<VHost>) -> Arc<Queue> {
        let store = vhost
            .upgrade()
            .filter(|_| config.durable && config.exclusive_owner.is_none())
            .map(|v| {
                (
                    v.store.clone(),
                    crate::store::record::queue_key(&config.vhost, &config.name),
                )
            });
        let state = State {
            eff: args.clone(),
            policy: None,
            ready: Ready::new(
                args.max_priority,
                vhost.upgrade().and_then(|v| v.paging.clone()),
            ),
            next_seq: 0,
            consumers: Vec::new(),
            had_consumer: false,
            last_used: Instant::now(),
            timer_running: false,
            dispatch_pending: false,
            timer_deadline: None,
            dlx_retry_at: None,
            quorum: (args.queue_type == QueueType::Quorum).then(|| {
                quorum::QuorumState::new(&args, vhost.upgrade().and_then(|v| v.paging.clone()))
            }),
            flow: Default::default(),
        };
        let stream = stream::settings_from_args(&args).map(|settings| {
            let dir = vhost
                .upgrade()
                .and_then(|v| v.streams_dir.clone())
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("warren-streams-{}", std::process::id()))
                })
                .join(stream::dir_name(&config.vhost, &config.name));
            let s = stream::Stream::open_or_empty(dir, settings);
            let _ = std::fs::write(
                s.dir().join("name"),
                format!("{}\n{}\n", config.vhost, config.name),
            );
            let cell = vhost.upgrade().map(|v| v.store.clone()).unwrap_or_default();
            (s, cell)
        });
        // A stream stores every message itself, never in the message log.
        let store = if stream.is_some() { None } else { store };
        let flow = vhost
            .upgrade()
            .map(|v| v.flow.clone())
            .filter(|l| l.enabled());
        let remote = vhost
            .upgrade()
            .map(|v| v.remote.clone())
            .unwrap_or_default();
        let q = Arc::new(Queue {
            config,
            args,
            vhost,
            state: Mutex::new(state),
            unacked: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            counters: Default::default(),
            timer: Arc::new(Notify::new()),
            timer_runs: AtomicU64::new(0),
            store,
            flow,
            stream,
            flow_overrun: AtomicBool::new(false),
            flow_released: Notify::new(),
            remote,
            replicated: OnceLock::new(),
            members: Mutex::new(Vec::new()),
            group: Mutex::new(None),
        });
        if q.args.expires.is_some() {
            q.ensure_timer(&mut q.state.lock());
        }
        q
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// After an enqueue or a hand-over: the queue holds its publishers while the broker
    /// is saturated, it has consumers and its backlog reached the flow credit.
    fn flow_check(&self, st: &mut State) {
        if let Some(load) = &self.flow {
            let pressed = load.saturated() && !st.consumers.is_empty();
            let backlog = match &st.quorum {
                Some(q) => q.fifo.ready_len(),
                None => st.ready.len(),
            };
            let change = st.flow.check(pressed, backlog, load.credit);
            self.flow_apply(change);
        }
    }

    /// Nothing holds the publishers any more (the queue lost its consumers, or was deleted).
    fn flow_release(&self, st: &mut State) {
        let change = st.flow.release();
        self.flow_apply(change);
    }

    fn flow_apply(&self, change: crate::flow::Change) {
        match change {
            crate::flow::Change::None => {}
            crate::flow::Change::Overrun => self.flow_overrun.store(true, SeqCst),
            crate::flow::Change::Released => {
                self.flow_overrun.store(false, SeqCst);
                self.flow_released.notify_waiters();
            }
        }
    }

    /// The queue is overrun while the broker is saturated: its publishers should stop
    /// reading until [`flow_released`](Self::flow_released) fires (or saturation ends).
    pub fn flow_overrun(&self) -> bool {
        self.flow_overrun.load(SeqCst) && self.flow.as_ref().is_some_and(|l| l.saturated())
    }

    /// Counts a basic.get that took a message: get or get_no_ack, redeliver, and one more
    /// unacked message when the client must ack it.
    fn count_get(&self, no_ack: bool, redelivered: bool) {
        if no_ack {
            Counters::bump(&self.counters.get_no_ack, 1);
        } else {
            self.unacked.fetch_add(1, SeqCst);
            Counters::bump(&self.counters.get, 1);
        }
        if redelivered {
            Counters::bump(&self.counters.redeliver, 1);
        }
    }

    /// Woken when the queue is no longer overrun.
    pub fn flow_released(&self) -> &Notify {
        &self.flow_released
    }

    /// The message log and this queue's key in it, for a durable queue once the log is open.
    fn log(&self) -> Option<(&Arc<MessageLog>, &Arc<str>)> {
        let (cell, key) = self.store.as_ref()?;
        if self.is_remote() {
            return None;
        }
        cell.get().map(|l| (l, key))
    }

    /// The log records persistent messages for this queue.
    pub fn is_stored(&self) -> bool {
        self.store.is_some() && !(self.is_remote())
    }

    /// Tells the message log this queue is done with these messages.
    pub fn forget<'a>(&self, msgs: impl IntoIterator<Item = &'a QueuedMessage>) {
        if self.log().is_some() {
            let ids = msgs.into_iter().map(|m| m.msg.persist_id);
            self.forget_ids(ids.filter(|id| *id != 0).collect());
        }
    }

    /// A message read back from the message log at start.
    pub fn restore(self: &Arc<Self>, r: Recovered) {
        if self.is_quorum() {
            return self.q_restore(r);
        }
        self.c_restore(r)
    }

    pub fn queue_type(&self) -> QueueType {
        self.args.queue_type
    }

    pub fn is_quorum(&self) -> bool {
        self.args.queue_type == QueueType::Quorum
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(SeqCst)
    }

    pub fn message_count(&self) -> u32 {
        if self.remote().is_some() {
            return self.remote_counts().0;
        }
        if let Some(s) = self.stream() {
            return s.message_count().min(u32::MAX as u64) as u32;
        }
        let st = self.state.lock();
        match &st.quorum {
            Some(q) => q.fifo.ready_len() as u32,
            None => st.ready.len() as u32,
        }
    }

    /// The stream's log, when this queue is a stream.
    pub fn stream(&self) -> Option<&Arc<stream::Stream>> {
        self.stream.as_ref().map(|(s, _)| s)
    }

    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// A stream reader sent `n` deliveries (they are unacknowledged until settled).
    pub(crate) fn stream_delivered(&self, n: u64) {
        self.unacked.fetch_add(n, SeqCst);
        Counters::bump(&self.counters.deliver, n);
    }

    /// Appends to the stream; the message log sequence number its confirm waits for,
    /// and, when the stream is replicated, what else it waits for.
    fn stream_append(&self, msg: &Message) -> (Option<u64>, Option<stream::replica::Wait>) {
        let Some((s, cell)) = self.stream.as_ref() else {
            return (None, None);
        };
        if self.is_deleted() {
            return (None, None);
        }
        Counters::bump(&self.counters.publish, 1);
        s.append_replicated(msg, cell.get())
    }

    /// Adds a consumer to the queue's list (highest priority first; registration order
    /// for single active consumer), unless exclusivity forbids it.
    fn attach(&self, st: &mut State, consumer: Arc<Consumer>) -> Result<(), ConsumeRefused> {
        if st.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !st.consumers.is_empty())
        {
            return Err(ConsumeRefused::ExclusiveUse);
        }
        let at = if self.args.single_active_consumer {
            st.consumers.len()
        } else {
            st.consumers
                .iter()
                .position(|c| c.priority < consumer.priority)
                .unwrap_or(st.consumers.len())
        };
        st.consumers.insert(at, consumer);
        st.had_consumer = true;
        st.last_used = Instant::now();
        Ok(())
    }

    /// Times the queue's timer task woke (TTL, expiry, dead-letter retries).
    pub fn timer_runs(&self) -> u64 {
        self.timer_runs.load(SeqCst)
    }

    pub fn consumer_count(&self) -> u32 {
        if self.remote().is_some() {
            return self.remote_counts().1;
        }
        self.state.lock().consumers.len() as u32
    }

    /// A proxy's (ready, consumers), asked of the home (0, 0 when it does not answer).
    fn remote_counts(&self) -> (u32, u32) {
        match self.remote().map(|r| r.call(self, remote::Call::Counts)) {
            Some(Ok(remote::Reply::Counts(n, c))) => (n, c),
            _ => (0, 0),
        }
    }

    /// Messages delivered and not yet settled. A replicated quorum queue answers with
    /// its group's state (every consumer's, on every node), as RabbitMQ reports the
    /// queue's, not one node's share of it.
    pub fn unacked_count(&self) -> u64 {
        if self.is_replicated() {
            if let Some(q) = &self.state.lock().quorum {
                return q.fifo.checked_out_len() as u64;
            }
        }
        self.unacked.load(SeqCst)
    }

    /// (ready messages, ready bytes, consumers)
    pub fn stats(&self) -> (usize, usize, usize) {
        if self.remote().is_some() {
            let (n, c) = self.remote_counts();
            return (n as usize, 0, c as usize);
        }
        let st = self.state.lock();
        if let Some(s) = self.stream() {
            return (
                s.message_count() as usize,
                s.info().1 as usize,
                st.consumers.len(),
            );
        }
        if let Some(q) = &st.quorum {
            // A replicated queue's consumers are those of every node.
            let consumers = if self.is_replicated() {
                q.fifo.consumer_count()
            } else {
                st.consumers.len()
            };
            return (q.fifo.ready_len(), q.fifo.ready_bytes(), consumers);
        }
        (st.ready.len(), st.ready.bytes(), st.consumers.len())
    }

    /// A redeclare or basic.get counts as use for x-expires.
    pub fn touch(&self) {
        self.state.lock().last_used = Instant::now();
    }

    /// Appends a message and delivers what can be delivered.
    pub fn publish(self: &Arc<Self>, msg: Arc<Message>) -> PublishOutcome {
        if let Some(r) = self.remote() {
            r.publish(self, &msg, None);
            return PublishOutcome::Enqueued;
        }
        if self.is_stream() {
            self.stream_append(&msg);
            return PublishOutcome::Enqueued;
        }
        if self.is_quorum() {
            return self.q_publish(msg);
        }
        self.c_publish(msg)
    }

    fn forget_msg(&self, msg: &Message) {
        self.forget_ids(vec![msg.persist_id]);
    }

    /// Appends a message without delivering it, for a publisher that calls `dispatch`
    /// once at the end of its read batch: a burst of publishes then costs one dispatch,
    /// one wake-up of the consumer's connection and one lock round per message less.
    /// Refused (`None`, nothing done) when the queue decides something at enqueue time
    /// (a length limit, a TTL) or is deleted; the caller then uses `publish`. `Some(true)`
    /// asks the caller to dispatch later; `Some(false)` means another publisher will.
    pub fn push_deferred(&self, msg: &Arc<Message>) -> Option<bool> {
        if msg.expiration.is_some() || self.is_stream() || self.is_quorum() || self.is_remote() {
            return None;
        }
        let mut st = self.state.lock();
        let a = &st.eff;
        let decides =
            a.max_length.is_some() || a.max_length_bytes.is_some() || a.message_ttl.is_some();
        if decides || self.is_deleted() {
            return None;
        }
        st.append(msg.clone(), false, None);
        Counters::bump(&self.counters.publish, 1);
        self.flow_check(&mut st);
        Some(!std::mem::replace(&mut st.dispatch_pending, true))
    }

    /// Delivers ready messages to consumers with credit.
    pub fn dispatch(self: &Arc<Self>) {
        if self.is_remote() {
            // The home dispatches; credit given back here reaches it with the settle.
            return;
        }
        if let Some(s) = self.stream() {
            s.wake_readers();
            return;
        }
        if self.is_quorum() {
            return self.q_dispatch();
        }
        self.c_dispatch()
    }

    /// Adds a consumer; deliveries may start at once.
    pub fn consume(self: &Arc<Self>, consumer: Arc<Consumer>) -> Result<(), ConsumeRefused> {
        if let Some(r) = self.remote() {
            // Listed here too (management, delete); the home applies exclusivity and
            // cancels the consumer if it refuses it.
            self.state.lock().consumers.push(consumer.clone());
            r.consume(self, consumer);
            return Ok(());
        }
        if let Some(s) = self.stream() {
            let mut st = self.state.lock();
            st.consumers.push(consumer.clone());
            st.had_consumer = true;
            stream::reader::spawn(self.clone(), s.clone(), consumer);
            return Ok(());
        }
        if self.is_quorum() {
            return self.q_consume(consumer);
        }
        self.c_consume(consumer)
    }

    /// Removes a consumer. Returns true when the queue is auto-delete and this was its last
    /// consumer (the caller deletes it).
    /// With `dispatch` false the caller dispatches later (a closing channel first gives its
    /// unacked messages back, so the next single active consumer sees them in order).
    pub fn cancel(self: &Arc<Self>, consumer: &Arc<Consumer>, dispatch: bool) -> bool {
        if let Some(r) = self.remote() {
            self.state
                .lock()
                .consumers
                .retain(|c| !Arc::ptr_eq(c, consumer));
            r.cancel(self, consumer);
            return false;
        }
        if self.is_quorum() {
            return self.q_cancel(consumer, dispatch);
        }
        self.c_cancel(consumer, dispatch)
    }

    /// Takes the head message for basic.get; with the number of messages left.
    pub fn get(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        if let Some(r) = self.remote() {
            return match r.call(self, remote::Call::Get { no_ack }) {
                Ok(remote::Reply::Got(Some((mut m, left)))) => {
                    m.seq = remote::to_proxy_seq(m.seq);
                    Some((m, left))
                }
                _ => None,
            };
        }
        if self.is_stream() {
            return None;
        }
        if self.is_replicated() {
            return self.try_get(no_ack).unwrap_or_else(|e| {
                tracing::warn!(queue = %self.name(), error = %e, "basic.get failed");
                None
            });
        }
        if self.is_quorum() {
            return self.q_get(no_ack);
        }
        self.c_get(no_ack)
    }

    /// As [`get`](Self::get), with the reason when a replicated quorum queue's group did
    /// not answer (the channel closes with it, as RabbitMQ's does).
    pub fn try_get(self: &Arc<Self>, no_ack: bool) -> Result<Option<(QueuedMessage, u32)>, String> {
        if self.is_replicated() && !self.is_remote() {
            return self.r_get(no_ack);
        }
        Ok(self.get(no_ack))
    }

    /// Acknowledged deliveries: forget them (`ids`: their message-log ids, if stored).
    /// For a quorum queue, `ids` are the messages' ids in the queue (`QueuedMessage::seq`).
    pub fn acked(self: &Arc<Self>, n: u64, ids: Vec<u64>) {
        self.acked_by(n, ids, &[])
    }

    /// [`acked`](Self::acked), naming for a quorum queue the consumer key each message
    /// was checked out to ([`QueuedMessage::holder`], in the order of `ids`; basic.get's
    /// where absent): the queue settles only what that consumer holds.
    pub fn acked_by(self: &Arc<Self>, n: u64, ids: Vec<u64>, holders: &[u64]) {
        if let Some(r) = self.remote() {
            let seqs = ids.iter().map(|i| i.saturating_sub(1)).collect();
            return r.settle(self, remote::SettleHow::Ack, seqs);
        }
        if self.is_quorum() {
            return self.q_acked(n, ids, holders);
        }
        self.unacked.fetch_sub(n, SeqCst);
        self.forget_ids(ids);
        Counters::bump(&self.counters.ack, n);
    }

    /// Rejected deliveries (requeue=false): dead-letter them.
    pub fn rejected(self: &Arc<Self>, msgs: Vec<QueuedMessage>) {
        if let Some(r) = self.remote() {
            return r.settle(self, remote::SettleHow::Reject, remote::to_home_seqs(&msgs));
        }
        if self.is_quorum() {
            return self.q_rejected(msgs);
        }
        self.unacked.fetch_sub(msgs.len() as u64, SeqCst);
        if self.is_stream() {
            // A stream settles by giving credit back; nothing is removed or dead-lettered.
            return;
        }
        self.dead_letter(msgs, Reason::Rejected);
    }

    /// Puts delivered messages back in their original positions, marked redelivered, and
    /// delivers again. A quorum queue counts the return: past `x-delivery-limit` the
    /// message dies (reason `delivery_limit`); without a limit it goes to the back of the
    /// queue, as in RabbitMQ 3.13.
    pub fn requeue(self: &Arc<Self>, msgs: impl IntoIterator<Item = QueuedMessage>) {
        if let Some(r) = self.remote() {
            let msgs: Vec<QueuedMessage> = msgs.into_iter().collect();
            return r.settle(
                self,
                remote::SettleHow::Requeue,
                remote::to_home_seqs(&msgs),
            );
        }
        if let Some(s) = self.stream() {
            // Requeue on a stream only gives credit back (the reader moves on).
            self.unacked
                .fetch_sub(msgs.into_iter().count() as u64, SeqCst);
            s.wake_readers();
            return;
        }
        if self.is_quorum() {
            return self.q_requeue(msgs.into_iter().collect());
        }
        self.c_requeue(msgs)
    }

    /// A delivery that never reached its consumer (its channel closed first): back to the
    /// queue as it was, without the redelivered mark.
    pub fn return_undelivered(self: &Arc<Self>, m: QueuedMessage, counted_unacked: bool) {
        if let Some(r) = self.remote() {
            let seqs = remote::to_home_seqs(std::slice::from_ref(&m));
            return r.settle(self, remote::SettleHow::Undelivered, seqs);
        }
        if self.is_quorum() {
            return self.q_return_undelivered(m, counted_unacked);
        }
        if self.is_stream() {
            if counted_unacked {
                self.unacked.fetch_sub(1, SeqCst);
            }
            return;
        }
        let mut dead = Vec::new();
        {
            let mut st = self.state.lock();
            if counted_unacked {
                self.unacked.fetch_sub(1, SeqCst);
            }
            if self.is_deleted() {
                self.forget([&m]);
                return;
            }
            st.ready.insert_by_seq(m);
            self.dispatch_locked(&mut st, &mut dead, None);
        }
        self.dead_letter(dead, Reason::Expired);
    }

    /// Drops every ready message; returns how many.
    pub fn purge(self: &Arc<Self>) -> u32 {
        if let Some(r) = self.remote() {
            return match r.call(self, remote::Call::Purge) {
                Ok(remote::Reply::Count(n)) => n,
                _ => 0,
            };
        }
        if self.is_stream() {
            return 0;
        }
        if self.is_quorum() {
            return self.q_purge();
        }
        self.c_purge()
    }

    /// Dead-letters (or drops, without a dead-letter exchange) messages that died for
    /// `reason`. Never called with the queue's lock held.
    pub(crate) fn dead_letter(self: &Arc<Self>, msgs: Vec<QueuedMessage>, reason: Reason) {
        if msgs.is_empty() {
            return;
        }
        deadletter::dead_letter(self, &self.vhost, &msgs, reason);
        self.forget(&msgs);
    }

    fn forget_ids(&self, ids: Vec<u64>) {
        if let Some((log, key)) = self.log() {
            log.remove(key, ids);
        }
    }

    /// Ready messages whose bytes are in the page file.
    pub fn paged_count(&self) -> usize {
        // A quorum queue keeps its messages in its state machine, in memory.
        self.state.lock().ready.paged()
    }

    /// Marks the queue deleted, drops its messages; returns the ready count and the
    /// consumers (to be told with basic.cancel).
    pub fn delete(&self) -> (u32, Vec<Arc<Consumer>>) {
        let mut st = self.state.lock();
        self.deleted.store(true, SeqCst);
        if self.remote().is_some() {
            // The home drops the messages (when it applies the replicated delete).
            return (0, std::mem::take(&mut st.consumers));
        }
        if let Some(s) = self.stream() {
            let n = s.message_count().min(u32::MAX as u64) as u32;
            s.delete();
            return (n, std::mem::take(&mut st.consumers));
        }
        if let Some(g) = self.group.lock().take() {
            g.stop();
        }
        if let Some(q) = st.quorum.as_mut() {
            let n = q.fifo.ready_len() as u32;
            let ids = q.drain();
            self.forget_ids(ids);
            self.timer.notify_one();
            return (n, std::mem::take(&mut st.consumers));
        }
        let (n, ids) = st.ready.clear();
        self.forget_ids(ids);
        self.timer.notify_one();
        self.flow_release(&mut st);
        (n as u32, std::mem::take(&mut st.consumers))
    }

    /// The attached consumers (management listing).
    pub fn consumers(&self) -> Vec<Arc<Consumer>> {
        self.state.lock().consumers.clone()
    }

    /// True when a consumer with this exact identity is attached.
    pub fn has_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        self.state
            .lock()
            .consumers
            .iter()
            .any(|c| Arc::ptr_eq(c, consumer))
    }
}

/// Hands a routed message to its queues, recording it in the message log first when it is
/// persistent and some of them are durable (so the log's order is the queues' order).
/// Returns whether a length limit refused it somewhere, and the log sequence number a
/// publisher confirm must wait for when it was stored.
/// With `deferred`, queues that allow it (see [`Queue::push_deferred`]) are not dispatched
/// now; those the caller must dispatch are added to `deferred`.
/// With `overrun`, queues that are overrun after this publish (see [`crate::flow`]) are
/// added to it: the publisher's connection stops reading until they are released.
pub fn enqueue(
    msg: Arc<Message>,
    queues: &mut Vec<Arc<Queue>>,
    deferred: Option<&mut Vec<Arc<Queue>>>,
    overrun: Option<&mut Vec<Arc<Queue>>>,
) -> (bool, Option<u64>) {
    let (rejected, lsn, _) = enqueue_confirmed(msg, queues, deferred, overrun, None);
    (rejected, lsn)
}

/// What a publisher confirm waits for besides the message log: the homes of queues the
/// message was forwarded to, the commit of its replicated quorum queues, the majority of
/// its replicated streams.
pub type ConfirmWaits = (
    Option<Arc<remote::Ticket>>,
    Option<Arc<quorum::wire::Ticket>>,
    Vec<stream::replica::Wait>,
);

/// [`enqueue`], and what a confirm waits for besides the log (`confirm`: the publisher's
/// connection, woken when those are done).
pub fn enqueue_confirmed(
    mut msg: Arc<Message>,
    queues: &mut Vec<Arc<Queue>>,
    mut deferred: Option<&mut Vec<Arc<Queue>>>,
    mut overrun: Option<&mut Vec<Arc<Queue>>>,
    confirm: Option<&crate::connection::outbound::ConnSender>,
) -> (bool, Option<u64>, ConfirmWaits) {
    let ticket = forward(&msg, queues, confirm);
    let mut waits = Vec::new();
    let mut slot = confirm.map(|conn| quorum::wire::TicketSlot { conn, ticket: None });
    let mut lsn = None;
    // A quorum queue stores every message, persistent or not. A transient message is
    // stored for its quorum queues only, under a copy of its own, so that the classic
    // queues it also went to never remove a log id they were not given.
    let mut stored = None;
    {
        let mut log = None;
        let mut keys = Vec::new();
        for q in queues.iter() {
            if (msg.persistent || q.is_quorum()) && !q.is_replicated() {
                if let Some((l, k)) = q.log() {
                    keys.push(k.clone());
                    log = Some(l.clone());
                }
            }
        }
        if let Some(log) = log {
            if msg.persistent {
                lsn = Some(log.append_publish(&mut msg, keys));
            } else {
                let mut copy = Arc::new((*msg).clone());
                lsn = Some(log.append_publish(&mut copy, keys));
                stored = Some(copy);
            }
        }
    }
    let mut rejected = false;
    for q in queues.drain(..) {
        if q.is_stream() {
            // Streams keep every message, persistent or not, and sync it before confirming.
            let (l, wait) = q.stream_append(&msg);
            lsn = lsn.max(l);
            waits.extend(wait);
            continue;
        }
        if q.is_replicated() {
            // Its Raft group stores it: the confirm waits for the group's commit.
            let done = slot.as_mut().map(|t| t.get().completion());
            q.r_publish(&msg, done);
            continue;
        }
        let msg = match &stored {
            Some(copy) if q.is_quorum() => copy,
            _ => &msg,
        };
        if let Some(held) = overrun.as_deref_mut() {
            if q.flow_overrun() && !held.iter().any(|h| Arc::ptr_eq(h, &q)) {
                held.push(q.clone());
            }
        }
        if let Some(later) = deferred.as_deref_mut() {
            match q.push_deferred(msg) {
                Some(true) => {
                    later.push(q);
                    continue;
                }
                Some(false) => continue,
                None => {}
            }
        }
        rejected |= q.publish(msg.clone()) == PublishOutcome::Rejected;
    }
    let quorum = slot.and_then(|s| s.ticket);
    (rejected, lsn, (ticket, quorum, waits))
}

/// Sends the message to the queues whose home is another node and takes them out of
/// `queues`; the ticket their answers settle, when the publisher wants confirms.
fn forward(
    msg: &Arc<Message>,
    queues: &mut Vec<Arc<Queue>>,
    confirm: Option<&crate::connection::outbound::ConnSender>,
) -> Option<Arc<remote::Ticket>> {
    let mut ticket: Option<Arc<remote::Ticket>> = None;
    queues.retain(|q| {
        let Some(r) = q.remote() else {
            return true;
        };
        let t = confirm.map(|c| {
            ticket
                .get_or_insert_with(|| {
                    // Held open by one expected answer until every home got the message.
                    let t = remote::Ticket::new(c.clone());
                    t.expect();
                    t
                })
                .clone()
        });
        if let Some(t) = &t {
            t.expect();
        }
        r.publish(q, msg, t);
        false
    });
    if let Some(t) = &ticket {
        t.answer(true);
    }
    ticket
}
