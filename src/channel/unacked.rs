//! A channel's unacknowledged deliveries, in delivery-tag order.
//!
//! Acks usually arrive in order, so the common case is a pop from the front; an ack out of
//! order is a binary search. Tags are unique and increasing per channel.

use crate::queue::consumer::Consumer;
use crate::queue::{Queue, QueuedMessage};
use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Debug)]
pub struct Unacked {
    pub tag: u64,
    pub queue: Arc<Queue>,
    pub msg: QueuedMessage,
    /// The consumer it went to; `None` for basic.get.
    pub consumer: Option<Arc<Consumer>>,
    /// When it was delivered (the consumer timeout counts from here).
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
pub struct UnackedMap {
    entries: VecDeque<Unacked>,
}

impl UnackedMap {
    pub fn push(&mut self, u: Unacked) {
        debug_assert!(self.entries.back().is_none_or(|b| b.tag < u.tag));
        self.entries.push_back(u);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes the entries an ack/nack/reject names: `tag` alone, or with `multiple` every
    /// entry up to and including it (tag 0 with multiple: all). `None` when `tag` is unknown.
    pub fn take(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        if multiple {
            if tag == 0 {
                return Some(self.entries.drain(..).collect());
            }
            // As RabbitMQ: the named tag itself must be outstanding.
            let end = self.entries.partition_point(|u| u.tag <= tag);
            if end == 0 || self.entries[end - 1].tag != tag {
                return None;
            }
            return Some(self.entries.drain(..end).collect());
        }
        if self.entries.front().is_some_and(|u| u.tag == tag) {
            return self.entries.pop_front().map(|u| vec![u]);
        }
        let i = self.entries.binary_search_by_key(&tag, |u| u.tag).ok()?;
        self.entries.remove(i).map(|u| vec![u])
    }

    /// When the oldest outstanding delivery was made.
    pub fn oldest(&self) -> Option<std::time::Instant> {
        self.entries.iter().map(|u| u.at).min()
    }

    /// Every entry, in tag order (channel close, basic.recover).
    pub fn take_all(&mut self) -> Vec<Unacked> {
        self.entries.drain(..).collect()
    }

    /// Puts entries back (tx.rollback of acks), keeping tag order.
    pub fn restore(&mut self, list: Vec<Unacked>) {
        for u in list {
            let at = self.entries.partition_point(|e| e.tag < u.tag);
            self.entries.insert(at, u);
        }
    }
}
