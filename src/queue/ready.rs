//! A queue's ready messages: one FIFO, or one FIFO per priority level for priority queues
//! (x-max-priority). Requeued messages go back to their original position (by sequence).

use super::QueuedMessage;
use std::collections::VecDeque;
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Ready {
    /// Index = priority level; a plain queue has one level.
    levels: Vec<VecDeque<QueuedMessage>>,
    len: usize,
    bytes: usize,
}

impl Ready {
    pub(crate) fn new(max_priority: Option<u8>) -> Ready {
        let n = max_priority.map(|p| p as usize + 1).unwrap_or(1);
        Ready {
            levels: (0..n).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
        }
    }

    fn level(&self, m: &QueuedMessage) -> usize {
        (m.msg.priority as usize).min(self.levels.len() - 1)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push_back(&mut self, m: QueuedMessage) {
        let l = self.level(&m);
        self.len += 1;
        self.bytes += m.msg.size();
        self.levels[l].push_back(m);
    }

    /// Puts a message back where its sequence number says (requeue).
    pub(crate) fn insert_by_seq(&mut self, m: QueuedMessage) {
        let l = self.level(&m);
        self.len += 1;
        self.bytes += m.msg.size();
        let q = &mut self.levels[l];
        let at = q.partition_point(|r| r.seq < m.seq);
        q.insert(at, m);
    }

    /// The next message to deliver: the oldest of the highest non-empty priority.
    pub(crate) fn pop_front(&mut self) -> Option<QueuedMessage> {
        let q = self.levels.iter_mut().rev().find(|q| !q.is_empty())?;
        let m = q.pop_front()?;
        self.len -= 1;
        self.bytes -= m.msg.size();
        Some(m)
    }

    /// Puts back a message just taken by [`Self::pop_front`].
    pub(crate) fn push_front(&mut self, m: QueuedMessage) {
        let l = self.level(&m);
        self.len += 1;
        self.bytes += m.msg.size();
        self.levels[l].push_front(m);
    }

    /// Removes expired messages from the head of every level.
    pub(crate) fn pop_expired(&mut self, now: Instant, out: &mut Vec<QueuedMessage>) {
        for q in self.levels.iter_mut() {
            while q
                .front()
                .is_some_and(|m| m.expires_at.is_some_and(|t| t <= now))
            {
                if let Some(m) = q.pop_front() {
                    self.len -= 1;
                    self.bytes -= m.msg.size();
                    out.push(m);
                }
            }
        }
    }

    /// When the next head message expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.levels
            .iter()
            .filter_map(|q| q.front().and_then(|m| m.expires_at))
            .min()
    }

    /// Takes every message out.
    pub(crate) fn drain(&mut self) -> Vec<QueuedMessage> {
        let mut all = Vec::with_capacity(self.len);
        for q in self.levels.iter_mut() {
            all.extend(q.drain(..));
        }
        self.len = 0;
        self.bytes = 0;
        all
    }
}
