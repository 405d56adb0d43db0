//! The on-disk record format of the message log.
//!
//! Every record is `len: u32 BE | crc32: u32 BE | payload[len]`, the checksum covering the
//! payload. The payload's first byte says what it is:
//!
//! - `1` publish: `id u64 | at_ms u64 | nqueues u16 | (u16 len, queue key)* | exchange
//!   (u8 len) | routing key (u8 len) | properties (u32 len) | body (u32 len)`
//! - `2` remove (acked, dropped, expired, purged): `queue key (u16 len) | n u32 | id u64 * n`
//! - `3` redelivered (requeued after a delivery): same shape as remove.
//!
//! A queue key is `vhost \0 queue name`, so a record needs no other table to be read.
//! Integers are big-endian like the rest of AMQP.

use crate::message::Message;
use crate::protocol::codec::ShortStr;
use bytes::{Buf, BufMut, Bytes};
use std::sync::Arc;

pub const HEADER: usize = 8;
/// Larger lengths are corruption, not records (the broker refuses messages above 512 MiB).
pub const MAX_RECORD: u32 = 1 << 30;

pub const KIND_PUBLISH: u8 = 1;
pub const KIND_REMOVE: u8 = 2;
pub const KIND_REDELIVERED: u8 = 3;

/// A decoded record.
#[derive(Debug)]
pub enum Record {
    Publish {
        id: u64,
        at_ms: u64,
        queues: Vec<Arc<str>>,
        msg: Message,
    },
    Remove {
        queue: Arc<str>,
        ids: Vec<u64>,
    },
    Redelivered {
        queue: Arc<str>,
        ids: Vec<u64>,
    },
}

/// The key a queue's records carry.
pub fn queue_key(vhost: &str, name: &str) -> Arc<str> {
    format!("{vhost}\0{name}").into()
}

fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    start
}

fn finish(out: &mut [u8], start: usize) {
    let payload = &out[start + HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

pub fn encode_publish(out: &mut Vec<u8>, id: u64, at_ms: u64, queues: &[Arc<str>], m: &Message) {
    let start = begin(out);
    out.put_u8(KIND_PUBLISH);
    out.put_u64(id);
    out.put_u64(at_ms);
    out.put_u16(queues.len() as u16);
    for q in queues {
        out.put_u16(q.len() as u16);
        out.extend_from_slice(q.as_bytes());
    }
    out.put_u8(m.exchange.len() as u8);
    out.extend_from_slice(m.exchange.as_bytes());
    out.put_u8(m.routing_key.len() as u8);
    out.extend_from_slice(m.routing_key.as_bytes());
    out.put_u32(m.properties.len() as u32);
    out.extend_from_slice(&m.properties);
    out.put_u32(m.body.len() as u32);
    out.extend_from_slice(&m.body);
    finish(out, start);
}

pub fn encode_ids(out: &mut Vec<u8>, kind: u8, queue: &str, ids: &[u64]) {
    let start = begin(out);
    out.put_u8(kind);
    out.put_u16(queue.len() as u16);
    out.extend_from_slice(queue.as_bytes());
    out.put_u32(ids.len() as u32);
    for id in ids {
        out.put_u64(*id);
    }
    finish(out, start);
}

/// What reading a record at some offset found.
#[derive(Debug)]
pub enum Read {
    /// A valid record and its total size on disk.
    Ok(Record, usize),
    /// The clean end of the data.
    End,
    /// A torn or corrupt record: everything from here on is dropped.
    Bad(&'static str),
}

/// Reads the record at the start of `data`.
pub fn read(data: &Bytes) -> Read {
    if data.is_empty() {
        return Read::End;
    }
    if data.len() < HEADER {
        return Read::Bad("torn record header");
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let crc = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    if len == 0 && crc == 0 {
        // Preallocated or zero-filled tail (a crash after the file grew).
        return if data.iter().all(|b| *b == 0) {
            Read::End
        } else {
            Read::Bad("zeroed record header")
        };
    }
    if len > MAX_RECORD || len as usize > data.len() - HEADER {
        return Read::Bad("torn record (length beyond the end of the segment)");
    }
    let payload = data.slice(HEADER..HEADER + len as usize);
    if crc32fast::hash(&payload) != crc {
        return Read::Bad("checksum mismatch");
    }
    match decode(payload) {
        Some(r) => Read::Ok(r, HEADER + len as usize),
        None => Read::Bad("malformed record"),
    }
}

fn take(p: &mut Bytes, n: usize) -> Option<Bytes> {
    (p.remaining() >= n).then(|| p.split_to(n))
}

fn key(p: &mut Bytes) -> Option<Arc<str>> {
    if p.remaining() < 2 {
        return None;
    }
    let n = p.get_u16() as usize;
    let b = take(p, n)?;
    std::str::from_utf8(&b).ok().map(Arc::from)
}

fn ids(p: &mut Bytes) -> Option<Vec<u64>> {
    if p.remaining() < 4 {
        return None;
    }
    let n = p.get_u32() as usize;
    if p.remaining() != n * 8 {
        return None;
    }
    Some((0..n).map(|_| p.get_u64()).collect())
}

fn decode(mut p: Bytes) -> Option<Record> {
    if p.is_empty() {
        return None;
    }
    match p.get_u8() {
        KIND_PUBLISH => {
            if p.remaining() < 18 {
                return None;
            }
            let id = p.get_u64();
            let at_ms = p.get_u64();
            let nq = p.get_u16() as usize;
            let mut queues = Vec::with_capacity(nq);
            for _ in 0..nq {
                queues.push(key(&mut p)?);
            }
            let short = |p: &mut Bytes| -> Option<ShortStr> {
                if p.remaining() < 1 {
                    return None;
                }
                let n = p.get_u8() as usize;
                ShortStr::from_bytes(take(p, n)?).ok()
            };
            let exchange = short(&mut p)?;
            let routing_key = short(&mut p)?;
            let long = |p: &mut Bytes| -> Option<Bytes> {
                if p.remaining() < 4 {
                    return None;
                }
                let n = p.get_u32() as usize;
                take(p, n)
            };
            let properties = long(&mut p)?;
            let body = long(&mut p)?;
            if p.has_remaining() {
                return None;
            }
            let mut msg = Message::new(exchange, routing_key, properties, body);
            msg.persist_id = id;
            Some(Record::Publish {
                id,
                at_ms,
                queues,
                msg,
            })
        }
        k @ (KIND_REMOVE | KIND_REDELIVERED) => {
            let queue = key(&mut p)?;
            let ids = ids(&mut p)?;
            Some(if k == KIND_REMOVE {
                Record::Remove { queue, ids }
            } else {
                Record::Redelivered { queue, ids }
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message::new(
            ShortStr::copy_from("x"),
            ShortStr::copy_from("rk"),
            Bytes::from_static(&[0x10, 0x00, 2]),
            Bytes::from_static(b"hello"),
        )
    }

    #[test]
    fn round_trip_and_detects_damage() {
        let mut out = Vec::new();
        let qs = [queue_key("/", "a"), queue_key("v", "b")];
        encode_publish(&mut out, 7, 99, &qs, &msg());
        encode_ids(&mut out, KIND_REMOVE, &qs[0], &[7]);
        let data = Bytes::from(out.clone());
        let Read::Ok(
            Record::Publish {
                id, queues, msg, ..
            },
            n,
        ) = read(&data)
        else {
            panic!("publish")
        };
        assert_eq!((id, queues.len(), &msg.body[..]), (7, 2, &b"hello"[..]));
        assert!(msg.persistent);
        let Read::Ok(Record::Remove { ids, .. }, m) = read(&data.slice(n..)) else {
            panic!("remove")
        };
        assert_eq!(ids, vec![7]);
        assert!(matches!(read(&data.slice(n + m..)), Read::End));
        // Every truncation of the second record is reported, never read as a record.
        for cut in n + 1..n + m {
            assert!(
                matches!(read(&data.slice(n..cut)), Read::Bad(_)),
                "cut {cut}"
            );
        }
        // A flipped byte anywhere in the first record is caught by the checksum.
        for i in 0..n {
            let mut bad = out.clone();
            bad[i] ^= 0x5a;
            assert!(
                !matches!(read(&Bytes::from(bad)), Read::Ok(_, k) if k == n),
                "flip at {i}"
            );
        }
    }
}
