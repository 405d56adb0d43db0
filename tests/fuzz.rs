//! Bounded-time fuzzing (proptest) of the frame decoder and of the connection state
//! machine: arbitrary bytes and random sequences of valid and invalid frames never panic
//! the broker, never hang a connection, and leave the broker serving other clients.
//! Runs in a few seconds; `PROPTEST_CASES` raises the count for longer local runs.

use crate::common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, channel, exchange, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use bytes::BytesMut;
use conformance::raw::{encode, raw_frame, RawConn};
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use warren::protocol::codec::FrameDecoder;

/// Decodes everything in `bytes`; returns how many frames came out. Must not panic and
/// must always make progress or stop.
fn decode_all(bytes: &[u8], frame_max: u32) -> usize {
    let d = FrameDecoder::new(frame_max);
    let mut buf = BytesMut::from(bytes);
    let mut n = 0;
    loop {
        let before = buf.len();
        match d.decode(&mut buf) {
            Ok(Some(_)) => {
                n += 1;
                assert!(buf.len() < before, "decoder made no progress");
            }
            Ok(None) | Err(_) => return n,
        }
    }
}

fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    // A well-formed frame envelope around random payloads, or raw garbage.
    prop_oneof![
        (
            prop_oneof![Just(1u8), Just(2u8), Just(3u8), Just(8u8), any::<u8>()],
            0u16..4,
            proptest::collection::vec(any::<u8>(), 0..64),
            prop_oneof![Just(0xCEu8), any::<u8>()],
        )
            .prop_map(|(t, ch, p, end)| raw_frame(t, ch, &p, end)),
        // Method frames with a real class/method id and random arguments.
        (
            prop_oneof![
                Just(10u16),
                Just(20),
                Just(40),
                Just(50),
                Just(60),
                Just(85),
                Just(90)
            ],
            0u16..120,
            proptest::collection::vec(any::<u8>(), 0..48),
        )
            .prop_map(|(c, m, args)| {
                let mut p = c.to_be_bytes().to_vec();
                p.extend_from_slice(&m.to_be_bytes());
                p.extend_from_slice(&args);
                raw_frame(1, 1, &p, 0xCE)
            }),
        proptest::collection::vec(any::<u8>(), 0..32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes, 131_072);
        decode_all(&bytes, 4096);
    }

    #[test]
    fn decoder_never_panics_on_frame_shaped_input(frames in proptest::collection::vec(frame_strategy(), 1..8)) {
        let bytes: Vec<u8> = frames.concat();
        decode_all(&bytes, 131_072);
    }
}

/// Valid frames a client could send after the handshake, to mix with broken ones.
fn valid_frames() -> Vec<Vec<u8>> {
    let m = |ch: u16, c: AMQPClass| encode(&AMQPFrame::Method(ch, c));
    vec![
        m(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
        m(
            2,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
        m(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "fz".into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: true,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ),
        m(
            1,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: "fzx".into(),
                kind: "topic".into(),
                passive: false,
                durable: false,
                auto_delete: true,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ),
        m(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "fz".into(),
                mandatory: true,
                immediate: false,
            })),
        ),
        // content header: class 60, weight 0, body size 3, no properties
        raw_frame(2, 1, &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0], 0xCE),
        raw_frame(3, 1, b"abc", 0xCE),
        m(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "fz".into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ),
        m(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 1,
                multiple: true,
            })),
        ),
        m(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 200,
                reply_text: "".into(),
                class_id: 0,
                method_id: 0,
            })),
        ),
        raw_frame(8, 0, &[], 0xCE),
    ]
}

fn sequence_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(valid_frames()),
            1 => frame_strategy(),
        ],
        1..24,
    )
}

/// Random frame sequences against an in-process broker, after a real handshake. Each
/// case must end (the broker answers or closes) within a deadline, and afterwards a
/// normal client still gets through.
#[test]
fn connection_state_machine_survives_random_frame_sequences() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = rt.block_on(common::start_broker());
    let uri = broker.uri();
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&sequence_strategy(), |frames| {
            rt.block_on(async {
                let (mut raw, _) = RawConn::open(&uri, 0).await.expect("handshake");
                let bytes: Vec<u8> = frames.concat();
                let _ = raw.send_bytes(&bytes).await;
                // Read whatever comes back until the broker goes quiet or closes.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    match tokio::time::timeout(Duration::from_millis(50), raw.recv()).await {
                        Ok(Ok(Some(_))) => {}
                        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "connection never went quiet"
                    );
                }
                drop(raw);
            });
            Ok(())
        })
        .unwrap();
    // The broker still serves a well-behaved client.
    rt.block_on(async {
        let c = common::within(
            Duration::from_secs(10),
            lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
        )
        .await
        .expect("broker alive after fuzzing");
        let ch = c.create_channel().await.unwrap();
        ch.queue_declare(
            "after-fuzz".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut s = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
        s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    });
}
