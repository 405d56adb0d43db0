//! basic.* handlers: publish, consume, get, acknowledgements, qos, recover.

use super::{
    group_by_queue, requeue_grouped, Channel, ConnCtx, ConsumerEntry, Held, Mode, Settle, TxAck,
    TxPublish,
};
use crate::auth::{access::Resource, Access};
use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::protocol::properties;
use crate::queue::args::QueueType;
use crate::queue::consumer::Consumer;
use crate::queue::{ConsumeRefused, Queue};
use crate::stats::messages::MsgCounters;
use crate::vhost::REPLY_TO;
use amq_protocol::protocol::{basic as b, AMQPClass};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use super::content::Assembled;
use super::unacked::Unacked;

impl Channel {
    pub(super) fn handle_basic(
        &mut self,
        m: b::AMQPMethod,
        cx: &mut ConnCtx<'_>,
    ) -> AmqpResult<()> {
        match m {
            b::AMQPMethod::Consume(c) => self.consume(c, cx),
            b::AMQPMethod::Cancel(c) => {
                self.cancel(c, cx);
                Ok(())
            }
            b::AMQPMethod::Get(g) => self.get(g, cx),
            b::AMQPMethod::Ack(a) => self.ack(a.delivery_tag, a.multiple, cx),
            b::AMQPMethod::Nack(n) => self.reject(n.delivery_tag, n.multiple, n.requeue),
            b::AMQPMethod::Reject(r) => self.reject(r.delivery_tag, false, r.requeue),
            b::AMQPMethod::Recover(r) => {
                self.recover(r.requeue)?;
                self.reply(
                    cx,
                    AMQPClass::Basic(b::AMQPMethod::RecoverOk(b::RecoverOk {})),
                );
                Ok(())
            }
            b::AMQPMethod::RecoverAsync(r) => self.recover(r.requeue),
            b::AMQPMethod::Qos(q) => self.qos(0, q.prefetch_count, q.global, cx),
            other => Err(AmqpError::command_invalid(format_args!(
                "unexpected basic method {other:?}"
            ))),
        }
    }

    pub(super) fn qos(
        &mut self,
        prefetch_size: u32,
        count: u16,
        global: bool,
        cx: &mut ConnCtx<'_>,
    ) -> AmqpResult<()> {
        if prefetch_size != 0 {
            return Err(AmqpError::not_implemented(format_args!(
                "prefetch_size!=0 ({prefetch_size})"
            )));
        }
        if global {
            self.shared.global_prefetch.store(count as u32, SeqCst);
            self.wake_consumers();
        } else {
            // As RabbitMQ: a per-consumer qos also lifts the channel-wide limit.
            self.prefetch = count as u32;
            if self.shared.global_prefetch.swap(0, SeqCst) != 0 {
                self.wake_consumers();
            }
        }
        self.reply(cx, AMQPClass::Basic(b::AMQPMethod::QosOk(b::QosOk {})));
        Ok(())
    }

    /// A complete publish (method, header, body).
    pub(super) fn publish(&mut self, a: Assembled, cx: &mut ConnCtx<'_>) -> AmqpResult<()> {
        let Assembled {
            publish: p,
            properties,
            body,
        } = a;
        let name = p.exchange.as_str();
        // Publishers use one exchange over and over: the exchange and the write permission
        // on it are remembered until the exchange is deleted or any permission changes.
        let generation = cx.broker.auth.generation();
        let x = match &self.publish_cache {
            Some((x, g)) if *g == generation && !x.is_deleted() && *x.name == *name => {
                crate::stats::Counters::bump(&cx.stats.counters.publish, 1);
                x.clone()
            }
            _ => {
                cx.permit(Access::Write, Resource::Exchange, name)?;
                crate::stats::Counters::bump(&cx.stats.counters.publish, 1);
                let x = cx.vhost.existing_exchange(name)?;
                self.publish_cache = Some((x.clone(), generation));
                x
            }
        };
        if x.internal {
            return Err(AmqpError::access_refused(format_args!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                x.name, cx.vhost.name
            )));
        }
        if x.kind == crate::routing::ExchangeKind::Topic {
            cx.permit_topic(Access::Write, &x.name, p.routing_key.as_str())?;
        }
        cx.stats.msgs.received(body.len() as u64);
        if let Mode::Confirm { .. } = self.mode {
            MsgCounters::bump(&cx.stats.msgs.received_confirm, 1);
        }
        let summary = properties::summary(&properties).unwrap_or_default();
        if let Some(uid) = &summary.user_id {
            cx.check_user_id(uid)?;
        }
        let properties = match summary.reply_to.as_deref() {
            Some(REPLY_TO) => {
                let Some(rq) = &self.reply_queue else {
                    return Err(AmqpError::precondition_failed(format_args!(
                        "fast reply consumer does not exist"
                    )));
                };
                properties::with_reply_to(&properties, rq.name()).unwrap_or(properties)
            }
            _ => properties,
        };
        let mut headers = if summary.has_headers {
            properties::headers(&properties)
        } else {
            None
        };
        // Sender-selected distribution: CC and BCC headers add routing keys; BCC is removed
        // before anyone sees the message.
        let mut extra_keys = Vec::new();
        let mut properties = properties;
        if let Some(h) = &mut headers {
            extra_keys = properties::routing_key_list(h, "CC");
            let bcc = properties::routing_key_list(h, "BCC");
            if h.contains_key("BCC") {
                let mut inner = h.inner().clone();
                inner.remove("BCC");
                *h = inner.into();
                properties = properties::with_headers(&properties, h.clone()).unwrap_or(properties);
            }
            extra_keys.extend(bcc);
        }
        let expiration = match &summary.expiration {
            None => None,
            Some(e) => Some(parse_expiration(e).map_err(|why| {
                AmqpError::precondition_failed(format_args!("invalid expiration '{e}': {why}"))
            })?),
        };
        let msg = Arc::new(Message {
            exchange: p.exchange,
            routing_key: p.routing_key,
            properties,
            body,
            priority: summary.priority.unwrap_or(0),
            expiration,
            persistent: summary.delivery_mode == Some(2),
            persist_id: 0,
        });
        let mut routed = std::mem::take(&mut self.routed);
        routed.clear();
        // An x-delayed-message exchange holds a message with a positive x-delay instead of
        // routing it: no queue now, so a mandatory one comes back (as with the plugin).
        if x.delayed {
            if let Some(delay) = crate::delayed::due::delay_of(headers.as_ref()) {
                if let Mode::Tx(state) = &mut self.mode {
                    state.publishes.push(TxPublish {
                        msg,
                        queues: routed,
                        mandatory: p.mandatory,
                        delay: Some((x.name.clone(), delay)),
                    });
                    return Ok(());
                }
                let stored = cx.schedule_delayed(&x.name, &msg, delay);
                self.deliver_published(msg, routed, p.mandatory, stored, cx);
                return Ok(());
            }
        }
        cx.vhost.route_message(
            &x,
            msg.routing_key.as_str(),
            headers.as_ref(),
            Some(&msg.properties),
            &mut routed,
        );
        for key in &extra_keys {
            cx.vhost.route(&x, key, headers.as_ref(), &mut routed);
        }
        if let Mode::Tx(state) = &mut self.mode {
            state.publishes.push(TxPublish {
                msg,
                queues: routed,
                mandatory: p.mandatory,
                delay: None,
            });
            return Ok(());
        }
        // deliver_published puts the (drained) buffer back in `self.routed`.
        self.deliver_published(msg, routed, p.mandatory, None, cx);
        Ok(())
    }

    /// Hands a routed message to its queues, returns it if unroutable and mandatory, and
    /// counts the confirm. Returns the message-log sequence number to wait for when the
    /// message was stored (persistent, durable queue); `stored` is the number a delayed
    /// message's record waits for.
    pub(super) fn deliver_published(
        &mut self,
        msg: Arc<Message>,
        mut queues: Vec<Arc<Queue>>,
        mandatory: bool,
        stored: Option<u64>,
        cx: &mut ConnCtx<'_>,
    ) -> Option<u64> {
        let counts = &cx.stats.msgs;
        MsgCounters::bump(
            match (queues.is_empty(), mandatory) {
                (false, _) => &counts.routed,
                (true, true) => &counts.unroutable_returned,
                (true, false) => &counts.unroutable_dropped,
            },
            1,
        );
        if queues.is_empty() && mandatory {
            cx.out.basic_return(
                self.id,
                312,
                "NO_ROUTE",
                msg.exchange.as_bytes(),
                msg.routing_key.as_bytes(),
            );
            cx.out
                .content(self.id, &msg.properties, &msg.body, cx.frame_max);
        }
        // A transaction's commit-ok waits as a confirm does.
        let confirm = matches!(self.mode, Mode::Confirm { .. } | Mode::Tx(_)).then_some(cx.tx);
        let (rejected, lsn, (forwarded, quorum, streams)) = crate::queue::enqueue_confirmed(
            msg,
            &mut queues,
            cx.deferred.as_deref_mut(),
            cx.flow.as_deref_mut(),
            confirm,
        );
        let lsn = lsn.max(stored);
        if let Mode::Tx(_) = &self.mode {
            let waits = super::Waits {
                forwarded,
                quorum,
                streams,
            };
            if !waits.is_empty() {
                let behind = self.held.back().map(|h| h.0);
                let at = lsn.or(behind).unwrap_or(0).max(behind.unwrap_or(0));
                self.held.push_back((at, Held::Committing, waits));
            }
        } else if let Mode::Confirm { seq, pending } = &mut self.mode {
            *seq += 1;
            if !rejected {
                MsgCounters::bump(&cx.stats.msgs.confirmed, 1);
            }
            // A stored message is confirmed once on disk (a forwarded one once its home
            // answered, a replicated queue's once its group committed it, a replicated
            // stream's once a majority has it); later confirms queue behind it, so
            // confirms stay in order.
            let behind = self.held.back().map(|h| h.0);
            let waits = super::Waits {
                forwarded,
                quorum,
                streams,
            };
            let waiting = !waits.is_empty();
            if let Some(wait) = lsn.or(behind).or_else(|| waiting.then_some(0)) {
                let reply = if rejected {
                    Held::Nack(*seq)
                } else {
                    Held::Ack(*seq)
                };
                self.held
                    .push_back((wait.max(behind.unwrap_or(0)), reply, waits));
            } else if rejected {
                // A length limit refused it: confirms before it go out, then its nack.
                if let Some((first, last)) = pending.take() {
                    cx.out.basic_ack(self.id, last, first != last);
                }
                cx.out.basic_nack(self.id, *seq, false);
            } else {
                *pending = Some(match *pending {
                    None => (*seq, *seq),
                    Some((first, _)) => (first, *seq),
                });
            }
        }
        if self.routed.capacity() < queues.capacity() {
            self.routed = queues;
        }
        lsn
    }

    fn consume(&mut self, c: b::Consume, cx: &mut ConnCtx<'_>) -> AmqpResult<()> {
        let q = if c.queue.as_str() == REPLY_TO {
            // Direct reply-to: a pseudo-queue private to this channel, no acks.
            if !c.no_ack {
                return Err(AmqpError::precondition_failed(format_args!(
                    "reply consumer cannot acknowledge"
                )));
            }
            if self.reply_queue.is_some() {
                return Err(AmqpError::precondition_failed(format_args!(
                    "reply consumer already set"
                )));
            }
            let q = cx.vhost.create_reply_queue();
            self.reply_queue = Some(q.clone());
            q
        } else {
            let name = self.queue_name(c.queue.as_str())?;
            cx.permit(Access::Read, Resource::Queue, &name)?;
            cx.vhost.usable_queue(&name, cx.conn_id)?
        };
        let what = format!("queue '{}' in vhost '{}'", q.name(), cx.vhost.name);
        q.queue_type()
            .check_consume_args(&c.arguments, &what)
            .map_err(|text| AmqpError::precondition_failed(format_args!("{text}")))?;
        if q.is_stream() {
            self.check_stream_consume(&q, &c, cx)?;
        }
        let mut prefetch = self.prefetch;
        if q.queue_type() != QueueType::Classic {
            if self.shared.global_prefetch.load(SeqCst) != 0 {
                return Err(AmqpError::not_implemented(format_args!(
                    "{what} does not support global qos"
                )));
            }
            if q.is_quorum() && prefetch == 0 {
                // RabbitMQ caps a quorum queue consumer's "unlimited" prefetch.
                prefetch = QUORUM_UNLIMITED_PREFETCH;
            }
        }
        let tag = if c.consumer_tag.as_str().is_empty() {
            ShortStr::copy_from(&generated_name("amq.ctag-"))
        } else {
            ShortStr::copy_from(c.consumer_tag.as_str())
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format_args!(
                "attempt to reuse consumer tag '{}'",
                tag.as_str()
            )));
        }
        let consumer = Arc::new(Consumer::new(
            tag.clone(),
            c.no_ack,
            c.exclusive,
            c.arguments,
            prefetch,
            self.shared.clone(),
            cx.tx.clone(),
        ));
        // The consumer is registered before consume-ok is written, yet consume-ok still
        // leaves first: deliveries travel through the connection's outbound queue, which
        // is drained only after this handler returns.
        self.consumers.insert(
            tag.clone(),
            ConsumerEntry {
                consumer: consumer.clone(),
                queue: q.clone(),
                cancelling: false,
            },
        );
        if let Err(ConsumeRefused::ExclusiveUse) = q.consume(consumer) {
            self.consumers.remove(&tag);
            return Err(AmqpError::access_refused(format_args!(
                "queue '{}' in vhost '{}' in exclusive use",
                q.name(),
                cx.vhost.name
            )));
        }
        if !c.nowait {
            self.reply(
                cx,
                AMQPClass::Basic(b::AMQPMethod::ConsumeOk(b::ConsumeOk {
                    consumer_tag: tag.as_str().into(),
                })),
            );
        }
        Ok(())
    }

    /// What RabbitMQ refuses on a stream consumer (after the type's argument check), in its
    /// order: the `x-stream-offset` value, then `rabbit_stream_queue:consume/3`'s prefetch,
    /// no-ack and global-qos clauses.
    fn check_stream_consume(&self, q: &Queue, c: &b::Consume, cx: &ConnCtx<'_>) -> AmqpResult<()> {
        let what = format!("queue '{}' in vhost '{}'", q.name(), cx.vhost.name);
        let args = c.arguments.inner();
        let now = crate::store::log::now_ms();
        if let Err(term) =
            crate::queue::stream::offset::parse_start(args.get("x-stream-offset"), now)
        {
            return Err(AmqpError::precondition_failed(format_args!(
                "invalid arg 'x-stream-offset' for {what}: {term}"
            )));
        }
        if self.prefetch == 0 {
            return Err(AmqpError::precondition_failed(format_args!(
                "consumer prefetch count is not set for stream {what}"
            )));
        }
        if c.no_ack {
            return Err(AmqpError::not_implemented(format_args!(
                "automatic acknowledgement not supported by stream {what}"
            )));
        }
        if self.shared.global_prefetch.load(SeqCst) != 0 {
            return Err(AmqpError::not_implemented(format_args!(
                "{what} does not support global qos"
            )));
        }
        // A replicated stream is read from this node's member; a node that is not one
        // refuses, as RabbitMQ 3.x (`rabbit_channel`, 405).
        if q.stream()
            .and_then(|s| s.replica())
            .is_some_and(|r| !r.is_member())
        {
            return Err(AmqpError::resource_locked(format_args!(
                "{what} does not have a running local replica"
            )));
        }
        Ok(())
    }

    fn cancel(&mut self, c: b::Cancel, cx: &mut ConnCtx<'_>) {
        let tag = ShortStr::copy_from(c.consumer_tag.as_str());
        match self.consumers.get_mut(&tag) {
            Some(e) if !e.cancelling => {
                e.cancelling = true;
                let consumer = e.consumer.clone();
                let queue = e.queue.clone();
                // As RabbitMQ, a cancel does not by itself hand a single-active-consumer queue to the
                // next consumer; the next publish, ack or requeue does.
                if queue.cancel(&consumer, false) {
                    cx.vhost.remove_queue(&queue);
                }
                if self
                    .reply_queue
                    .as_ref()
                    .is_some_and(|r| Arc::ptr_eq(r, &queue))
                {
                    cx.vhost.remove_reply_queue(&queue);
                    self.reply_queue = None;
                }
                let _ = cx.tx.send(crate::connection::outbound::Outbound::CancelOk {
                    consumer,
                    nowait: c.nowait,
                });
            }
            Some(_) => {}
            None => {
                if !c.nowait {
                    self.reply(
                        cx,
                        AMQPClass::Basic(b::AMQPMethod::CancelOk(b::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
        }
    }

    fn get(&mut self, g: b::Get, cx: &mut ConnCtx<'_>) -> AmqpResult<()> {
        let name = self.queue_name(g.queue.as_str())?;
        cx.permit(Access::Read, Resource::Queue, &name)?;
        let q = cx.vhost.usable_queue(&name, cx.conn_id)?;
        if q.is_stream() {
            return Err(AmqpError::not_implemented(format_args!(
                "basic.get not supported by stream queues queue '{}' in vhost '{}'",
                q.name(),
                cx.vhost.name
            )));
        }
        if q.is_quorum() && q.args.single_active_consumer {
            return Err(AmqpError::resource_locked(format_args!(
                "cannot obtain access to locked queue '{}' in vhost '{}'. basic.get operations are not supported by quorum queues with single active consumer",
                q.name(),
                cx.vhost.name
            )));
        }
        // A replicated quorum queue's get is a command through its group: answered once
        // committed (an error when it is not, as RabbitMQ's `{error, timeout}`).
        let got = q.try_get(g.no_ack).map_err(|e| {
            AmqpError::internal_error(format_args!(
                "Cannot get a message from queue '{}' in vhost '{}': {e}",
                q.name(),
                cx.vhost.name
            ))
        })?;
        match got {
            Some((m, remaining)) => {
                let tag = self.next_tag;
                self.next_tag += 1;
                cx.out.basic_get_ok(
                    self.id,
                    tag,
                    m.redelivered,
                    m.msg.exchange.as_bytes(),
                    m.msg.routing_key.as_bytes(),
                    remaining,
                );
                cx.out.content(
                    self.id,
                    &m.get_properties(q.is_quorum()),
                    &m.msg.body,
                    cx.frame_max,
                );
                if !g.no_ack {
                    self.unacked.push(Unacked {
                        tag,
                        queue: q,
                        msg: m,
                        consumer: None,
                        at: std::time::Instant::now(),
                    });
                }
            }
            None => {
                MsgCounters::bump(&cx.stats.msgs.get_empty, 1);
                self.reply(
                    cx,
                    AMQPClass::Basic(b::AMQPMethod::GetEmpty(b::GetEmpty {})),
                )
            }
        }
        Ok(())
    }

    fn unknown_tag(tag: u64) -> AmqpError {
        AmqpError::precondition_failed(format_args!("unknown delivery tag {tag}"))
    }

    pub(super) fn ack(
        &mut self,
        tag: u64,
        multiple: bool,
        _cx: &mut ConnCtx<'_>,
    ) -> AmqpResult<()> {
        let list = self
            .unacked
            .take(tag, multiple)
            .ok_or_else(|| Self::unknown_tag(tag))?;
        if let Mode::Tx(state) = &mut self.mode {
            state.acks.push(TxAck::Ack(list));
            return Ok(());
        }
        self.settle(list, Settle::Ack);
        Ok(())
    }

    fn reject(&mut self, tag: u64, multiple: bool, requeue: bool) -> AmqpResult<()> {
        let list = self
            .unacked
            .take(tag, multiple)
            .ok_or_else(|| Self::unknown_tag(tag))?;
        if let Mode::Tx(state) = &mut self.mode {
            state.acks.push(TxAck::Reject(list, requeue));
            return Ok(());
        }
        self.settle(
            list,
            if requeue {
                Settle::Requeue
            } else {
                Settle::Drop
            },
        );
        Ok(())
    }

    /// Ends deliveries: returns consumer credit, then acks, requeues or drops them.
    pub(super) fn settle(&mut self, list: Vec<Unacked>, how: Settle) {
        let mut wake: Vec<Arc<Queue>> = Vec::new();
        for u in &list {
            if let Some(c) = &u.consumer {
                if c.settled() && !wake.iter().any(|q| Arc::ptr_eq(q, &u.queue)) {
                    wake.push(u.queue.clone());
                }
            }
        }
        match how {
            Settle::Requeue => requeue_grouped(list),
            Settle::Drop => {
                for (q, msgs) in group_by_queue(list) {
                    q.rejected(msgs);
                }
            }
            Settle::Ack => {
                // Runs of the same queue, with the message-log ids of stored messages
                // (and, for a quorum queue, the consumer key each was checked out to).
                type Run = (Arc<Queue>, u64, Vec<u64>, Vec<u64>);
                let mut run: Option<Run> = None;
                for u in list {
                    // A quorum queue settles by its own message ids, a proxy by the
                    // home's (shifted by one, see `queue::remote`).
                    let by_seq = u.queue.is_quorum() || u.queue.is_remote();
                    let id = if by_seq {
                        u.msg.seq
                    } else {
                        u.msg.msg.persist_id
                    };
                    let counted = id != 0 && (u.queue.is_stored() || by_seq);
                    match &mut run {
                        Some((q, n, ids, holders)) if Arc::ptr_eq(q, &u.queue) => {
                            *n += 1;
                            if counted {
                                ids.push(id);
                                holders.push(u.msg.holder);
                            }
                        }
                        _ => {
                            if let Some((q, n, ids, holders)) = run.take() {
                                q.acked_by(n, ids, &holders);
                            }
                            let (ids, holders) = if counted {
                                (vec![id], vec![u.msg.holder])
                            } else {
                                (Vec::new(), Vec::new())
                            };
                            run = Some((u.queue, 1, ids, holders));
                        }
                    }
                }
                if let Some((q, n, ids, holders)) = run {
                    q.acked_by(n, ids, &holders);
                }
            }
        }
        for q in wake {
            q.dispatch();
        }
        if self.shared.global_prefetch.load(SeqCst) != 0 {
            self.wake_consumers();
        }
    }

    fn recover(&mut self, requeue: bool) -> AmqpResult<()> {
        if !requeue {
            return Err(AmqpError::not_implemented(format_args!("requeue=false")));
        }
        let all = self.unacked.take_all();
        self.settle(all, Settle::Requeue);
        Ok(())
    }
}

/// What a quorum queue consumer with prefetch 0 gets (rabbit_fifo_client's
/// `UNLIMITED_PREFETCH_COUNT`).
const QUORUM_UNLIMITED_PREFETCH: u32 = 2000;

/// The `expiration` property as RabbitMQ reads it (Erlang's `string:to_integer`): an
/// optionally signed integer, nothing after it, not negative. The error is RabbitMQ's term.
fn parse_expiration(e: &str) -> Result<u64, String> {
    let digits_start = usize::from(e.starts_with('+') || e.starts_with('-'));
    let digits_end = e[digits_start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(e.len(), |i| i + digits_start);
    if digits_end == digits_start {
        return Err("no_integer".to_string());
    }
    let rest = &e[digits_end..];
    if !rest.is_empty() {
        return Err(format!("{{leftover_string,\"{rest}\"}}"));
    }
    let n: i128 = e[..digits_end]
        .parse()
        .map_err(|_| "no_integer".to_string())?;
    if n < 0 {
        return Err(format!("{{value_negative,{n}}}"));
    }
    Ok(n.min(u64::MAX as i128) as u64)
}

/// A server-generated name: prefix + 22 characters of URL-safe base64 over 128 random bits,
/// the shape of RabbitMQ's `amq.gen-…` and `amq.ctag-…` names.
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits: u128 = rand::random();
    let mut s = String::with_capacity(prefix.len() + 22);
    s.push_str(prefix);
    for i in 0..22 {
        let idx = ((bits >> (i * 6)) & 63) as usize;
        s.push(ALPHABET[idx] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::parse_expiration;

    #[test]
    fn expiration_parsing_matches_rabbitmq() {
        assert_eq!(parse_expiration("60000"), Ok(60000));
        assert_eq!(parse_expiration("+60000"), Ok(60000));
        assert_eq!(parse_expiration("abc"), Err("no_integer".into()));
        assert_eq!(parse_expiration(""), Err("no_integer".into()));
        assert_eq!(parse_expiration("-1"), Err("{value_negative,-1}".into()));
        assert_eq!(
            parse_expiration("1.5"),
            Err("{leftover_string,\".5\"}".into())
        );
    }
}
