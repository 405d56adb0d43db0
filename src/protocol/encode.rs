//! Frame encoding into the connection's output buffer.
//!
//! Per-message frames (basic.deliver, basic.get-ok, confirms, content header and body) are
//! written by hand: amq-protocol's generator allocates for every flag field. A unit test
//! keeps each fast path byte-equal to the generator. Bodies are never copied when large:
//! [`OutBuf`] keeps them as shared `Bytes` chunks and writes them with vectored I/O.

use super::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD};
use amq_protocol::frame::{gen_frame, AMQPFrame};
use amq_protocol::protocol::AMQPClass;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Bodies at least this large are queued as shared chunks instead of copied.
const COPY_LIMIT: usize = 8 * 1024;

/// The connection's pending output: small frames coalesced in one buffer, large bodies
/// as shared chunks, in order.
#[derive(Debug, Default)]
pub struct OutBuf {
    chunks: VecDeque<Bytes>,
    cur: BytesMut,
    len: usize,
}

impl OutBuf {
    pub fn new() -> Self {
        OutBuf {
            chunks: VecDeque::new(),
            cur: BytesMut::new(),
            len: 0,
        }
    }

    /// Gives the buffer's memory back when nothing is pending (an idle connection); the
    /// next frame allocates again.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.cur = BytesMut::new();
            self.chunks = VecDeque::new();
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A released buffer is allocated again at the usual size, not grown from nothing.
    #[inline]
    fn ensure(&mut self) {
        if self.cur.capacity() == 0 {
            self.cur.reserve(4 * 1024);
        }
    }

    fn put(&mut self, b: &[u8]) {
        self.ensure();
        self.cur.extend_from_slice(b);
        self.len += b.len();
    }

    fn put_bytes(&mut self, b: &Bytes) {
        if b.len() < COPY_LIMIT {
            self.put(b);
        } else {
            if !self.cur.is_empty() {
                self.chunks.push_back(self.cur.split().freeze());
            }
            self.chunks.push_back(b.clone());
            self.len += b.len();
        }
    }

    /// Fills `slices` with what to write next; returns how many were filled.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for c in &self.chunks {
            if n == slices.len() {
                return n;
            }
            slices[n] = IoSlice::new(c);
            n += 1;
        }
        if n < slices.len() && !self.cur.is_empty() {
            slices[n] = IoSlice::new(&self.cur);
            n += 1;
        }
        n
    }

    /// Drops `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            if let Some(front) = self.chunks.front_mut() {
                if front.len() <= n {
                    n -= front.len();
                    self.chunks.pop_front();
                } else {
                    let _ = front.split_to(n);
                    n = 0;
                }
            } else {
                let _ = self.cur.split_to(n);
                n = 0;
            }
        }
        if self.cur.is_empty() && self.chunks.is_empty() {
            let cap = self.cur.capacity();
            if cap <= 16 * 1024 {
                // Light traffic: hold no buffer between writes, so that idle connections
                // cost little memory; the next frame allocates one.
                self.cur = BytesMut::new();
            } else if cap > 1024 * 1024 {
                // A burst grew the buffer a lot: give the memory back once it is drained.
                self.cur = BytesMut::with_capacity(4 * 1024);
            }
        }
    }

    /// Any method, through amq-protocol's generator.
    pub fn method(&mut self, channel: u16, class: AMQPClass) {
        let frame = AMQPFrame::Method(channel, class);
        match cookie_factory::gen(gen_frame(&frame), Vec::with_capacity(128)) {
            Ok((v, _)) => self.put(&v),
            Err(e) => tracing::error!(error = ?e, "could not serialise {frame:?}"),
        }
    }

    pub fn heartbeat(&mut self) {
        self.put(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    }

    /// Starts a method frame; returns the position of its size field for [`Self::end_frame`].
    fn begin_method(&mut self, channel: u16, class_id: u16, method_id: u16) -> usize {
        self.ensure();
        self.cur.put_u8(FRAME_METHOD);
        self.cur.put_u16(channel);
        let at = self.cur.len();
        self.cur.put_u32(0);
        self.cur.put_u16(class_id);
        self.cur.put_u16(method_id);
        at
    }

    fn end_frame(&mut self, size_at: usize) {
        let size = (self.cur.len() - size_at - 4) as u32;
        self.cur[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
        self.cur.put_u8(FRAME_END);
        self.len += size as usize + FRAME_OVERHEAD;
    }

    fn shortstr(&mut self, s: &[u8]) {
        let s = &s[..s.len().min(255)];
        self.cur.put_u8(s.len() as u8);
        self.cur.extend_from_slice(s);
    }

    pub fn basic_deliver(
        &mut self,
        channel: u16,
        consumer_tag: &[u8],
        delivery_tag: u64,
        redelivered: bool,
        exchange: &[u8],
        routing_key: &[u8],
    ) {
        let at = self.begin_method(channel, 60, 60);
        self.shortstr(consumer_tag);
        self.cur.put_u64(delivery_tag);
        self.cur.put_u8(redelivered as u8);
        self.shortstr(exchange);
        self.shortstr(routing_key);
        self.end_frame(at);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn basic_get_ok(
        &mut self,
        channel: u16,
        delivery_tag: u64,
        redelivered: bool,
        exchange: &[u8],
        routing_key: &[u8],
        message_count: u32,
    ) {
        let at = self.begin_method(channel, 60, 71);
        self.cur.put_u64(delivery_tag);
        self.cur.put_u8(redelivered as u8);
        self.shortstr(exchange);
        self.shortstr(routing_key);
        self.cur.put_u32(message_count);
        self.end_frame(at);
    }

    pub fn basic_return(
        &mut self,
        channel: u16,
        reply_code: u16,
        reply_text: &str,
        exchange: &[u8],
        routing_key: &[u8],
    ) {
        let at = self.begin_method(channel, 60, 50);
        self.cur.put_u16(reply_code);
        self.shortstr(reply_text.as_bytes());
        self.shortstr(exchange);
        self.shortstr(routing_key);
        self.end_frame(at);
    }

    /// basic.ack (confirm) to a publisher.
    pub fn basic_ack(&mut self, channel: u16, delivery_tag: u64, multiple: bool) {
        let at = self.begin_method(channel, 60, 80);
        self.cur.put_u64(delivery_tag);
        self.cur.put_u8(multiple as u8);
        self.end_frame(at);
    }

    /// basic.nack (negative confirm) to a publisher; requeue is always false.
    pub fn basic_nack(&mut self, channel: u16, delivery_tag: u64, multiple: bool) {
        let at = self.begin_method(channel, 60, 120);
        self.cur.put_u64(delivery_tag);
        self.cur.put_u8(multiple as u8);
        self.end_frame(at);
    }

    /// Content header and body frames for a message; the body is split by `frame_max`.
    /// An empty body gets no body frame, as RabbitMQ does.
    pub fn content(&mut self, channel: u16, properties: &[u8], body: &Bytes, frame_max: u32) {
        self.ensure();
        self.cur.put_u8(FRAME_HEADER);
        self.cur.put_u16(channel);
        let size = 12 + properties.len();
        self.cur.put_u32(size as u32);
        self.cur.put_u16(60);
        self.cur.put_u16(0);
        self.cur.put_u64(body.len() as u64);
        self.cur.extend_from_slice(properties);
        self.cur.put_u8(FRAME_END);
        self.len += size + FRAME_OVERHEAD;
        let max = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
        let mut off = 0;
        while off < body.len() {
            let end = (off + max).min(body.len());
            self.cur.put_u8(FRAME_BODY);
            self.cur.put_u16(channel);
            self.cur.put_u32((end - off) as u32);
            self.len += 7;
            self.put_bytes(&body.slice(off..end));
            self.put(&[FRAME_END]);
            off = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;

    fn gen(f: &AMQPFrame) -> Vec<u8> {
        cookie_factory::gen(gen_frame(f), Vec::new())
            .expect("gen")
            .0
    }

    fn flat(o: &OutBuf) -> Vec<u8> {
        let mut v = Vec::new();
        for c in &o.chunks {
            v.extend_from_slice(c);
        }
        v.extend_from_slice(&o.cur);
        assert_eq!(v.len(), o.len());
        v
    }

    #[test]
    fn deliver_matches_generator() {
        let mut o = OutBuf::new();
        o.basic_deliver(5, b"ctag", 42, true, b"ex", b"rk");
        let want = gen(&AMQPFrame::Method(
            5,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 42,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "rk".into(),
            })),
        ));
        assert_eq!(flat(&o), want);
    }

    #[test]
    fn get_ok_ack_nack_return_match_generator() {
        let mut o = OutBuf::new();
        o.basic_get_ok(1, 7, false, b"", b"q", 3);
        o.basic_ack(1, 9, true);
        o.basic_nack(1, 10, false);
        o.basic_return(1, 312, "NO_ROUTE", b"x", b"k");
        let mut want = gen(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: 7,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
                message_count: 3,
            })),
        ));
        want.extend(gen(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 9,
                multiple: true,
            })),
        )));
        want.extend(gen(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: 10,
                multiple: false,
                requeue: false,
            })),
        )));
        want.extend(gen(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "x".into(),
                routing_key: "k".into(),
            })),
        )));
        assert_eq!(flat(&o), want);
    }

    #[test]
    fn content_splits_body_by_frame_max() {
        let mut o = OutBuf::new();
        let body = Bytes::from(vec![7u8; 25_000]);
        o.content(1, &[0, 0], &body, 10_008);
        let v = flat(&o);
        // header frame: 7 + 14 + 1
        assert_eq!(&v[..3], &[FRAME_HEADER, 0, 1]);
        let mut off = 22;
        let mut sizes = Vec::new();
        while off < v.len() {
            assert_eq!(v[off], FRAME_BODY);
            let size = u32::from_be_bytes(v[off + 3..off + 7].try_into().unwrap()) as usize;
            sizes.push(size);
            assert_eq!(v[off + 7 + size], FRAME_END);
            off += 8 + size;
        }
        assert_eq!(sizes, vec![10_000, 10_000, 5_000]);
    }

    #[test]
    fn empty_body_has_no_body_frame() {
        let mut o = OutBuf::new();
        o.content(1, &[0, 0], &Bytes::new(), 131072);
        assert_eq!(o.len(), 22);
    }

    #[test]
    fn advance_across_chunks() {
        let mut o = OutBuf::new();
        o.heartbeat();
        o.put_bytes(&Bytes::from(vec![1u8; COPY_LIMIT]));
        o.heartbeat();
        let total = o.len();
        o.advance(3);
        o.advance(COPY_LIMIT);
        assert_eq!(o.len(), total - 3 - COPY_LIMIT);
        o.advance(o.len());
        assert!(o.is_empty());
    }

    #[test]
    fn a_drained_small_buffer_is_released_and_comes_back() {
        let mut o = OutBuf::new();
        assert_eq!(
            o.cur.capacity(),
            0,
            "nothing allocated before the first frame"
        );
        o.basic_ack(1, 7, false);
        assert!(o.cur.capacity() >= 4 * 1024);
        o.advance(o.len());
        assert_eq!(o.cur.capacity(), 0, "released once drained");
        o.basic_ack(1, 8, true);
        let mut v = Vec::new();
        let mut slices = [IoSlice::new(&[]); 4];
        let n = o.io_slices(&mut slices);
        for s in &slices[..n] {
            v.extend_from_slice(s);
        }
        assert_eq!(v.len(), 7 + 4 + 8 + 1 + 1, "one whole basic.ack frame");
        assert_eq!(&v[v.len() - 2..], &[1, FRAME_END]);
    }
}
