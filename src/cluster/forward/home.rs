//! The home node's end of a forwarding link: one task per peer link that owns what the
//! peer's clients hold here — their consumers (registered on the real queues, with a
//! connection sender that feeds this task) and the deliveries they have not settled —
//! and applies the peer's publishes, settles and calls to the local queues. When the
//! link drops, the consumers are cancelled and unsettled deliveries requeued, as when a
//! client's channel closes.

use super::wire::{self, Answer, Frame, Msg};
use super::Vhosts;
use crate::cluster::transport::Conn;
use crate::connection::outbound::Outbound;
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::queue::consumer::{ChannelShared, Consumer};
use crate::queue::{Queue, QueuedMessage};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::BytesMut;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

type Key = (String, String);

/// A delivery the peer's client has not settled: the message and the consumer it went
/// to (None: basic.get).
struct Out {
    msg: QueuedMessage,
    consumer: Option<u64>,
}

struct HomeLink {
    vhosts: Vhosts,
    /// The peer's consumers, by the peer's id, and the queue they read.
    consumers: HashMap<u64, (Arc<Consumer>, Arc<Queue>)>,
    /// Our consumer id -> the peer's id.
    by_local: HashMap<u64, u64>,
    outstanding: HashMap<Key, HashMap<u64, Out>>,
    /// Queues looked up by publishes.
    queues: HashMap<Key, Arc<Queue>>,
    /// Confirms waiting for the message log to sync: (log sequence number, id, ok).
    unsynced: VecDeque<(u64, u64, bool)>,
    synced: Option<watch::Receiver<u64>>,
    tx: mpsc::UnboundedSender<Outbound>,
    out: BytesMut,
}

/// Serves one peer link until it closes.
pub async fn serve(sock: Conn, vhosts: Vhosts) {
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut h = HomeLink {
        vhosts,
        consumers: HashMap::new(),
        by_local: HashMap::new(),
        outstanding: HashMap::new(),
        queues: HashMap::new(),
        unsynced: VecDeque::new(),
        synced: None,
        tx,
        out: BytesMut::new(),
    };
    let mut inbuf = BytesMut::with_capacity(64 << 10);
    loop {
        let synced = h.synced.clone();
        let waiting = !h.unsynced.is_empty();
        tokio::select! {
            r = rd.read_buf(&mut inbuf) => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    match wire::decode(&mut inbuf) {
                        Ok(Some(f)) => h.handle(f),
                        Ok(None) => break,
                        Err(_) => {
                            tracing::warn!("forwarding link: malformed frame, closing");
                            h.close();
                            return;
                        }
                    }
                }
            }
            Some(cmd) = rx.recv() => {
                h.outbound(cmd);
                while let Ok(cmd) = rx.try_recv() {
                    h.outbound(cmd);
                }
            }
            _ = async { if let Some(mut s) = synced { let _ = s.changed().await; } }, if waiting => {
                h.flush_synced();
            }
        }
        if !h.out.is_empty() {
            let buf = h.out.split();
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    }
    h.close();
}

fn to_msg(m: &Message) -> Msg {
    Msg {
        exchange: bytes::Bytes::copy_from_slice(m.exchange.as_bytes()),
        routing_key: bytes::Bytes::copy_from_slice(m.routing_key.as_bytes()),
        properties: m.properties.clone(),
        body: m.body.clone(),
    }
}

impl HomeLink {
    fn send(&mut self, f: &Frame) {
        wire::encode(f, &mut self.out);
    }

    fn queue(&mut self, vhost: &str, name: &str) -> Option<Arc<Queue>> {
        let key = (vhost.to_string(), name.to_string());
        if let Some(q) = self.queues.get(&key).filter(|q| !q.is_deleted()) {
            return Some(q.clone());
        }
        let q = (self.vhosts)(vhost)?.queue(name)?;
        self.queues.insert(key, q.clone());
        Some(q)
    }

    fn handle(&mut self, f: Frame) {
        match f {
            Frame::Publish {
                id,
                vhost,
                queue,
                msg,
            } => self.publish(id, &vhost, &queue, msg),
            Frame::Consume {
                cid,
                vhost,
                queue,
                tag,
                no_ack,
                exclusive,
                prefetch,
                priority,
            } => {
                let Some(q) = self.queue(&vhost, &queue) else {
                    return self.send(&Frame::Cancelled { cid });
                };
                let mut args = FieldTable::default();
                if priority != 0 {
                    args.insert("x-priority".into(), AMQPValue::LongLongInt(priority));
                }
                let c = Arc::new(Consumer::new(
                    ShortStr::copy_from(&tag),
                    no_ack,
                    exclusive,
                    args,
                    prefetch,
                    Arc::new(ChannelShared::new(0)),
                    self.tx.clone(),
                ));
                if q.consume(c.clone()).is_err() {
                    return self.send(&Frame::Cancelled { cid });
                }
                self.by_local.insert(c.id, cid);
                self.consumers.insert(cid, (c, q));
            }
            Frame::Cancel { cid } => {
                if let Some((c, q)) = self.consumers.remove(&cid) {
                    self.by_local.remove(&c.id);
                    q.cancel(&c, true);
                }
                self.send(&Frame::Cancelled { cid });
            }
            Frame::Settle {
                vhost,
                queue,
                how,
                seqs,
            } => self.settle(vhost, queue, how, seqs),
            Frame::Call {
                rid,
                vhost,
                queue,
                call,
                flags,
            } => {
                let answer = self.call(&vhost, &queue, call, flags);
                self.send(&Frame::Reply { rid, answer });
            }
            // Frames only a home sends.
            Frame::Confirm { .. }
            | Frame::Deliver { .. }
            | Frame::Cancelled { .. }
            | Frame::Reply { .. } => {}
        }
    }

    fn publish(&mut self, id: u64, vhost: &str, queue: &str, m: Msg) {
        let Some(q) = self.queue(vhost, queue) else {
            // Deleted meanwhile: dropped, as a publish to a queue that is gone.
            if id != 0 {
                self.send(&Frame::Confirm { id, ok: true });
            }
            return;
        };
        let msg = Arc::new(Message::new(
            ShortStr::from_bytes(m.exchange).unwrap_or_else(|_| ShortStr::from_static("")),
            ShortStr::from_bytes(m.routing_key).unwrap_or_else(|_| ShortStr::from_static("")),
            m.properties,
            m.body,
        ));
        let (rejected, lsn) = crate::queue::enqueue(msg, &mut vec![q.clone()], None, None);
        if id == 0 {
            return;
        }
        match lsn {
            Some(lsn) => {
                if self.synced.is_none() {
                    self.synced =
                        (self.vhosts)(vhost).and_then(|v| v.store.get().map(|l| l.synced()));
                }
                let done = self.synced.as_ref().is_none_or(|s| *s.borrow() >= lsn);
                if done && self.unsynced.is_empty() {
                    self.send(&Frame::Confirm { id, ok: !rejected });
                } else {
                    self.unsynced.push_back((lsn, id, !rejected));
                }
            }
            None => self.send(&Frame::Confirm { id, ok: !rejected }),
        }
    }

    fn flush_synced(&mut self) {
        let synced = self.synced.as_ref().map_or(u64::MAX, |s| *s.borrow());
        while let Some(&(lsn, id, ok)) = self.unsynced.front() {
            if lsn > synced {
                break;
            }
            self.unsynced.pop_front();
            self.send(&Frame::Confirm { id, ok });
        }
    }

    fn settle(&mut self, vhost: String, queue: String, how: u8, seqs: Vec<u64>) {
        let Some(q) = self.queue(&vhost, &queue) else {
            self.outstanding.remove(&(vhost, queue));
            return;
        };
        let Some(outs) = self.outstanding.get_mut(&(vhost, queue)) else {
            return;
        };
        let mut msgs = Vec::with_capacity(seqs.len());
        let mut wake = false;
        for s in seqs {
            let Some(o) = outs.remove(&s) else { continue };
            if let Some((c, _)) = o.consumer.and_then(|cid| self.consumers.get(&cid)) {
                wake |= c.settled();
            }
            msgs.push(o.msg);
        }
        if msgs.is_empty() {
            return;
        }
        match how {
            0 => {
                // As a channel settles: a quorum queue by its own ids, a classic one by
                // the message-log ids of stored messages.
                let quorum = q.is_quorum();
                let (ids, holders): (Vec<u64>, Vec<u64>) = msgs
                    .iter()
                    .map(|m| (if quorum { m.seq } else { m.msg.persist_id }, m.holder))
                    .filter(|(id, _)| *id != 0 && (quorum || q.is_stored()))
                    .unzip();
                q.acked_by(msgs.len() as u64, ids, &holders);
            }
            1 => q.requeue(msgs),
            2 => q.rejected(msgs),
            _ => {
                for m in msgs {
                    q.return_undelivered(m, true);
                }
            }
        }
        if wake {
            q.dispatch();
        }
    }

    fn call(&mut self, vhost: &str, queue: &str, call: u8, flags: u8) -> Answer {
        let Some(vh) = (self.vhosts)(vhost) else {
            return Answer::Missing(format!("no vhost '{vhost}'"));
        };
        if call == 3 {
            return match vh.delete_queue(queue, flags & 1 != 0, flags & 2 != 0, 0) {
                Ok(n) => Answer::Count(n),
                Err(e) => Answer::Refused(e.code, e.text.to_string()),
            };
        }
        let Some(q) = self.queue(vhost, queue) else {
            return Answer::Missing(format!("no queue '{queue}' in vhost '{vhost}'"));
        };
        match call {
            0 | 1 => {
                let no_ack = call == 1;
                match q.get(no_ack) {
                    Some((m, left)) => {
                        let got = (m.seq, m.redelivered, m.delivery_count, left, to_msg(&m.msg));
                        // (With no_ack the queue forgot it already, as for a local get.)
                        if !no_ack {
                            let key = (vhost.to_string(), queue.to_string());
                            self.outstanding.entry(key).or_default().insert(
                                m.seq,
                                Out {
                                    msg: m,
                                    consumer: None,
                                },
                            );
                        }
                        Answer::Got(Some(got))
                    }
                    None => Answer::Got(None),
                }
            }
            2 => Answer::Count(q.purge()),
            _ => Answer::Counts(q.message_count(), q.consumer_count()),
        }
    }

    /// What the local queues send to the peer's consumers.
    fn outbound(&mut self, cmd: Outbound) {
        match cmd {
            Outbound::Deliver {
                consumer,
                queue,
                msgs,
            } => {
                let n = msgs.len() as u32;
                let Some(&cid) = self.by_local.get(&consumer.id) else {
                    // Cancelled meanwhile: back to the queue.
                    for m in msgs {
                        consumer.unreserve();
                        queue.return_undelivered(m, !consumer.no_ack);
                    }
                    return;
                };
                let key = (queue.config.vhost.clone(), queue.name().to_string());
                let mut forget = Vec::new();
                for m in msgs {
                    let f = Frame::Deliver {
                        cid,
                        seq: m.seq,
                        redelivered: m.redelivered,
                        delivery_count: m.delivery_count,
                        msg: to_msg(&m.msg),
                    };
                    self.send(&f);
                    if consumer.no_ack {
                        // (A quorum queue forgot it when it decided the delivery.)
                        if m.msg.persist_id != 0 && !queue.is_quorum() {
                            forget.push(m);
                        }
                    } else {
                        self.outstanding.entry(key.clone()).or_default().insert(
                            m.seq,
                            Out {
                                msg: m,
                                consumer: Some(cid),
                            },
                        );
                    }
                }
                if !forget.is_empty() {
                    queue.forget(&forget);
                }
                if consumer.written_n(n) {
                    queue.dispatch();
                }
            }
            Outbound::ServerCancel { consumer } => {
                if let Some(cid) = self.by_local.remove(&consumer.id) {
                    self.consumers.remove(&cid);
                    self.send(&Frame::Cancelled { cid });
                }
            }
            Outbound::CancelOk { .. }
            | Outbound::RemoteSettled
            | Outbound::Replicated
            | Outbound::ForceClose(_) => {}
        }
    }

    /// The link is gone: the peer's consumers leave, its unsettled deliveries go back.
    fn close(&mut self) {
        let mut queues: Vec<Arc<Queue>> = Vec::new();
        for (_, (c, q)) in self.consumers.drain() {
            q.cancel(&c, false);
            queues.push(q);
        }
        self.by_local.clear();
        for ((vhost, name), outs) in self.outstanding.drain() {
            let Some(q) = (self.vhosts)(&vhost).and_then(|v| v.queue(&name)) else {
                continue;
            };
            let mut msgs: Vec<QueuedMessage> = outs.into_values().map(|o| o.msg).collect();
            msgs.sort_by_key(|m| m.seq);
            q.requeue(msgs);
            queues.push(q);
        }
        for q in queues {
            q.dispatch();
        }
    }
}
