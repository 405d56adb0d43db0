//! A published message as queues hold it: shared (`Arc`) between every queue it was routed
//! to, with its properties and body as the bytes the publisher sent.

use crate::protocol::codec::ShortStr;
use bytes::Bytes;

#[derive(Debug)]
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
}

impl Message {
    /// Bytes this message accounts for in a queue (body only, as RabbitMQ's
    /// `message_bytes`).
    pub fn size(&self) -> usize {
        self.body.len()
    }
}
