//! Consumers as a queue sees them, and the per-channel state that queues consult before
//! delivering (prefetch, flow).
//!
//! Counters are atomics because two owners touch them: the queue (under its lock) counts a
//! delivery against a consumer's credit, and the consumer's connection task gives the credit
//! back on ack or once the delivery is written. The `blocked` flag closes the lost-wakeup
//! race: the queue sets it *before* re-checking capacity, the connection clears it *after*
//! returning credit and, if it was set, asks the queue to dispatch again.

use crate::connection::outbound::ConnSender;
use crate::protocol::codec::ShortStr;
use amq_protocol::types::FieldTable;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

/// Deliveries a consumer may have in its connection's outbound queue, not yet written to
/// the socket. Bounds memory for no-ack consumers on slow sockets.
pub const INFLIGHT_WINDOW: u32 = 2048;

/// State of one channel shared with the queues its consumers read from.
#[derive(Debug)]
pub struct ChannelShared {
    pub id: u16,
    /// basic.qos global=true limit; 0 = none.
    pub global_prefetch: AtomicU32,
    /// Unacknowledged deliveries on this channel (all consumers, not basic.get).
    pub unacked: AtomicU32,
    /// channel.flow: false stops deliveries.
    pub active: AtomicBool,
}

impl ChannelShared {
    pub fn new(id: u16) -> Self {
        ChannelShared {
            id,
            global_prefetch: AtomicU32::new(0),
            unacked: AtomicU32::new(0),
            active: AtomicBool::new(true),
        }
    }

    /// Takes one unit of channel-wide credit if a global limit is set and not reached.
    fn try_take_global(&self) -> bool {
        let limit = self.global_prefetch.load(SeqCst);
        if limit == 0 {
            self.unacked.fetch_add(1, SeqCst);
            return true;
        }
        self.unacked
            .fetch_update(SeqCst, SeqCst, |u| (u < limit).then_some(u + 1))
            .is_ok()
    }
}

/// A consumer (basic.consume) as shared between its queue and its connection.
#[derive(Debug)]
pub struct Consumer {
    /// Unique in this broker's run (a quorum queue's key for the consumer).
    pub id: u64,
    pub tag: ShortStr,
    pub no_ack: bool,
    pub exclusive: bool,
    pub arguments: FieldTable,
    /// x-priority: higher-priority consumers get messages first while they have credit.
    pub priority: i64,
    /// Per-consumer prefetch (basic.qos global=false before consume); 0 = none.
    pub prefetch: u32,
    pub unacked: AtomicU32,
    pub inflight: AtomicU32,
    pub blocked: AtomicBool,
    pub channel: std::sync::Arc<ChannelShared>,
    pub conn: ConnSender,
}

impl Consumer {
    pub fn new(
        tag: ShortStr,
        no_ack: bool,
        exclusive: bool,
        arguments: FieldTable,
        prefetch: u32,
        channel: std::sync::Arc<ChannelShared>,
        conn: ConnSender,
    ) -> Self {
        let priority = arguments
            .inner()
            .get("x-priority")
            .and_then(super::args::int_value)
            .unwrap_or(0);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Consumer {
            id: NEXT_ID.fetch_add(1, SeqCst),
            tag,
            no_ack,
            exclusive,
            arguments,
            priority,
            prefetch,
            unacked: AtomicU32::new(0),
            inflight: AtomicU32::new(0),
            blocked: AtomicBool::new(false),
            channel,
            conn,
        }
    }

    fn has_capacity(&self) -> bool {
        self.channel.active.load(SeqCst)
            && self.inflight.load(SeqCst) < INFLIGHT_WINDOW
            && (self.no_ack || self.prefetch == 0 || self.unacked.load(SeqCst) < self.prefetch)
    }

    /// Reserves credit for one delivery; false when the consumer cannot take one now.
    /// Called by the queue under its lock.
    pub(crate) fn try_reserve(&self) -> bool {
        if !self.has_capacity() {
            return false;
        }
        if !self.no_ack && !self.channel.try_take_global() {
            return false;
        }
        self.inflight.fetch_add(1, SeqCst);
        if !self.no_ack {
            self.unacked.fetch_add(1, SeqCst);
        }
        true
    }

    /// Reserve or mark blocked, without losing a wake-up (see module docs).
    pub(crate) fn reserve_or_block(&self) -> bool {
        if self.try_reserve() {
            return true;
        }
        self.blocked.store(true, SeqCst);
        if self.try_reserve() {
            self.blocked.store(false, SeqCst);
            return true;
        }
        false
    }

    /// Counts `n` deliveries a quorum queue decided on (its state machine keeps the
    /// consumer's credit; this keeps the channel's own accounting in step).
    pub(crate) fn reserved_n(&self, n: u32) {
        self.inflight.fetch_add(n, SeqCst);
        if !self.no_ack {
            self.unacked.fetch_add(n, SeqCst);
            self.channel.unacked.fetch_add(n, SeqCst);
        }
    }

    /// Undoes a reservation whose delivery could not be sent.
    pub(crate) fn unreserve(&self) {
        self.inflight.fetch_sub(1, SeqCst);
        if !self.no_ack {
            self.unacked.fetch_sub(1, SeqCst);
            self.channel.unacked.fetch_sub(1, SeqCst);
        }
    }

    /// The delivery was written to the connection's buffer: returns inflight credit.
    /// True when the queue should be asked to dispatch again.
    pub fn written(&self) -> bool {
        self.written_n(1)
    }

    /// `n` deliveries were written (see [`written`](Self::written)).
    pub fn written_n(&self, n: u32) -> bool {
        self.inflight.fetch_sub(n, SeqCst);
        self.blocked.load(SeqCst) && self.blocked.swap(false, SeqCst)
    }

    /// The delivery was acked, rejected or requeued: returns prefetch credit.
    /// True when the queue should be asked to dispatch again.
    pub fn settled(&self) -> bool {
        self.unacked.fetch_sub(1, SeqCst);
        self.channel.unacked.fetch_sub(1, SeqCst);
        self.blocked.load(SeqCst) && self.blocked.swap(false, SeqCst)
    }

    /// Clears the blocked flag (e.g. flow re-enabled); true when it was set.
    pub fn unblock(&self) -> bool {
        self.blocked.swap(false, SeqCst)
    }
}
