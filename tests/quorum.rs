//! Quorum queue behaviour that needs more than the conformance suite's view: at-least-once
//! dead-lettering holds a dead letter that reached no queue until one is bound (RabbitMQ's
//! dead-letter worker retries on a 2-minute timer, too slow for a differential scenario),
//! while at-most-once drops it; and the management API reports the queue type.

mod common;

use futures_lite::StreamExt;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

async fn declare_qq(ch: &Channel, q: &str, args: &[(&str, AMQPValue)]) {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), lstr("quorum"));
    for (k, v) in args {
        t.insert((*k).into(), v.clone());
    }
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        t,
    )
    .await
    .expect("declare quorum queue");
}

async fn reject_one(ch: &Channel, q: &str) {
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        b"dead",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let mut c = ch
        .basic_consume(
            q.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = common::within(T, c.next()).await.unwrap().unwrap();
    d.reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    ch.basic_cancel(c.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
}

async fn setup(strategy: &str) -> (warren::BrokerHandle, Connection, Channel) {
    let broker = common::start_broker().await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "dlx".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_qq(
        &ch,
        "src",
        &[
            ("x-dead-letter-exchange", lstr("dlx")),
            ("x-dead-letter-strategy", lstr(strategy)),
            ("x-overflow", lstr("reject-publish")),
        ],
    )
    .await;
    (broker, conn, ch)
}

/// Binds a fresh queue to the dead-letter exchange and waits (bounded) for a message in it.
async fn dead_letter_arrives(ch: &Channel, within: Duration) -> bool {
    ch.queue_declare(
        "dead".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "dead".into(),
        "dlx".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut c = ch
        .basic_consume(
            "dead".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    match tokio::time::timeout(within, c.next()).await {
        Ok(Some(Ok(d))) => {
            assert_eq!(d.data, b"dead");
            true
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_holds_an_unroutable_dead_letter_until_a_queue_is_bound() {
    let (broker, _conn, ch) = setup("at-least-once").await;
    reject_one(&ch, "src").await;
    let q = broker.broker.vhost("/").unwrap().queue("src").unwrap();
    common::within(T, async {
        while q.dlx_waiting() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The retry runs every second; the test allows the full wait.
    assert!(
        dead_letter_arrives(&ch, T).await,
        "held dead letter delivered"
    );
    common::within(T, async {
        while q.dlx_waiting() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_drops_an_unroutable_dead_letter() {
    let (broker, _conn, ch) = setup("at-most-once").await;
    reject_one(&ch, "src").await;
    let q = broker.broker.vhost("/").unwrap().queue("src").unwrap();
    assert_eq!(q.dlx_waiting(), 0);
    // Past two retry periods nothing may arrive: the message is gone.
    let wait = warren::queue::DLX_RETRY * 2 + Duration::from_millis(500);
    assert!(!dead_letter_arrives(&ch, wait).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_reports_the_queue_type() {
    let broker = common::start_broker().await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare_qq(&ch, "typed", &[("x-delivery-limit", AMQPValue::LongInt(7))]).await;
    let api = common::http::Api::new(broker.mgmt_addr.expect("management enabled"));
    let v = api.get_json("/api/queues/%2F/typed").await;
    assert_eq!(v["type"], "quorum");
    assert_eq!(v["delivery_limit"], 7);
    assert_eq!(v["members"].as_array().map(|a| a.len()), Some(1));
    assert_eq!(v["leader"], v["node"]);
}
