//! Entry points of the coverage-guided fuzz targets (`fuzz/fuzz_targets/*.rs`, run with
//! `fuzz/run.sh`) and of their corpus regression test (`tests/fuzz_corpus.rs`, stable
//! toolchain): each takes arbitrary bytes and must return without panicking, hanging or
//! allocating without bound. Every loop here is bounded by the input's length.

use crate::protocol::codec::FrameDecoder;
use amq_protocol::types::{parsing::parse_field_table, AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The targets, by the name of their fuzz target and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("method", method),
    ("content_header", content_header),
    ("field_table", field_table),
    ("sasl", sasl),
    ("definitions", definitions),
    ("queue_args", queue_args),
    ("record", record),
];

/// The frame decoder on a byte stream (the first byte picks frame_max).
pub fn frame(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let frame_max = [0, 4096, 131_072, 8][pick as usize % 4];
    let d = FrameDecoder::new(frame_max);
    let mut buf = BytesMut::from(rest);
    // Every decoded frame takes at least 8 bytes.
    for _ in 0..=rest.len() / 8 {
        let before = buf.len();
        match d.decode(&mut buf) {
            Ok(Some(_)) => assert!(buf.len() < before, "decoder made no progress"),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Method decoding: `data` as the payload of a method frame on channel 1.
pub fn method(data: &[u8]) {
    let mut f = Vec::with_capacity(data.len() + 8);
    f.push(1);
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f.push(0xCE);
    let mut buf = BytesMut::from(&f[..]);
    let _ = FrameDecoder::new(0).decode(&mut buf);
}

/// Content-header properties as the broker reads them (summary, full decode, header
/// rewriting).
pub fn content_header(data: &[u8]) {
    use crate::protocol::properties;
    let _ = properties::summary(data);
    let _ = properties::decode(data);
    if let Some(h) = properties::headers(data) {
        let _ = properties::routing_key_list(&h, "CC");
        let _ = crate::queue::stream::offset::filter_value(Some(&h));
    }
    let _ = properties::with_long_header(data, "x-stream-offset");
    let _ = properties::with_reply_to(data, "amq.rabbitmq.reply-to.x");
    // A content header frame around the same bytes.
    let mut f = vec![2, 0, 1];
    f.extend_from_slice(&((data.len() + 12) as u32).to_be_bytes());
    f.extend_from_slice(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    f.extend_from_slice(data);
    f.push(0xCE);
    let _ = FrameDecoder::new(0).decode(&mut BytesMut::from(&f[..]));
}

/// A field table (4-byte length first) decoded, then encoded and decoded again.
pub fn field_table(data: &[u8]) {
    use amq_protocol::types::generation::gen_field_table;
    let mut framed = Vec::with_capacity(data.len() + 4);
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(data);
    for input in [data, &framed[..]] {
        if let Ok((_, t)) = parse_field_table(input) {
            let mut out = vec![0u8; input.len() * 2 + 1024];
            let written =
                cookie_factory::gen(gen_field_table(&t), std::io::Cursor::new(&mut out[..]))
                    .map(|(_, n)| n as usize);
            if let Ok(n) = written {
                let back = parse_field_table(&out[..n]).map(|(_, t)| t);
                assert!(back.is_ok(), "an encoded table does not decode");
            }
            let json = crate::store::definitions::table_to_json(&t);
            let _ = crate::store::definitions::json_to_table(&json);
        }
    }
}

/// SASL responses: PLAIN and AMQPLAIN (the first byte picks the mechanism).
pub fn sasl(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mechanism = ["PLAIN", "AMQPLAIN", "EXTERNAL"][pick as usize % 3];
    let _ = crate::protocol::sasl::parse(mechanism, rest);
}

/// A definitions document (JSON), parsed and imported into a fresh broker.
pub fn definitions(data: &[u8]) {
    use crate::store::definitions::Definitions;
    let Ok(d) = serde_json::from_slice::<Definitions>(data) else {
        return;
    };
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    });
    let _g = rt.enter();
    let dir = std::env::temp_dir().join(format!("warren-fuzz-defs-{}", std::process::id()));
    let broker = crate::broker::Broker::new(crate::Config {
        data_dir: dir.clone(),
        ..Default::default()
    });
    let _ = crate::broker::definitions::import(&broker, &d);
    let _ = crate::broker::definitions::snapshot(&broker);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Queue and consume arguments: a field table from `data` through every argument parser
/// (declare arguments of each queue type, `x-stream-offset`, stream filters, consume
/// arguments), and the string parsers on `data` as text.
pub fn queue_args(data: &[u8]) {
    use crate::queue::args::{self, QueueArgs, QueueType};
    use crate::queue::stream::offset;
    if let Ok((_, t)) = parse_field_table(data) {
        check_args(&t);
    }
    let text = String::from_utf8_lossy(data);
    let _ = args::parse_max_age(&text);
    let _ = offset::parse_interval(&text);
    let mut t = FieldTable::default();
    t.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(text.as_bytes().into()),
    );
    t.insert(
        "x-max-age".into(),
        AMQPValue::LongString(text.as_bytes().into()),
    );
    check_args(&t);
    if data.len() >= 8 {
        let n = i64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
        for v in [
            AMQPValue::LongLongInt(n),
            AMQPValue::Timestamp(n as u64),
            AMQPValue::LongInt(n as i32),
        ] {
            let _ = offset::parse_start(Some(&v), 1_700_000_000_000);
            let _ = args::int_value(&v);
        }
    }

    fn check_args(t: &FieldTable) {
        let _ = offset::parse_start(t.inner().get("x-stream-offset"), 1_700_000_000_000);
        let _ = offset::Filter::from_args(t);
        let kind = QueueType::from_args(t);
        for qt in [QueueType::Classic, QueueType::Quorum, QueueType::Stream] {
            let _ = qt.check_consume_args(t, "queue 'q' in vhost '/'");
        }
        let _ = kind;
        for (durable, exclusive, auto_delete) in [(true, false, false), (false, true, true)] {
            let _ = QueueArgs::parse(t, "queue 'q' in vhost '/'", durable, exclusive, auto_delete);
        }
    }
}

/// The message-log record decoder and the stream segment reader over arbitrary bytes on
/// disk (what recovery reads).
pub fn record(data: &[u8]) {
    use crate::queue::stream::segment::{self, Next};
    use crate::store::record::{self, Read};
    let bytes = Bytes::copy_from_slice(data);
    let mut at = 0usize;
    for _ in 0..=data.len() {
        match record::read(&bytes.slice(at..)) {
            Read::Ok(_, n) => {
                assert!(n > 0 && at + n <= data.len(), "record length out of bounds");
                at += n;
            }
            Read::End | Read::Bad(_) => break,
        }
    }
    let mut r = std::io::Cursor::new(data);
    let mut left = data.len() as u64;
    for _ in 0..=data.len() {
        match segment::read_next(&mut r, left) {
            Next::Ok(_, n) => {
                assert!(n > 0 && n <= left, "segment record length out of bounds");
                left -= n;
            }
            Next::End | Next::Bad(_) => break,
        }
    }
    // The same bytes as the payload of a record with a good checksum, so the fuzzer gets
    // past the CRC into the payload decoders.
    let mut framed = Vec::with_capacity(data.len() + 8);
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    framed.extend_from_slice(data);
    let _ = record::read(&Bytes::from(framed.clone()));
    let _ = segment::read_next(&mut std::io::Cursor::new(&framed), framed.len() as u64);
    let _ = segment::decode(bytes.clone());
    let _ = crate::queue::stream::index::decode(data, 0, data.len() as u64 * 2);
}
