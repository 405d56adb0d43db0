//! A minimal AMQP 0-9-1 client for the data path: handshake, one channel, and hand-coded
//! frames for publish, deliver, ack and confirm.
//!
//! Why not lapin here: a load generator must cost much less per message than the broker
//! it measures. lapin costs 9–14 µs of CPU per message (an I/O thread, a frame queue,
//! per-frame allocations and wake-ups), which made warren-perf, not the broker, the
//! bottleneck. Here frames are encoded straight into one write buffer and parsed in place
//! from one read buffer, so a batch of messages costs one `write` and a few `read`s. lapin
//! is still used for the topology (declares, bindings, deletes), where cost does not matter.

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_END: u8 = 0xCE;

/// The data channel; one per connection.
pub const CHANNEL: u16 = 1;
/// The frame_max we ask for.
const FRAME_MAX: u32 = 131_072;

/// (class, method) ids of the methods this client sends or expects.
pub mod id {
    pub const CONNECTION_START: (u16, u16) = (10, 10);
    pub const CONNECTION_TUNE: (u16, u16) = (10, 30);
    pub const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
    pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
    pub const CONNECTION_CLOSE_OK: (u16, u16) = (10, 51);
    pub const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
    pub const CHANNEL_CLOSE: (u16, u16) = (20, 40);
    pub const QOS_OK: (u16, u16) = (60, 11);
    pub const CONSUME_OK: (u16, u16) = (60, 21);
    pub const CANCEL_OK: (u16, u16) = (60, 31);
    pub const RETURN: (u16, u16) = (60, 50);
    pub const DELIVER: (u16, u16) = (60, 60);
    pub const ACK: (u16, u16) = (60, 80);
    pub const NACK: (u16, u16) = (60, 120);
    pub const SELECT_OK: (u16, u16) = (85, 11);
}

/// A frame parsed in place from the read buffer. Its channel is not kept: this client
/// opens only channel 1, and channel 0 carries only connection methods.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// (class, method) of a method frame.
    pub fn method(&self) -> Option<(u16, u16)> {
        (self.kind == FRAME_METHOD && self.payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }

    /// The method's arguments (after class and method id).
    pub fn args(&self) -> Cursor<'a> {
        Cursor(self.payload.get(4..).unwrap_or_default())
    }

    pub fn is_header(&self) -> bool {
        self.kind == FRAME_HEADER
    }

    pub fn is_body(&self) -> bool {
        self.kind == FRAME_BODY
    }

    /// Body size announced by a content header frame.
    pub fn body_size(&self) -> Option<u64> {
        let b = self.payload.get(4..12)?;
        Some(u64::from_be_bytes(b.try_into().ok()?))
    }

    /// For connection.close / channel.close: "CODE TEXT".
    pub fn close_reason(&self) -> String {
        let mut a = self.args();
        let code = a.u16().unwrap_or(0);
        let text = a.shortstr().unwrap_or_default();
        format!("{code} {}", String::from_utf8_lossy(text))
    }
}

/// Reads method arguments.
#[derive(Debug, Clone, Copy)]
pub struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    }
    pub fn shortstr(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
}

/// Buffered frame reader over the read half of the socket.
pub struct Reader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Reader {
    fn new(rd: OwnedReadHalf) -> Self {
        Reader {
            rd,
            buf: vec![0; 4 * FRAME_MAX as usize],
            pos: 0,
            len: 0,
        }
    }

    /// The next complete frame already in the buffer, without reading the socket.
    pub fn try_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        let avail = &self.buf[self.pos..self.len];
        if avail.len() < 7 {
            return Ok(None);
        }
        let size = u32::from_be_bytes(avail[3..7].try_into().unwrap()) as usize;
        if size > self.buf.len() - 8 {
            return Err(bad(format!("frame of {size} bytes")));
        }
        if avail.len() < size + 8 {
            return Ok(None);
        }
        if avail[7 + size] != FRAME_END {
            return Err(bad("frame end octet missing".into()));
        }
        let start = self.pos;
        self.pos += size + 8;
        let f = &self.buf[start..start + size + 8];
        Ok(Some(Frame {
            kind: f[0],
            payload: &f[7..7 + size],
        }))
    }

    /// One `read` from the socket into the buffer (cancel safe). EOF is an error.
    pub async fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        } else if self.buf.len() - self.len < FRAME_MAX as usize {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        let n = self.rd.read(&mut self.buf[self.len..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the broker",
            ));
        }
        self.len += n;
        Ok(())
    }

    /// Reads frames until a method frame `want` arrives, skipping heartbeats; a close
    /// from the broker is an error.
    pub async fn expect(&mut self, want: (u16, u16)) -> io::Result<()> {
        loop {
            while let Some(f) = self.try_frame()? {
                match f.method() {
                    Some(m) if m == want => return Ok(()),
                    Some(id::CONNECTION_CLOSE) | Some(id::CHANNEL_CLOSE) => {
                        return Err(bad(format!("closed by the broker: {}", f.close_reason())))
                    }
                    _ => {}
                }
            }
            self.fill().await?;
        }
    }
}

pub fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Appends frames to a write buffer.
#[derive(Debug, Default)]
pub struct Out {
    pub buf: Vec<u8>,
}

impl Out {
    /// Starts a frame; returns where its size goes.
    fn begin(&mut self, kind: u8, channel: u16) -> usize {
        self.buf.push(kind);
        self.buf.extend_from_slice(&channel.to_be_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        at
    }

    fn end(&mut self, at: usize) {
        let size = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
        self.buf.push(FRAME_END);
    }

    fn method(&mut self, channel: u16, (class, method): (u16, u16), args: impl FnOnce(&mut Self)) {
        let at = self.begin(FRAME_METHOD, channel);
        self.u16(class);
        self.u16(method);
        args(self);
        self.end(at);
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn shortstr(&mut self, s: &str) {
        self.u8(s.len().min(255) as u8);
        self.buf
            .extend_from_slice(&s.as_bytes()[..s.len().min(255)]);
    }
    fn longstr(&mut self, s: &[u8]) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s);
    }
    fn empty_table(&mut self) {
        self.u32(0);
    }

    /// basic.publish + content header + body frames (split at `frame_max`).
    pub fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        persistent: bool,
        body: &[u8],
        frame_max: u32,
    ) {
        self.method(CHANNEL, (60, 40), |o| {
            o.u16(0);
            o.shortstr(exchange);
            o.shortstr(routing_key);
            o.u8(u8::from(mandatory));
        });
        let at = self.begin(FRAME_HEADER, CHANNEL);
        self.u16(60);
        self.u16(0);
        self.u64(body.len() as u64);
        if persistent {
            self.u16(0x1000); // delivery-mode present
            self.u8(2);
        } else {
            self.u16(0);
        }
        self.end(at);
        for chunk in body.chunks(frame_max as usize - 8) {
            let at = self.begin(FRAME_BODY, CHANNEL);
            self.buf.extend_from_slice(chunk);
            self.end(at);
        }
    }

    pub fn ack(&mut self, tag: u64, multiple: bool) {
        self.method(CHANNEL, (60, 80), |o| {
            o.u64(tag);
            o.u8(u8::from(multiple));
        });
    }

    pub fn qos(&mut self, prefetch: u16) {
        self.method(CHANNEL, (60, 10), |o| {
            o.u32(0);
            o.u16(prefetch);
            o.u8(0);
        });
    }

    /// basic.consume; `stream_offset` adds an `x-stream-offset` argument (a number is sent
    /// as a long-long offset, anything else — first, last, next, 30m — as a string).
    pub fn consume(&mut self, queue: &str, tag: &str, no_ack: bool, stream_offset: Option<&str>) {
        self.method(CHANNEL, (60, 20), |o| {
            o.u16(0);
            o.shortstr(queue);
            o.shortstr(tag);
            o.u8(if no_ack { 0b10 } else { 0 });
            match stream_offset {
                None => o.empty_table(),
                Some(v) => {
                    let at = o.buf.len();
                    o.u32(0);
                    o.shortstr("x-stream-offset");
                    match v.parse::<i64>() {
                        Ok(n) => {
                            o.u8(b'l');
                            o.u64(n as u64);
                        }
                        Err(_) => {
                            o.u8(b'S');
                            o.longstr(v.as_bytes());
                        }
                    }
                    let len = (o.buf.len() - at - 4) as u32;
                    o.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
        });
    }

    pub fn cancel(&mut self, tag: &str) {
        self.method(CHANNEL, (60, 30), |o| {
            o.shortstr(tag);
            o.u8(0);
        });
    }

    pub fn confirm_select(&mut self) {
        self.method(CHANNEL, (85, 10), |o| o.u8(0));
    }

    pub fn connection_close(&mut self) {
        self.method(0, (10, 50), |o| {
            o.u16(200);
            o.shortstr("bye");
            o.u16(0);
            o.u16(0);
        });
    }
}

/// An open connection with channel 1 open: the read side and the write side, which
/// a producer hands to different tasks.
pub struct Conn {
    pub reader: Reader,
    pub tx: Tx,
}

/// The write side: a frame buffer and the socket it is flushed to.
pub struct Tx {
    pub writer: OwnedWriteHalf,
    pub out: Out,
    pub frame_max: u32,
}

impl Tx {
    /// Writes everything buffered in `out`.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.buf.is_empty() {
            self.writer.write_all(&self.out.buf).await?;
            self.out.buf.clear();
        }
        Ok(())
    }
}

/// What the broker URI says.
struct Target {
    addr: String,
    user: String,
    password: String,
    vhost: String,
}

fn parse_uri(uri: &str) -> io::Result<Target> {
    let rest = uri
        .strip_prefix("amqp://")
        .ok_or_else(|| bad(format!("{uri}: only amqp:// URIs are supported")))?;
    let (authority, vhost) = match rest.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (rest, None),
    };
    let (creds, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    let (user, password) = match creds {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (decode(u), decode(p)),
            None => (decode(c), String::new()),
        },
        None => ("guest".into(), "guest".into()),
    };
    let hostport = if hostport.is_empty() {
        "localhost"
    } else {
        hostport
    };
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5672")
    };
    let vhost = match vhost {
        None | Some("") => "/".to_string(),
        Some(v) => decode(v),
    };
    Ok(Target {
        addr,
        user,
        password,
        vhost,
    })
}

/// Percent-decoding for URI parts.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Conn {
    /// Connects, authenticates with PLAIN, opens the vhost and channel 1. Heartbeats
    /// are turned off (a run is short, and both brokers accept 0).
    pub async fn open(uri: &str) -> io::Result<Conn> {
        // A broker that accepts but never answers (e.g. RabbitMQ out of file descriptors)
        // must not hang the run.
        match tokio::time::timeout(std::time::Duration::from_secs(15), Self::open_inner(uri)).await
        {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no handshake within 15 s",
            )),
        }
    }

    async fn open_inner(uri: &str) -> io::Result<Conn> {
        let t = parse_uri(uri)?;
        let sock = TcpStream::connect(&t.addr).await?;
        sock.set_nodelay(true)?;
        let (rd, writer) = sock.into_split();
        let mut c = Conn {
            reader: Reader::new(rd),
            tx: Tx {
                writer,
                out: Out::default(),
                frame_max: FRAME_MAX,
            },
        };
        c.tx.writer.write_all(b"AMQP\x00\x00\x09\x01").await?;
        c.reader.expect(id::CONNECTION_START).await?;
        let mut response = vec![0u8];
        response.extend_from_slice(t.user.as_bytes());
        response.push(0);
        response.extend_from_slice(t.password.as_bytes());
        c.tx.out.method(0, (10, 11), |o| {
            // client-properties: {product: "warren-perf"}
            let mut table = Out::default();
            table.shortstr("product");
            table.u8(b'S');
            table.longstr(b"warren-perf");
            o.longstr(&table.buf);
            o.shortstr("PLAIN");
            o.longstr(&response);
            o.shortstr("en_US");
        });
        c.tx.flush().await?;
        // Tune: channel_max, frame_max, heartbeat.
        let frame_max = loop {
            if let Some(f) = c.reader.try_frame()? {
                match f.method() {
                    Some(id::CONNECTION_TUNE) => {
                        let mut a = f.args();
                        a.u16();
                        break a.u32().unwrap_or(0);
                    }
                    Some(id::CONNECTION_CLOSE) => {
                        return Err(bad(format!("refused: {}", f.close_reason())))
                    }
                    _ => continue,
                }
            }
            c.reader.fill().await?;
        };
        c.tx.frame_max = match frame_max {
            0 => FRAME_MAX,
            n => n.min(FRAME_MAX),
        };
        let fm = c.tx.frame_max;
        c.tx.out.method(0, (10, 31), |o| {
            o.u16(1);
            o.u32(fm);
            o.u16(0);
        });
        let vhost = t.vhost.clone();
        c.tx.out.method(0, (10, 40), |o| {
            o.shortstr(&vhost);
            o.shortstr("");
            o.u8(0);
        });
        c.tx.flush().await?;
        c.reader.expect(id::CONNECTION_OPEN_OK).await?;
        c.tx.out.method(CHANNEL, (20, 10), |o| o.shortstr(""));
        c.tx.flush().await?;
        c.reader.expect(id::CHANNEL_OPEN_OK).await?;
        Ok(c)
    }
}

/// The first bytes of a complete message body.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    bytes: [u8; 16],
    len: usize,
}

impl Head {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Collects the first bytes of a message body across body frames (the stamp lives in
/// the first 12), and says when the body is complete.
#[derive(Debug, Default)]
pub struct Content {
    remaining: u64,
    head: [u8; 16],
    head_len: usize,
    active: bool,
}

impl Content {
    /// A content header arrived: expect `size` bytes of body.
    pub fn start(&mut self, size: u64) {
        self.remaining = size;
        self.head_len = 0;
        self.active = true;
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// Adds a body frame; returns the head of the body once the body is complete.
    pub fn add(&mut self, chunk: &[u8]) -> Option<Head> {
        let take = (self.head.len() - self.head_len).min(chunk.len());
        self.head[self.head_len..self.head_len + take].copy_from_slice(&chunk[..take]);
        self.head_len += take;
        self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
        self.finish_if_done()
    }

    /// For an empty body, complete right after the header.
    pub fn finish_if_done(&mut self) -> Option<Head> {
        if self.active && self.remaining == 0 {
            self.active = false;
            Some(Head {
                bytes: self.head,
                len: self.head_len,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parts() {
        let t = parse_uri("amqp://u%40x:p@127.0.0.1:5682/%2f").unwrap();
        assert_eq!(t.addr, "127.0.0.1:5682");
        assert_eq!((t.user.as_str(), t.password.as_str()), ("u@x", "p"));
        assert_eq!(t.vhost, "/");
        let t = parse_uri("amqp://localhost/v1").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.vhost.as_str()),
            ("localhost:5672", "v1")
        );
        assert_eq!(t.user, "guest");
    }

    #[test]
    fn consume_carries_the_stream_offset() {
        let table = |value: &[u8]| {
            let mut t = vec![15u8];
            t.extend_from_slice(b"x-stream-offset");
            t.extend_from_slice(value);
            let mut out = (t.len() as u32).to_be_bytes().to_vec();
            out.extend(t);
            out.push(FRAME_END);
            out
        };
        let mut o = Out::default();
        o.consume("q", "t", false, Some("first"));
        assert!(o.buf.ends_with(&table(b"S\0\0\0\x05first")));
        let mut o = Out::default();
        o.consume("q", "t", false, Some("42"));
        assert!(o.buf.ends_with(&table(b"l\0\0\0\0\0\0\0\x2a")));
        let mut o = Out::default();
        o.consume("q", "t", true, None);
        assert!(o.buf.ends_with(&[0b10, 0, 0, 0, 0, FRAME_END]));
    }

    #[test]
    fn publish_frames_split_at_frame_max() {
        let mut o = Out::default();
        o.publish("ex", "rk", false, true, &[7u8; 300], 108);
        // method, header, then 300 bytes in 100-byte body frames.
        let mut frames = Vec::new();
        let mut i = 0;
        while i < o.buf.len() {
            let size = u32::from_be_bytes(o.buf[i + 3..i + 7].try_into().unwrap()) as usize;
            assert_eq!(o.buf[i + 7 + size], FRAME_END);
            frames.push((o.buf[i], size));
            i += size + 8;
        }
        assert_eq!(
            frames,
            vec![
                (1, 4 + 2 + 3 + 3 + 1),
                (2, 12 + 2 + 1),
                (3, 100),
                (3, 100),
                (3, 100)
            ]
        );
    }

    #[test]
    fn content_head_spans_frames() {
        let mut c = Content::default();
        c.start(20);
        assert!(c.add(&[1; 5]).is_none());
        let head = c.add(&[2; 15]).unwrap().bytes().to_vec();
        assert_eq!(head.len(), 16);
        assert_eq!(&head[..6], &[1, 1, 1, 1, 1, 2]);
        c.start(0);
        assert_eq!(c.finish_if_done().unwrap().bytes().len(), 0);
    }
}
