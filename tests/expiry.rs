//! Per-message expiry of a message that becomes the queue's head through a delivery (not
//! a publish or basic.get): RabbitMQ re-arms its TTL timer after delivering, so the
//! message expires on time even while the consumer has no credit to take it.

use crate::common;

use futures_lite::StreamExt;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_that_expires_after_a_delivery_is_dropped_on_time() {
    let broker = common::start_broker().await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "exp".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (body, expiration) in [("m1", None), ("m2", Some("150")), ("m3", None)] {
        let mut props = BasicProperties::default();
        if let Some(e) = expiration {
            props = props.with_expiration(e.into());
        }
        ch.basic_publish(
            "".into(),
            "exp".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .unwrap();
    }
    // Prefetch 1: the consumer takes m1 and then has no credit; m2 is the head.
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "exp".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = common::within(DEADLINE, consumer.next())
        .await
        .expect("a delivery")
        .expect("no error");
    assert_eq!(first.data, b"m1");
    // m2 must go once its 150 ms pass, with nothing else happening on the queue.
    let count = || async {
        ch.queue_declare(
            "exp".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
    };
    common::within(DEADLINE, async {
        while count().await != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    first.ack(BasicAckOptions::default()).await.unwrap();
    let next = common::within(DEADLINE, consumer.next())
        .await
        .expect("a delivery")
        .expect("no error");
    assert_eq!(next.data, b"m3", "the expired m2 was not delivered");
}
