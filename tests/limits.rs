//! Limits with RabbitMQ's errors: vhost max-connections and max-queues, the node-wide
//! connection limit, channel_max, max message size, frame_max.

use crate::common;

use conformance::support::{amqp_error, events, next_error};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::Duration;
use warren::limits::VHostLimits;

const DEADLINE: Duration = Duration::from_secs(10);

async fn connect(uri: &str) -> lapin::Result<Connection> {
    common::within(
        DEADLINE,
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_connection_and_queue_limits() {
    let broker = common::start_broker().await;
    broker.broker.add_vhost("small");
    broker
        .broker
        .set_permissions("guest", "small", ".*", ".*", ".*")
        .unwrap();
    broker
        .broker
        .set_vhost_limits(
            "small",
            VHostLimits {
                max_connections: Some(1),
                max_queues: Some(2),
            },
        )
        .unwrap();
    let uri = format!("amqp://guest:guest@{}/small", broker.addr);
    let first = connect(&uri).await.unwrap();
    let e = connect(&uri).await.expect_err("over the limit");
    assert_eq!(
        amqp_error(&e),
        Some((
            530,
            "NOT_ALLOWED - access to vhost 'small' refused for user 'guest': connection limit (1) is reached".into()
        ))
    );
    // Other vhosts are not affected.
    connect(&broker.uri()).await.unwrap();

    let ch = first.create_channel().await.unwrap();
    for q in ["a", "b", "a"] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let e = ch
        .queue_declare(
            "c".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("over the queue limit");
    assert_eq!(
        amqp_error(&e),
        Some((
            406,
            "PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost 'small' (2) is reached".into()
        ))
    );
    // Lifting the limit lets the next declare through (a new channel: the old one closed).
    broker
        .broker
        .set_vhost_limits("small", VHostLimits::default())
        .unwrap();
    let ch = first.create_channel().await.unwrap();
    ch.queue_declare(
        "c".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_connection_limit() {
    let broker = common::start_broker_with(|c| c.max_connections = Some(2)).await;
    let _a = connect(&broker.uri()).await.unwrap();
    let _b = connect(&broker.uri()).await.unwrap();
    let e = connect(&broker.uri())
        .await
        .expect_err("over the node limit");
    assert_eq!(
        amqp_error(&e),
        Some((
            530,
            "NOT_ALLOWED - connection refused: node connection limit (2) is reached".into()
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_max_and_message_size() {
    let broker = common::start_broker_with(|c| {
        c.channel_max = 2;
        c.max_message_size = 1000;
    })
    .await;
    let conn = connect(&broker.uri()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut ev = events(&conn);
    ch.basic_publish(
        "".into(),
        "nowhere".into(),
        BasicPublishOptions::default(),
        &[0u8; 2000],
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let (code, text) = common::within(DEADLINE, next_error(&mut ev)).await.unwrap();
    assert_eq!(
        (code, text.as_str()),
        (
            406,
            "PRECONDITION_FAILED - message size 2000 is larger than configured max size 1000"
        )
    );
    // lapin respects the negotiated channel_max (2): a third channel is refused client-side.
    let conn = connect(&broker.uri()).await.unwrap();
    let _c1 = conn.create_channel().await.unwrap();
    let _c2 = conn.create_channel().await.unwrap();
    assert!(conn.create_channel().await.is_err());
}
