//! Hostile and broken clients: a consumer that never reads its socket, a slowloris
//! handshake, a frame flood. Each is bounded in memory and time, and the broker keeps
//! serving everyone else.

use crate::common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, AMQPClass};
use conformance::raw::{encode, RawConn};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);

fn ready(broker: &warren::BrokerHandle, q: &str) -> usize {
    broker
        .broker
        .vhost("/")
        .unwrap()
        .queue(q)
        .unwrap()
        .stats()
        .0
}

/// A no-ack consumer that never reads: the broker stops taking deliveries for it once its
/// output buffer and the in-flight window are full, so the rest stays in the queue (where a
/// well-behaved consumer could get it) instead of piling up in the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_that_never_reads_is_bounded() {
    const N: usize = 4000;
    const SIZE: usize = 16 * 1024;
    let broker = common::start_broker().await;
    let publisher = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = publisher.create_channel().await.unwrap();
    ch.queue_declare(
        "flood".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let (mut raw, _) = RawConn::open(&broker.uri(), 0).await.unwrap();
    raw.open_channel(1).await.unwrap();
    raw.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "flood".into(),
            consumer_tag: "sink".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await
    .unwrap();
    assert!(matches!(
        raw.recv_frame().await.unwrap(),
        AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
    ));
    // From here on `raw` is never read.

    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let body = vec![b'x'; SIZE];
    common::within(DEADLINE, async {
        for _ in 0..N {
            let _confirm = ch
                .basic_publish(
                    "".into(),
                    "flood".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }
        ch.wait_for_confirms().await.unwrap();
    })
    .await;

    // Let the consumer's side settle: the queue stops shrinking.
    let mut last = ready(&broker, "flood");
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = ready(&broker, "flood");
        if now == last {
            break;
        }
        last = now;
    }
    let taken = N - last;
    // In-flight window (2048) + 1 MiB output buffer + loopback socket buffers (~10 MiB).
    let bound = warren::queue::consumer::INFLIGHT_WINDOW as usize + (12 << 20) / SIZE;
    assert!(
        taken <= bound,
        "a non-reading consumer took {taken} of {N} messages (bound {bound})"
    );
    assert!(last > 0, "everything left the queue");
    assert!(taken > 0, "the consumer was never sent anything");

    // Everyone else is still served.
    let other = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let och = other.create_channel().await.unwrap();
    let got = common::within(
        DEADLINE,
        och.basic_get("flood".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap();
    assert!(got.is_some());
    drop(raw);
}

/// Slowloris: a client that sends the protocol header one byte at a time, or stops in the
/// middle of the handshake, is disconnected at the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_are_cut_at_the_timeout() {
    let broker =
        common::start_broker_with(|c| c.handshake_timeout = Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    // Dribble "AMQ" and stop.
    for b in b"AMQ" {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut buf = [0u8; 64];
    let n = common::within(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "expected the socket to close, got {n:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");

    // Header sent, then silence after connection.start.
    let mut raw = RawConn::tcp(&broker.uri()).await.unwrap();
    raw.start().await.unwrap();
    let rest = common::within(Duration::from_secs(5), raw.read_until_eof()).await;
    assert!(rest.is_ok(), "socket not closed: {rest:?}");
}

/// A flood of method frames whose replies the client never reads: the broker stops reading
/// it once its output is backed up, and other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_flood_does_not_starve_others() {
    let broker = common::start_broker().await;
    let (mut raw, _) = RawConn::open(&broker.uri(), 0).await.unwrap();
    raw.open_channel(1).await.unwrap();
    let one = encode(&AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 10,
            global: false,
        })),
    ));
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4096).collect();
    let flood = tokio::spawn(async move {
        // Stops by itself: bounded count, and each write gives up after a while.
        for _ in 0..200 {
            let w = tokio::time::timeout(Duration::from_secs(2), raw.send_bytes(&chunk)).await;
            if !matches!(w, Ok(Ok(()))) {
                break;
            }
        }
        raw
    });
    // Meanwhile a normal client connects and does a round trip.
    common::within(Duration::from_secs(10), async {
        let c = Connection::connect(&broker.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = c.create_channel().await.unwrap();
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    })
    .await;
    let raw = common::within(Duration::from_secs(60), flood)
        .await
        .unwrap();
    drop(raw);
}
