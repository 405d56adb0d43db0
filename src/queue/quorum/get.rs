//! basic.get on a replicated quorum queue, as `rabbit_fifo` does it: the get is a
//! command in the queue's log ([`QCmd::Dequeue`], its `{dequeue, settled | unsettled}`
//! checkout), and the channel is answered with what the committed entry gave it, so two
//! gets on different nodes never take the same message.
//!
//! The channel's node names the get by a key of its own ([`get_key`]: the node's tag and
//! run, like a consumer's, with a number of the get); the entry checks the head message
//! out to that key (unless no-ack: then it leaves the queue at once). Every member
//! applies the entry; the member whose key it is hands the message to the waiting
//! channel ([`Waiters`]). A get nobody waits for any more (timed out, its answer lost)
//! gives its message back; a node that goes down has what its gets held returned
//! (`Down`, as for its consumers). A node that is not a member forwards the get to the
//! leader, whose forwarding link then holds the message for the client
//! (`cluster::forward::home`).
//!
//! Settling a get's message (ack, reject, requeue, channel closed) goes by the
//! message's id, as a consumer's deliveries do.

use super::fifo::{Command, ConsumerKey, Entry, Reply};
use super::pages::QMsg;
use super::wire::{consumer_key, QCmd, QReply};
use super::{to_queued, After, QuorumState};
use crate::queue::{Queue, QueuedMessage};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bit that tells a get's key from a consumer's (in the key's local part).
const GET_BIT: u64 = 0x8000_0000;

/// How long a channel waits for its get: the group's write timeout (10 s) and a little
/// more for this member to apply the entry.
const GET_TIMEOUT: Duration = Duration::from_secs(12);

/// What a get is answered: the message and how many stay ready, or nothing ready.
type Got = Result<Option<(QueuedMessage, u32)>, String>;

/// The key a get's message is checked out to: the node's tag and run (as consumers'
/// keys), and the get's number on this node.
pub fn get_key(node: u16, incarnation: u16, n: u32) -> ConsumerKey {
    consumer_key(node, incarnation, GET_BIT | u64::from(n & 0x7fff_ffff))
}

/// A key [`get_key`] made.
pub fn is_get_key(key: ConsumerKey) -> bool {
    key & GET_BIT != 0
}

/// This node's gets waiting for their entry, by key (part of the queue's state, under its
/// lock).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    next: u32,
    waiting: HashMap<ConsumerKey, mpsc::SyncSender<Got>>,
}

impl Waiters {
    /// A number for a new get (wraps; a get waits seconds at most).
    fn take(&mut self) -> u32 {
        self.next = self.next.wrapping_add(1) & 0x7fff_ffff;
        self.next
    }
}

impl Queue {
    /// basic.get on a replicated queue this node is a member of: the dequeue goes
    /// through the group, and the get is answered once this member applies it. An error
    /// when the group did not commit it in time.
    pub(crate) fn r_get(self: &Arc<Self>, no_ack: bool) -> Got {
        let group = self
            .group()
            .ok_or("this node is not a member of the queue's group")?;
        let handle = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err("basic.get on a replicated queue needs the multi-threaded runtime".into());
        }
        let (node, inc) = group.local();
        // Room for the group's error and the entry's answer both: neither sender waits.
        let (tx, rx) = mpsc::sync_channel::<Got>(2);
        let key = {
            let mut st = self.state.lock();
            st.last_used = Instant::now();
            let q = st.quorum.as_mut().ok_or("not a quorum queue")?;
            let key = get_key(node, inc, q.gets.take());
            q.gets.waiting.insert(key, tx.clone());
            key
        };
        let failed = move |r: Result<QReply, String>| {
            if let Err(e) = r {
                let _ = tx.try_send(Err(e));
            }
        };
        group.submit(
            QCmd::Dequeue {
                key,
                settled: no_ack,
            },
            Some(Box::new(failed)),
        );
        let first = tokio::task::block_in_place(|| rx.recv_timeout(GET_TIMEOUT));
        // No answer comes after this (the entry answers under the same lock); one that
        // came meanwhile is this get's message, whatever else was answered first.
        if let Some(q) = self.state.lock().quorum.as_mut() {
            q.gets.waiting.remove(&key);
        }
        let mut got = first.unwrap_or_else(|_| Err("timeout".into()));
        while let Ok(r) = rx.try_recv() {
            if matches!(r, Ok(Some(_))) || got.is_err() {
                got = r;
            }
        }
        if let Ok(Some((m, _))) = &got {
            self.count_get(no_ack, m.redelivered);
        }
        got
    }

    /// Applies a committed dequeue on this member; when the get is one of this node's,
    /// its channel gets the answer (or, gone, the message goes back).
    pub(super) fn r_apply_dequeue(
        self: &Arc<Self>,
        at: u64,
        key: ConsumerKey,
        settled: bool,
        leader: bool,
    ) -> QReply {
        let mut after = After::default();
        let unclaimed = {
            let mut st = self.state.lock();
            let cmd = Command::DequeueFor { key, settled };
            let reply = self.q_apply_at(&mut st, at, cmd, &mut after, leader);
            match (reply, st.quorum.as_mut()) {
                (Reply::Dequeued(got), Some(q)) if self.is_local_key(key) => hand_over(q, key, got),
                _ => None,
            }
        };
        self.q_after(after);
        if let Some(id) = unclaimed {
            if settled {
                tracing::warn!(queue = %self.name(), "a no-ack basic.get's message came after its channel stopped waiting: it is lost, as in RabbitMQ");
            } else {
                self.r_submit_return(key, vec![id]);
            }
        }
        QReply::default()
    }

    /// A snapshot installed here gave one of this node's gets its message (the entry was
    /// not applied here): the waiting channel gets it. False for other keys, and for a
    /// get nobody waits for (its message then goes back as an orphan's).
    pub(super) fn r_restored_get(
        &self,
        q: &mut QuorumState,
        key: ConsumerKey,
        e: &Entry<QMsg>,
    ) -> bool {
        if !is_get_key(key) || !q.gets.waiting.contains_key(&key) {
            return false;
        }
        let left = q.fifo.ready_len() as u32;
        hand_over(q, key, Some((e.clone(), left))).is_none()
    }

    /// Gives back a message checked out to a get nobody waits for (as it was: the client
    /// never saw it).
    fn r_submit_return(&self, key: ConsumerKey, ids: Vec<u64>) {
        if let Some(g) = self.group() {
            g.submit(
                QCmd::Return {
                    key,
                    ids,
                    counted: false,
                },
                None,
            );
        }
    }
}

/// Answers the get waiting under `key` with what its entry gave it. Returns the id of a
/// message nobody took (no one waits any more).
fn hand_over(
    q: &mut QuorumState,
    key: ConsumerKey,
    got: Option<(Entry<QMsg>, u32)>,
) -> Option<u64> {
    let waiter = q.gets.waiting.remove(&key);
    let Some((e, left)) = got else {
        if let Some(w) = waiter {
            let _ = w.try_send(Ok(None));
        }
        return None;
    };
    let Some(body) = q.body(&e.msg) else {
        return Some(e.id);
    };
    let answer = Ok(Some((to_queued(&e, body, key), left)));
    match waiter.map(|w| w.try_send(answer)) {
        Some(Ok(())) => None,
        _ => Some(e.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_keys_carry_their_node_and_are_told_from_consumer_keys() {
        let k = get_key(0xabcd, 3, 7);
        assert!(is_get_key(k));
        assert_eq!(super::super::wire::key_node(k), 0xabcd);
        assert_eq!(super::super::wire::key_incarnation(k), 3);
        assert!(!is_get_key(consumer_key(0xabcd, 3, 7)));
        // The number wraps below the bit.
        assert!(is_get_key(get_key(1, 1, u32::MAX)));
    }
}
