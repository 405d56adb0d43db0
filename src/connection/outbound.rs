//! Commands sent *to* a connection task by other tasks (queues delivering, a queue being
//! deleted, the connection itself keeping order). Everything a connection writes that was
//! caused elsewhere arrives here, so frames for one channel leave in the order they were
//! decided.

use crate::queue::consumer::Consumer;
use crate::queue::{Queue, QueuedMessage};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug)]
pub enum Outbound {
    /// Deliver messages to a consumer of this connection, in order. Credit was already
    /// reserved for each. One command carries every message one dispatch gave this
    /// consumer, so a burst costs one wake-up and one channel lookup, not one per message.
    Deliver {
        consumer: Arc<Consumer>,
        queue: Arc<Queue>,
        msgs: Vec<QueuedMessage>,
    },
    /// The consumer's queue was deleted: tell the client (basic.cancel) if it asked to be told.
    ServerCancel { consumer: Arc<Consumer> },
    /// basic.cancel-ok, queued behind the deliveries the queue sent before the consumer was
    /// removed, so the client never sees a delivery after cancel-ok.
    CancelOk {
        consumer: Arc<Consumer>,
        nowait: bool,
    },
    /// Home nodes answered forwarded publishes (`queue::remote::Ticket`): send the
    /// confirms that waited for them.
    RemoteSettled,
    /// Close the connection with this error (vhost deleted, management force-close).
    ForceClose(crate::error::AmqpError),
    /// A replicated quorum queue committed (or failed) a publish a confirm waits for
    /// ([`crate::queue::quorum::wire::Ticket`]): send the confirms now due.
    Replicated,
}

/// Unbounded: producers are bounded by consumer credit (prefetch and the in-flight window),
/// not by the channel.
pub type ConnSender = mpsc::UnboundedSender<Outbound>;
pub type ConnReceiver = mpsc::UnboundedReceiver<Outbound>;
