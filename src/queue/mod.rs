//! A queue: its ready messages, its consumers, and the dispatch that joins them.
//!
//! State is behind one short, synchronous lock per queue (never held across `.await`):
//! publishers route in their own connection task and append under the lock; the lock holder
//! then hands ready messages to consumers with credit by sending them to the consumer's
//! connection task. There is no global lock on this path — two queues never share a lock.
//! Unacknowledged messages live in the channel that received them (it gives them back on
//! ack, reject or close); the queue only counts them.

pub mod args;
pub mod consumer;

use crate::connection::outbound::Outbound;
use crate::message::Message;
use amq_protocol::types::FieldTable;
use consumer::Consumer;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// A message in a queue, or out for delivery from it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Position in the queue; a requeued message goes back to where this says.
    pub seq: u64,
    pub msg: Arc<Message>,
    pub redelivered: bool,
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
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<QueuedMessage>,
    ready_bytes: usize,
    next_seq: u64,
    consumers: Vec<Arc<Consumer>>,
    /// Round-robin position in `consumers`.
    rr: usize,
    /// Set once any consumer attached: auto-delete applies only after that.
    had_consumer: bool,
}

#[derive(Debug)]
pub struct Queue {
    pub config: QueueConfig,
    state: Mutex<State>,
    unacked: AtomicU64,
    deleted: AtomicBool,
}

/// What `basic.consume` may fail with.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumeRefused {
    /// The queue has an exclusive consumer, or an exclusive one was asked for while others exist.
    ExclusiveUse,
}

impl Queue {
    pub fn new(config: QueueConfig) -> Arc<Queue> {
        Arc::new(Queue {
            config,
            state: Mutex::new(State::default()),
            unacked: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(SeqCst)
    }

    pub fn message_count(&self) -> u32 {
        self.state.lock().ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.state.lock().consumers.len() as u32
    }

    pub fn unacked_count(&self) -> u64 {
        self.unacked.load(SeqCst)
    }

    /// (ready messages, ready bytes, consumers)
    pub fn stats(&self) -> (usize, usize, usize) {
        let st = self.state.lock();
        (st.ready.len(), st.ready_bytes, st.consumers.len())
    }

    /// Appends a message and delivers what can be delivered.
    pub fn publish(self: &Arc<Self>, msg: Arc<Message>) {
        if self.is_deleted() {
            return;
        }
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.ready_bytes += msg.size();
        st.ready.push_back(QueuedMessage {
            seq,
            msg,
            redelivered: false,
        });
        self.dispatch_locked(&mut st);
    }

    /// Delivers ready messages to consumers with credit, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let n = st.consumers.len();
            let mut chosen = None;
            for i in 0..n {
                let idx = (st.rr + i) % n;
                if st.consumers[idx].reserve_or_block() {
                    chosen = Some(idx);
                    break;
                }
            }
            let Some(idx) = chosen else { return };
            st.rr = (idx + 1) % n;
            let Some(m) = st.ready.pop_front() else {
                return;
            };
            st.ready_bytes -= m.msg.size();
            let c = st.consumers[idx].clone();
            if !c.no_ack {
                self.unacked.fetch_add(1, SeqCst);
            }
            let out = Outbound::Deliver {
                consumer: c.clone(),
                queue: self.clone(),
                msg: m,
            };
            if let Err(returned) = c.conn.send(out) {
                // The consumer's connection is gone: take the message back, drop the consumer.
                c.unreserve();
                if let Outbound::Deliver { msg, .. } = returned.0 {
                    if !c.no_ack {
                        self.unacked.fetch_sub(1, SeqCst);
                    }
                    st.ready_bytes += msg.msg.size();
                    st.ready.push_front(msg);
                }
                st.consumers.remove(idx);
                st.rr = 0;
            }
        }
    }

    /// Adds a consumer; deliveries may start at once.
    pub fn consume(self: &Arc<Self>, consumer: Arc<Consumer>) -> Result<(), ConsumeRefused> {
        let mut st = self.state.lock();
        if st.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !st.consumers.is_empty())
        {
            return Err(ConsumeRefused::ExclusiveUse);
        }
        st.consumers.push(consumer);
        st.had_consumer = true;
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Removes a consumer. Returns true when the queue is auto-delete and this was its last
    /// consumer (the caller deletes it).
    pub fn cancel(&self, consumer: &Arc<Consumer>) -> bool {
        let mut st = self.state.lock();
        let before = st.consumers.len();
        st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        if st.consumers.len() != before {
            st.rr = 0;
        }
        self.config.auto_delete && st.had_consumer && st.consumers.is_empty() && !self.is_deleted()
    }

    /// Takes the head message for basic.get; with the number of messages left.
    pub fn get(&self, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        let mut st = self.state.lock();
        let m = st.ready.pop_front()?;
        st.ready_bytes -= m.msg.size();
        if !no_ack {
            self.unacked.fetch_add(1, SeqCst);
        }
        Some((m, st.ready.len() as u32))
    }

    /// Acknowledged deliveries: forget them.
    pub fn acked(&self, n: u64) {
        self.unacked.fetch_sub(n, SeqCst);
    }

    /// Puts delivered messages back in their original positions, marked redelivered, and
    /// delivers again.
    pub fn requeue(self: &Arc<Self>, msgs: impl IntoIterator<Item = QueuedMessage>) {
        let mut st = self.state.lock();
        let mut n = 0;
        for mut m in msgs {
            n += 1;
            if self.is_deleted() {
                continue;
            }
            m.redelivered = true;
            st.ready_bytes += m.msg.size();
            let at = st.ready.partition_point(|r| r.seq < m.seq);
            st.ready.insert(at, m);
        }
        self.unacked.fetch_sub(n, SeqCst);
        self.dispatch_locked(&mut st);
    }

    /// A delivery that never reached its consumer (its channel closed first): back to the
    /// queue as it was, without the redelivered mark.
    pub fn return_undelivered(self: &Arc<Self>, m: QueuedMessage, counted_unacked: bool) {
        let mut st = self.state.lock();
        if counted_unacked {
            self.unacked.fetch_sub(1, SeqCst);
        }
        if self.is_deleted() {
            return;
        }
        st.ready_bytes += m.msg.size();
        let at = st.ready.partition_point(|r| r.seq < m.seq);
        st.ready.insert(at, m);
        self.dispatch_locked(&mut st);
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.state.lock();
        let n = st.ready.len() as u32;
        st.ready.clear();
        st.ready_bytes = 0;
        n
    }

    /// Marks the queue deleted, drops its messages; returns the ready count and the
    /// consumers (to be told with basic.cancel).
    pub fn delete(&self) -> (u32, Vec<Arc<Consumer>>) {
        let mut st = self.state.lock();
        self.deleted.store(true, SeqCst);
        let n = st.ready.len() as u32;
        st.ready.clear();
        st.ready_bytes = 0;
        (n, std::mem::take(&mut st.consumers))
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
