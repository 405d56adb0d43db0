//! Fairness between what one connection sends and what it is sent: a connection that
//! publishes as fast as its socket takes keeps receiving the deliveries of its own
//! consumer while the broker works through its publishes. A connection task that served
//! input first whenever the socket was readable would hold those deliveries back until
//! the flood ended.

use crate::common;

use amq_protocol::frame::{parse_frame, AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, confirm, AMQPClass};
use conformance::raw::{encode, RawConn};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUBLISHER: u16 = 1;
const CONSUMER: u16 = 2;
/// Publishes per socket write of the flood.
const CHUNK: usize = 1000;
/// The flood's bound: at most this many writes (30 million publishes, ~1.1 GB, far more
/// than a loaded 2-core machine gets through before the test's deadline).
const MAX_CHUNKS: usize = 30_000;
/// How long one write of the flood may wait for the broker to read (the broker pauses
/// reading while this connection's output is backed up; a loaded machine stalls too).
const WRITE_WAIT: Duration = Duration::from_secs(30);
/// Messages another client publishes to the flooding connection's consumer.
const FOREIGN: usize = 200;

/// The frames of one 16-byte publish to `amq.direct` with a routing key nothing is bound
/// to: the broker routes it, drops it and confirms it, so the flood costs no memory.
fn unroutable_publish() -> Vec<u8> {
    let mut v = encode(&AMQPFrame::Method(
        PUBLISHER,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "amq.direct".into(),
            routing_key: "nowhere".into(),
            mandatory: false,
            immediate: false,
        })),
    ));
    v.extend(encode(&AMQPFrame::Header(
        PUBLISHER,
        AMQPContentHeader {
            class_id: 60,
            body_size: 16,
            properties: BasicProperties::default(),
        },
    )));
    v.extend(encode(&AMQPFrame::Body(PUBLISHER, vec![b'f'; 16])));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishing_connection_keeps_getting_its_deliveries() {
    let broker = common::start_broker().await;
    let side = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let side_ch = side.create_channel().await.unwrap();
    side_ch
        .queue_declare(
            "fair-in".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    side_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // One raw connection: channel 1 publishes with confirms, channel 2 consumes fair-in.
    let (mut raw, _) = RawConn::open(&broker.uri(), 0).await.unwrap();
    raw.open_channel(PUBLISHER).await.unwrap();
    raw.open_channel(CONSUMER).await.unwrap();
    raw.send_method(
        PUBLISHER,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await
    .unwrap();
    assert!(matches!(
        raw.recv_frame().await.unwrap(),
        AMQPFrame::Method(
            PUBLISHER,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))
        )
    ));
    raw.send_method(
        CONSUMER,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "fair-in".into(),
            consumer_tag: "fair".into(),
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
        AMQPFrame::Method(CONSUMER, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
    ));

    let (mut rd, mut wr, mut buf) = raw.into_split();
    let chunk: Vec<u8> = unroutable_publish().repeat(CHUNK);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut written = 0;
            while written < MAX_CHUNKS && !stop.load(Relaxed) {
                let w = tokio::time::timeout(WRITE_WAIT, wr.write_all(&chunk)).await;
                if !matches!(w, Ok(Ok(()))) {
                    break;
                }
                written += 1;
            }
            (written, wr)
        }
    });

    // Read the connection: confirms for the flood on channel 1, deliveries on channel 2.
    // Once the broker is confirming the flood, another client publishes FOREIGN messages
    // to fair-in; all of them must reach channel 2 while the flood is still going.
    let mut confirmed = 0u64;
    let mut delivered = 0usize;
    let mut foreign = None;
    let mut chunk_in = vec![0u8; 1 << 16];
    let outcome = common::within(Duration::from_secs(60), async {
        loop {
            while let Ok((rest, frame)) = parse_frame(buf.as_slice()) {
                let used = buf.len() - rest.len();
                match frame {
                    AMQPFrame::Method(PUBLISHER, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                        confirmed = confirmed.max(a.delivery_tag);
                    }
                    AMQPFrame::Method(
                        CONSUMER,
                        AMQPClass::Basic(basic::AMQPMethod::Deliver(_)),
                    ) => {
                        delivered += 1;
                    }
                    AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(_)))
                    | AMQPFrame::Header(..)
                    | AMQPFrame::Body(..)
                    | AMQPFrame::Heartbeat => {}
                    other => panic!("unexpected frame {other:?}"),
                }
                buf.drain(..used);
            }
            if confirmed > 0 && foreign.is_none() {
                let ch = side_ch.clone();
                foreign = Some(tokio::spawn(async move {
                    for i in 0..FOREIGN {
                        ch.basic_publish(
                            "".into(),
                            "fair-in".into(),
                            BasicPublishOptions::default(),
                            format!("foreign {i}").as_bytes(),
                            BasicProperties::default(),
                        )
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    }
                }));
            }
            if delivered == FOREIGN {
                // Still flooding? Only then were the deliveries served beside the flood.
                let flooding = !flood.is_finished();
                stop.store(true, Relaxed);
                return (flooding, confirmed);
            }
            let n = rd.read(&mut chunk_in).await.unwrap();
            assert!(n > 0, "the broker closed the connection");
            buf.extend_from_slice(&chunk_in[..n]);
        }
    })
    .await;
    let (flooding, confirmed_then) = outcome;
    // Keep reading the confirms so that the broker keeps reading the flood's last write.
    let drain = tokio::spawn(async move {
        let mut b = vec![0u8; 1 << 16];
        while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
    });
    let (written, mut wr) = common::within(WRITE_WAIT + Duration::from_secs(5), flood)
        .await
        .unwrap();
    assert!(
        flooding,
        "the {FOREIGN} deliveries arrived only after the flood of {written} x {CHUNK} publishes ended \
         ({confirmed_then} confirmed by then)"
    );
    assert!(written < MAX_CHUNKS, "the flood was never stopped");
    common::within(Duration::from_secs(10), foreign.unwrap())
        .await
        .unwrap();
    let _ = wr.shutdown().await;
    drain.abort();
}
