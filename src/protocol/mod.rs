//! The AMQP 0-9-1 wire format: pure functions and state machines, no I/O.
//!
//! Decoding splits frames out of the connection's read buffer without copying bodies
//! ([`codec`]); encoding writes frames into the connection's write buffer, with hand-written
//! fast paths for the per-message methods and amq-protocol's generator for everything else
//! ([`encode`]). Content properties stay as the bytes the publisher sent ([`properties`]).

pub mod codec;
pub mod encode;
pub mod properties;
pub mod sasl;

/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Frame header (type, channel, size) plus the end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// The smallest frame_max a peer may negotiate (spec: 4096).
pub const FRAME_MIN_SIZE: u32 = 4096;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;

/// The protocol header this broker speaks and sends back to peers that speak another.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Whether an 8-byte protocol header asks for a protocol we speak. AMQP 0-9 (`AMQP 1 1 0 9`)
/// is accepted as 0-9-1, as RabbitMQ does.
pub fn header_supported(h: &[u8]) -> bool {
    h == PROTOCOL_HEADER || h == b"AMQP\x01\x01\x00\x09"
}
