//! The classic queue engine: ready messages in memory with a paged tail, one FIFO per
//! priority level, consumers served round-robin by priority with per-consumer and
//! per-channel credit, message TTL, length limits and dead-lettering. Called through
//! [`Queue`]'s methods, which choose the engine by the queue's type.
//!
//! Unacknowledged messages live in the channel that received them (it gives them back on
//! ack, reject or close); the queue only counts them. Messages that die are dead-lettered
//! *after* the lock is released, since dead-lettering publishes to other queues.

use super::args::Overflow;
use super::consumer::Consumer;
use super::deadletter::Reason;
use super::{ConsumeRefused, PublishOutcome, Queue, QueuedMessage, State, MAX_BATCHES};
use crate::connection::outbound::Outbound;
use crate::message::Message;
use crate::stats::Counters;
use crate::store::log::Recovered;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Queue {
    pub(super) fn over_limit(st: &State) -> bool {
        st.eff.max_length.is_some_and(|m| st.ready.len() as u64 > m)
            || st
                .eff
                .max_length_bytes
                .is_some_and(|m| st.ready.bytes() as u64 > m)
    }

    /// Picks the consumer for the next delivery: highest priority with credit, round-robin
    /// among equals; only the first one on a single-active-consumer queue.
    pub(super) fn choose(&self, st: &State) -> Option<usize> {
        if self.args.single_active_consumer {
            return st
                .consumers
                .first()
                .is_some_and(|c| c.reserve_or_block())
                .then_some(0);
        }
        st.consumers.iter().position(|c| c.reserve_or_block())
    }

    /// `now` is when expiry is judged: a message that expires exactly then (TTL 0, just
    /// published) may still go to a waiting consumer.
    pub(super) fn dispatch_locked(
        self: &Arc<Self>,
        st: &mut State,
        dead: &mut Vec<QueuedMessage>,
        now: Option<Instant>,
    ) {
        let mut now = now;
        let mut batches: Vec<(Arc<Consumer>, Vec<QueuedMessage>)> = Vec::new();
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let Some(idx) = self.choose(st) else { break };
            let Some(m) = st.ready.pop_front() else {
                break;
            };
            let c = st.consumers[idx].clone();
            if let Some(t) = m.expires_at {
                let now = *now.get_or_insert_with(Instant::now);
                if t < now {
                    c.unreserve();
                    dead.push(m);
                    continue;
                }
            }
            // Round robin: the consumer goes behind the others of its priority.
            let prio = c.priority;
            let end = st.consumers[idx..]
                .iter()
                .position(|o| o.priority != prio)
                .map(|p| p + idx)
                .unwrap_or(st.consumers.len());
            if end - idx > 1 && !self.args.single_active_consumer {
                let moved = st.consumers.remove(idx);
                st.consumers.insert(end - 1, moved);
            }
            if !c.no_ack {
                self.unacked.fetch_add(1, SeqCst);
                Counters::bump(&self.counters.deliver, 1);
            } else {
                Counters::bump(&self.counters.deliver_no_ack, 1);
            }
            if m.redelivered {
                Counters::bump(&self.counters.redeliver, 1);
            }
            match batches.iter_mut().rev().find(|(b, _)| Arc::ptr_eq(b, &c)) {
                Some((_, msgs)) => msgs.push(m),
                None => {
                    if batches.len() >= MAX_BATCHES {
                        self.send_batches(st, &mut batches);
                    }
                    batches.push((c, vec![m]));
                }
            }
        }
        let delivered = !batches.is_empty();
        self.flow_check(st);
        if self.send_batches(st, &mut batches) {
            // A consumer was gone and its messages came back: the others may take them.
            self.dispatch_locked(st, dead, now);
        } else if delivered {
            self.arm_timer_for_head(st);
        }
    }

    /// A new head may expire sooner than the timer is set for (a message with an
    /// expiration behind one without): arm it, as RabbitMQ does after deliveries.
    pub(super) fn arm_timer_for_head(self: &Arc<Self>, st: &mut State) {
        if let Some(t) = st.ready.next_expiry() {
            if st.timer_deadline.is_none_or(|d| t < d) {
                st.timer_deadline = Some(t);
                self.ensure_timer(st);
                self.timer.notify_one();
            }
        }
    }

    /// Hands each consumer its deliveries from one dispatch. True when a consumer's
    /// connection was gone (its messages are back in the queue, the consumer removed).
    pub(super) fn send_batches(
        self: &Arc<Self>,
        st: &mut State,
        batches: &mut Vec<(Arc<Consumer>, Vec<QueuedMessage>)>,
    ) -> bool {
        let mut failed = false;
        for (c, msgs) in batches.drain(..) {
            let out = Outbound::Deliver {
                consumer: c.clone(),
                queue: self.clone(),
                msgs,
            };
            if let Err(returned) = c.conn.send(out) {
                // The consumer's connection is gone: take the messages back, drop the consumer.
                if let Outbound::Deliver { msgs, .. } = returned.0 {
                    for msg in msgs {
                        c.unreserve();
                        if !c.no_ack {
                            self.unacked.fetch_sub(1, SeqCst);
                        }
                        st.ready.insert_by_seq(msg);
                    }
                }
                st.consumers.retain(|o| !Arc::ptr_eq(o, &c));
                failed = true;
            }
        }
        failed
    }

    pub(super) fn c_restore(self: &Arc<Self>, r: Recovered) {
        let mut st = self.state.lock();
        let now = Instant::now();
        let age = crate::store::log::now_ms().saturating_sub(r.at_ms);
        let expires_at = expiry_for(st.eff.message_ttl, &r.msg, now)
            .map(|t| t.checked_sub(Duration::from_millis(age)).unwrap_or(now));
        st.append(r.msg, r.redelivered, expires_at);
        if expires_at.is_some() {
            self.ensure_timer(&mut st);
            self.timer.notify_one();
        }
    }

    pub(super) fn c_publish(self: &Arc<Self>, msg: Arc<Message>) -> PublishOutcome {
        if self.is_deleted() {
            if msg.persist_id != 0 {
                self.forget_msg(&msg);
            }
            return PublishOutcome::Enqueued;
        }
        let mut expired = Vec::new();
        let mut dropped = Vec::new();
        let outcome = {
            let mut st = self.state.lock();
            let now = Instant::now();
            let expires_at = expiry_for(st.eff.message_ttl, &msg, now);
            let over = |st: &State, extra: usize, extra_bytes: usize| {
                st.eff
                    .max_length
                    .is_some_and(|m| (st.ready.len() + extra) as u64 > m)
                    || st
                        .eff
                        .max_length_bytes
                        .is_some_and(|m| (st.ready.bytes() + extra_bytes) as u64 > m)
            };
            if st.eff.overflow != Overflow::DropHead && over(&st, 1, msg.size()) {
                if st.eff.overflow == Overflow::RejectPublishDlx {
                    let seq = st.next_seq;
                    dropped.push(QueuedMessage {
                        seq,
                        msg,
                        redelivered: false,
                        expires_at,
                        delivery_count: 0,
                        holder: 0,
                    });
                } else if msg.persist_id != 0 {
                    self.forget_msg(&msg);
                }
                PublishOutcome::Rejected
            } else {
                st.append(msg, false, expires_at);
                Counters::bump(&self.counters.publish, 1);
                self.dispatch_locked(&mut st, &mut expired, Some(now));
                while st.eff.overflow == Overflow::DropHead && over(&st, 0, 0) {
                    match st.ready.pop_front() {
                        Some(m) => dropped.push(m),
                        None => break,
                    }
                }
                if let Some(t) = expires_at {
                    // TTL 0 means "deliver now or drop"; anything already due goes now.
                    st.ready.pop_expired(now, &mut expired);
                    self.ensure_timer(&mut st);
                    if st.timer_deadline.is_none_or(|d| t < d) {
                        st.timer_deadline = Some(t);
                        self.timer.notify_one();
                    }
                }
                PublishOutcome::Enqueued
            }
        };
        self.dead_letter(expired, Reason::Expired);
        self.dead_letter(dropped, Reason::Maxlen);
        outcome
    }

    pub(super) fn c_dispatch(self: &Arc<Self>) {
        let mut dead = Vec::new();
        {
            let mut st = self.state.lock();
            st.dispatch_pending = false;
            self.dispatch_locked(&mut st, &mut dead, None);
        }
        self.dead_letter(dead, Reason::Expired);
    }

    pub(super) fn c_consume(
        self: &Arc<Self>,
        consumer: Arc<Consumer>,
    ) -> Result<(), ConsumeRefused> {
        let mut dead = Vec::new();
        {
            let mut st = self.state.lock();
            self.attach(&mut st, consumer)?;
            self.dispatch_locked(&mut st, &mut dead, None);
        }
        self.dead_letter(dead, Reason::Expired);
        Ok(())
    }

    pub(super) fn c_cancel(self: &Arc<Self>, consumer: &Arc<Consumer>, dispatch: bool) -> bool {
        let mut dead = Vec::new();
        let auto_delete = {
            let mut st = self.state.lock();
            let was_active = st
                .consumers
                .first()
                .is_some_and(|c| Arc::ptr_eq(c, consumer));
            st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
            st.last_used = Instant::now();
            if let Some(s) = self.stream() {
                s.remove_reader(consumer);
            }
            if dispatch && was_active && self.args.single_active_consumer {
                // The next consumer in line becomes the active one.
                self.dispatch_locked(&mut st, &mut dead, None);
            }
            if st.eff.expires.is_some() {
                self.timer.notify_one();
            }
            if st.consumers.is_empty() {
                // Without consumers the backlog is the user's: nobody is held for it.
                self.flow_release(&mut st);
            }
            self.config.auto_delete
                && st.had_consumer
                && st.consumers.is_empty()
                && !self.is_deleted()
        };
        self.dead_letter(dead, Reason::Expired);
        auto_delete
    }

    pub(super) fn c_get(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        let mut dead = Vec::new();
        let r = {
            let mut st = self.state.lock();
            st.last_used = Instant::now();
            if st.ready.next_expiry().is_some() {
                st.ready.pop_expired(Instant::now(), &mut dead);
            }
            let r = st.ready.pop_front().map(|m| {
                if no_ack {
                    self.forget([&m]);
                }
                self.count_get(no_ack, m.redelivered);
                (m, st.ready.len() as u32)
            });
            self.flow_check(&mut st);
            // The new head may expire (a message behind one without expiry): arm the
            // timer for it, as RabbitMQ's drop_expired_msgs does after a fetch.
            self.arm_timer_for_head(&mut st);
            r
        };
        self.dead_letter(dead, Reason::Expired);
        r
    }

    pub(super) fn c_requeue(self: &Arc<Self>, msgs: impl IntoIterator<Item = QueuedMessage>) {
        let mut dead = Vec::new();
        let mut dropped = Vec::new();
        {
            let mut st = self.state.lock();
            let mut n = 0;
            let mut gone = Vec::new();
            let mut marked = Vec::new();
            for mut m in msgs {
                n += 1;
                if self.is_deleted() {
                    if m.msg.persist_id != 0 {
                        gone.push(m.msg.persist_id);
                    }
                    continue;
                }
                m.redelivered = true;
                if m.msg.persist_id != 0 {
                    marked.push(m.msg.persist_id);
                }
                st.ready.insert_by_seq(m);
            }
            if let Some((log, key)) = self.log() {
                log.remove(key, gone);
                log.mark_redelivered(key, marked);
            }
            self.unacked.fetch_sub(n, SeqCst);
            if st.ready.next_expiry().is_some() {
                self.ensure_timer(&mut st);
                self.timer.notify_one();
            }
            self.dispatch_locked(&mut st, &mut dead, None);
            // Requeued messages count against the length limit again; the head goes.
            while st.eff.overflow == Overflow::DropHead && Self::over_limit(&st) {
                match st.ready.pop_front() {
                    Some(m) => dropped.push(m),
                    None => break,
                }
            }
        }
        self.dead_letter(dead, Reason::Expired);
        self.dead_letter(dropped, Reason::Maxlen);
    }

    pub(super) fn c_purge(self: &Arc<Self>) -> u32 {
        let (n, ids) = {
            let mut st = self.state.lock();
            let (n, ids) = st.ready.clear();
            self.flow_check(&mut st);
            (n, ids)
        };
        self.forget_ids(ids);
        n as u32
    }
}

/// When a message enqueued `now` expires: the queue's TTL or the message's expiration,
/// whichever is sooner.
pub(super) fn expiry_for(queue_ttl: Option<u64>, msg: &Message, now: Instant) -> Option<Instant> {
    let ttl = match (queue_ttl, msg.expiration) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }?;
    Some(now + Duration::from_millis(ttl))
}
