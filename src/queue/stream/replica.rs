//! A stream's replication state on this node, in a cluster (after RabbitMQ's osiris): one
//! member, the leader, numbers and writes records; the other members copy its records,
//! byte for byte, and report how far they have synced. A record is **committed** once a
//! majority of the members (leader included) has it on disk; readers on every member stop
//! at the committed offset, and a publisher confirm waits for it.
//!
//! This module owns the pure part: who leads in which epoch, the members' synced tails
//! and the committed offset they give ([`committed_of`]), where a member that comes back
//! must cut its log ([`truncate_point`]), and the confirm waits of publishes made on this
//! node ([`Wait`]). The transport and the choice of a new leader are the cluster's
//! (`cluster::stream_repl`). A stream without [`Replica`] (no `--cluster-nodes`) works
//! exactly as before.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::watch;

/// Where a stream lives, as the metadata group records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub vhost: String,
    pub name: String,
    /// The node that numbers and writes records in this epoch.
    pub leader: String,
    /// Every member's node name, the leader included.
    pub members: Vec<String>,
    /// Bumped at each leader change.
    pub epoch: u64,
    /// `(epoch, offset)`: the offset each epoch's leader started writing at (its tail when
    /// it was chosen), oldest first.
    pub epochs: Vec<(u64, u64)>,
}

impl Placement {
    /// The placement of a stream declared on `me`: `me` leads, with `size` members (all
    /// of `nodes` by default, as RabbitMQ's `x-initial-cluster-size`), the others first
    /// by name.
    pub fn initial(me: &str, nodes: &[String], vhost: &str, name: &str, size: Option<u64>) -> Self {
        let mut others: Vec<String> = nodes.iter().filter(|n| *n != me).cloned().collect();
        others.sort();
        others.dedup();
        let size = size.map_or(others.len() + 1, |s| s.max(1) as usize);
        let mut members = vec![me.to_string()];
        members.extend(others.into_iter().take(size.saturating_sub(1)));
        Placement {
            vhost: vhost.into(),
            name: name.into(),
            leader: me.into(),
            members,
            epoch: 1,
            epochs: vec![(1, 0)],
        }
    }

    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

/// The committed offset of members with these synced tails: the highest offset a majority
/// has (the `majority`-th highest tail).
pub fn committed_of(tails: &[u64], majority: usize) -> u64 {
    if majority == 0 || tails.len() < majority {
        return 0;
    }
    let mut t = tails.to_vec();
    t.sort_unstable_by(|a, b| b.cmp(a));
    t[majority - 1]
}

/// Where a member whose last records were written in `written_epoch`, and which holds
/// records up to `tail`, must cut its log to agree with the current leader: the start of
/// the first epoch after the one it wrote in (records past it were never the new leaders'),
/// or its tail when that is lower.
pub fn truncate_point(epochs: &[(u64, u64)], written_epoch: u64, tail: u64) -> u64 {
    epochs
        .iter()
        .find(|(e, _)| *e > written_epoch)
        .map_or(tail, |&(_, start)| start.min(tail))
}

/// The replication state of one stream on this node.
#[derive(Debug)]
pub struct Replica {
    /// This node's name.
    pub me: String,
    placement: Mutex<Placement>,
    /// Followers' synced tails (the leader's view), by node name.
    acks: Mutex<HashMap<String, u64>>,
    /// The end of what this node has synced (committed or not).
    tail: watch::Sender<u64>,
    /// The epoch whose leader wrote this node's last records (persisted with the
    /// placement in the stream's directory).
    written_epoch: AtomicU64,
    /// Publishes forwarded to the leader: numbered here, settled in order.
    pub forwarded: Arc<Settled>,
    /// Local publishes at or past this offset were never committed under this node's
    /// leadership (it lost it): their confirms are nacks.
    local_nack_from: Arc<AtomicU64>,
    /// Placement changes (the cluster's tasks follow it).
    changed: watch::Sender<u64>,
    /// Where publishes on a node that does not lead go (the cluster's forwarder task).
    forward: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Forward>>>,
}

/// A publish made on this node for the leader to append.
#[derive(Debug)]
pub struct Forward {
    pub seq: u64,
    pub msg: crate::message::Message,
}

/// A numbered sequence of forwarded publishes and how each ended.
#[derive(Debug)]
pub struct Settled {
    next: AtomicU64,
    /// Every number up to here (exclusive) is settled.
    done: watch::Sender<u64>,
    /// Settled as failed: `[from, to)` ranges (few: only across a leader change).
    nacked: Mutex<Vec<(u64, u64)>>,
}

impl Default for Settled {
    fn default() -> Self {
        Settled {
            next: AtomicU64::new(0),
            done: watch::channel(0).0,
            nacked: Mutex::new(Vec::new()),
        }
    }
}

impl Settled {
    /// The number of the next forwarded publish.
    pub fn take(&self) -> u64 {
        self.next.fetch_add(1, SeqCst)
    }

    /// Everything below `to` is settled; `failed` marks `[from, to)` as nacked.
    pub fn settle(&self, from: u64, to: u64, failed: bool) {
        if failed && from < to {
            let mut n = self.nacked.lock();
            n.push((from, to));
            // Keep the list short: ranges far behind every wait are no longer asked about.
            if n.len() > 64 {
                n.remove(0);
            }
        }
        self.done.send_if_modified(|d| {
            let m = (*d).max(to);
            std::mem::replace(d, m) != m
        });
    }

    fn is_nacked(&self, seq: u64) -> bool {
        self.nacked.lock().iter().any(|&(a, b)| seq >= a && seq < b)
    }
}

/// What a publisher confirm of a replicated stream waits for.
#[derive(Debug, Clone)]
pub struct Wait {
    rx: watch::Receiver<u64>,
    /// Done once the watched number reaches this.
    target: u64,
    why: Nack,
}

#[derive(Debug, Clone)]
enum Nack {
    /// A forwarded publish: nacked when its number is in a failed range.
    Forwarded(Arc<Settled>),
    /// A local publish at an offset: nacked when this node lost the leadership before.
    Local(Arc<AtomicU64>),
}

impl Wait {
    /// `None` while pending; then whether it is an ack.
    pub fn outcome(&self) -> Option<bool> {
        if *self.rx.borrow() < self.target {
            return None;
        }
        Some(match &self.why {
            Nack::Forwarded(s) => !s.is_nacked(self.target - 1),
            Nack::Local(from) => self.target - 1 < from.load(SeqCst),
        })
    }

    /// A receiver that changes when the outcome may have (the connection waits on it).
    pub fn receiver(&self) -> watch::Receiver<u64> {
        self.rx.clone()
    }
}

impl Replica {
    pub fn new(me: String, placement: Placement, tail: u64, written_epoch: u64) -> Replica {
        Replica {
            me,
            placement: Mutex::new(placement),
            acks: Mutex::new(HashMap::new()),
            tail: watch::channel(tail).0,
            written_epoch: AtomicU64::new(written_epoch),
            forwarded: Arc::new(Settled::default()),
            local_nack_from: Arc::new(AtomicU64::new(u64::MAX)),
            changed: watch::channel(0).0,
            forward: Mutex::new(None),
        }
    }

    /// Sets where forwarded publishes go.
    pub fn set_forwarder(&self, tx: tokio::sync::mpsc::UnboundedSender<Forward>) {
        *self.forward.lock() = Some(tx);
    }

    /// Hands a publish to the forwarder; its confirm's wait (nacked at once when there is
    /// no forwarder).
    pub fn forward(&self, msg: &crate::message::Message) -> Wait {
        // Numbered under the lock, so the forwarder receives them in number order.
        let fwd = self.forward.lock();
        let seq = self.forwarded.take();
        let sent = match fwd.as_ref() {
            Some(tx) => tx
                .send(Forward {
                    seq,
                    msg: msg.clone(),
                })
                .is_ok(),
            None => false,
        };
        drop(fwd);
        if !sent {
            self.forwarded.settle(seq, seq + 1, true);
        }
        self.forwarded_wait(seq)
    }

    pub fn placement(&self) -> Placement {
        self.placement.lock().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.placement.lock().leader == self.me
    }

    pub fn is_member(&self) -> bool {
        self.placement.lock().members.contains(&self.me)
    }

    pub fn epoch(&self) -> u64 {
        self.placement.lock().epoch
    }

    pub fn written_epoch(&self) -> u64 {
        self.written_epoch.load(SeqCst)
    }

    pub fn set_written_epoch(&self, e: u64) {
        self.written_epoch.store(e, SeqCst);
    }

    /// Takes a newer placement (an older or equal epoch is ignored); true when taken.
    /// Losing the leadership nacks the local publishes not committed by then.
    pub fn update(&self, p: Placement, committed: u64) -> bool {
        let mut cur = self.placement.lock();
        if p.epoch <= cur.epoch && cur.epoch != 0 {
            return false;
        }
        if cur.leader == self.me && p.leader != self.me {
            self.local_nack_from.fetch_min(committed, SeqCst);
        }
        if p.leader == self.me {
            self.acks.lock().clear();
            // Offsets from here on are this epoch's: confirms of them count again.
            self.local_nack_from.store(u64::MAX, SeqCst);
        }
        *cur = p;
        drop(cur);
        self.changed.send_modify(|v| *v += 1);
        true
    }

    /// Follows placement changes.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn tail(&self) -> u64 {
        *self.tail.borrow()
    }

    pub fn subscribe_tail(&self) -> watch::Receiver<u64> {
        self.tail.subscribe()
    }

    /// This node synced records up to `end`.
    pub fn set_tail(&self, end: u64) {
        self.tail.send_replace(end);
    }

    /// On the leader: `node` has synced up to `tail`. Returns the committed offset.
    pub fn ack(&self, node: &str, tail: u64) -> u64 {
        self.acks.lock().insert(node.to_string(), tail);
        self.committed()
    }

    /// On the leader: what a majority of the members has synced.
    pub fn committed(&self) -> u64 {
        let p = self.placement.lock();
        let acks = self.acks.lock();
        let mine = self.tail();
        let tails: Vec<u64> = p
            .members
            .iter()
            .map(|m| {
                if *m == self.me {
                    mine
                } else {
                    acks.get(m).copied().unwrap_or(0).min(mine)
                }
            })
            .collect();
        committed_of(&tails, p.majority())
    }

    /// The wait of a local publish at `offset` (this node leads), on the committed watch.
    pub fn local_wait(&self, committed: watch::Receiver<u64>, offset: u64) -> Wait {
        Wait {
            rx: committed,
            target: offset + 1,
            why: Nack::Local(self.local_nack_from.clone()),
        }
    }

    /// The wait of forwarded publish number `seq`.
    pub fn forwarded_wait(&self, seq: u64) -> Wait {
        Wait {
            rx: self.forwarded.done.subscribe(),
            target: seq + 1,
            why: Nack::Forwarded(self.forwarded.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_is_what_a_majority_has() {
        assert_eq!(committed_of(&[10, 7, 3], 2), 7);
        assert_eq!(committed_of(&[10, 0, 0], 2), 0);
        assert_eq!(committed_of(&[5], 1), 5);
        assert_eq!(committed_of(&[9, 9, 8, 2, 1], 3), 8);
        assert_eq!(committed_of(&[4], 2), 0);
    }

    #[test]
    fn a_member_cuts_what_later_leaders_never_had() {
        let epochs = [(1, 0), (2, 100), (3, 150)];
        // Wrote in epoch 1 up to 120: epoch 2 started at 100, so 100..120 goes.
        assert_eq!(truncate_point(&epochs, 1, 120), 100);
        assert_eq!(truncate_point(&epochs, 1, 90), 90);
        assert_eq!(truncate_point(&epochs, 2, 170), 150);
        // Wrote in the current epoch: nothing to cut.
        assert_eq!(truncate_point(&epochs, 3, 170), 170);
    }

    fn placement(leader: &str, epoch: u64) -> Placement {
        Placement {
            vhost: "/".into(),
            name: "s".into(),
            leader: leader.into(),
            members: vec!["n1".into(), "n2".into(), "n3".into()],
            epoch,
            epochs: vec![(epoch, 0)],
        }
    }

    #[test]
    fn the_leader_commits_on_a_majority_and_older_epochs_are_ignored() {
        let r = Replica::new("n1".into(), placement("n1", 1), 0, 1);
        r.set_tail(10);
        assert_eq!(r.committed(), 0);
        assert_eq!(r.ack("n2", 6), 6);
        assert_eq!(
            r.ack("n3", 12),
            10,
            "a follower never counts past the leader"
        );
        assert!(!r.update(placement("n2", 1), 10));
        assert!(r.is_leader());
        assert!(r.update(placement("n2", 2), 10));
        assert!(!r.is_leader());
    }

    #[test]
    fn confirms_settle_in_order_and_a_lost_leadership_nacks() {
        let (tx, rx) = watch::channel(0u64);
        let r = Replica::new("n1".into(), placement("n1", 1), 0, 1);
        let w = r.local_wait(rx.clone(), 4);
        assert_eq!(w.outcome(), None);
        tx.send_replace(5);
        assert_eq!(w.outcome(), Some(true));
        let late = r.local_wait(rx, 7);
        r.update(placement("n2", 2), 5);
        tx.send_replace(8);
        assert_eq!(
            late.outcome(),
            Some(false),
            "offset 7 was not committed under n1"
        );
        let a = r.forwarded.take();
        let b = r.forwarded.take();
        let (wa, wb) = (r.forwarded_wait(a), r.forwarded_wait(b));
        r.forwarded.settle(0, 1, false);
        assert_eq!((wa.outcome(), wb.outcome()), (Some(true), None));
        r.forwarded.settle(1, 2, true);
        assert_eq!(wb.outcome(), Some(false));
    }
}
