//! A published message as queues hold it: shared (`Arc`) between every queue it was routed
//! to, with its properties and body as the bytes the publisher sent.

use crate::protocol::codec::ShortStr;
use crate::protocol::properties;
use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct Message {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    /// Raw content-header properties (flag word + property list), re-sent unchanged.
    pub properties: Bytes,
    pub body: Bytes,
    /// The priority property (0 when absent), read once at publish.
    pub priority: u8,
    /// The expiration property in milliseconds, read once at publish.
    pub expiration: Option<u64>,
    /// delivery_mode = 2: stored on disk when it reaches a durable queue.
    pub persistent: bool,
    /// The message's id in the message log, or 0 when it is not stored there.
    pub persist_id: u64,
}

impl Message {
    /// A message whose derived fields (priority, expiration, persistence) are read from
    /// `properties`; an unparseable expiration counts as none (validation happens at
    /// publish, this is for messages read back from disk).
    pub fn new(exchange: ShortStr, routing_key: ShortStr, properties: Bytes, body: Bytes) -> Self {
        let s = properties::summary(&properties).unwrap_or_default();
        Message {
            exchange,
            routing_key,
            priority: s.priority.unwrap_or(0),
            expiration: s.expiration.as_deref().and_then(|e| e.parse().ok()),
            persistent: s.delivery_mode == Some(2),
            persist_id: 0,
            properties,
            body,
        }
    }

    /// Bytes this message accounts for in a queue (body only, as RabbitMQ's
    /// `message_bytes`).
    pub fn size(&self) -> usize {
        self.body.len()
    }
}
