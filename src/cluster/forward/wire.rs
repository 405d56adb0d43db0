//! The forwarding link's frames: `[len u32 BE][kind u8][fields]`, fields in a compact
//! binary form (integers big-endian, strings and byte strings length-prefixed), so a
//! message body travels as its bytes, not as JSON. Decoding never panics: a short or
//! malformed frame is an error and the link is dropped.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest frame accepted from a peer (a message body is at most 512 MiB in RabbitMQ;
/// Warren's `max_message_size` default is 128 MiB).
pub const MAX_FRAME: usize = 256 << 20;

/// A message as it crosses the link.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub exchange: Bytes,
    pub routing_key: Bytes,
    pub properties: Bytes,
    pub body: Bytes,
}

/// What the home returns for a [`Frame::Call`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// basic.get: (seq, redelivered, delivery count, left, message), or empty.
    Got(Option<(u64, bool, u32, u32, Msg)>),
    Count(u32),
    Counts(u32, u32),
    Refused(u16, String),
    /// The queue does not exist on the home (or the home could not answer).
    Missing(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    // ---- proxy -> home ----
    /// `id` 0: no confirm wanted.
    Publish {
        id: u64,
        vhost: String,
        queue: String,
        msg: Msg,
    },
    Consume {
        cid: u64,
        vhost: String,
        queue: String,
        tag: String,
        no_ack: bool,
        exclusive: bool,
        prefetch: u32,
        priority: i64,
    },
    Cancel {
        cid: u64,
    },
    /// `how`: 0 ack, 1 requeue, 2 reject, 3 undelivered.
    Settle {
        vhost: String,
        queue: String,
        how: u8,
        seqs: Vec<u64>,
    },
    /// `call`: 0 get, 1 get no-ack, 2 purge, 3 delete (flags: 1 if-unused, 2 if-empty), 4 counts.
    Call {
        rid: u64,
        vhost: String,
        queue: String,
        call: u8,
        flags: u8,
    },
    // ---- home -> proxy ----
    Confirm {
        id: u64,
        ok: bool,
    },
    Deliver {
        cid: u64,
        seq: u64,
        redelivered: bool,
        delivery_count: u32,
        msg: Msg,
    },
    /// The consumer is gone on the home (cancelled by the proxy, refused, or its queue
    /// was deleted).
    Cancelled {
        cid: u64,
    },
    Reply {
        rid: u64,
        answer: Answer,
    },
}

fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

fn put_msg(b: &mut BytesMut, m: &Msg) {
    put_str(b, &m.exchange);
    put_str(b, &m.routing_key);
    put_str(b, &m.properties);
    put_str(b, &m.body);
}

/// Appends one frame (with its length prefix) to `b`.
pub fn encode(f: &Frame, b: &mut BytesMut) {
    let start = b.len();
    b.put_u32(0);
    match f {
        Frame::Publish {
            id,
            vhost,
            queue,
            msg,
        } => {
            b.put_u8(1);
            b.put_u64(*id);
            put_str(b, vhost.as_bytes());
            put_str(b, queue.as_bytes());
            put_msg(b, msg);
        }
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
            b.put_u8(2);
            b.put_u64(*cid);
            put_str(b, vhost.as_bytes());
            put_str(b, queue.as_bytes());
            put_str(b, tag.as_bytes());
            b.put_u8(*no_ack as u8);
            b.put_u8(*exclusive as u8);
            b.put_u32(*prefetch);
            b.put_i64(*priority);
        }
        Frame::Cancel { cid } => {
            b.put_u8(3);
            b.put_u64(*cid);
        }
        Frame::Settle {
            vhost,
            queue,
            how,
            seqs,
        } => {
            b.put_u8(4);
            put_str(b, vhost.as_bytes());
            put_str(b, queue.as_bytes());
            b.put_u8(*how);
            b.put_u32(seqs.len() as u32);
            for s in seqs {
                b.put_u64(*s);
            }
        }
        Frame::Call {
            rid,
            vhost,
            queue,
            call,
            flags,
        } => {
            b.put_u8(5);
            b.put_u64(*rid);
            put_str(b, vhost.as_bytes());
            put_str(b, queue.as_bytes());
            b.put_u8(*call);
            b.put_u8(*flags);
        }
        Frame::Confirm { id, ok } => {
            b.put_u8(6);
            b.put_u64(*id);
            b.put_u8(*ok as u8);
        }
        Frame::Deliver {
            cid,
            seq,
            redelivered,
            delivery_count,
            msg,
        } => {
            b.put_u8(7);
            b.put_u64(*cid);
            b.put_u64(*seq);
            b.put_u8(*redelivered as u8);
            b.put_u32(*delivery_count);
            put_msg(b, msg);
        }
        Frame::Cancelled { cid } => {
            b.put_u8(8);
            b.put_u64(*cid);
        }
        Frame::Reply { rid, answer } => {
            b.put_u8(9);
            b.put_u64(*rid);
            match answer {
                Answer::Got(None) => b.put_u8(0),
                Answer::Got(Some((seq, redelivered, count, left, msg))) => {
                    b.put_u8(1);
                    b.put_u64(*seq);
                    b.put_u8(*redelivered as u8);
                    b.put_u32(*count);
                    b.put_u32(*left);
                    put_msg(b, msg);
                }
                Answer::Count(n) => {
                    b.put_u8(2);
                    b.put_u32(*n);
                }
                Answer::Counts(n, c) => {
                    b.put_u8(3);
                    b.put_u32(*n);
                    b.put_u32(*c);
                }
                Answer::Refused(code, text) => {
                    b.put_u8(4);
                    b.put_u16(*code);
                    put_str(b, text.as_bytes());
                }
                Answer::Missing(text) => {
                    b.put_u8(5);
                    put_str(b, text.as_bytes());
                }
            }
        }
    }
    let len = (b.len() - start - 4) as u32;
    b[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A malformed frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

struct Rd(Bytes);

impl Rd {
    fn need(&self, n: usize) -> Result<(), Malformed> {
        if self.0.remaining() < n {
            return Err(Malformed);
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn bool(&mut self) -> Result<bool, Malformed> {
        Ok(self.u8()? != 0)
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn i64(&mut self) -> Result<i64, Malformed> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn bytes(&mut self) -> Result<Bytes, Malformed> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    fn string(&mut self) -> Result<String, Malformed> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Malformed)
    }
    fn msg(&mut self) -> Result<Msg, Malformed> {
        Ok(Msg {
            exchange: self.bytes()?,
            routing_key: self.bytes()?,
            properties: self.bytes()?,
            body: self.bytes()?,
        })
    }
}

/// Takes one complete frame off the front of `buf`: `Ok(None)` when more bytes are
/// needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, Malformed> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME || len == 0 {
        return Err(Malformed);
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut r = Rd(buf.split_to(len).freeze());
    let f = match r.u8()? {
        1 => Frame::Publish {
            id: r.u64()?,
            vhost: r.string()?,
            queue: r.string()?,
            msg: r.msg()?,
        },
        2 => Frame::Consume {
            cid: r.u64()?,
            vhost: r.string()?,
            queue: r.string()?,
            tag: r.string()?,
            no_ack: r.bool()?,
            exclusive: r.bool()?,
            prefetch: r.u32()?,
            priority: r.i64()?,
        },
        3 => Frame::Cancel { cid: r.u64()? },
        4 => {
            let vhost = r.string()?;
            let queue = r.string()?;
            let how = r.u8()?;
            let n = r.u32()? as usize;
            r.need(n.saturating_mul(8))?;
            let mut seqs = Vec::with_capacity(n);
            for _ in 0..n {
                seqs.push(r.u64()?);
            }
            Frame::Settle {
                vhost,
                queue,
                how,
                seqs,
            }
        }
        5 => Frame::Call {
            rid: r.u64()?,
            vhost: r.string()?,
            queue: r.string()?,
            call: r.u8()?,
            flags: r.u8()?,
        },
        6 => Frame::Confirm {
            id: r.u64()?,
            ok: r.bool()?,
        },
        7 => Frame::Deliver {
            cid: r.u64()?,
            seq: r.u64()?,
            redelivered: r.bool()?,
            delivery_count: r.u32()?,
            msg: r.msg()?,
        },
        8 => Frame::Cancelled { cid: r.u64()? },
        9 => {
            let rid = r.u64()?;
            let answer = match r.u8()? {
                0 => Answer::Got(None),
                1 => Answer::Got(Some((r.u64()?, r.bool()?, r.u32()?, r.u32()?, r.msg()?))),
                2 => Answer::Count(r.u32()?),
                3 => Answer::Counts(r.u32()?, r.u32()?),
                4 => Answer::Refused(r.u16()?, r.string()?),
                5 => Answer::Missing(r.string()?),
                _ => return Err(Malformed),
            };
            Frame::Reply { rid, answer }
        }
        _ => return Err(Malformed),
    };
    if r.0.has_remaining() {
        return Err(Malformed);
    }
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Msg {
        Msg {
            exchange: Bytes::from_static(b"x"),
            routing_key: Bytes::from_static(b"rk"),
            properties: Bytes::from_static(&[0x10, 0, 2]),
            body: Bytes::from(vec![7u8; 1000]),
        }
    }

    #[test]
    fn every_frame_round_trips_and_partial_input_waits() {
        let frames = vec![
            Frame::Publish {
                id: 9,
                vhost: "/".into(),
                queue: "q".into(),
                msg: msg(),
            },
            Frame::Consume {
                cid: 1,
                vhost: "/".into(),
                queue: "q".into(),
                tag: "ctag".into(),
                no_ack: false,
                exclusive: true,
                prefetch: 10,
                priority: -3,
            },
            Frame::Cancel { cid: 1 },
            Frame::Settle {
                vhost: "v".into(),
                queue: "q".into(),
                how: 1,
                seqs: vec![0, 5, u64::MAX],
            },
            Frame::Call {
                rid: 3,
                vhost: "/".into(),
                queue: "q".into(),
                call: 3,
                flags: 2,
            },
            Frame::Confirm { id: 9, ok: false },
            Frame::Deliver {
                cid: 1,
                seq: 4,
                redelivered: true,
                delivery_count: 2,
                msg: msg(),
            },
            Frame::Cancelled { cid: 1 },
            Frame::Reply {
                rid: 3,
                answer: Answer::Got(Some((4, false, 0, 12, msg()))),
            },
            Frame::Reply {
                rid: 4,
                answer: Answer::Refused(406, "in use".into()),
            },
            Frame::Reply {
                rid: 5,
                answer: Answer::Counts(1, 2),
            },
        ];
        let mut b = BytesMut::new();
        for f in &frames {
            encode(f, &mut b);
        }
        // Fed one byte at a time, every frame comes out once, in order.
        let all = b.freeze();
        let mut input = BytesMut::new();
        let mut out = Vec::new();
        for byte in all.iter() {
            input.put_u8(*byte);
            while let Some(f) = decode(&mut input).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert!(input.is_empty());
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(decode(&mut b), Err(Malformed));
        let mut b = BytesMut::from(&[0, 0, 0, 1, 42][..]);
        assert_eq!(decode(&mut b), Err(Malformed));
        // A settle claiming more ids than it carries.
        let mut b = BytesMut::new();
        encode(
            &Frame::Settle {
                vhost: "/".into(),
                queue: "q".into(),
                how: 0,
                seqs: vec![1],
            },
            &mut b,
        );
        let n = b.len();
        b[n - 12..n - 8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&mut b), Err(Malformed));
        // A string whose length runs past the frame.
        let mut b = BytesMut::new();
        encode(&Frame::Cancelled { cid: 1 }, &mut b);
        b[4] = 1;
        assert_eq!(decode(&mut b), Err(Malformed));
    }
}
