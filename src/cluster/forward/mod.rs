//! Forwarding to queues homed on other nodes: the [`Remote`] link the queue layer's
//! proxies use (see [`crate::queue::remote`]).
//!
//! Each node keeps one TCP stream to each peer for forwarding, opened on the cluster port
//! (a `Forward` request hands the accepted socket to [`home::serve`]) and separate from
//! Raft's request/response connections, so publishes stream without waiting for
//! answers. Frames are binary ([`wire`]). On the proxy side one task per peer owns the
//! socket: it writes every frame queued since its last write in one `write_all` (so
//! forwarded publishes are batched per peer, in the order channels sent them) and
//! reads the home's confirms, deliveries, cancels and replies.
//!
//! | piece | owns | where |
//! |---|---|---|
//! | [`Forwarder`] | one [`Link`] per peer | this module |
//! | [`Link`] | pending confirms, remote consumers, calls in flight, `up` | this module |
//! | home link task | the peer's consumers and unsettled deliveries here | [`home`] |
//!
//! A home that cannot be reached: the link is down (`is_up` false) from the first
//! failed write or read until a reconnect succeeds (tried every 200 ms). While down,
//! publishes to its queues are dropped and their confirms are nacks, consumers through
//! it were cancelled, and passive declare, consume and get answer 404 (the proxy asks
//! `home_down`).

pub mod home;
pub mod wire;

use super::transport::{Conn, Transport};
use crate::connection::outbound::Outbound;
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::queue::consumer::Consumer;
use crate::queue::remote::{self, Call, Remote, Reply, SettleHow, Ticket};
use crate::queue::{Queue, QueuedMessage};
use crate::vhost::VHost;
use bytes::BytesMut;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};
use wire::{Answer, Frame};

/// Finds a vhost by name (the home side's narrow view of the broker).
pub type Vhosts = Arc<dyn Fn(&str) -> Option<Arc<VHost>> + Send + Sync>;

const RECONNECT_EVERY: Duration = Duration::from_millis(200);
/// A link that is not connected counts as up for this long (since the node started or
/// the link broke): what is sent meanwhile waits for the reconnect. After it the home is
/// down: waiting work fails and the queue answers 404. As the liveness probes' window.
const GRACE: Duration = Duration::from_millis(1500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A call (get, purge, delete, counts) the home does not answer in this time fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy side of every peer link.
#[derive(Debug)]
pub struct Forwarder {
    me: String,
    links: HashMap<String, Arc<Link>>,
    /// How the links connect (plain TCP or TLS).
    transport: Transport,
}

/// What a link tracks for the answers it waits for.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    tickets: HashMap<u64, Arc<Ticket>>,
    /// Consumers by the id sent to the home; `true` once cancelled here (deliveries
    /// still in flight for it go back).
    consumers: HashMap<u64, (Arc<Consumer>, Arc<Queue>, bool)>,
    calls: HashMap<u64, oneshot::Sender<Answer>>,
}

/// The link to one peer.
pub struct Link {
    peer: String,
    addr: String,
    up: AtomicBool,
    /// When the link was last lost (or created), while it is not connected.
    down_since: Mutex<Option<std::time::Instant>>,
    /// Frames encoded by channels, written by the link task.
    outq: Mutex<BytesMut>,
    wake: Notify,
    waiting: Mutex<Waiting>,
    next_cid: AtomicU64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("up", &self.up.load(SeqCst))
            .finish()
    }
}

impl Forwarder {
    /// Links to every other member (`(name, address)`), dialled through `transport`;
    /// `me` is this node's name. The link tasks start with [`start`](Self::start).
    pub fn new(me: &str, members: &[(String, String)], transport: Transport) -> Arc<Forwarder> {
        let links = members
            .iter()
            .filter(|(n, _)| n != me)
            .map(|(n, a)| {
                (
                    n.clone(),
                    Arc::new(Link {
                        peer: n.clone(),
                        addr: a.clone(),
                        up: AtomicBool::new(false),
                        down_since: Mutex::new(Some(std::time::Instant::now())),
                        outq: Mutex::new(BytesMut::new()),
                        wake: Notify::new(),
                        waiting: Mutex::new(Waiting::default()),
                        next_cid: AtomicU64::new(1),
                    }),
                )
            })
            .collect();
        Arc::new(Forwarder {
            me: me.to_string(),
            links,
            transport,
        })
    }

    /// Starts one task per peer link; they end when `stop` flips.
    pub fn start(&self, stop: tokio::sync::watch::Receiver<bool>) {
        for l in self.links.values() {
            tokio::spawn(run(
                l.clone(),
                self.me.clone(),
                self.transport.clone(),
                stop.clone(),
            ));
        }
    }

    fn link(&self, home: &str) -> Option<&Arc<Link>> {
        self.links.get(home)
    }

    fn link_of(&self, q: &Queue) -> Option<&Arc<Link>> {
        self.link(&q.forward_target()?)
    }
}

impl Link {
    /// Connected, or lost for less than [`GRACE`].
    fn usable(&self) -> bool {
        self.up.load(SeqCst) || self.down_since.lock().is_none_or(|t| t.elapsed() < GRACE)
    }

    fn push(&self, f: &Frame) {
        wire::encode(f, &mut self.outq.lock());
        self.wake.notify_one();
    }

    /// The link broke, or stayed down past the grace: answers that will not come are
    /// given up.
    fn fail_all(&self) {
        self.outq.lock().clear();
        let w = std::mem::take(&mut *self.waiting.lock());
        let mut next = self.waiting.lock();
        next.next_id = w.next_id;
        drop(next);
        for (_, t) in w.tickets {
            t.answer(false);
        }
        for (_, (c, q, cancelled)) in w.consumers {
            q.remote_gone(&c);
            if !cancelled {
                let _ = c.conn.clone().send(Outbound::ServerCancel { consumer: c });
            }
        }
        // Dropping the senders fails the calls.
        drop(w.calls);
    }

    fn on_frame(&self, f: Frame) {
        match f {
            Frame::Confirm { id, ok } => {
                let t = self.waiting.lock().tickets.remove(&id);
                if let Some(t) = t {
                    t.answer(ok);
                }
            }
            Frame::Deliver {
                cid,
                seq,
                redelivered,
                delivery_count,
                msg,
            } => {
                let entry = self
                    .waiting
                    .lock()
                    .consumers
                    .get(&cid)
                    .map(|(c, q, cancelled)| (c.clone(), q.clone(), *cancelled));
                let Some((c, q, cancelled)) = entry else {
                    return;
                };
                if cancelled {
                    self.push(&Frame::Settle {
                        vhost: q.config.vhost.clone(),
                        queue: q.name().to_string(),
                        how: 3,
                        seqs: vec![seq],
                    });
                    return;
                }
                let m = QueuedMessage {
                    seq: remote::to_proxy_seq(seq),
                    msg: Arc::new(message(msg)),
                    redelivered,
                    expires_at: None,
                    delivery_count,
                    holder: 0,
                };
                q.remote_delivered(c, m);
            }
            Frame::Cancelled { cid } => {
                let gone = self.waiting.lock().consumers.remove(&cid);
                if let Some((c, q, cancelled)) = gone {
                    if !cancelled {
                        q.remote_gone(&c);
                        let _ = c.conn.clone().send(Outbound::ServerCancel { consumer: c });
                    }
                }
            }
            Frame::Reply { rid, answer } => {
                let tx = self.waiting.lock().calls.remove(&rid);
                if let Some(tx) = tx {
                    let _ = tx.send(answer);
                }
            }
            Frame::Publish { .. }
            | Frame::Consume { .. }
            | Frame::Cancel { .. }
            | Frame::Settle { .. }
            | Frame::Call { .. } => {}
        }
    }
}

fn message(m: wire::Msg) -> Message {
    Message::new(
        ShortStr::from_bytes(m.exchange).unwrap_or_else(|_| ShortStr::from_static("")),
        ShortStr::from_bytes(m.routing_key).unwrap_or_else(|_| ShortStr::from_static("")),
        m.properties,
        m.body,
    )
}

/// The link task: connect, say who we are, then write queued frames and read answers
/// until the socket fails; again after a pause.
async fn run(
    link: Arc<Link>,
    me: String,
    transport: Transport,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        if let Ok(mut sock) = transport.connect(&link.addr, CONNECT_TIMEOUT).await {
            let hello = super::network::Request::Forward(me.clone());
            if super::network::write_frame(&mut sock, &hello).await.is_ok() {
                link.up.store(true, SeqCst);
                *link.down_since.lock() = None;
                tracing::info!(peer = %link.peer, "forwarding link up");
                serve_link(&link, sock, &mut stop).await;
                tracing::info!(peer = %link.peer, "forwarding link down");
                link.up.store(false, SeqCst);
                *link.down_since.lock() = Some(std::time::Instant::now());
                // What was sent on the lost connection gets no answer.
                link.fail_all();
            }
        }
        if !link.usable() {
            link.fail_all();
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn serve_link(link: &Arc<Link>, sock: Conn, stop: &mut tokio::sync::watch::Receiver<bool>) {
    let (mut rd, mut wr) = sock.into_split();
    let reader = {
        let link = link.clone();
        async move {
            let mut buf = BytesMut::with_capacity(64 << 10);
            loop {
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                loop {
                    match wire::decode(&mut buf) {
                        Ok(Some(f)) => link.on_frame(f),
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
        }
    };
    let writer = async {
        loop {
            let buf = link.outq.lock().split();
            if buf.is_empty() {
                link.wake.notified().await;
                continue;
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

impl Remote for Forwarder {
    fn node(&self) -> &str {
        &self.me
    }

    fn is_up(&self, home: &str) -> bool {
        self.link(home).is_some_and(|l| l.usable())
    }

    fn publish(&self, queue: &Queue, msg: &Arc<Message>, ticket: Option<Arc<Ticket>>) {
        let Some(link) = self.link_of(queue).filter(|l| l.usable()) else {
            // The home is down: dropped; a confirm is a nack.
            if let Some(t) = ticket {
                t.answer(false);
            }
            return;
        };
        let id = match ticket {
            Some(t) => {
                let mut w = link.waiting.lock();
                w.next_id += 1;
                let id = w.next_id;
                w.tickets.insert(id, t);
                id
            }
            None => 0,
        };
        link.push(&Frame::Publish {
            id,
            vhost: queue.config.vhost.clone(),
            queue: queue.name().to_string(),
            msg: wire::Msg {
                exchange: bytes::Bytes::copy_from_slice(msg.exchange.as_bytes()),
                routing_key: bytes::Bytes::copy_from_slice(msg.routing_key.as_bytes()),
                properties: msg.properties.clone(),
                body: msg.body.clone(),
            },
        });
    }

    fn consume(&self, queue: &Arc<Queue>, consumer: Arc<Consumer>) {
        let Some(link) = self.link_of(queue).filter(|l| l.usable()) else {
            queue.remote_gone(&consumer);
            let _ = consumer
                .conn
                .clone()
                .send(Outbound::ServerCancel { consumer });
            return;
        };
        let cid = link.next_cid.fetch_add(1, SeqCst);
        link.waiting
            .lock()
            .consumers
            .insert(cid, (consumer.clone(), queue.clone(), false));
        link.push(&Frame::Consume {
            cid,
            vhost: queue.config.vhost.clone(),
            queue: queue.name().to_string(),
            tag: consumer.tag.as_str().to_string(),
            no_ack: consumer.no_ack,
            exclusive: consumer.exclusive,
            prefetch: consumer.prefetch,
            priority: consumer.priority,
        });
    }

    fn cancel(&self, queue: &Queue, consumer: &Arc<Consumer>) {
        let Some(link) = self.link_of(queue) else {
            return;
        };
        let cid = {
            let mut w = link.waiting.lock();
            let found = w
                .consumers
                .iter_mut()
                .find(|(_, (c, _, _))| Arc::ptr_eq(c, consumer));
            match found {
                Some((cid, e)) => {
                    e.2 = true;
                    *cid
                }
                None => return,
            }
        };
        link.push(&Frame::Cancel { cid });
    }

    fn settle(&self, queue: &Queue, how: SettleHow, seqs: Vec<u64>) {
        let Some(link) = self.link_of(queue).filter(|l| l.usable()) else {
            // The home requeued them when the link broke.
            return;
        };
        let how = match how {
            SettleHow::Ack => 0,
            SettleHow::Requeue => 1,
            SettleHow::Reject => 2,
            SettleHow::Undelivered => 3,
        };
        link.push(&Frame::Settle {
            vhost: queue.config.vhost.clone(),
            queue: queue.name().to_string(),
            how,
            seqs,
        });
    }

    fn call(&self, queue: &Queue, call: Call) -> Result<Reply, String> {
        let down = || {
            remote::home_down_text(
                &queue.forward_target().unwrap_or_default(),
                queue.name(),
                &queue.config.vhost,
            )
        };
        let Some(link) = self.link_of(queue).filter(|l| l.usable()) else {
            return Err(down());
        };
        let (code, flags) = match call {
            Call::Get { no_ack: false } => (0, 0),
            Call::Get { no_ack: true } => (1, 0),
            Call::Purge => (2, 0),
            Call::Delete {
                if_unused,
                if_empty,
            } => (3, u8::from(if_unused) | (u8::from(if_empty) << 1)),
            Call::Counts => (4, 0),
        };
        let (tx, rx) = oneshot::channel();
        let rid = {
            let mut w = link.waiting.lock();
            w.next_id += 1;
            let rid = w.next_id;
            w.calls.insert(rid, tx);
            rid
        };
        link.push(&Frame::Call {
            rid,
            vhost: queue.config.vhost.clone(),
            queue: queue.name().to_string(),
            call: code,
            flags,
        });
        let answer = block_on(async { tokio::time::timeout(CALL_TIMEOUT, rx).await })?;
        let answer = match answer {
            Ok(Ok(a)) => a,
            _ => {
                link.waiting.lock().calls.remove(&rid);
                return Err(down());
            }
        };
        Ok(match answer {
            Answer::Got(None) => Reply::Got(None),
            Answer::Got(Some((seq, redelivered, delivery_count, left, msg))) => Reply::Got(Some((
                QueuedMessage {
                    seq,
                    msg: Arc::new(message(msg)),
                    redelivered,
                    expires_at: None,
                    delivery_count,
                    holder: 0,
                },
                left,
            ))),
            Answer::Count(n) => Reply::Count(n),
            Answer::Counts(n, c) => Reply::Counts(n, c),
            Answer::Refused(code, text) => Reply::Refused(code, text),
            Answer::Missing(text) => return Err(text),
        })
    }
}

/// Waits for `f` from synchronous code running on the runtime (a channel handler):
/// the worker hands its other tasks over while it waits. Refused on a current-thread
/// runtime, where waiting would block the task that answers.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    let h = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    if h.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err("forwarded calls need the multi-threaded runtime".into());
    }
    Ok(tokio::task::block_in_place(|| h.block_on(f)))
}
