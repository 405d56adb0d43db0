//! Delivery acknowledgement timeout (RabbitMQ's consumer_timeout): a channel holding an
//! unacked delivery too long is closed with 406 and the message goes back to its queue.

use crate::common;

use futures_lite::StreamExt;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_delivery_times_out_and_is_requeued() {
    let broker =
        common::start_broker_with(|c| c.consumer_timeout = Duration::from_millis(300)).await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let q = q.name().as_str().to_string();
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"slow",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let cch = conn.create_channel().await.unwrap();
    let mut consumer = cch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = common::within(Duration::from_secs(5), consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first.data[..], b"slow");
    // Never acked: the channel is closed by the broker within a few timeout periods.
    // lapin ends the consumer stream with the channel.close the broker sent.
    let end = common::within(Duration::from_secs(5), consumer.next()).await;
    match end {
        Some(Err(e)) => match e.kind() {
            lapin::ErrorKind::ProtocolError(err) => {
                assert_eq!(err.get_id(), 406);
                assert_eq!(
                    err.get_message().as_str(),
                    "PRECONDITION_FAILED - delivery acknowledgement on channel 2 timed out. Timeout value used: 300 ms. This timeout value can be configured, see consumers doc guide to learn more"
                );
            }
            other => panic!("expected channel.close 406, got {other:?}"),
        },
        other => panic!("expected the channel to be closed with an error, got {other:?}"),
    }
    // The message is back in the queue, marked redelivered.
    let got = common::within(Duration::from_secs(5), async {
        loop {
            if let Some(m) = ch
                .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(&got.delivery.data[..], b"slow");
    assert!(got.delivery.redelivered);
    broker.shutdown().await;
}
