//! A quorum queue in a cluster: its commands go through the queue's Raft group
//! ([`Group`]) instead of being applied at once, and every member applies each committed
//! command to its own replica of the state machine ([`Replica`], the same `Fifo` as on one
//! node). A member delivers to the consumers attached on its own node from its own
//! replica (the bodies are in its log), so consumers on any member are served locally.
//!
//! What a channel asks of the queue (consume, cancel, ack, reject, requeue, credit) is
//! submitted as a command; its effect shows when the command comes back committed. The
//! queue's local state is changed only by committed commands, so the replicas stay equal.
//! Effects that must happen once for the cluster (dead-lettering, expiry ticks) are the
//! leader's.
//!
//! # Deliveries after catch-up
//!
//! What applied entries give this node's consumers is held, not sent at once
//! ([`QuorumState::held`](super::QuorumState)); the group sends it
//! ([`Replica::deliver_held`]) when the member is current (`cluster::qgroup::currency`),
//! and then only the messages still checked out to that consumer in the replica's state
//! now, with their marks now. A member catching up after a partition or a pause applies
//! entries that checked messages out to its consumers and then, later in the log, the
//! `Down` that took them back and gave them to consumers elsewhere, redelivered: those
//! are not sent here, so no client sees a message unflagged after another one saw it
//! flagged (RabbitMQ's leader sends the deliveries; a cut-off node's are lost with the
//! connection). A no-ack consumer's deliveries left the queue when decided: they go as
//! held.

use super::fifo::image::Image;
use super::fifo::{Command, ConsumerSpec, Fifo, Reply};
use super::pages::QMsg;
use super::wire::{
    consumer_key, key_node, Done, Group, QCmd, QEntry, QImage, QReply, Replica, SnapMsg, WireSpec,
};
use super::After;
use crate::message::Message;
use crate::queue::consumer::{Consumer, INFLIGHT_WINDOW};
use crate::queue::{ConsumeRefused, Queue, QueuedMessage};
use crate::stats::Counters;
use crate::store::definitions::QuorumPlacement;
use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The queue as its group's state machine sees it (held weakly: the queue owns the group
/// through the node's registry, not the other way round).
struct ReplicaOf(Weak<Queue>);

impl Replica for ReplicaOf {
    fn apply_entry(&self, e: QEntry, leader: bool) -> QReply {
        let Some(q) = self.0.upgrade() else {
            return QReply::default();
        };
        let downed = match e.cmd {
            QCmd::Down { node, keep } => Some((node, keep)),
            _ => None,
        };
        let cmd = match e.cmd {
            // Split by the group's state machine (each command answered on its own);
            // applied in order here too should one reach this far.
            QCmd::Batch(cmds) => {
                let mut r = QReply::default();
                for cmd in cmds {
                    r.rejected |= self.apply_entry(QEntry { at: e.at, cmd }, leader).rejected;
                }
                return r;
            }
            // Unwrapped (and deduplicated) by the group's state machine.
            QCmd::Once { cmd, .. } => {
                return self.apply_entry(
                    QEntry {
                        at: e.at,
                        cmd: *cmd,
                    },
                    leader,
                );
            }
            QCmd::Dequeue { key, settled } => {
                return q.r_apply_dequeue(e.at, key, settled, leader);
            }
            QCmd::Enqueue(m) => Command::Enqueue {
                msg: QMsg::Mem(m.into_message()),
                enqueued_at: e.at,
                redelivered: false,
                delivery_count: 0,
            },
            QCmd::Checkout { key, spec } => Command::Checkout {
                key,
                spec: ConsumerSpec {
                    priority: spec.priority,
                    prefetch: spec.prefetch,
                    no_ack: spec.no_ack,
                },
            },
            QCmd::Cancel { key } => Command::Cancel {
                key,
                dispatch: true,
            },
            QCmd::Credit { key, credit } => Command::Credit { key, credit },
            QCmd::Settle { key, ids } => Command::Settle { key, ids },
            QCmd::Return { key, ids, counted } => Command::Return { key, ids, counted },
            QCmd::Discard { key, ids } => Command::Discard { key, ids },
            QCmd::Purge => Command::Purge,
            QCmd::Tick => Command::Tick,
            QCmd::DlxSettle { ids } => Command::DlxSettle { ids },
            QCmd::Down { node, keep } => Command::Down { node, keep },
        };
        let mut after = After::default();
        let reply = {
            let mut st = q.state.lock();
            // An enqueue's body goes to a page file past the memory budget, as on one
            // node (the log and the snapshot are its durable copies).
            let (cmd, paged) = match (cmd, st.quorum.as_mut()) {
                (
                    Command::Enqueue {
                        msg: QMsg::Mem(m),
                        enqueued_at,
                        redelivered,
                        delivery_count,
                    },
                    Some(f),
                ) => {
                    let msg = f.hold(m);
                    let paged = matches!(msg, QMsg::Paged(_)).then(|| msg.clone());
                    let cmd = Command::Enqueue {
                        msg,
                        enqueued_at,
                        redelivered,
                        delivery_count,
                    };
                    (cmd, paged)
                }
                (cmd, _) => (cmd, None),
            };
            let reply = q.q_apply_at(&mut st, e.at, cmd, &mut after, leader);
            // Refused (reject-publish): its page goes.
            if let (Reply::Rejected, Some(m), Some(f)) = (&reply, paged, st.quorum.as_mut()) {
                f.release(&m);
            }
            reply
        };
        q.q_after(after);
        if let Some((node, keep)) = downed {
            q.r_reinstate(node, keep);
        }
        QReply {
            rejected: matches!(reply, Reply::Rejected),
        }
    }

    fn consumer_nodes(&self) -> Vec<u16> {
        let Some(q) = self.0.upgrade() else {
            return Vec::new();
        };
        let st = q.state.lock();
        let mut out: Vec<u16> = st
            .quorum
            .as_ref()
            .map(|f| {
                // Nodes whose gets hold messages too (returned if the node goes down).
                let getters = f.fifo.holder_keys().filter(|k| super::get::is_get_key(*k));
                f.fifo
                    .consumer_keys()
                    .chain(getters)
                    .map(key_node)
                    .collect()
            })
            .unwrap_or_default();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn reset(&self) {
        let Some(q) = self.0.upgrade() else { return };
        let mut st = q.state.lock();
        let config = super::config_of(&st.eff);
        if let Some(f) = st.quorum.as_mut() {
            f.fifo = super::fifo::Fifo::new(config);
            // The old messages' pages go with their store.
            f.pages = f.pages.as_ref().map(|p| p.fresh());
            f.applied = 0;
            if let Some(held) = f.held.as_mut() {
                held.clear();
            }
        }
    }

    fn deliver_held(&self) {
        if let Some(q) = self.0.upgrade() {
            q.r_deliver_held();
        }
    }

    fn holds_deliveries(&self) -> bool {
        let Some(q) = self.0.upgrade() else {
            return false;
        };
        let st = q.state.lock();
        st.quorum
            .as_ref()
            .and_then(|f| f.held.as_ref())
            .is_some_and(|h| !h.is_empty())
    }

    /// References only (shared bodies, paged ones' open segments): the bodies are read
    /// as the snapshot is encoded, outside the lock.
    fn image(&self) -> Option<Image<SnapMsg>> {
        let q = self.0.upgrade()?;
        let st = q.state.lock();
        let f = st.quorum.as_ref()?;
        Some(f.fifo.image(|m| SnapMsg(m.clone())))
    }

    fn restore(&self, img: QImage) {
        let Some(q) = self.0.upgrade() else { return };
        {
            let mut st = q.state.lock();
            let config = super::config_of(&st.eff);
            let Some(f) = st.quorum.as_mut() else { return };
            let local = |k: u64| q.is_local_key(k);
            let had: HashSet<u64> = f
                .fifo
                .checked_out_to(local)
                .into_iter()
                .map(|(_, e)| e.id)
                .collect();
            // A new page store: the replaced state's pages go with the old one (what
            // is still held from it keeps its open segments); the snapshot's messages
            // past the memory budget are paged as they are restored.
            let mut pages = f.pages.as_ref().map(|p| p.fresh());
            let mut in_mem = 0usize;
            f.fifo = Fifo::from_image(config, img, |w| {
                let m = w.into_message();
                let held = match pages.as_mut() {
                    Some(p) => p.place(in_mem, m),
                    None => QMsg::Mem(m),
                };
                if let QMsg::Mem(m) = &held {
                    in_mem += m.size();
                }
                held
            });
            f.pages = pages;
            // Deliveries decided in the entries the snapshot stands for were not made
            // here: held, to go when the member is current (in id order); a get's
            // is answered now.
            let fresh: Vec<(u64, super::fifo::Entry<QMsg>)> = f
                .fifo
                .checked_out_to(local)
                .into_iter()
                .filter(|(_, e)| !had.contains(&e.id))
                .collect();
            let mut keep = Vec::with_capacity(fresh.len());
            for (k, e) in fresh {
                if !q.r_restored_get(f, k, &e) {
                    keep.push((k, e));
                }
            }
            match f.held.as_mut() {
                Some(held) => held.extend(keep),
                None => f.held = Some(keep),
            }
            q.q_arm_timer(&mut st);
        }
    }

    /// Paged bodies count a quarter of their size: the log is snapshotted (each
    /// snapshot writes the whole state, paged bodies read back) once it outweighs
    /// what is in memory plus a quarter of what is paged, so the log kept in memory
    /// stays bounded by about that rather than growing with the paged backlog, at about
    /// four times the snapshot writes.
    fn held_bytes(&self) -> usize {
        let Some(q) = self.0.upgrade() else { return 0 };
        let st = q.state.lock();
        st.quorum.as_ref().map_or(0, |f| {
            let paged = f.pages.as_ref().map_or(0, |p| p.live_bytes());
            f.fifo.ready_bytes().saturating_sub(paged)
                + paged / 4
                + 256 * (f.fifo.checked_out_len() + f.fifo.dlx_len())
        })
    }
}

impl Queue {
    /// Makes this quorum queue a cluster's replicated one (from its definition), or
    /// changes its members. Its backlog past the memory budget is paged as on one node
    /// (the page files are a cache: its Raft log and snapshots are the durable copy).
    pub fn set_placement(&self, p: QuorumPlacement) {
        if !self.is_quorum() {
            return;
        }
        let _ = self.replicated.set(p.group);
        *self.members.lock() = p.members;
        if let Some(q) = self.state.lock().quorum.as_mut() {
            q.held.get_or_insert_with(Vec::new);
        }
    }

    /// The queue's group id and members, in a cluster.
    pub fn placement(&self) -> Option<QuorumPlacement> {
        self.replicated.get().map(|g| QuorumPlacement {
            group: *g,
            members: self.members.lock().clone(),
        })
    }

    /// A quorum queue replicated through a Raft group (in a cluster).
    pub fn is_replicated(&self) -> bool {
        self.replicated.get().is_some()
    }

    /// This node's member of the group (None: this node is not, or no longer, one).
    pub fn set_group(&self, g: Option<Arc<dyn Group>>) {
        if let Some(old) = std::mem::replace(&mut *self.group.lock(), g) {
            old.stop();
        }
    }

    pub fn group(&self) -> Option<Arc<dyn Group>> {
        self.group.lock().clone()
    }

    /// What the group's state machine applies committed entries to.
    pub fn replica(self: &Arc<Self>) -> Arc<dyn Replica> {
        Arc::new(ReplicaOf(Arc::downgrade(self)))
    }

    /// The member nodes of a replicated quorum queue (None for other queues).
    pub fn quorum_members(&self) -> Option<Vec<String>> {
        self.is_replicated().then(|| self.members.lock().clone())
    }

    /// The node leading a replicated quorum queue's group, when known here.
    pub fn quorum_leader(&self) -> Option<String> {
        self.group().and_then(|g| g.leader())
    }

    /// The members answering now (as far as this node knows).
    pub fn quorum_online(&self) -> Option<Vec<String>> {
        self.group().map(|g| g.online())
    }

    fn r_submit(&self, cmd: QCmd, done: Option<Done>) {
        match self.group() {
            Some(g) => g.submit(cmd, done),
            None => {
                if let Some(d) = done {
                    d(Err("this node is not a member of the queue's group".into()));
                }
            }
        }
    }

    /// A consumer's key in the replicated state: node, incarnation and its id here.
    fn r_key(&self, c: &Consumer) -> u64 {
        match self.group() {
            Some(g) => {
                let (node, inc) = g.local();
                consumer_key(node, inc, c.id)
            }
            None => c.id,
        }
    }

    /// A publish: an enqueue through the leader; `done` once committed.
    pub(crate) fn r_publish(&self, msg: &Arc<Message>, done: Option<Done>) {
        if self.is_deleted() {
            if let Some(d) = done {
                d(Ok(QReply::default()));
            }
            return;
        }
        Counters::bump(&self.counters.publish, 1);
        self.r_submit(QCmd::Enqueue(super::wire::WireMsg::of(msg)), done);
    }

    pub(super) fn r_consume(
        self: &Arc<Self>,
        consumer: Arc<Consumer>,
    ) -> Result<(), ConsumeRefused> {
        let key = self.r_key(&consumer);
        {
            let mut st = self.state.lock();
            self.attach(&mut st, consumer.clone())?;
            if let Some(q) = st.quorum.as_mut() {
                q.consumers.insert(key, consumer.clone());
            }
        }
        self.r_submit(
            QCmd::Checkout {
                key,
                spec: spec_of(&consumer),
            },
            None,
        );
        Ok(())
    }

    /// The group declared this node's consumers down (the node was cut off, or looked so
    /// to the leader, for a while) while they are still attached here: they check out
    /// again, so they get deliveries again (`rabbit_fifo` reinstates a consumer of a
    /// node that comes back). What they had checked out went back to the queue,
    /// redelivered, and may come to them again.
    fn r_reinstate(&self, node: u16, keep: Option<u16>) {
        let Some(g) = self.group() else { return };
        let (me, inc) = g.local();
        if node != me || keep == Some(inc) {
            return;
        }
        let ours: Vec<(u64, WireSpec)> = {
            let st = self.state.lock();
            let Some(q) = st.quorum.as_ref() else { return };
            q.consumers
                .iter()
                .filter(|(key, _)| {
                    key_node(**key) == me && super::wire::key_incarnation(**key) == inc
                })
                .map(|(key, c)| (*key, spec_of(c)))
                .collect()
        };
        for (key, spec) in ours {
            tracing::info!(queue = %self.name(), key, "consumer checks out again after its node was declared down");
            self.r_submit(QCmd::Checkout { key, spec }, None);
        }
    }

    pub(super) fn r_cancel(&self, consumer: &Arc<Consumer>) -> bool {
        let key = self.r_key(consumer);
        {
            let mut st = self.state.lock();
            st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
            st.last_used = Instant::now();
            if let Some(q) = st.quorum.as_mut() {
                q.consumers.remove(&key);
            }
        }
        self.r_submit(QCmd::Cancel { key }, None);
        false
    }

    /// Acknowledged: settled in the group, each run under the consumer key it was
    /// checked out to (a late ack of a message taken back meanwhile is ignored there).
    pub(super) fn r_acked(&self, n: u64, held: Vec<(u64, Vec<u64>)>) {
        self.unacked.fetch_sub(n, SeqCst);
        Counters::bump(&self.counters.ack, n);
        for (key, ids) in held {
            self.r_submit(QCmd::Settle { key, ids }, None);
        }
    }

    pub(super) fn r_rejected(&self, msgs: Vec<QueuedMessage>) {
        self.unacked.fetch_sub(msgs.len() as u64, SeqCst);
        for (key, ids) in super::by_holder(msgs.iter().map(|m| (m.holder, m.seq))) {
            self.r_submit(QCmd::Discard { key, ids }, None);
        }
    }

    pub(super) fn r_return(&self, msgs: Vec<QueuedMessage>, counted: bool, unacked: u64) {
        self.unacked.fetch_sub(unacked, SeqCst);
        for (key, ids) in super::by_holder(msgs.iter().map(|m| (m.holder, m.seq))) {
            self.r_submit(QCmd::Return { key, ids, counted }, None);
        }
    }

    pub(super) fn r_purge(&self) -> u32 {
        let n = self.message_count();
        self.r_submit(QCmd::Purge, None);
        n
    }

    /// A no-ack consumer here wrote what it had: more credit, through the group.
    pub(super) fn r_dispatch(&self) {
        let want: Vec<(u64, u32)> = {
            let st = self.state.lock();
            let Some(q) = st.quorum.as_ref() else { return };
            q.consumers
                .iter()
                .filter(|(key, c)| c.no_ack && q.fifo.out_of_credit(**key))
                .map(|(key, c)| {
                    (
                        *key,
                        INFLIGHT_WINDOW.saturating_sub(c.inflight.load(SeqCst)),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        for (key, credit) in want {
            self.r_submit(QCmd::Credit { key, credit }, None);
        }
    }

    /// The timer on a replicated queue: the leader writes a tick (expiry decided at the
    /// leader's time, the same on every member); the others look again later.
    pub(super) fn r_on_timer(&self, now: Instant) -> Option<Instant> {
        let leader = self.group().is_some_and(|g| g.is_leader());
        let st = self.state.lock();
        let at = st.quorum.as_ref().and_then(|q| q.fifo.next_expiry())?;
        let due = crate::store::log::now_ms() >= at;
        drop(st);
        if due && leader {
            self.r_submit(QCmd::Tick, None);
        }
        // Until the tick is committed and applied the head is still there: look again
        // shortly rather than at once.
        let wait = Duration::from_millis(at.saturating_sub(crate::store::log::now_ms()));
        Some(now + wait.max(Duration::from_millis(50)))
    }

    /// Held dead letters that reached a target queue leave (through the group).
    pub(super) fn r_dlx_settle(&self, ids: Vec<u64>) {
        self.r_submit(QCmd::DlxSettle { ids }, None);
    }

    /// Sends this node's consumers what applied entries gave them and is still theirs
    /// (see the module doc): checked out to that consumer now, with its marks now (a
    /// no-ack consumer's as decided); in the order decided, each message once.
    pub(super) fn r_deliver_held(self: &Arc<Self>) {
        let mut after = After::default();
        {
            let mut st = self.state.lock();
            let Some(q) = st.quorum.as_mut() else { return };
            let held = match q.held.as_mut() {
                Some(h) if !h.is_empty() => std::mem::take(h),
                _ => return,
            };
            let mut seen: HashSet<u64> = HashSet::with_capacity(held.len());
            let mut todo: Vec<(u64, Vec<super::fifo::Entry<QMsg>>)> = Vec::new();
            let mut dropped = 0usize;
            for (key, e) in held {
                if seen.contains(&e.id) {
                    continue;
                }
                let no_ack = q.consumers.get(&key).is_some_and(|c| c.no_ack);
                let e = match q.fifo.holder(e.id) {
                    Some((k, now)) if k == key => now.clone(),
                    _ if no_ack => e,
                    _ => {
                        dropped += 1;
                        continue;
                    }
                };
                seen.insert(e.id);
                match todo.last_mut() {
                    Some((k, v)) if *k == key => v.push(e),
                    _ => todo.push((key, vec![e])),
                }
            }
            if dropped > 0 {
                tracing::info!(queue = %self.name(), dropped, "deliveries taken back before this member caught up are not sent");
            }
            for (key, entries) in todo {
                self.q_deliver(q, key, entries, &mut after);
            }
        }
        self.q_after(after);
    }

    /// A consumer key of this node's current run (in a replicated queue).
    pub(super) fn is_local_key(&self, key: u64) -> bool {
        self.group().is_some_and(|g| {
            let (node, inc) = g.local();
            key_node(key) == node && super::wire::key_incarnation(key) == inc
        })
    }

    /// Deliveries to a consumer of this node that is no longer here (cancelled, its
    /// channel closed): the key is cancelled in the group (in case its cancel was lost, or
    /// a late checkout registered it again) and the messages go back as they were.
    pub(super) fn r_orphaned(&self, key: u64, ids: Vec<u64>) {
        self.r_submit(QCmd::Cancel { key }, None);
        self.r_submit(
            QCmd::Return {
                key,
                ids,
                counted: false,
            },
            None,
        );
    }

    /// A consumer here whose connection is gone: cancelled and its messages returned.
    pub(super) fn r_gone(&self, c: &Arc<Consumer>, ids: Vec<u64>) {
        let key = self.r_key(c);
        {
            let mut st = self.state.lock();
            st.consumers.retain(|o| !Arc::ptr_eq(o, c));
            if let Some(q) = st.quorum.as_mut() {
                q.consumers.remove(&key);
            }
        }
        self.r_submit(QCmd::Cancel { key }, None);
        self.r_submit(
            QCmd::Return {
                key,
                ids,
                counted: false,
            },
            None,
        );
    }
}

/// A consumer's settings as its checkout carries them.
fn spec_of(c: &Consumer) -> WireSpec {
    WireSpec {
        priority: c.priority,
        prefetch: if c.no_ack {
            INFLIGHT_WINDOW
        } else {
            c.prefetch
        },
        no_ack: c.no_ack,
    }
}
