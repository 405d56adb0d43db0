//! A queue that lives on another node of the cluster, as the node a client is connected
//! to sees it: a proxy behind the same [`Queue`] interface, so channels, routing and the
//! management API call it as any other queue and do not know.
//!
//! A durable classic queue has a **home node** (the node whose client declared it,
//! recorded in the replicated definition). Only the home node holds its messages; on the
//! other nodes every queue operation goes to the home over the cluster link. The link is
//! the [`Remote`] handle, implemented by `cluster::forward`; this module only names what
//! the queue layer needs of it, so the queue layer never depends on the cluster.
//!
//! Ids: a delivery from the home carries the message's position in the home queue
//! (`QueuedMessage::seq` there). The proxy's copy carries that number plus one, so that no
//! id is 0 (channels skip id 0 when they settle).

use super::consumer::Consumer;
use super::{Queue, QueuedMessage};
use crate::connection::outbound::{ConnSender, Outbound};
use crate::message::Message;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};

/// How deliveries of a remote queue end (the home applies it to its copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleHow {
    Ack,
    /// basic.nack / reject / recover with requeue, or a channel closing.
    Requeue,
    /// Rejected without requeue: dead-lettered on the home.
    Reject,
    /// Never reached the client (its channel closed first): back without the
    /// redelivered mark.
    Undelivered,
}

/// A request that needs the home's answer before the channel can reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// basic.get: the head message (kept unacknowledged on the home unless `no_ack`).
    Get {
        no_ack: bool,
    },
    Purge,
    Delete {
        if_unused: bool,
        if_empty: bool,
    },
    /// Ready messages and consumers, for declare-ok.
    Counts,
}

/// The home's answer to a [`Call`].
#[derive(Debug, Clone)]
pub enum Reply {
    /// basic.get: the message (its `seq` as the home numbers it) and the messages left.
    Got(Option<(QueuedMessage, u32)>),
    /// purge-ok / delete-ok: the messages dropped.
    Count(u32),
    /// (ready, consumers)
    Counts(u32, u32),
    /// The home refused (e.g. delete `if_unused`): reply code and text.
    Refused(u16, String),
}

/// The cluster link as the queue layer uses it (implemented by `cluster::forward`).
pub trait Remote: Send + Sync + Debug {
    /// This node's name.
    fn node(&self) -> &str;
    /// The home node answers (its link is up).
    fn is_up(&self, home: &str) -> bool;
    /// Sends a message to the home queue; `ticket` (publisher confirms) is settled when
    /// the home has enqueued it (and synced it, when persistent) or refused it.
    fn publish(&self, queue: &Queue, msg: &Arc<Message>, ticket: Option<Arc<Ticket>>);
    /// Registers `consumer` on the home; deliveries come back to it as `Outbound::Deliver`
    /// with `queue` (the proxy). A refusal or a lost home cancels it
    /// (`Outbound::ServerCancel`).
    fn consume(&self, queue: &Arc<Queue>, consumer: Arc<Consumer>);
    fn cancel(&self, queue: &Queue, consumer: &Arc<Consumer>);
    /// Settles deliveries (`seqs`: the home's numbers, see the module docs).
    fn settle(&self, queue: &Queue, how: SettleHow, seqs: Vec<u64>);
    /// Asks the home and waits for its answer (bounded by a timeout).
    fn call(&self, queue: &Queue, call: Call) -> Result<Reply, String>;
}

/// The cluster link, shared by the vhosts before it is set (queues restored at start
/// exist before the cluster starts).
pub type RemoteCell = Arc<OnceLock<Arc<dyn Remote>>>;

/// A publisher confirm that waits for home nodes: settled once every home that got the
/// message answered. The publisher's connection is told (`Outbound::RemoteSettled`) so
/// it sends the confirms that waited.
#[derive(Debug)]
pub struct Ticket {
    left: AtomicU32,
    refused: AtomicBool,
    conn: ConnSender,
}

impl Ticket {
    pub fn new(conn: ConnSender) -> Arc<Ticket> {
        Arc::new(Ticket {
            left: AtomicU32::new(0),
            refused: AtomicBool::new(false),
            conn,
        })
    }

    /// One more home must answer.
    pub fn expect(&self) {
        self.left.fetch_add(1, SeqCst);
    }

    /// A home answered (`ok` false: it refused the message, or it could not be reached).
    pub fn answer(&self, ok: bool) {
        if !ok {
            self.refused.store(true, SeqCst);
        }
        if self.left.fetch_sub(1, SeqCst) == 1 {
            let _ = self.conn.send(Outbound::RemoteSettled);
        }
    }

    pub fn done(&self) -> bool {
        self.left.load(SeqCst) == 0
    }

    /// Some home refused the message (the confirm is a nack).
    pub fn refused(&self) -> bool {
        self.refused.load(SeqCst)
    }
}

/// RabbitMQ 3.10's text for a durable classic queue whose node is down.
pub fn home_down_text(home: &str, queue: &str, vhost: &str) -> String {
    format!(
        "home node '{home}' of durable queue '{queue}' in vhost '{vhost}' is down or inaccessible"
    )
}

impl Queue {
    /// The cluster link, when this queue lives on another node: a classic queue homed
    /// elsewhere, or a quorum queue this node is not a member of. Outside a cluster the
    /// cell is empty and this is one atomic load.
    pub(crate) fn remote(&self) -> Option<&Arc<dyn Remote>> {
        let r = self.remote.get()?;
        match self.config.home.as_deref() {
            Some(home) => (r.node() != home).then_some(r),
            // A replicated quorum queue this node is not a member of (checked under the
            // members' lock, without copying them: this runs on every publish).
            None if self.is_replicated() => {
                let members = self.members.lock();
                let member = members.iter().any(|m| m == r.node());
                (!member && !members.is_empty()).then_some(r)
            }
            None => None,
        }
    }

    /// Where a proxy forwards to: the classic queue's home, or the quorum queue's leader.
    pub fn forward_target(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self.config.home.as_deref() {
            Some(h) => Some(std::borrow::Cow::Borrowed(h)),
            None => self.quorum_target().map(std::borrow::Cow::Owned),
        }
    }

    /// This queue lives on another node (this one holds a proxy).
    pub fn is_remote(&self) -> bool {
        self.remote().is_some()
    }

    /// The node holding the queue's messages, in a cluster.
    pub fn home(&self) -> Option<&str> {
        self.config.home.as_deref()
    }

    /// For a proxy whose home node is down: RabbitMQ's 404 text.
    pub fn home_down(&self) -> Option<String> {
        let r = self.remote()?;
        let home = self.forward_target()?;
        (!r.is_up(&home)).then(|| home_down_text(&home, self.name(), &self.config.vhost))
    }

    /// Where a non-member node sends a quorum queue's operations: its leader when this
    /// node knows it, else its first member (any member writes through the leader).
    fn quorum_target(&self) -> Option<String> {
        self.quorum_leader()
            .or_else(|| self.quorum_members()?.into_iter().next())
    }

    /// A consumer the home no longer serves (link lost, refused, queue deleted there).
    pub(crate) fn remote_gone(&self, consumer: &Arc<Consumer>) {
        self.state
            .lock()
            .consumers
            .retain(|c| !Arc::ptr_eq(c, consumer));
    }

    /// A delivery from the home: the proxy's copy (ids shifted by one, see module docs).
    pub(crate) fn remote_delivered(self: &Arc<Self>, consumer: Arc<Consumer>, m: QueuedMessage) {
        consumer.reserved_n(1);
        let _ = consumer.conn.send(Outbound::Deliver {
            consumer: consumer.clone(),
            queue: self.clone(),
            msgs: vec![m],
        });
    }
}

/// The proxy's number for a home sequence number, and back.
pub fn to_proxy_seq(home_seq: u64) -> u64 {
    home_seq + 1
}

pub fn to_home_seqs(msgs: &[QueuedMessage]) -> Vec<u64> {
    msgs.iter().map(|m| m.seq.saturating_sub(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_settles_once_every_home_answered_and_remembers_a_refusal() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let t = Ticket::new(tx);
        // As `queue::enqueue_confirmed`: held open while the homes are sent to.
        t.expect();
        t.expect();
        t.expect();
        t.answer(true);
        assert!(!t.done());
        t.answer(false);
        assert!(!t.done() && rx.try_recv().is_err());
        t.answer(true);
        assert!(t.done() && t.refused());
        assert!(matches!(rx.try_recv(), Ok(Outbound::RemoteSettled)));
        assert!(rx.try_recv().is_err(), "the connection is told once");
        assert_eq!(to_proxy_seq(0), 1);
    }
}
