//! Frame decoding: splits complete frames out of the read buffer.
//!
//! The 7-byte frame header is checked *before* waiting for the payload, so a peer that
//! announces a huge frame is refused at once instead of making us buffer it (amq-protocol's
//! parser would wait for 4 GiB). Bodies and content properties are zero-copy slices of the
//! read buffer. `basic.publish` and `basic.ack` are decoded by hand (they arrive once per
//! message); every other method goes through amq-protocol's generated parser.

use super::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD};
use crate::error::AmqpError;
use amq_protocol::protocol::AMQPClass;
use bytes::{Buf, Bytes, BytesMut};

/// A short string received on the wire, kept as the received bytes. UTF-8 is validated
/// once, on construction; `ByteString` then hands out `&str` without re-validating (it
/// ran on every routing-key and exchange-name lookup before).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ShortStr(bytestring::ByteString);

impl ShortStr {
    pub fn from_bytes(b: Bytes) -> Result<ShortStr, std::str::Utf8Error> {
        bytestring::ByteString::try_from(b).map(ShortStr)
    }
    pub fn from_static(s: &'static str) -> ShortStr {
        ShortStr(bytestring::ByteString::from_static(s))
    }
    pub fn copy_from(s: &str) -> ShortStr {
        // At most 255 bytes, cut back to a character boundary.
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        ShortStr(bytestring::ByteString::from(&s[..end]))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// `basic.publish`, decoded by hand.
#[derive(Debug, Clone)]
pub struct Publish {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub mandatory: bool,
    pub immediate: bool,
}

/// A decoded method.
#[derive(Debug)]
pub enum Method {
    Publish(Publish),
    Ack {
        delivery_tag: u64,
        multiple: bool,
    },
    /// basic.qos by hand: amq-protocol drops prefetch_size, which RabbitMQ refuses when
    /// non-zero.
    Qos {
        prefetch_size: u32,
        prefetch_count: u16,
        global: bool,
    },
    Other(Box<AMQPClass>),
}

impl Method {
    pub fn ids(&self) -> (u16, u16) {
        match self {
            Method::Publish(_) => (60, 40),
            Method::Ack { .. } => (60, 80),
            Method::Qos { .. } => (60, 10),
            Method::Other(c) => (c.get_amqp_class_id(), c.get_amqp_method_id()),
        }
    }
}

/// A content header: the class, the announced body size, and the raw property bytes
/// (property flags followed by the property list), re-sent unchanged on delivery.
#[derive(Debug, Clone)]
pub struct ContentHeader {
    pub class_id: u16,
    pub weight: u16,
    pub body_size: u64,
    pub properties: Bytes,
}

#[derive(Debug)]
pub enum Frame {
    Method(u16, Method),
    Header(u16, ContentHeader),
    Body(u16, Bytes),
    Heartbeat(u16),
}

/// The most the decoder reserves ahead for a frame still arriving.
const RESERVE_MAX: usize = 1 << 20;

/// Splits frames out of a read buffer. Holds the negotiated frame_max.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    pub frame_max: u32,
}

impl FrameDecoder {
    pub fn new(frame_max: u32) -> Self {
        FrameDecoder { frame_max }
    }

    /// Returns the next complete frame, `Ok(None)` when more bytes are needed, or the
    /// connection error to close with.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, AmqpError> {
        if buf.len() < 7 {
            return Ok(None);
        }
        let kind = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        // RabbitMQ tolerates payloads up to frame_max itself (clients that forget the
        // 8 bytes of overhead) and reports the limit as frame_max - 8.
        let limit = (self.frame_max as usize).saturating_sub(FRAME_OVERHEAD);
        if self.frame_max != 0 && size > self.frame_max as usize {
            return Err(AmqpError::frame_error(format_args!(
                "{}: {{frame_too_large,{size},{limit}}}",
                describe_frame(kind, &[])
            )));
        }
        let total = 7 + size + 1;
        if buf.len() < total {
            // Room for the rest of the frame, but never more than RESERVE_MAX ahead of the
            // bytes that came: with frame_max 0 (no limit) a 7-byte header announcing a
            // 4 GiB frame made this reserve 4 GiB at once (found by fuzz/ `frame`).
            buf.reserve((total - buf.len()).min(RESERVE_MAX));
            return Ok(None);
        }
        if buf[total - 1] != FRAME_END {
            let desc = describe_frame(kind, &buf[7..7 + size]);
            let reason = erlang_pair("invalid_frame_end_marker", buf[total - 1], desc.len() + 2);
            return Err(AmqpError::frame_error(format_args!("{desc}: {reason}")));
        }
        // The frames of a publish (method, header, body) arrive once per message: their
        // parts are split straight out of the read buffer, one shared-buffer reference
        // each, instead of splitting the frame and slicing it (twice the refcount traffic).
        match kind {
            FRAME_BODY => {
                buf.advance(7);
                let body = buf.split_to(size).freeze();
                buf.advance(1);
                return Ok(Some(Frame::Body(channel, body)));
            }
            FRAME_HEADER if size >= 14 => {
                let h = &buf[7..7 + 12];
                let class_id = u16::from_be_bytes([h[0], h[1]]);
                let weight = u16::from_be_bytes([h[2], h[3]]);
                let body_size =
                    u64::from_be_bytes([h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]]);
                buf.advance(7 + 12);
                let properties = buf.split_to(size - 12).freeze();
                buf.advance(1);
                return Ok(Some(Frame::Header(
                    channel,
                    ContentHeader {
                        class_id,
                        weight,
                        body_size,
                        properties,
                    },
                )));
            }
            FRAME_METHOD => {
                if let Some(p) = PublishLayout::of(&buf[7..7 + size]) {
                    let mut pos = 0;
                    let exchange =
                        split_range(buf, &mut pos, 7 + p.exchange.start, p.exchange.len());
                    let routing_key =
                        split_range(buf, &mut pos, 7 + p.routing_key.start, p.routing_key.len());
                    buf.advance(total - pos);
                    let not_utf8 = |_| syntax("short string is not valid UTF-8");
                    return Ok(Some(Frame::Method(
                        channel,
                        Method::Publish(Publish {
                            exchange: ShortStr::from_bytes(exchange).map_err(not_utf8)?,
                            routing_key: ShortStr::from_bytes(routing_key).map_err(not_utf8)?,
                            mandatory: p.bits & 1 != 0,
                            immediate: p.bits & 2 != 0,
                        }),
                    )));
                }
            }
            _ => {}
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(7);
        frame.truncate(size);
        let payload = frame;
        match kind {
            FRAME_METHOD => decode_method(channel, payload).map(Some),
            // Complete headers (14 bytes or more) and every body frame were taken above.
            FRAME_HEADER => Err(AmqpError::frame_error(format_args!(
                "content header frame too short"
            ))),
            FRAME_HEARTBEAT => Ok(Some(Frame::Heartbeat(channel))),
            other => Err(AmqpError::frame_error(format_args!(
                "{}: unknown_frame",
                describe_frame(other, &payload)
            ))),
        }
    }
}

/// A frame as RabbitMQ describes it in errors: `type 1, all octets = <<0,20,0,10,0>>`, or
/// `first 16 octets = <<...>>` for longer payloads (Erlang binary syntax).
pub fn describe_frame(kind: u8, payload: &[u8]) -> String {
    let (which, shown) = if payload.len() <= 16 {
        ("all", payload)
    } else {
        ("first 16", &payload[..16])
    };
    let octets: Vec<String> = shown.iter().map(|b| b.to_string()).collect();
    format!("type {kind}, {which} octets = <<{}>>", octets.join(","))
}

/// Prints `{tag,value}` as Erlang's `~p` does at output column `col`: on one line when it
/// fits in 80 columns, else broken after the comma with the value aligned under the tag
/// (RabbitMQ's reply texts carry that line break).
fn erlang_pair(tag: &str, value: impl std::fmt::Display, col: usize) -> String {
    let one_line = format!("{{{tag},{value}}}");
    if col + one_line.len() <= 80 {
        one_line
    } else {
        format!("{{{tag},\n{}{value}}}", " ".repeat(col + 1))
    }
}

fn syntax(what: &str) -> AmqpError {
    AmqpError::syntax_error(format_args!("{what}"))
}

fn decode_method(channel: u16, payload: Bytes) -> Result<Frame, AmqpError> {
    if payload.len() < 4 {
        return Err(syntax("method frame too short"));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    let method = match (class_id, method_id) {
        (60, 40) => Method::Publish(decode_publish(payload.slice(4..))?),
        (60, 80) => {
            if payload.len() < 13 {
                return Err(syntax("basic.ack too short"));
            }
            let tag =
                u64::from_be_bytes(payload[4..12].try_into().map_err(|_| syntax("basic.ack"))?);
            Method::Ack {
                delivery_tag: tag,
                multiple: payload[12] & 1 != 0,
            }
        }
        (60, 10) => {
            if payload.len() < 11 {
                return Err(syntax("basic.qos too short"));
            }
            Method::Qos {
                prefetch_size: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
                prefetch_count: u16::from_be_bytes([payload[8], payload[9]]),
                global: payload[10] & 1 != 0,
            }
        }
        _ => {
            if !known_method(class_id, method_id) {
                return Err(AmqpError::unknown_method(class_id, method_id));
            }
            match amq_protocol::protocol::parse_class(&payload[..]) {
                Ok((_, class)) => Method::Other(Box::new(class)),
                Err(_) => {
                    // RabbitMQ's wording: the argument bytes it could not decode.
                    let args: Vec<String> = payload[4..].iter().map(|b| b.to_string()).collect();
                    return Err(AmqpError::frame_error(format_args!(
                        "cannot decode <<{}>>",
                        args.join(",")
                    ))
                    .with_method(class_id, method_id));
                }
            }
        }
    };
    Ok(Frame::Method(channel, method))
}

/// Whether amq-protocol's parser (and this broker) know the method ids.
fn known_method(class_id: u16, method_id: u16) -> bool {
    let ids: &[u16] = match class_id {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        30 => &[10, 11],
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    ids.contains(&method_id)
}

fn take_shortstr(p: &mut Bytes) -> Result<ShortStr, AmqpError> {
    if p.is_empty() {
        return Err(syntax("short string truncated"));
    }
    let len = p[0] as usize;
    if p.len() < 1 + len {
        return Err(syntax("short string truncated"));
    }
    p.advance(1);
    let s = p.split_to(len);
    ShortStr::from_bytes(s).map_err(|_| syntax("short string is not valid UTF-8"))
}

/// Where a well-formed basic.publish payload keeps its strings (offsets in the payload).
/// `None` for any other method or a malformed publish (the general path reports it).
struct PublishLayout {
    exchange: std::ops::Range<usize>,
    routing_key: std::ops::Range<usize>,
    bits: u8,
}

impl PublishLayout {
    fn of(p: &[u8]) -> Option<PublishLayout> {
        if p.get(..4)? != [0, 60, 0, 40] {
            return None;
        }
        let short = |at: usize| -> Option<std::ops::Range<usize>> {
            let len = *p.get(at)? as usize;
            let r = at + 1..at + 1 + len;
            (r.end <= p.len()).then_some(r)
        };
        let exchange = short(6)?;
        let routing_key = short(exchange.end)?;
        let bits = *p.get(routing_key.end)?;
        Some(PublishLayout {
            exchange,
            routing_key,
            bits,
        })
    }
}

/// Splits `buf[at..at + len]` out of the read buffer, `pos` being how far `buf` was already
/// consumed (relative to where it started). Empty strings take no buffer reference.
fn split_range(buf: &mut BytesMut, pos: &mut usize, at: usize, len: usize) -> Bytes {
    buf.advance(at - *pos);
    *pos = at + len;
    if len == 0 {
        return Bytes::new();
    }
    buf.split_to(len).freeze()
}

fn decode_publish(mut p: Bytes) -> Result<Publish, AmqpError> {
    if p.len() < 2 {
        return Err(syntax("basic.publish too short"));
    }
    p.advance(2); // reserved-1 (ticket)
    let exchange = take_shortstr(&mut p)?;
    let routing_key = take_shortstr(&mut p)?;
    let bits = p
        .first()
        .copied()
        .ok_or_else(|| syntax("basic.publish too short"))?;
    Ok(Publish {
        exchange,
        routing_key,
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::{gen_frame, AMQPFrame};
    use amq_protocol::protocol::{basic, AMQPClass};

    fn gen(f: &AMQPFrame) -> Vec<u8> {
        let (v, _) = cookie_factory::gen(gen_frame(f), Vec::new()).expect("gen");
        v
    }

    fn publish_frame() -> Vec<u8> {
        gen(&AMQPFrame::Method(
            3,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "ex".into(),
                routing_key: "a.b".into(),
                mandatory: true,
                immediate: false,
            })),
        ))
    }

    /// Found by the `frame` fuzz target: without a frame_max, a header announcing a
    /// 3.4 GB frame reserved 3.4 GB before a byte of it came.
    #[test]
    fn huge_announced_frame_reserves_little() {
        let mut buf = BytesMut::from(&[1u8, 0, 0, 0xce, 0, 0, 0, b'x'][..]);
        assert!(FrameDecoder::new(0).decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 2 << 20, "reserved {}", buf.capacity());
    }

    #[test]
    fn publish_fast_path_matches_generator() {
        let mut buf = BytesMut::from(&publish_frame()[..]);
        let f = FrameDecoder::new(131072).decode(&mut buf).unwrap().unwrap();
        match f {
            Frame::Method(3, Method::Publish(p)) => {
                assert_eq!(p.exchange.as_str(), "ex");
                assert_eq!(p.routing_key.as_str(), "a.b");
                assert!(p.mandatory && !p.immediate);
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn ack_fast_path_matches_generator() {
        let v = gen(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 77,
                multiple: true,
            })),
        ));
        let mut buf = BytesMut::from(&v[..]);
        match FrameDecoder::new(131072).decode(&mut buf).unwrap().unwrap() {
            Frame::Method(
                1,
                Method::Ack {
                    delivery_tag: 77,
                    multiple: true,
                },
            ) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_input_at_every_cut_is_incomplete() {
        let v = publish_frame();
        for cut in 0..v.len() {
            let mut buf = BytesMut::from(&v[..cut]);
            assert!(
                FrameDecoder::new(131072)
                    .decode(&mut buf)
                    .unwrap()
                    .is_none(),
                "cut {cut}"
            );
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn bad_frame_end_is_frame_error() {
        let mut v = publish_frame();
        let n = v.len();
        v[n - 1] = 0;
        let err = FrameDecoder::new(131072)
            .decode(&mut BytesMut::from(&v[..]))
            .unwrap_err();
        assert_eq!(err.code, 501);
    }

    #[test]
    fn oversized_frame_refused_from_header() {
        let v = [1u8, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF];
        let err = FrameDecoder::new(131072)
            .decode(&mut BytesMut::from(&v[..]))
            .unwrap_err();
        assert_eq!(err.code, 501);
    }

    #[test]
    fn unknown_method_is_reported() {
        let v = [1u8, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE];
        let err = FrameDecoder::new(131072)
            .decode(&mut BytesMut::from(&v[..]))
            .unwrap_err();
        assert_eq!(err.code, 503);
    }

    #[test]
    fn publish_header_body_in_one_buffer_split_exactly() {
        let mut v = publish_frame();
        v.extend(gen(&AMQPFrame::Method(
            3,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "q".into(),
                mandatory: false,
                immediate: true,
            })),
        )));
        // Content header: class 60, weight 0, body size 3, property flags 0x1000 (delivery
        // mode) and the value 2.
        v.extend_from_slice(&[2, 0, 3, 0, 0, 0, 15, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        v.extend_from_slice(&[0x10, 0, 2, 0xCE]);
        v.extend_from_slice(&[3, 0, 3, 0, 0, 0, 3, b'x', b'y', b'z', 0xCE]);
        let mut buf = BytesMut::from(&v[..]);
        let d = FrameDecoder::new(131072);
        assert!(matches!(
            d.decode(&mut buf).unwrap().unwrap(),
            Frame::Method(3, Method::Publish(_))
        ));
        match d.decode(&mut buf).unwrap().unwrap() {
            Frame::Method(3, Method::Publish(p)) => {
                assert_eq!(p.exchange.as_str(), "");
                assert_eq!(p.routing_key.as_str(), "q");
                assert!(!p.mandatory && p.immediate);
            }
            other => panic!("{other:?}"),
        }
        match d.decode(&mut buf).unwrap().unwrap() {
            Frame::Header(3, h) => {
                assert_eq!((h.class_id, h.weight, h.body_size), (60, 0, 3));
                assert_eq!(&h.properties[..], &[0x10, 0, 2]);
            }
            other => panic!("{other:?}"),
        }
        match d.decode(&mut buf).unwrap().unwrap() {
            Frame::Body(3, b) => assert_eq!(&b[..], b"xyz"),
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_publish_frames_close_the_connection() {
        // basic.publish whose routing-key length runs past the payload.
        let v = [1u8, 0, 1, 0, 0, 0, 9, 0, 60, 0, 40, 0, 0, 0, 9, b'k', 0xCE];
        let err = FrameDecoder::new(131072)
            .decode(&mut BytesMut::from(&v[..]))
            .unwrap_err();
        assert_eq!(err.code, 502);
        // A content header too short to hold class, weight and body size.
        let v = [2u8, 0, 1, 0, 0, 0, 2, 0, 60, 0xCE];
        let err = FrameDecoder::new(131072)
            .decode(&mut BytesMut::from(&v[..]))
            .unwrap_err();
        assert_eq!(err.code, 501);
        // An exchange name that is not UTF-8.
        let v = [
            1u8, 0, 1, 0, 0, 0, 10, 0, 60, 0, 40, 0, 0, 1, 0xFF, 0, 0, 0xCE,
        ];
        let err = FrameDecoder::new(131072)
            .decode(&mut BytesMut::from(&v[..]))
            .unwrap_err();
        assert_eq!(err.code, 502);
    }

    #[test]
    fn body_is_zero_copy_slice() {
        let mut v = vec![3u8, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c', 0xCE];
        v.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
        let mut buf = BytesMut::from(&v[..]);
        let d = FrameDecoder::new(131072);
        match d.decode(&mut buf).unwrap().unwrap() {
            Frame::Body(2, b) => assert_eq!(&b[..], b"abc"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d.decode(&mut buf).unwrap().unwrap(),
            Frame::Heartbeat(0)
        ));
    }
}
