//! Quorum queues: the queue's state is the [`fifo`] state machine, changed only by
//! commands; this module is the driver that turns what channels ask of the queue into
//! commands, applies them under the queue's lock, and carries out the effects (deliveries
//! to consumers' connections, dead letters, forgetting stored messages).
//!
//! # Durability on one node
//!
//! Every quorum-queue message is stored in the broker's message log before it is
//! confirmed, whatever its delivery mode, and the log shares one group commit with every
//! other queue. What the log keeps of a quorum queue is the compacted form of its command
//! history: each live message's enqueue (in order) with its delivery marks; settled,
//! discarded and purged messages are removed. Replaying that as `Enqueue` commands at start
//! rebuilds the state (consumers do not survive a restart, so what they had checked out
//! comes back ready). A cluster replicates the commands themselves through Raft and applies
//! them to the same machine on every member.
//!
//! # Time
//!
//! Commands are applied at the wall-clock time of the node that applies them
//! (milliseconds since the Unix epoch), as `rabbit_fifo` takes it from the Raft entry.

pub mod fifo;
mod get;
mod pages;
mod replicated;
pub mod wire;
mod wire_bytes;

use super::consumer::{Consumer, INFLIGHT_WINDOW};
use super::deadletter::{self, Reason};
use super::{ConsumeRefused, PublishOutcome, Queue, QueuedMessage, State, DLX_RETRY};
use crate::connection::outbound::Outbound;
use crate::message::Message;
use crate::stats::Counters;
use crate::store::log::{now_ms, Recovered};
use fifo::{Command, ConsumerKey, ConsumerSpec, Effect, Entry, Fifo, MsgId, Reply};
use pages::{PageStore, QMsg};
use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A quorum queue's state machine and the consumers its keys stand for.
#[derive(Debug)]
pub(crate) struct QuorumState {
    pub(crate) fifo: Fifo<QMsg>,
    consumers: HashMap<ConsumerKey, Arc<Consumer>>,
    /// Bodies of the backlog beyond the memory budget (`None`: everything in memory).
    pages: Option<PageStore>,
    /// Commands applied since the queue was opened: on one node, its Raft log's last
    /// written, committed and applied index (the `rabbitmq_raft_*` metrics).
    applied: u64,
    /// basic.gets of this node's channels waiting for their dequeue (replicated queues).
    gets: get::Waiters,
    /// A replicated queue's deliveries to this node's consumers, as applied commands
    /// decided them, until the member is current enough to send what is still theirs
    /// (see `replicated`); `None` on one node, where they go at once.
    held: Option<Vec<(ConsumerKey, Entry<QMsg>)>>,
}

/// What the `rabbitmq_raft_*` metrics show of a quorum queue on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftStats {
    /// Commands applied since the queue was opened in this run (not persisted).
    pub index: u64,
    /// One leader since the start: term 1.
    pub term: u64,
}

impl QuorumState {
    pub(crate) fn new(
        eff: &super::args::QueueArgs,
        paging: Option<Arc<super::pager::Paging>>,
    ) -> Self {
        QuorumState {
            fifo: Fifo::new(config_of(eff)),
            consumers: HashMap::new(),
            pages: paging.map(PageStore::new),
            applied: 0,
            gets: get::Waiters::default(),
            held: None,
        }
    }

    /// The message as the state machine will hold it: its body goes to a page file
    /// when the ready backlog is past the memory budget.
    fn hold(&mut self, msg: Arc<Message>) -> QMsg {
        match self.pages.as_mut() {
            Some(pages) => pages.place(self.fifo.ready_bytes(), msg),
            None => QMsg::Mem(msg),
        }
    }

    /// The message's body, read back from its page file if it is there. `None`: it
    /// cannot be read (logged; marked so its stored copy is kept).
    fn body(&self, m: &QMsg) -> Option<Arc<Message>> {
        match m {
            QMsg::Mem(m) => Some(m.clone()),
            QMsg::Paged(p) => match p.read() {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(error = %e, "a quorum queue's paged message cannot be read: it leaves the queue until the next restart");
                    p.unreadable.store(true, SeqCst);
                    None
                }
            },
        }
    }

    /// The queue is done with a message: its page goes; the message-log id to forget.
    fn release(&mut self, m: &QMsg) -> Option<u64> {
        if let QMsg::Paged(p) = m {
            if let Some(pages) = self.pages.as_mut() {
                pages.release(p);
            }
            if p.unreadable.load(SeqCst) {
                return None;
            }
        }
        Some(m.persist_id()).filter(|id| *id != 0)
    }

    /// Everything the queue held (it is deleted): the message-log ids to forget.
    pub(crate) fn drain(&mut self) -> Vec<u64> {
        let all = self.fifo.drain_all();
        self.pages = None;
        all.iter()
            .map(QMsg::persist_id)
            .filter(|id| *id != 0)
            .collect()
    }
}

/// The state machine's settings from the queue's effective arguments.
fn config_of(eff: &super::args::QueueArgs) -> fifo::Config {
    fifo::Config {
        delivery_limit: eff.delivery_limit,
        max_length: eff.max_length,
        max_length_bytes: eff.max_length_bytes,
        overflow: eff.overflow,
        message_ttl: eff.message_ttl,
        single_active_consumer: eff.single_active_consumer,
        at_least_once: eff.at_least_once(),
    }
}

/// What must be done once the queue's lock is released: dead-lettering publishes to other
/// queues (maybe this one), and a consumer whose connection is gone is removed.
#[derive(Debug, Default)]
pub(crate) struct After {
    dead: Vec<(Reason, Vec<QueuedMessage>, bool)>,
    gone: Vec<(Arc<Consumer>, Vec<MsgId>)>,
    /// Checked out but unreadable (a paged body): settled (for its holder).
    lost: Vec<(ConsumerKey, MsgId)>,
    /// A replicated queue's deliveries to a consumer of this node that left meanwhile:
    /// its key cancelled and the messages returned (through the group).
    orphans: Vec<(ConsumerKey, Vec<MsgId>)>,
}

impl After {
    fn is_empty(&self) -> bool {
        self.dead.is_empty()
            && self.gone.is_empty()
            && self.lost.is_empty()
            && self.orphans.is_empty()
    }
}

/// A delivery of `e` checked out to `holder`.
fn to_queued(e: &Entry<QMsg>, msg: Arc<Message>, holder: ConsumerKey) -> QueuedMessage {
    QueuedMessage {
        seq: e.id,
        msg,
        redelivered: e.redelivered,
        expires_at: None,
        delivery_count: e.delivery_count,
        holder,
    }
}

/// Settlements grouped by the consumer key they name, in first-seen order.
fn by_holder(
    held: impl IntoIterator<Item = (ConsumerKey, MsgId)>,
) -> Vec<(ConsumerKey, Vec<MsgId>)> {
    let mut out: Vec<(ConsumerKey, Vec<MsgId>)> = Vec::new();
    for (key, id) in held {
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, ids)) => ids.push(id),
            None => out.push((key, vec![id])),
        }
    }
    out
}

impl Queue {
    /// Applies a command to the quorum queue's state machine under the held lock and
    /// carries out the effects that need no other lock; the rest is left in `after`.
    fn q_apply(
        self: &Arc<Self>,
        st: &mut State,
        cmd: Command<QMsg>,
        after: &mut After,
    ) -> Reply<QMsg> {
        self.q_apply_at(st, now_ms(), cmd, after, true)
    }

    /// [`q_apply`](Self::q_apply) at time `now`; without `leader` (a replica that does
    /// not lead its group) dead letters are left to the leader.
    fn q_apply_at(
        self: &Arc<Self>,
        st: &mut State,
        now: u64,
        cmd: Command<QMsg>,
        after: &mut After,
        leader: bool,
    ) -> Reply<QMsg> {
        let Some(q) = st.quorum.as_mut() else {
            return Reply::Ok;
        };
        let mut fx = Vec::new();
        q.applied += 1;
        let reply = q.fifo.apply(now, cmd, &mut fx);
        for effect in fx {
            match effect {
                // Held until the member is current; another node's consumers are its
                // own to serve.
                Effect::Deliver { key, msgs } if self.is_replicated() => {
                    if self.is_local_key(key) {
                        let held = q.held.get_or_insert_with(Vec::new);
                        held.extend(msgs.into_iter().map(|e| (key, e)));
                    }
                }
                Effect::Deliver { key, msgs } => self.q_deliver(q, key, msgs, after),
                Effect::Release { msgs } => {
                    let ids: Vec<u64> = msgs.iter().filter_map(|m| q.release(m)).collect();
                    self.forget_ids(ids);
                }
                Effect::DeadLetter { .. } if !leader => {}
                Effect::DeadLetter { reason, msgs, held } => {
                    let mut dead = Vec::with_capacity(msgs.len());
                    for e in &msgs {
                        if let Some(body) = q.body(&e.msg) {
                            dead.push(to_queued(e, body, fifo::GET_KEY));
                        }
                        if !held {
                            // Its page goes now; its stored copy once it is republished.
                            if let QMsg::Paged(p) = &e.msg {
                                if let Some(pages) = q.pages.as_mut() {
                                    pages.release(p);
                                }
                            }
                        }
                    }
                    after.dead.push((reason, dead, held));
                }
            }
        }
        self.q_arm_timer(st);
        self.flow_check(st);
        reply
    }

    /// Sends a consumer its deliveries; a consumer whose connection is gone gets them
    /// taken back (after the lock is released).
    fn q_deliver(
        self: &Arc<Self>,
        q: &mut QuorumState,
        key: ConsumerKey,
        entries: Vec<Entry<QMsg>>,
        after: &mut After,
    ) {
        let Some(c) = q.consumers.get(&key).cloned() else {
            // On one node this cannot happen (keys are registered with their consumer).
            // A replicated queue delivers to every member's consumers: another node's
            // are not ours; one of ours that was cancelled meanwhile gets them returned.
            if self.is_local_key(key) {
                after
                    .orphans
                    .push((key, entries.iter().map(|e| e.id).collect()));
            }
            return;
        };
        let mut msgs = Vec::with_capacity(entries.len());
        for e in &entries {
            match q.body(&e.msg) {
                Some(body) => msgs.push(to_queued(e, body, key)),
                None => after.lost.push((key, e.id)),
            }
        }
        if msgs.is_empty() {
            return;
        }
        let n = msgs.len() as u32;
        c.reserved_n(n);
        if c.no_ack {
            Counters::bump(&self.counters.deliver_no_ack, n as u64);
            if q.fifo.out_of_credit(key) {
                // Its connection asks for more once it has written these.
                c.blocked.store(true, SeqCst);
            }
        } else {
            self.unacked.fetch_add(n as u64, SeqCst);
            Counters::bump(&self.counters.deliver, n as u64);
        }
        let redelivered = msgs.iter().filter(|m| m.redelivered).count();
        Counters::bump(&self.counters.redeliver, redelivered as u64);
        let out = Outbound::Deliver {
            consumer: c.clone(),
            queue: self.clone(),
            msgs,
        };
        if let Err(returned) = c.conn.send(out) {
            if let Outbound::Deliver { msgs, .. } = returned.0 {
                for _ in &msgs {
                    c.unreserve();
                }
                if !c.no_ack {
                    self.unacked.fetch_sub(msgs.len() as u64, SeqCst);
                }
                after
                    .gone
                    .push((c, msgs.into_iter().map(|m| m.seq).collect()));
            }
        }
    }

    /// Arms the timer for the head's expiry.
    fn q_arm_timer(self: &Arc<Self>, st: &mut State) {
        let Some(at) = st.quorum.as_ref().and_then(|q| q.fifo.next_expiry()) else {
            return;
        };
        let t = Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()));
        if st.timer_deadline.is_none_or(|d| t < d) {
            st.timer_deadline = Some(t);
            self.ensure_timer(st);
            self.timer.notify_one();
        }
    }

    /// Runs a command and everything it leads to.
    fn q_run(self: &Arc<Self>, cmd: Command<QMsg>) -> Reply<QMsg> {
        let mut after = After::default();
        let reply = {
            let mut st = self.state.lock();
            self.q_apply(&mut st, cmd, &mut after)
        };
        self.q_after(after);
        reply
    }

    /// Carries out what had to wait for the lock's release.
    fn q_after(self: &Arc<Self>, mut after: After) {
        while !after.is_empty() {
            let mut next = After::default();
            for (key, ids) in std::mem::take(&mut after.orphans) {
                self.r_orphaned(key, ids);
            }
            let lost = std::mem::take(&mut after.lost);
            if !lost.is_empty() {
                let mut st = self.state.lock();
                for (key, ids) in by_holder(lost) {
                    self.q_apply(&mut st, Command::Settle { key, ids }, &mut next);
                }
            }
            for (c, ids) in std::mem::take(&mut after.gone) {
                if self.is_replicated() {
                    self.r_gone(&c, ids);
                    continue;
                }
                let mut st = self.state.lock();
                st.consumers.retain(|o| !Arc::ptr_eq(o, &c));
                if let Some(q) = st.quorum.as_mut() {
                    q.consumers.remove(&c.id);
                }
                let cancel = Command::Cancel {
                    key: c.id,
                    dispatch: false,
                };
                self.q_apply(&mut st, cancel, &mut next);
                self.q_apply(
                    &mut st,
                    Command::Return {
                        key: c.id,
                        ids,
                        counted: false,
                    },
                    &mut next,
                );
            }
            for (reason, msgs, held) in std::mem::take(&mut after.dead) {
                self.q_dead_letter(reason, msgs, held, &mut next);
            }
            after = next;
        }
    }

    /// Republishes dead letters. Held (at-least-once) ones leave the queue only once a
    /// target queue has them; the rest are tried again every [`DLX_RETRY`].
    fn q_dead_letter(
        self: &Arc<Self>,
        reason: Reason,
        msgs: Vec<QueuedMessage>,
        held: bool,
        after: &mut After,
    ) {
        let unrouted = deadletter::dead_letter(self, &self.vhost, &msgs, reason);
        if !held || self.is_deleted() {
            let ids = msgs.iter().map(|m| m.msg.persist_id).filter(|id| *id != 0);
            self.forget_ids(ids.collect());
            return;
        }
        let routed: Vec<MsgId> = msgs
            .iter()
            .zip(&unrouted)
            .filter(|(_, u)| !**u)
            .map(|(m, _)| m.seq)
            .collect();
        if self.is_replicated() && !routed.is_empty() {
            self.r_dlx_settle(routed.clone());
        }
        let mut st = self.state.lock();
        if !routed.is_empty() && !self.is_replicated() {
            self.q_apply(&mut st, Command::DlxSettle { ids: routed }, after);
        }
        if unrouted.iter().any(|u| *u) && st.dlx_retry_at.is_none() {
            let due = Instant::now() + DLX_RETRY;
            st.dlx_retry_at = Some(due);
            if st.timer_deadline.is_none_or(|d| due < d) {
                st.timer_deadline = Some(due);
            }
            self.ensure_timer(&mut st);
            self.timer.notify_one();
        }
    }

    /// The timer fired: expire due head messages, retry held dead letters when due.
    /// Returns the next deadline.
    pub(super) fn q_on_timer(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        if self.is_replicated() {
            return self.r_on_timer(now);
        }
        let mut after = After::default();
        let next = {
            let mut st = self.state.lock();
            // The timer is running now: what the commands below arm must not wake it
            // again at once (it sleeps until the deadline returned here).
            st.timer_deadline = Some(now);
            self.q_apply(&mut st, Command::Tick, &mut after);
            if st.dlx_retry_at.is_some_and(|t| t <= now) {
                st.dlx_retry_at = None;
                self.q_apply(&mut st, Command::DlxRetry, &mut after);
            }
            let expiry = st.quorum.as_ref().and_then(|q| q.fifo.next_expiry());
            let next = expiry
                .map(|at| now + Duration::from_millis(at.saturating_sub(now_ms())))
                .into_iter()
                .chain(st.dlx_retry_at)
                .min();
            st.timer_deadline = next;
            next
        };
        self.q_after(after);
        // Dead-lettering may have set a retry.
        let retry = self.state.lock().dlx_retry_at;
        next.into_iter().chain(retry).min()
    }

    /// A message read back from the message log at start.
    pub(super) fn q_restore(self: &Arc<Self>, r: Recovered) {
        if self.is_replicated() {
            // Its Raft log restores it; a copy in the message log is from before.
            return self.forget_ids(vec![r.msg.persist_id]);
        }
        // The log holds one redelivered mark per return: the delivery count.
        let mut after = After::default();
        {
            let mut st = self.state.lock();
            let Some(q) = st.quorum.as_mut() else { return };
            let msg = q.hold(r.msg);
            let cmd = Command::Enqueue {
                msg,
                enqueued_at: r.at_ms,
                redelivered: r.redelivered,
                delivery_count: r.returns,
            };
            self.q_apply(&mut st, cmd, &mut after);
        }
        self.q_after(after);
    }

    pub(super) fn q_publish(self: &Arc<Self>, msg: Arc<Message>) -> PublishOutcome {
        if self.is_deleted() {
            if msg.persist_id != 0 {
                self.forget_ids(vec![msg.persist_id]);
            }
            return PublishOutcome::Enqueued;
        }
        let id = msg.persist_id;
        let mut after = After::default();
        let reply = {
            let mut st = self.state.lock();
            let Some(q) = st.quorum.as_mut() else {
                return PublishOutcome::Enqueued;
            };
            let msg = q.hold(msg);
            let paged = match &msg {
                QMsg::Paged(p) => Some(p.clone()),
                QMsg::Mem(_) => None,
            };
            let cmd = Command::Enqueue {
                msg,
                enqueued_at: now_ms(),
                redelivered: false,
                delivery_count: 0,
            };
            let reply = self.q_apply(&mut st, cmd, &mut after);
            if let (Reply::Rejected, Some(p), Some(q)) = (&reply, paged, st.quorum.as_mut()) {
                if let Some(pages) = q.pages.as_mut() {
                    pages.release(&p);
                }
            }
            reply
        };
        self.q_after(after);
        if matches!(reply, Reply::Rejected) {
            if id != 0 {
                self.forget_ids(vec![id]);
            }
            return PublishOutcome::Rejected;
        }
        Counters::bump(&self.counters.publish, 1);
        PublishOutcome::Enqueued
    }

    /// A no-ack consumer wrote what it had: top its credit up.
    pub(super) fn q_dispatch(self: &Arc<Self>) {
        if self.is_replicated() {
            return self.r_dispatch();
        }
        let mut after = After::default();
        {
            let mut st = self.state.lock();
            let want: Vec<(ConsumerKey, u32)> = st
                .quorum
                .as_ref()
                .map(|q| {
                    q.consumers
                        .values()
                        .filter(|c| c.no_ack && q.fifo.out_of_credit(c.id))
                        .map(|c| {
                            (
                                c.id,
                                INFLIGHT_WINDOW.saturating_sub(c.inflight.load(SeqCst)),
                            )
                        })
                        .filter(|(_, n)| *n > 0)
                        .collect()
                })
                .unwrap_or_default();
            for (key, credit) in want {
                self.q_apply(&mut st, Command::Credit { key, credit }, &mut after);
            }
        }
        self.q_after(after);
    }

    pub(super) fn q_consume(
        self: &Arc<Self>,
        consumer: Arc<Consumer>,
    ) -> Result<(), ConsumeRefused> {
        if self.is_replicated() {
            return self.r_consume(consumer);
        }
        let mut after = After::default();
        {
            let mut st = self.state.lock();
            self.attach(&mut st, consumer.clone())?;
            let spec = ConsumerSpec {
                priority: consumer.priority,
                prefetch: if consumer.no_ack {
                    INFLIGHT_WINDOW
                } else {
                    consumer.prefetch
                },
                no_ack: consumer.no_ack,
            };
            if let Some(q) = st.quorum.as_mut() {
                q.consumers.insert(consumer.id, consumer.clone());
            }
            let key = consumer.id;
            self.q_apply(&mut st, Command::Checkout { key, spec }, &mut after);
        }
        self.q_after(after);
        Ok(())
    }

    pub(super) fn q_cancel(self: &Arc<Self>, consumer: &Arc<Consumer>, dispatch: bool) -> bool {
        if self.is_replicated() {
            return self.r_cancel(consumer);
        }
        let mut after = After::default();
        let auto_delete = {
            let mut st = self.state.lock();
            st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
            st.last_used = Instant::now();
            if let Some(q) = st.quorum.as_mut() {
                q.consumers.remove(&consumer.id);
            }
            let key = consumer.id;
            self.q_apply(&mut st, Command::Cancel { key, dispatch }, &mut after);
            if st.eff.expires.is_some() {
                self.timer.notify_one();
            }
            self.config.auto_delete
                && st.had_consumer
                && st.consumers.is_empty()
                && !self.is_deleted()
        };
        self.q_after(after);
        auto_delete
    }

    pub(super) fn q_get(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        let mut after = After::default();
        let r = {
            let mut st = self.state.lock();
            st.last_used = Instant::now();
            // Checked out even without ack, and settled once its body is read (a paged
            // body must be read before its page is released).
            let cmd = Command::Dequeue { no_ack: false };
            match self.q_apply(&mut st, cmd, &mut after) {
                Reply::Dequeued(Some((e, left))) => {
                    let body = st.quorum.as_ref().and_then(|q| q.body(&e.msg));
                    if no_ack || body.is_none() {
                        let settle = Command::Settle {
                            key: fifo::GET_KEY,
                            ids: vec![e.id],
                        };
                        self.q_apply(&mut st, settle, &mut after);
                    }
                    body.map(|body| {
                        self.count_get(no_ack, e.redelivered);
                        (to_queued(&e, body, fifo::GET_KEY), left)
                    })
                }
                _ => None,
            }
        };
        self.q_after(after);
        r
    }

    /// Acknowledged deliveries (`ids`: their ids in the queue; `holders`: the consumer
    /// key each was checked out to, [`QueuedMessage::holder`]; basic.get's when absent).
    pub(super) fn q_acked(self: &Arc<Self>, n: u64, ids: Vec<u64>, holders: &[u64]) {
        let held = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| (holders.get(i).copied().unwrap_or(fifo::GET_KEY), id));
        let held = by_holder(held);
        if self.is_replicated() {
            return self.r_acked(n, held);
        }
        self.unacked.fetch_sub(n, SeqCst);
        Counters::bump(&self.counters.ack, n);
        let mut after = After::default();
        {
            let mut st = self.state.lock();
            for (key, ids) in held {
                self.q_apply(&mut st, Command::Settle { key, ids }, &mut after);
            }
        }
        self.q_after(after);
    }

    pub(super) fn q_rejected(self: &Arc<Self>, msgs: Vec<QueuedMessage>) {
        if self.is_replicated() {
            return self.r_rejected(msgs);
        }
        self.unacked.fetch_sub(msgs.len() as u64, SeqCst);
        let mut after = After::default();
        {
            let mut st = self.state.lock();
            for (key, ids) in by_holder(msgs.iter().map(|m| (m.holder, m.seq))) {
                self.q_apply(&mut st, Command::Discard { key, ids }, &mut after);
            }
        }
        self.q_after(after);
    }

    /// Returned by consumers: counted (`x-delivery-count`, `x-delivery-limit`).
    pub(super) fn q_requeue(self: &Arc<Self>, msgs: Vec<QueuedMessage>) {
        if self.is_replicated() {
            let n = msgs.len() as u64;
            return self.r_return(msgs, true, n);
        }
        self.unacked.fetch_sub(msgs.len() as u64, SeqCst);
        let mut after = After::default();
        {
            let mut st = self.state.lock();
            if self.is_deleted() {
                return;
            }
            // Written to the log so a restart still sees the message as redelivered.
            let marked: Vec<u64> = msgs
                .iter()
                .map(|m| m.msg.persist_id)
                .filter(|id| *id != 0)
                .collect();
            if let Some((log, key)) = self.log() {
                log.mark_redelivered(key, marked);
            }
            for (key, ids) in by_holder(msgs.iter().map(|m| (m.holder, m.seq))) {
                let cmd = Command::Return {
                    key,
                    ids,
                    counted: true,
                };
                self.q_apply(&mut st, cmd, &mut after);
            }
        }
        self.q_after(after);
    }

    /// Never reached the consumer: back as it was.
    pub(super) fn q_return_undelivered(self: &Arc<Self>, m: QueuedMessage, counted_unacked: bool) {
        if self.is_replicated() {
            return self.r_return(vec![m], false, counted_unacked as u64);
        }
        if counted_unacked {
            self.unacked.fetch_sub(1, SeqCst);
        }
        self.q_run(Command::Return {
            key: m.holder,
            ids: vec![m.seq],
            counted: false,
        });
    }

    pub(super) fn q_purge(self: &Arc<Self>) -> u32 {
        if self.is_replicated() {
            return self.r_purge();
        }
        match self.q_run(Command::Purge) {
            Reply::Purged(n) => n,
            _ => 0,
        }
    }

    pub(super) fn q_apply_config(self: &Arc<Self>, st: &mut State, after: &mut After) {
        let config = config_of(&st.eff);
        self.q_apply(st, Command::SetConfig(config), after);
    }

    pub(super) fn q_finish(self: &Arc<Self>, after: After) {
        self.q_after(after);
    }

    /// The queue's Raft figures for `/metrics`; None unless it is a quorum queue.
    pub fn raft_stats(&self) -> Option<RaftStats> {
        self.state.lock().quorum.as_ref().map(|q| RaftStats {
            index: q.applied,
            term: 1,
        })
    }

    /// Held at-least-once dead letters (management's `messages_dlx`).
    pub fn dlx_waiting(&self) -> usize {
        self.state
            .lock()
            .quorum
            .as_ref()
            .map_or(0, |q| q.fifo.dlx_len())
    }
}
