//! Quorum-queue rules on top of the queue engine: what a return does to a message
//! (delivery count, `x-delivery-limit`, where it goes back), and at-least-once
//! dead-lettering, which holds a dead letter that reached no queue.
//!
//! The decisions are pure functions over a message and the queue's settings, unit-tested
//! here; the queue applies them under its lock.

use super::deadletter::{self, Reason};
use super::{Queue, QueuedMessage, DLX_RETRY};
use std::sync::Arc;
use std::time::Instant;

/// What a quorum queue does with a message a consumer gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// Back to where it was (a delivery limit is set: the message keeps its place).
    InPlace,
    /// To the back of the queue (no delivery limit: RabbitMQ 3.13 avoids a poison
    /// message blocking the head).
    ToBack,
    /// Past `x-delivery-limit`: dropped or dead-lettered with reason `delivery_limit`.
    Poisoned,
}

/// Counts the return on `m` and decides where it goes (RabbitMQ 3.13's `delivery_count`,
/// incremented on every return; the limit is exceeded when the count is above it).
pub fn on_return(m: &mut QueuedMessage, delivery_limit: Option<u64>) -> Return {
    m.delivery_count = m.delivery_count.saturating_add(1);
    match delivery_limit {
        Some(l) if u64::from(m.delivery_count) > l => Return::Poisoned,
        Some(_) => Return::InPlace,
        None => Return::ToBack,
    }
}

impl Queue {
    /// Dead-letters (or drops, without a dead-letter exchange) messages that died for
    /// `reason`. Never called with the queue's lock held.
    /// With at-least-once dead-lettering (a quorum queue with `x-dead-letter-strategy:
    /// at-least-once`, `reject-publish` and a dead-letter exchange) a message leaves the
    /// queue only once a target queue has it: one that reached none is kept (still
    /// stored) and tried again every [`DLX_RETRY`].
    pub(crate) fn dead_letter(self: &Arc<Self>, msgs: Vec<QueuedMessage>, reason: Reason) {
        if msgs.is_empty() {
            return;
        }
        let unrouted = deadletter::dead_letter(self, &self.vhost, &msgs, reason);
        let at_least_once = self.state.lock().eff.at_least_once();
        if !at_least_once || self.is_deleted() {
            self.forget(&msgs);
            return;
        }
        let mut held = Vec::new();
        let mut done = Vec::new();
        for (m, unrouted) in msgs.into_iter().zip(unrouted) {
            if unrouted {
                held.push((m, reason));
            } else {
                done.push(m);
            }
        }
        self.forget(&done);
        if !held.is_empty() {
            let mut st = self.state.lock();
            st.dlx_waiting.extend(held);
            let due = Instant::now() + DLX_RETRY;
            if st.timer_deadline.is_none_or(|d| due < d) {
                st.timer_deadline = Some(due);
            }
            st.dlx_retry_at.get_or_insert(due);
            self.ensure_timer(&mut st);
            self.timer.notify_one();
        }
    }

    /// Dead letters held by at-least-once dead-lettering (management's `messages_dlx`).
    pub fn dlx_waiting(&self) -> usize {
        self.state.lock().dlx_waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;

    fn msg() -> QueuedMessage {
        QueuedMessage {
            seq: 7,
            msg: Arc::new(Message::new(
                crate::protocol::codec::ShortStr::from_static(""),
                crate::protocol::codec::ShortStr::from_static("q"),
                Bytes::new(),
                Bytes::from_static(b"x"),
            )),
            redelivered: false,
            expires_at: None,
            delivery_count: 0,
        }
    }

    #[test]
    fn a_limit_of_n_allows_n_returns() {
        let mut m = msg();
        assert_eq!(on_return(&mut m, Some(2)), Return::InPlace);
        assert_eq!(on_return(&mut m, Some(2)), Return::InPlace);
        assert_eq!(on_return(&mut m, Some(2)), Return::Poisoned);
        assert_eq!(m.delivery_count, 3);
        let mut m = msg();
        assert_eq!(on_return(&mut m, Some(0)), Return::Poisoned);
    }

    #[test]
    fn without_a_limit_returns_go_to_the_back() {
        let mut m = msg();
        for n in 1..=5 {
            assert_eq!(on_return(&mut m, None), Return::ToBack);
            assert_eq!(m.delivery_count, n);
        }
    }
}
