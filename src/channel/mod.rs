//! A channel: plain state owned by its connection task (no task per channel).
//!
//! It owns the content assembler, the consumers it created, its unacknowledged deliveries
//! (in tag order), its prefetch settings and its confirm/transaction mode. Handlers get the
//! connection's output buffer and vhost through [`ConnCtx`] and return an [`AmqpError`] to
//! close the channel or the connection.

mod basic;
pub use basic::generated_name;
pub mod content;
mod declare;
pub mod replicate;
pub use replicate::PendingMeta;
pub mod unacked;

use crate::auth::access::Resource;
use crate::auth::{Access, Auth};
use crate::connection::outbound::ConnSender;
use crate::error::{AmqpError, AmqpResult};
use crate::protocol::codec::{ContentHeader, Method, ShortStr};
use crate::protocol::encode::OutBuf;
use crate::queue::consumer::{ChannelShared, Consumer};
use crate::queue::quorum::wire::Ticket as QuorumTicket;
use crate::queue::remote::Ticket;
use crate::queue::stream::replica::Wait as StreamWait;
use crate::queue::{Queue, QueuedMessage};
use crate::vhost::VHost;
use amq_protocol::protocol::{access, basic as b, channel as c, confirm, tx, AMQPClass};
use bytes::Bytes;
use content::Assembler;
use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use unacked::{Unacked, UnackedMap};

/// The broker-wide state a channel handler uses: the users and permissions, the vhost
/// limits, and the message size limit. The connection lends it from its broker; the channel
/// layer never sees the whole broker.
#[derive(Debug, Clone, Copy)]
pub struct BrokerCtx<'a> {
    pub auth: &'a Auth,
    pub limits: &'a crate::limits::Limits,
    /// Largest message body accepted (`max_message_size`).
    pub max_message_size: u64,
    /// The metadata group, in a cluster: definition changes are replicated through it.
    pub meta: Option<&'a crate::cluster::handle::MetaHandle>,
    /// The delay store of x-delayed-message exchanges (None until it is open).
    pub delayed: Option<&'a Arc<crate::delayed::Delayed>>,
}

/// What a channel handler may touch of its connection.
#[derive(Debug)]
pub struct ConnCtx<'a> {
    pub out: &'a mut OutBuf,
    pub broker: BrokerCtx<'a>,
    pub vhost: &'a Arc<VHost>,
    pub conn_id: u64,
    pub user: &'a str,
    pub frame_max: u32,
    pub tx: &'a ConnSender,
    /// The client advertised `consumer_cancel_notify`.
    pub cancel_notify: bool,
    /// Management counters of the connection.
    pub stats: &'a crate::stats::ConnShared,
    /// Queues published to whose dispatch waits for the end of the read batch (see
    /// `Queue::push_deferred`); None where frames are not being read.
    pub deferred: Option<&'a mut Vec<Arc<Queue>>>,
    /// Queues found overrun by internal flow control after a publish (see
    /// [`crate::flow`]); the connection stops reading until they are released.
    pub flow: Option<&'a mut Vec<Arc<Queue>>>,
    /// Where a handler leaves a reply that waits for the metadata group (see
    /// `replicate`); None where frames are not being read.
    pub pending: Option<&'a mut Option<PendingMeta>>,
    /// This method is handled again after a read barrier: do not ask for another.
    pub barrier_passed: bool,
}

impl ConnCtx<'_> {
    /// Holds a message published to the x-delayed-message exchange `x` of this vhost;
    /// the message log sequence number its confirm waits for.
    pub fn schedule_delayed(
        &self,
        x: &str,
        msg: &crate::message::Message,
        delay: u64,
    ) -> Option<u64> {
        let store = self.broker.delayed?;
        Some(store.schedule(&self.vhost.name, x, msg, delay))
    }

    /// Checks that this connection's user has `access` on a resource of its vhost (see the
    /// table above); the channel handlers call it before touching the resource.
    pub fn permit(&self, access: Access, kind: Resource, name: &str) -> AmqpResult<()> {
        self.broker
            .auth
            .check(self.user, &self.vhost.name, access, kind, name)
    }

    /// Checks the routing key of a publish (Write) or binding (Read) on the topic exchange
    /// `exchange` against the user's topic permissions ([`crate::auth::topic`]).
    pub fn permit_topic(
        &self,
        access: Access,
        exchange: &str,
        routing_key: &str,
    ) -> AmqpResult<()> {
        self.broker
            .auth
            .check_topic(self.user, &self.vhost.name, access, exchange, routing_key)
    }

    /// The `user-id` property must name the authenticated user, unless the user has the
    /// `impersonator` tag (RabbitMQ's `check_user_id_header`).
    pub fn check_user_id(&self, claimed: &str) -> AmqpResult<()> {
        if claimed == self.user
            || self
                .broker
                .auth
                .user(self.user)
                .is_some_and(|u| u.is_impersonator())
        {
            return Ok(());
        }
        Err(AmqpError::precondition_failed(format_args!(
            "user_id property set to '{claimed}' but authenticated user was '{}'",
            self.user
        )))
    }
}

#[derive(Debug)]
struct ConsumerEntry {
    consumer: Arc<Consumer>,
    queue: Arc<Queue>,
    /// basic.cancel seen; cancel-ok is queued behind in-flight deliveries.
    cancelling: bool,
}

/// A publish routed inside a transaction, delivered at commit.
#[derive(Debug)]
struct TxPublish {
    msg: Arc<crate::message::Message>,
    queues: Vec<Arc<Queue>>,
    mandatory: bool,
    /// Published to an x-delayed-message exchange (its name) with this delay: held in
    /// the delay store at commit instead of routed.
    delay: Option<(Arc<str>, u64)>,
}

#[derive(Debug)]
enum TxAck {
    Ack(Vec<Unacked>),
    Reject(Vec<Unacked>, bool),
}

#[derive(Debug, Default)]
struct TxState {
    publishes: Vec<TxPublish>,
    acks: Vec<TxAck>,
}

/// What a held reply waits for besides the message log: the homes of queues its message
/// was forwarded to, the commit of its replicated quorum queues, and the majority of its
/// replicated streams. Any refusal turns its confirm into a nack.
#[derive(Debug, Default)]
pub(crate) struct Waits {
    pub(crate) forwarded: Option<Arc<Ticket>>,
    pub(crate) quorum: Option<Arc<QuorumTicket>>,
    pub(crate) streams: Vec<StreamWait>,
}

impl Waits {
    pub(crate) fn is_empty(&self) -> bool {
        self.forwarded.is_none() && self.quorum.is_none() && self.streams.is_empty()
    }

    /// Something is not done yet.
    fn pending(&self) -> bool {
        self.forwarded.as_ref().is_some_and(|t| !t.done())
            || self.quorum.as_ref().is_some_and(|t| !t.is_done())
            || self.streams.iter().any(|w| w.outcome().is_none())
    }

    /// Something refused the message (read once nothing is pending).
    fn refused(&self) -> bool {
        self.forwarded.as_ref().is_some_and(|t| t.refused())
            || self.quorum.as_ref().is_some_and(|t| t.failed())
            || self.streams.iter().any(|w| w.outcome() == Some(false))
    }
}

/// A reply that waits for the message log to sync (confirms of stored messages, and
/// everything after them on the channel; commit-ok of a transaction that stored some).
#[derive(Debug, Clone, Copy)]
enum Held {
    Ack(u64),
    Nack(u64),
    CommitOk,
    /// A committed transaction's publish still waiting for replicated queues or streams
    /// (or a forwarded home): nothing to send, but the commit-ok behind it waits.
    Committing,
}

#[derive(Debug)]
enum Mode {
    Normal,
    /// Publisher confirms: the last sequence number assigned and the confirms not yet sent
    /// (first, last), coalesced into one `basic.ack multiple` per batch of input.
    Confirm {
        seq: u64,
        pending: Option<(u64, u64)>,
    },
    Tx(TxState),
}

#[derive(Debug)]
pub struct Channel {
    pub id: u16,
    pub shared: Arc<ChannelShared>,
    /// We sent channel.close and wait for close-ok; everything else is discarded.
    pub closing: bool,
    assembler: Assembler,
    consumers: HashMap<ShortStr, ConsumerEntry>,
    next_tag: u64,
    unacked: UnackedMap,
    /// basic.qos global=false: prefetch for consumers created from now on.
    prefetch: u32,
    mode: Mode,
    routed: Vec<Arc<Queue>>,
    /// The exchange last published to, with the permission generation its write access
    /// was checked at (see `publish`).
    publish_cache: Option<(Arc<crate::vhost::exchange::Exchange>, u64)>,
    /// The queue this channel declared last: an empty queue name in later methods means it.
    last_queue: Option<String>,
    /// Direct reply-to: this channel's pseudo-queue while it consumes `amq.rabbitmq.reply-to`.
    reply_queue: Option<Arc<Queue>>,
    /// Replies held until the message log has synced past the first number and what
    /// else they wait for is done, in order.
    held: std::collections::VecDeque<(u64, Held, Waits)>,
}

impl Channel {
    pub fn new(id: u16) -> Channel {
        Channel {
            id,
            shared: Arc::new(ChannelShared::new(id)),
            closing: false,
            assembler: Assembler::default(),
            consumers: HashMap::new(),
            next_tag: 1,
            unacked: UnackedMap::default(),
            prefetch: 0,
            mode: Mode::Normal,
            routed: Vec::new(),
            publish_cache: None,
            last_queue: None,
            reply_queue: None,
            held: Default::default(),
        }
    }

    /// Expands RabbitMQ's empty-queue-name shortcut.
    fn queue_name(&self, name: &str) -> AmqpResult<String> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found(format_args!("no previously declared queue")))
    }

    fn reply(&self, cx: &mut ConnCtx<'_>, class: AMQPClass) {
        cx.out.method(self.id, class);
    }

    /// Handles a method frame for this channel.
    pub fn handle_method(&mut self, m: Method, cx: &mut ConnCtx<'_>) -> AmqpResult<()> {
        self.assembler.check_method()?;
        match m {
            Method::Publish(p) => {
                if p.immediate {
                    return Err(AmqpError::not_implemented(format_args!("immediate=true")));
                }
                self.assembler.start(p);
                Ok(())
            }
            Method::Ack {
                delivery_tag,
                multiple,
            } => self.ack(delivery_tag, multiple, cx),
            Method::Qos {
                prefetch_size,
                prefetch_count,
                global,
            } => self.qos(prefetch_size, prefetch_count, global, cx),
            Method::Other(class) => self.handle_class(*class, cx),
        }
    }

    fn handle_class(&mut self, class: AMQPClass, cx: &mut ConnCtx<'_>) -> AmqpResult<()> {
        match class {
            AMQPClass::Basic(m) => self.handle_basic(m, cx),
            AMQPClass::Exchange(m) => self.handle_exchange(m, cx),
            AMQPClass::Queue(m) => self.handle_queue(m, cx),
            AMQPClass::Channel(c::AMQPMethod::Flow(f)) if !f.active => {
                // RabbitMQ 3.x does not let clients stop deliveries with channel.flow.
                Err(AmqpError::not_implemented(format_args!("active=false")))
            }
            AMQPClass::Channel(c::AMQPMethod::Flow(f)) => {
                self.shared.active.store(f.active, SeqCst);
                self.reply(
                    cx,
                    AMQPClass::Channel(c::AMQPMethod::FlowOk(c::FlowOk { active: f.active })),
                );
                if f.active {
                    self.wake_consumers();
                }
                Ok(())
            }
            AMQPClass::Channel(c::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Channel(c::AMQPMethod::Open(_)) => Err(AmqpError::channel_error(
                format_args!("second 'channel.open' seen"),
            )
            .with_method(20, 10)),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.reply(
                    cx,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                match self.mode {
                    Mode::Tx(_) => {
                        return Err(AmqpError::precondition_failed(format_args!(
                            "cannot switch from tx to confirm mode"
                        )))
                    }
                    Mode::Normal => {
                        self.mode = Mode::Confirm {
                            seq: 0,
                            pending: None,
                        }
                    }
                    Mode::Confirm { .. } => {}
                }
                if !s.nowait {
                    self.reply(
                        cx,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.handle_tx(m, cx),
            _ => Err(AmqpError::command_invalid(format_args!(
                "unimplemented method"
            ))),
        }
    }

    fn handle_tx(&mut self, m: tx::AMQPMethod, cx: &mut ConnCtx<'_>) -> AmqpResult<()> {
        match m {
            tx::AMQPMethod::Select(_) => {
                match self.mode {
                    Mode::Confirm { .. } => {
                        return Err(AmqpError::precondition_failed(format_args!(
                            "cannot switch from confirm to tx mode"
                        )))
                    }
                    Mode::Normal => self.mode = Mode::Tx(TxState::default()),
                    Mode::Tx(_) => {}
                }
                self.reply(cx, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => {
                let Mode::Tx(state) = &mut self.mode else {
                    return Err(AmqpError::precondition_failed(format_args!(
                        "channel is not transactional"
                    )));
                };
                let state = std::mem::take(state);
                let mut wait = None;
                for p in state.publishes {
                    let stored = p
                        .delay
                        .and_then(|(x, delay)| cx.schedule_delayed(&x, &p.msg, delay));
                    wait = self
                        .deliver_published(p.msg, p.queues, p.mandatory, stored, cx)
                        .or(wait);
                }
                for a in state.acks {
                    match a {
                        TxAck::Ack(list) => self.settle(list, Settle::Ack),
                        TxAck::Reject(list, requeue) => self.settle(
                            list,
                            if requeue {
                                Settle::Requeue
                            } else {
                                Settle::Drop
                            },
                        ),
                    }
                }
                // Stored messages make commit-ok wait until they are on disk, and publishes
                // to replicated queues and streams or forwarded homes until they are
                // committed / accepted (their `Held::Committing` entries go first).
                let behind = self.held.back().map(|h| h.0);
                match wait.or(behind) {
                    Some(lsn) => self.held.push_back((
                        lsn.max(behind.unwrap_or(0)),
                        Held::CommitOk,
                        Waits::default(),
                    )),
                    None => {
                        self.reply(cx, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})))
                    }
                }
                Ok(())
            }
            tx::AMQPMethod::Rollback(_) => {
                let Mode::Tx(state) = &mut self.mode else {
                    return Err(AmqpError::precondition_failed(format_args!(
                        "channel is not transactional"
                    )));
                };
                let state = std::mem::take(state);
                for a in state.acks {
                    match a {
                        TxAck::Ack(list) | TxAck::Reject(list, _) => self.unacked.restore(list),
                    }
                }
                self.reply(
                    cx,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
                Ok(())
            }
            other => Err(AmqpError::command_invalid(format_args!(
                "unexpected tx method {other:?}"
            ))),
        }
    }

    /// A content header frame for this channel.
    pub fn handle_header(&mut self, h: ContentHeader, cx: &mut ConnCtx<'_>) -> AmqpResult<()> {
        if let Some(m) = self.assembler.header(h, cx.broker.max_message_size)? {
            self.publish(m, cx).map_err(|e| e.with_method(60, 40))?;
        }
        Ok(())
    }

    /// A content body frame for this channel.
    pub fn handle_body(&mut self, body: Bytes, cx: &mut ConnCtx<'_>) -> AmqpResult<()> {
        if let Some(m) = self.assembler.body(body)? {
            self.publish(m, cx).map_err(|e| e.with_method(60, 40))?;
        }
        Ok(())
    }

    /// Sends the coalesced publisher confirms, and the held replies whose messages the
    /// message log has synced (`synced`). Called after each batch of input and when the
    /// log syncs.
    pub fn flush_confirms(&mut self, out: &mut OutBuf, synced: u64) {
        if let Mode::Confirm {
            pending: pending @ Some(_),
            ..
        } = &mut self.mode
        {
            if let Some((first, last)) = pending.take() {
                out.basic_ack(self.id, last, first != last);
            }
        }
        let mut run: Option<(u64, u64)> = None;
        let id = self.id;
        let send_run = |out: &mut OutBuf, run: &mut Option<(u64, u64)>| {
            if let Some((first, last)) = run.take() {
                out.basic_ack(id, last, first != last);
            }
        };
        while let Some((lsn, reply, waits)) = self.held.front() {
            if *lsn > synced || waits.pending() {
                break;
            }
            let reply = match *reply {
                Held::Ack(seq) if waits.refused() => Held::Nack(seq),
                r => r,
            };
            self.held.pop_front();
            match reply {
                Held::Ack(seq) => {
                    run = Some(run.map_or((seq, seq), |(first, _)| (first, seq)));
                }
                Held::Nack(seq) => {
                    send_run(out, &mut run);
                    out.basic_nack(id, seq, false);
                }
                Held::CommitOk => {
                    send_run(out, &mut run);
                    out.method(id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
                }
                Held::Committing => {}
            }
        }
        send_run(out, &mut run);
    }

    /// True while replies wait for the message log.
    pub fn awaits_sync(&self) -> bool {
        !self.held.is_empty()
    }

    /// What the first held reply still waits for from replicated streams (the
    /// connection wakes when one of these changes).
    /// `None` when one of them was done meanwhile: flush again first.
    pub fn stream_waits(&self, synced: u64) -> Option<Vec<tokio::sync::watch::Receiver<u64>>> {
        let Some((lsn, _, waits)) = self.held.front() else {
            return Some(Vec::new());
        };
        let waits = &waits.streams;
        if *lsn <= synced && !waits.is_empty() && waits.iter().all(|w| w.outcome().is_some()) {
            // Done since the last flush: nothing would wake the connection for it.
            return None;
        }
        let mut out = Vec::new();
        for w in waits.iter().filter(|w| w.outcome().is_none()) {
            // Marked seen before looking again, so a change after the look wakes the
            // connection and one before it is seen now.
            let mut rx = w.receiver();
            rx.borrow_and_update();
            if w.outcome().is_some() {
                return None;
            }
            out.push(rx);
        }
        Some(out)
    }

    /// A delivery from one of this channel's consumers' queues.
    pub fn deliver(
        &mut self,
        consumer: Arc<Consumer>,
        queue: Arc<Queue>,
        msgs: Vec<QueuedMessage>,
        cx: &mut ConnCtx<'_>,
    ) {
        let live = !self.closing
            && self
                .consumers
                .get(&consumer.tag)
                .is_some_and(|e| Arc::ptr_eq(&e.consumer, &consumer));
        if !live {
            for m in msgs {
                consumer.unreserve();
                queue.return_undelivered(m, !consumer.no_ack);
            }
            return;
        }
        let n = msgs.len() as u32;
        let mut forget = Vec::new();
        for m in msgs {
            let tag = self.next_tag;
            self.next_tag += 1;
            let msg = &m.msg;
            cx.out.basic_deliver(
                self.id,
                consumer.tag.as_bytes(),
                tag,
                m.redelivered,
                msg.exchange.as_bytes(),
                msg.routing_key.as_bytes(),
            );
            cx.out
                .content(self.id, &m.delivery_properties(), &msg.body, cx.frame_max);
            if consumer.no_ack {
                // Auto-ack: delivered is done.
                // (A quorum queue forgot it when it decided the delivery.)
                if msg.persist_id != 0 && !queue.is_quorum() {
                    forget.push(m);
                }
            } else {
                self.unacked.push(Unacked {
                    tag,
                    queue: queue.clone(),
                    msg: m,
                    consumer: Some(consumer.clone()),
                    at: std::time::Instant::now(),
                });
            }
        }
        if !forget.is_empty() {
            queue.forget(&forget);
        }
        if consumer.written_n(n) {
            queue.dispatch();
        }
    }

    /// The queue of one of our consumers was deleted.
    pub fn server_cancel(&mut self, consumer: Arc<Consumer>, cx: &mut ConnCtx<'_>) {
        let ours = self
            .consumers
            .get(&consumer.tag)
            .is_some_and(|e| Arc::ptr_eq(&e.consumer, &consumer));
        if !ours || self.closing {
            return;
        }
        self.consumers.remove(&consumer.tag);
        if cx.cancel_notify {
            self.reply(
                cx,
                AMQPClass::Basic(b::AMQPMethod::Cancel(b::Cancel {
                    consumer_tag: consumer.tag.as_str().into(),
                    nowait: true,
                })),
            );
        }
    }

    /// basic.cancel-ok, now that earlier deliveries were written.
    pub fn cancel_ok(&mut self, consumer: Arc<Consumer>, nowait: bool, cx: &mut ConnCtx<'_>) {
        if self
            .consumers
            .get(&consumer.tag)
            .is_some_and(|e| Arc::ptr_eq(&e.consumer, &consumer))
        {
            self.consumers.remove(&consumer.tag);
        }
        if !nowait && !self.closing {
            self.reply(
                cx,
                AMQPClass::Basic(b::AMQPMethod::CancelOk(b::CancelOk {
                    consumer_tag: consumer.tag.as_str().into(),
                })),
            );
        }
    }

    /// Releases everything the channel holds: consumers leave their queues (auto-delete
    /// queues may go), unacknowledged and uncommitted-acked messages go back to their queues.
    pub fn release(&mut self, vhost: &VHost) {
        let mut queues: Vec<Arc<Queue>> = Vec::new();
        for (_, e) in self.consumers.drain() {
            if e.queue.cancel(&e.consumer, false) {
                vhost.remove_queue(&e.queue);
            } else {
                queues.push(e.queue);
            }
        }
        if let Some(q) = self.reply_queue.take() {
            vhost.remove_reply_queue(&q);
        }
        let mut all = self.unacked.take_all();
        if let Mode::Tx(state) = &mut self.mode {
            for a in std::mem::take(&mut state.acks) {
                match a {
                    TxAck::Ack(list) | TxAck::Reject(list, _) => all.extend(list),
                }
            }
            all.sort_by_key(|u| u.tag);
        }
        requeue_grouped(all);
        for q in queues {
            q.dispatch();
        }
        self.assembler = Assembler::default();
    }

    /// The delivery-acknowledgement timeout: the error to close the channel with when its
    /// oldest unacknowledged delivery is older than `timeout`.
    pub fn check_ack_timeout(&self, timeout: std::time::Duration) -> Option<AmqpError> {
        let oldest = self.unacked.oldest()?;
        (oldest.elapsed() > timeout).then(|| {
            AmqpError::precondition_failed(format_args!(
                "delivery acknowledgement on channel {} timed out. Timeout value used: {} ms. This timeout value can be configured, see consumers doc guide to learn more",
                self.id,
                timeout.as_millis()
            ))
        })
    }

    /// Asks the queues of consumers that waited for credit to dispatch again.
    fn wake_consumers(&self) {
        for e in self.consumers.values() {
            if e.consumer.unblock() {
                e.queue.dispatch();
            }
        }
    }
}

/// How settled deliveries end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue,
    /// Rejected without requeue: dead-lettered (or dropped without a dead-letter exchange).
    Drop,
}

/// Deliveries grouped by their queue (in first-seen order), so each queue is called once.
fn group_by_queue(list: Vec<Unacked>) -> Vec<(Arc<Queue>, Vec<QueuedMessage>)> {
    let mut groups: Vec<(Arc<Queue>, Vec<QueuedMessage>)> = Vec::new();
    for u in list {
        match groups.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
            Some((_, v)) => v.push(u.msg),
            None => groups.push((u.queue, vec![u.msg])),
        }
    }
    groups
}

/// Requeues deliveries to their queues, one call per queue.
fn requeue_grouped(list: Vec<Unacked>) {
    for (q, msgs) in group_by_queue(list) {
        q.requeue(msgs);
    }
}
