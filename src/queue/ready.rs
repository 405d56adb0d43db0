//! A queue's ready messages: one FIFO, or one FIFO per priority level for priority queues
//! (x-max-priority). Requeued messages go back to their original position (by sequence).

use super::pager::{Pager, Paging, ENTRY_OVERHEAD};
use super::QueuedMessage;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// In-memory head plus, for plain (non-priority) queues, a paged tail: `len` and `bytes`
/// count both; everything in the pager is newer than everything in memory.
#[derive(Debug)]
pub(crate) struct Ready {
    /// Index = priority level; a plain queue has one level.
    levels: Vec<VecDeque<QueuedMessage>>,
    len: usize,
    bytes: usize,
    /// Body bytes held in memory.
    mem_bytes: usize,
    pager: Option<Pager>,
}

impl Ready {
    pub(crate) fn new(max_priority: Option<u8>, paging: Option<Arc<Paging>>) -> Ready {
        let n = max_priority.map(|p| p as usize + 1).unwrap_or(1);
        Ready {
            levels: (0..n).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            mem_bytes: 0,
            pager: paging.filter(|_| n == 1).map(Pager::new),
        }
    }

    /// Messages held in the page file (for reports and tests).
    pub(crate) fn paged(&self) -> usize {
        self.pager.as_ref().map_or(0, |p| p.len())
    }

    /// Makes sure the in-memory head is not empty while paged messages exist.
    fn refill(&mut self) {
        if !self.levels[0].is_empty() {
            return;
        }
        let Some(p) = self.pager.as_mut().filter(|p| !p.is_empty()) else {
            return;
        };
        let want = p.budget() / 2;
        let level = &mut self.levels[0];
        let mut mem = 0;
        p.page_in(want, &mut |m| {
            mem += m.msg.size();
            level.push_back(m);
        });
        self.mem_bytes += mem;
        // Unreadable records were dropped: recount.
        let paged = self.pager.as_ref().map_or(0, |p| p.len());
        self.len = self.levels[0].len() + paged;
        self.bytes = self.mem_bytes + self.pager.as_ref().map_or(0, |p| p.bytes());
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
        let size = m.msg.size();
        // The budget counts what a message costs in memory, not only its body: small
        // messages are mostly overhead.
        let in_memory = self.len - self.paged();
        let cost = self.mem_bytes + (in_memory + 1) * ENTRY_OVERHEAD + size;
        self.len += 1;
        self.bytes += size;
        let m = match &mut self.pager {
            Some(p) if !p.is_empty() || cost > p.budget() => match p.page_out(m) {
                Ok(()) => return,
                Err(m) => m,
            },
            _ => m,
        };
        let l = self.level(&m);
        self.mem_bytes += size;
        self.levels[l].push_back(m);
    }

    /// Puts a message back where its sequence number says (requeue).
    pub(crate) fn insert_by_seq(&mut self, m: QueuedMessage) {
        let l = self.level(&m);
        self.len += 1;
        self.bytes += m.msg.size();
        self.mem_bytes += m.msg.size();
        let q = &mut self.levels[l];
        let at = q.partition_point(|r| r.seq < m.seq);
        q.insert(at, m);
    }

    /// The next message to deliver: the oldest of the highest non-empty priority.
    pub(crate) fn pop_front(&mut self) -> Option<QueuedMessage> {
        self.refill();
        let q = self.levels.iter_mut().rev().find(|q| !q.is_empty())?;
        let m = q.pop_front()?;
        self.len -= 1;
        self.bytes -= m.msg.size();
        self.mem_bytes -= m.msg.size();
        Some(m)
    }

    /// Removes expired messages from the head of every level.
    pub(crate) fn pop_expired(&mut self, now: Instant, out: &mut Vec<QueuedMessage>) {
        loop {
            self.refill();
            let mut any = false;
            for q in self.levels.iter_mut() {
                while q
                    .front()
                    .is_some_and(|m| m.expires_at.is_some_and(|t| t <= now))
                {
                    if let Some(m) = q.pop_front() {
                        self.len -= 1;
                        self.bytes -= m.msg.size();
                        self.mem_bytes -= m.msg.size();
                        out.push(m);
                        any = true;
                    }
                }
            }
            // A head emptied by expiry may have paged messages behind it that are due too.
            if !any || !self.levels[0].is_empty() || self.paged() == 0 {
                return;
            }
        }
    }

    /// When the next head message expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let paged = if self.levels[0].is_empty() {
            self.pager.as_ref().and_then(|p| p.front_expiry())
        } else {
            None
        };
        self.levels
            .iter()
            .filter_map(|q| q.front().and_then(|m| m.expires_at))
            .chain(paged)
            .min()
    }

    /// Drops every message: how many there were, and the message-log ids among them.
    pub(crate) fn clear(&mut self) -> (usize, Vec<u64>) {
        let n = self.len;
        let mut ids = Vec::new();
        for q in self.levels.iter_mut() {
            ids.extend(q.drain(..).map(|m| m.msg.persist_id).filter(|id| *id != 0));
        }
        if let Some(p) = &mut self.pager {
            ids.extend(p.clear().1);
        }
        self.len = 0;
        self.bytes = 0;
        self.mem_bytes = 0;
        (n, ids)
    }
}
