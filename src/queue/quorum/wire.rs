//! A replicated quorum queue's commands as they travel through its Raft group and lie in
//! the node's WAL (postcard-encoded: bodies stay bytes), and the narrow handle a queue
//! gets to its group ([`Group`]). The group's state machine hands every committed
//! [`QEntry`] back to the queue's replica on each member ([`Replica`]).
//!
//! Time is the leader's: the entry carries the milliseconds the leader stamped when it
//! took the command, and every member applies it at that time, so TTL expiry and the
//! like decide the same everywhere.
//!
//! Consumer keys name their node: bits 48–63 a tag of the node's name, 32–47 the node's
//! boot incarnation, 0–31 the consumer's id on that node (see [`consumer_key`]). A
//! member carries out the deliveries for the keys of its own node only.

use super::fifo::image::Image;
use super::pages::QMsg;
use crate::connection::outbound::{ConnSender, Outbound};
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// A message in a replicated command (everything a delivery needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMsg {
    /// Names as the message holds them: a clone (once per command written, once per
    /// entry applied on every member) shares them instead of allocating two strings.
    #[serde(with = "super::wire_bytes::short_str")]
    pub exchange: ShortStr,
    #[serde(with = "super::wire_bytes::short_str")]
    pub routing_key: ShortStr,
    #[serde(with = "super::wire_bytes")]
    pub properties: Bytes,
    #[serde(with = "super::wire_bytes")]
    pub body: Bytes,
    pub priority: u8,
    pub expiration: Option<u64>,
    pub persistent: bool,
}

impl WireMsg {
    pub fn of(m: &Message) -> WireMsg {
        WireMsg {
            exchange: m.exchange.clone(),
            routing_key: m.routing_key.clone(),
            properties: m.properties.clone(),
            body: m.body.clone(),
            priority: m.priority,
            expiration: m.expiration,
            persistent: m.persistent,
        }
    }

    pub fn into_message(self) -> Arc<Message> {
        Arc::new(Message {
            exchange: self.exchange,
            routing_key: self.routing_key,
            properties: self.properties,
            body: self.body,
            priority: self.priority,
            expiration: self.expiration,
            persistent: self.persistent,
            persist_id: 0,
        })
    }
}

/// [`WireMsg`] borrowed from a held message: encodes to the same bytes (a snapshot is
/// written without copying every body first).
#[derive(Serialize)]
struct WireRef<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    #[serde(with = "super::wire_bytes::slice")]
    properties: &'a [u8],
    #[serde(with = "super::wire_bytes::slice")]
    body: &'a [u8],
    priority: u8,
    expiration: Option<u64>,
    persistent: bool,
}

impl<'a> WireRef<'a> {
    fn of(m: &'a Message) -> Self {
        WireRef {
            exchange: m.exchange.as_str(),
            routing_key: m.routing_key.as_str(),
            properties: &m.properties,
            body: &m.body,
            priority: m.priority,
            expiration: m.expiration,
            persistent: m.persistent,
        }
    }
}

/// A replica's state as a snapshot carries it (see [`super::fifo::image`]).
pub type QImage = Image<WireMsg>;

/// A message as a snapshot takes it under the queue's lock: a reference (the body
/// shared in memory, or its page's open segment and place), read only as the snapshot
/// is encoded, outside the lock. Encodes as a [`WireMsg`].
#[derive(Debug, Clone)]
pub struct SnapMsg(pub(crate) QMsg);

impl SnapMsg {
    /// A message held in memory.
    pub fn mem(m: Arc<Message>) -> SnapMsg {
        SnapMsg(QMsg::Mem(m))
    }
}

impl Serialize for SnapMsg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            QMsg::Mem(m) => WireRef::of(m).serialize(s),
            QMsg::Paged(p) => match p.read() {
                Ok(m) => WireRef::of(&m).serialize(s),
                // Not a storage error (that would stop the group's Raft core for good):
                // the message goes into the snapshot empty, as the driver loses it too.
                Err(e) => {
                    tracing::error!(error = %e, "a paged message of a quorum queue cannot be read for its snapshot: it is written empty");
                    let none = Message::new(
                        crate::protocol::codec::ShortStr::from_static(""),
                        crate::protocol::codec::ShortStr::from_static(""),
                        Bytes::new(),
                        Bytes::new(),
                    );
                    WireRef::of(&none).serialize(s)
                }
            },
        }
    }
}

/// A replica's state, its messages as a snapshot took them, in a snapshot's encoding
/// (postcard; decodes as a [`QImage`]).
pub fn encode_image(img: &Image<SnapMsg>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_image_to(img, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// [`encode_image`] written to `out` as it is encoded (into a snapshot file: paged
/// bodies are read one at a time, never the whole backlog in memory).
pub fn encode_image_to(img: &Image<SnapMsg>, out: impl std::io::Write) -> std::io::Result<()> {
    super::pages::reading_ahead(|| postcard::to_io(img, out))
        .map(|_| ())
        .map_err(std::io::Error::other)
}

/// Reads a snapshot's state back.
pub fn decode_image(bytes: &[u8]) -> Result<QImage, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("unreadable queue state: {e}"))
}

/// A consumer's settings in a Checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSpec {
    pub priority: i64,
    pub prefetch: u32,
    pub no_ack: bool,
}

/// A command of a replicated quorum queue (see [`super::fifo::Command`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QCmd {
    Enqueue(WireMsg),
    Checkout {
        key: u64,
        spec: WireSpec,
    },
    Cancel {
        key: u64,
    },
    Credit {
        key: u64,
        credit: u32,
    },
    /// Settlements name the consumer (its key) they come from: applied only to the
    /// messages checked out to it (see [`super::fifo::Command::Settle`]).
    Settle {
        key: u64,
        ids: Vec<u64>,
    },
    Return {
        key: u64,
        ids: Vec<u64>,
        counted: bool,
    },
    Discard {
        key: u64,
        ids: Vec<u64>,
    },
    Purge,
    Tick,
    DlxSettle {
        ids: Vec<u64>,
    },
    /// A node's consumers are gone (the node is down, or restarted: only consumers of
    /// other incarnations than `keep`): what they had checked out goes back, redelivered.
    Down {
        node: u16,
        keep: Option<u16>,
    },
    /// Several commands in one log entry, applied in order (each answered on its own):
    /// the leader writes what it took at once as one entry, so one Raft append (and one
    /// WAL sync) carries many publishes. Last variant: older logs still decode.
    Batch(Vec<QCmd>),
    /// A command as a member's driver numbered it (`origin`: its node's tag and
    /// incarnation; `seq`: from 1 per group; `settled`: every command of that origin
    /// numbered up to it was answered and is not sent again). A write whose answer was
    /// lost is sent again with its number and applied once
    /// (`cluster::qgroup::dedup`). Last variant: older logs still decode.
    Once {
        origin: u32,
        seq: u64,
        settled: u64,
        cmd: Box<QCmd>,
    },
    /// basic.get: the head message checked out to `key` (the asking channel's node and
    /// run, and a number of the get: see `quorum::get`), or settled at once (no-ack).
    /// The member whose key it is answers its channel when it applies the entry. Last
    /// variant: older logs still decode.
    Dequeue {
        key: u64,
        settled: bool,
    },
}

impl QCmd {
    /// Roughly how many bytes the command takes in the log (to bound a batch).
    pub fn weight(&self) -> usize {
        match self {
            QCmd::Enqueue(m) => 64 + m.body.len() + m.properties.len() + m.routing_key.len(),
            QCmd::Settle { ids, .. }
            | QCmd::Return { ids, .. }
            | QCmd::Discard { ids, .. }
            | QCmd::DlxSettle { ids } => 24 + 8 * ids.len(),
            QCmd::Batch(cmds) => cmds.iter().map(QCmd::weight).sum(),
            QCmd::Once { cmd, .. } => 24 + cmd.weight(),
            _ => 32,
        }
    }
}

/// An entry of a queue group's log: the command and the leader's clock when it took it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QEntry {
    pub at: u64,
    pub cmd: QCmd,
}

/// What applying a command answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QReply {
    /// An enqueue refused by `x-overflow: reject-publish`.
    pub rejected: bool,
}

/// Called once a submitted command is committed (and applied on the leader), or failed.
pub type Done = Box<dyn FnOnce(Result<QReply, String>) + Send>;

/// A replicated quorum queue's Raft group, as the queue sees it.
pub trait Group: Send + Sync + std::fmt::Debug {
    /// Writes `cmd` through the leader (forwarded when this node is not it); `done` runs
    /// once it is committed, or with an error after the write timeout.
    fn submit(&self, cmd: QCmd, done: Option<Done>);
    /// The current leader's node name.
    fn leader(&self) -> Option<String>;
    /// This node leads the group.
    fn is_leader(&self) -> bool;
    /// Member node names (the placement), and those answering now.
    fn members(&self) -> Vec<String>;
    fn online(&self) -> Vec<String>;
    /// This node's tag and incarnation, for consumer keys.
    fn local(&self) -> (u16, u16);
    /// The queue was deleted: this member stops.
    fn stop(&self);
}

/// The queue side of a group: applies committed entries to the member's replica.
pub trait Replica: Send + Sync {
    /// Applies one committed entry; `leader`: this node leads (it alone carries out
    /// effects that must happen once, such as dead-lettering). Deliveries to this node's
    /// consumers are held ([`Replica::deliver_held`]).
    fn apply_entry(&self, e: QEntry, leader: bool) -> QReply;
    /// The node tags that hold consumers in the replica's state.
    fn consumer_nodes(&self) -> Vec<u16>;
    /// Empties the replica: the member (re)starts and applies the log from its start.
    fn reset(&self);
    /// The state now (taken between two applies), for a snapshot: its messages as
    /// references, read as the snapshot is encoded; None once the queue is gone.
    fn image(&self) -> Option<Image<SnapMsg>>;
    /// Replaces the state by a snapshot's. Messages it has checked out to this node's
    /// consumers that the replica had not delivered here are held for delivery.
    fn restore(&self, img: QImage);
    /// Sends what applied entries gave this node's consumers and is still theirs (the
    /// member is current: `cluster::qgroup::currency`); until then it is held.
    fn deliver_held(&self);
    /// Deliveries are held.
    fn holds_deliveries(&self) -> bool;
    /// About the bytes the state holds (to weigh a snapshot against the log).
    fn held_bytes(&self) -> usize;
}

/// A publisher confirm waiting for replicated queues to commit its message: one count
/// per queue; when the last one answers, the publisher's connection is told
/// ([`Outbound::Replicated`]) and sends the confirm (a nack if any queue failed or
/// refused it).
#[derive(Debug)]
pub struct Ticket {
    pending: AtomicUsize,
    failed: AtomicBool,
    conn: ConnSender,
}

impl Ticket {
    pub fn new(conn: ConnSender) -> Arc<Ticket> {
        Arc::new(Ticket {
            pending: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            conn,
        })
    }

    /// One more queue to wait for.
    pub fn add(&self) {
        self.pending.fetch_add(1, SeqCst);
    }

    /// A queue answered.
    pub fn done(&self, ok: bool) {
        if !ok {
            self.failed.store(true, SeqCst);
        }
        if self.pending.fetch_sub(1, SeqCst) == 1 {
            let _ = self.conn.send(Outbound::Replicated);
        }
    }

    pub fn is_done(&self) -> bool {
        self.pending.load(SeqCst) == 0
    }

    pub fn failed(&self) -> bool {
        self.failed.load(SeqCst)
    }

    /// The completion to hand a group with a submitted enqueue.
    pub fn completion(self: &Arc<Self>) -> Done {
        self.add();
        let t = self.clone();
        Box::new(move |r| t.done(matches!(r, Ok(QReply { rejected: false }))))
    }
}

/// Where a publish's ticket is made, on first need (no cost for other queues).
#[derive(Debug)]
pub struct TicketSlot<'a> {
    pub conn: &'a ConnSender,
    pub ticket: Option<Arc<Ticket>>,
}

impl TicketSlot<'_> {
    pub fn get(&mut self) -> &Arc<Ticket> {
        self.ticket
            .get_or_insert_with(|| Ticket::new(self.conn.clone()))
    }
}

/// A new group's members among `nodes`: `size` of them (at least 1, at most all), `me`
/// among them. `me` comes first (the member that starts the group and proposes itself
/// as leader: RabbitMQ's `client-local`), or with `balanced` a random member does.
pub fn place(
    me: &str,
    nodes: &[String],
    size: usize,
    balanced: bool,
    rng: &mut impl rand::Rng,
) -> Vec<String> {
    use rand::seq::SliceRandom;
    let mut others: Vec<String> = nodes.iter().filter(|n| *n != me).cloned().collect();
    others.shuffle(rng);
    let mut out = vec![me.to_string()];
    out.extend(others.into_iter().take(size.max(1) - 1));
    if balanced {
        out.shuffle(rng);
    }
    out
}

/// A consumer's key in a replicated queue.
pub fn consumer_key(node: u16, incarnation: u16, local: u64) -> u64 {
    (u64::from(node) << 48) | (u64::from(incarnation) << 32) | (local & 0xffff_ffff)
}

/// The node tag of a consumer key.
pub fn key_node(key: u64) -> u16 {
    (key >> 48) as u16
}

/// The incarnation of a consumer key.
pub fn key_incarnation(key: u64) -> u16 {
    (key >> 32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_has_me_first_and_at_most_the_cluster() {
        let nodes: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let mut rng = rand::rng();
        let p = place("n2", &nodes, 3, false, &mut rng);
        assert_eq!(p[0], "n2");
        assert_eq!(p.len(), 3);
        assert_eq!(place("n2", &nodes, 7, false, &mut rng).len(), 3);
        assert_eq!(place("n3", &nodes, 1, false, &mut rng), ["n3"]);
        let b = place("n1", &nodes, 2, true, &mut rng);
        assert!(b.contains(&"n1".to_string()) && b.len() == 2);
    }

    #[test]
    fn keys_carry_node_and_incarnation_and_entries_round_trip() {
        let k = consumer_key(0xabcd, 7, 0x1_0000_0005);
        assert_eq!(
            (key_node(k), key_incarnation(k), k & 0xffff_ffff),
            (0xabcd, 7, 5)
        );
        let e = QEntry {
            at: 42,
            cmd: QCmd::Enqueue(WireMsg {
                exchange: ShortStr::from_static("x"),
                routing_key: ShortStr::from_static("rk"),
                properties: vec![0, 0].into(),
                body: vec![7; 1000].into(),
                priority: 0,
                expiration: None,
                persistent: true,
            }),
        };
        let bytes = postcard::to_allocvec(&e).unwrap();
        // Bytes, not JSON numbers: the body costs about its own size.
        assert!(bytes.len() < 1020, "{}", bytes.len());
        assert_eq!(postcard::from_bytes::<QEntry>(&bytes).unwrap(), e);
        assert!(postcard::from_bytes::<QEntry>(&bytes[..10]).is_err());
    }

    /// A snapshot encodes held messages as the wire form, borrowed: it decodes back to
    /// the same values; truncated bytes are an error, not a panic.
    #[test]
    fn images_encode_held_messages_as_wire_messages() {
        use super::super::fifo::image::{ImageConsumer, ImageEntry};
        let w = WireMsg {
            exchange: ShortStr::from_static("x"),
            routing_key: ShortStr::from_static("rk"),
            properties: vec![1, 2].into(),
            body: vec![9; 300].into(),
            priority: 3,
            expiration: Some(5),
            persistent: true,
        };
        let entry = |id, msg| ImageEntry {
            id,
            msg,
            redelivered: id == 2,
            delivery_count: 1,
            expires_at: None,
            pos: id,
        };
        let img = Image {
            ready: vec![entry(1, w.clone())],
            checked_out: vec![(7, entry(2, w.clone()))],
            consumers: vec![ImageConsumer {
                key: 7,
                priority: 0,
                prefetch: 10,
                no_ack: false,
                out: 1,
                credit: 10,
            }],
            dlx_held: vec![(entry(3, w.clone()), 1)],
            next_id: 4,
            next_pos: 4,
        };
        let held = img.map(|w| SnapMsg::mem(w.clone().into_message()));
        let bytes = encode_image(&held).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&img).unwrap());
        assert_eq!(decode_image(&bytes).unwrap(), img);
        assert!(decode_image(&bytes[..bytes.len() - 10]).is_err());

        // The same messages in a page file (the queue released them meanwhile: their
        // segment is unlinked, still open) encode to the same bytes.
        let dir = std::env::temp_dir().join(format!("warren-snapmsg-{}", std::process::id()));
        let pages = std::cell::RefCell::new(super::super::pages::PageStore::new(
            crate::queue::pager::Paging::new(dir.clone(), 0),
        ));
        let paged = std::cell::RefCell::new(Vec::new());
        let on_disk = img.map(|w| {
            let p = Arc::new(pages.borrow_mut().write(&w.clone().into_message()).unwrap());
            paged.borrow_mut().push(p.clone());
            SnapMsg(QMsg::Paged(p))
        });
        let mut pages = pages.into_inner();
        for p in paged.into_inner() {
            pages.release(&p);
        }
        drop(pages);
        let mut streamed = Vec::new();
        encode_image_to(&on_disk, &mut streamed).unwrap();
        assert_eq!(streamed, bytes);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
