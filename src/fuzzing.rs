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
    ("mgmt", mgmt),
    ("binding_args", binding_args),
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

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// The requests the `mgmt` target chooses from: every PUT/POST body the API reads, the
/// deletes, and GETs whose query strings it fuzzes. The objects named exist (created by
/// [`MGMT_SETUP`] in each fresh broker), so the handlers get past their 404s.
pub const MGMT_REQUESTS: &[(&str, &str)] = &[
    ("PUT", "/api/queues/%2F/q"),
    ("PUT", "/api/queues/%2F/qq"),
    ("PUT", "/api/exchanges/%2F/x"),
    ("POST", "/api/bindings/%2F/e/x/q/q"),
    ("POST", "/api/bindings/%2F/e/x/e/amq.direct"),
    ("PUT", "/api/users/u"),
    ("PUT", "/api/permissions/%2F/u"),
    ("PUT", "/api/policies/%2F/p"),
    ("PUT", "/api/vhost-limits/%2F/max-connections"),
    ("PUT", "/api/vhost-limits/%2F/max-queues"),
    ("PUT", "/api/vhosts/v"),
    ("POST", "/api/exchanges/%2F/x/publish"),
    ("POST", "/api/exchanges/%2F/amq.default/publish"),
    ("POST", "/api/queues/%2F/q/get"),
    ("POST", "/api/definitions"),
    ("POST", "/api/definitions/%2F"),
    ("DELETE", "/api/queues/%2F/q"),
    ("DELETE", "/api/queues/%2F/q/contents"),
    ("DELETE", "/api/exchanges/%2F/x"),
    ("DELETE", "/api/bindings/%2F/e/x/q/q/q"),
    ("DELETE", "/api/policies/%2F/p"),
    ("DELETE", "/api/users/u"),
    ("GET", "/api/queues"),
    ("GET", "/api/queues/%2F"),
    ("GET", "/api/queues/%2F/q"),
    ("GET", "/api/exchanges"),
    ("GET", "/api/bindings"),
    ("GET", "/api/connections"),
    ("GET", "/api/channels"),
    ("GET", "/api/consumers"),
    ("GET", "/api/vhosts"),
    ("GET", "/api/users"),
    ("GET", "/api/policies"),
    ("GET", "/api/overview"),
    ("GET", "/api/definitions"),
    ("GET", "/api/exchanges/%2F/x/bindings/source"),
    ("GET", "/metrics"),
];

/// Objects every fresh broker of the `mgmt` target starts with.
const MGMT_SETUP: &[(&str, &str, &str)] = &[
    ("PUT", "/api/queues/%2F/q", r#"{"durable":true}"#),
    (
        "PUT",
        "/api/queues/%2F/qq",
        r#"{"durable":true,"arguments":{"x-queue-type":"quorum"}}"#,
    ),
    ("PUT", "/api/exchanges/%2F/x", r#"{"type":"topic"}"#),
    (
        "POST",
        "/api/bindings/%2F/e/x/q/q",
        r#"{"routing_key":"q"}"#,
    ),
    (
        "PUT",
        "/api/users/u",
        r#"{"password":"u","tags":"management"}"#,
    ),
    (
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        r#"{"routing_key":"q","payload":"m","payload_encoding":"string","properties":{}}"#,
    ),
];

/// One management request through the router (no socket); its status.
async fn mgmt_call(
    app: &axum::Router,
    method: &str,
    path: &str,
    query: &[u8],
    body: &[u8],
    user: u8,
) -> Option<u16> {
    use axum::http::Request;
    use tower_service::Service;
    let mut uri = path.to_string();
    if !query.is_empty() {
        uri.push('?');
        for &c in query {
            if c.is_ascii_alphanumeric() || b"-._~&=%+,;:!*'()/?@$[]".contains(&c) {
                uri.push(c as char);
            } else {
                uri.push_str(&format!("%{c:02X}"));
            }
        }
    }
    let mut req = Request::builder().method(method).uri(uri);
    let creds = match user % 4 {
        0 => Some("Basic Z3Vlc3Q6Z3Vlc3Q="), // guest:guest, administrator
        1 => Some("Basic dTp1"),             // u:u, management
        2 => Some("Basic Z3Vlc3Q6eA=="),     // guest:x
        _ => None,
    };
    if let Some(c) = creds {
        req = req.header("authorization", c);
    }
    let req = req
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
        .ok()?;
    let resp = app.clone().call(req).await.ok()?;
    Some(resp.status().as_u16())
}

/// The management API's request bodies and query strings: up to 8 requests per input,
/// each `[request][user][length u16 BE][query '\n' body]`, through the real router of a
/// fresh broker. A 5xx is a crash.
pub fn mgmt(data: &[u8]) {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("warren-fuzz-mgmt-{}", std::process::id()));
    rt.block_on(async {
        let broker = crate::broker::Broker::new(crate::Config {
            data_dir: dir.clone(),
            ..Default::default()
        });
        let app = crate::mgmt::router(broker.clone());
        for (m, p, b) in MGMT_SETUP {
            let s = mgmt_call(&app, m, p, b"", b.as_bytes(), 0).await;
            assert!(matches!(s, Some(200..=299)), "setup {m} {p}: {s:?}");
        }
        let mut rest = data;
        for _ in 0..8 {
            let [sel, user, l0, l1, tail @ ..] = rest else {
                break;
            };
            let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
            let (payload, next) = tail.split_at(len);
            rest = next;
            let (query, body) = match payload.iter().position(|&c| c == b'\n') {
                Some(i) => (&payload[..i], &payload[i + 1..]),
                None => (&payload[..0], payload),
            };
            let (method, path) = MGMT_REQUESTS[usize::from(*sel) % MGMT_REQUESTS.len()];
            if let Some(status) = mgmt_call(&app, method, path, query, body, *user).await {
                assert!(
                    status < 500,
                    "{method} {path} answered {status} (query {:?}, body {:?})",
                    String::from_utf8_lossy(query),
                    String::from_utf8_lossy(body)
                );
            }
        }
        let _ = broker.shutdown_signal();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Headers-exchange binding arguments (`x-match` and the values it compares, Erlang's
/// `==` over nested tables and arrays) against message headers, and policy definitions
/// (JSON) validated and merged over queue arguments. The input: `[n u16 BE]`, a field
/// table of `n` bytes (the binding's arguments), a field table (the headers); or the whole
/// input as a policy document.
pub fn binding_args(data: &[u8]) {
    use crate::routing::headers;
    if let Some((n, rest)) = data.split_first_chunk::<2>() {
        let n = usize::from(u16::from_be_bytes(*n)).min(rest.len());
        let (a, h) = rest.split_at(n);
        let table = |b: &[u8]| {
            let mut framed = Vec::with_capacity(b.len() + 4);
            framed.extend_from_slice(&(b.len() as u32).to_be_bytes());
            framed.extend_from_slice(b);
            parse_field_table(&framed[..]).ok().map(|(_, t)| t)
        };
        if let Some(args) = table(a) {
            let _ = headers::validate_x_match(&args);
            let _ = headers::XMatch::of(&args).as_str();
            let _ = headers::headers_match(&args, None);
            if let Some(h) = table(h) {
                let _ = headers::headers_match(&args, Some(&h));
                for (k, v) in &h {
                    if let Some(w) = args.inner().get(k.as_str()) {
                        assert_eq!(
                            headers::values_equal(v, w),
                            headers::values_equal(w, v),
                            "== is symmetric"
                        );
                    }
                }
            }
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    let priority = v.get("priority").and_then(|p| p.as_i64()).unwrap_or(0);
    let definition = v.get("definition").cloned().unwrap_or(v.clone());
    if let Ok(p) = crate::policy::Policy::new(
        "/",
        "p",
        field("pattern"),
        field("apply-to"),
        priority,
        definition.clone(),
    ) {
        let _ = p.applies_to("queues");
        let _ = p.to_json();
    }
    let what = "queue 'q' in vhost '/'";
    let empty = FieldTable::default();
    if let Ok(q) = crate::queue::args::QueueArgs::parse(&empty, what, true, false, false) {
        let _ = q.with_policy(Some(&definition));
    }
}
