//! Quorum queue behaviour that needs more than the conformance suite's view: at-least-once
//! dead-lettering holds a dead letter that reached no queue until one is bound (RabbitMQ's
//! dead-letter worker retries on a 2-minute timer, too slow for a differential scenario),
//! while at-most-once drops it; and the management API reports the queue type.

use crate::common;

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

async fn publish_n(ch: &Channel, q: &str, n: usize) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

async fn open(uri: &str) -> (Connection, Channel) {
    let conn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// A no-ack consumer takes far more than its starting credit (the in-flight window of
/// 2048): its credit is topped up as its connection writes, and every message arrives
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_ack_consumer_gets_a_backlog_larger_than_its_credit_in_order() {
    let broker = common::start_broker().await;
    let (_conn, ch) = open(&broker.uri()).await;
    declare_qq(&ch, "big", &[]).await;
    const N: usize = 6000;
    publish_n(&ch, "big", N).await;
    let mut c = ch
        .basic_consume(
            "big".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..N {
        let d = common::within(T, c.next()).await.unwrap().unwrap();
        assert_eq!(d.data, format!("m{i}").as_bytes());
    }
    let q = broker.broker.vhost("/").unwrap().queue("big").unwrap();
    assert_eq!(q.message_count(), 0);
}

/// Message TTL on a quorum queue dead-letters with reason `expired` (Celery's native
/// delayed delivery is built on this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_dead_lettered() {
    let broker = common::start_broker().await;
    let (_conn, ch) = open(&broker.uri()).await;
    ch.queue_declare(
        "after".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_qq(
        &ch,
        "delay",
        &[
            ("x-message-ttl", AMQPValue::LongInt(200)),
            ("x-dead-letter-exchange", lstr("")),
            ("x-dead-letter-routing-key", lstr("after")),
        ],
    )
    .await;
    publish_n(&ch, "delay", 3).await;
    let mut c = ch
        .basic_consume(
            "after".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..3 {
        let d = common::within(T, c.next()).await.unwrap().unwrap();
        assert_eq!(d.data, format!("m{i}").as_bytes());
        let headers = d.properties.headers().clone().unwrap_or_default();
        let death = headers.inner().get("x-first-death-reason").cloned();
        assert_eq!(death, Some(lstr("expired")));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

/// A message waiting for its TTL costs no timer wake-ups until it expires (a timer that
/// re-armed itself on every run spun for the whole TTL and starved other tasks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_ttl_does_not_spin_the_timer() {
    let broker = common::start_broker().await;
    let (_conn, ch) = open(&broker.uri()).await;
    ch.queue_declare(
        "landed".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_qq(
        &ch,
        "wait",
        &[
            ("x-message-ttl", AMQPValue::LongInt(1000)),
            ("x-dead-letter-exchange", lstr("")),
            ("x-dead-letter-routing-key", lstr("landed")),
            ("x-dead-letter-strategy", lstr("at-least-once")),
            ("x-overflow", lstr("reject-publish")),
        ],
    )
    .await;
    publish_n(&ch, "wait", 1).await;
    let m = common::within(T, async {
        loop {
            if let Some(m) = ch
                .basic_get("landed".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
        }
    })
    .await;
    assert_eq!(m.delivery.data, b"m0");
    let q = broker.broker.vhost("/").unwrap().queue("wait").unwrap();
    assert!(q.timer_runs() < 10, "timer ran {} times", q.timer_runs());
}

/// x-max-length with drop-head keeps the newest messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_drops_the_head() {
    let broker = common::start_broker().await;
    let (_conn, ch) = open(&broker.uri()).await;
    declare_qq(&ch, "short", &[("x-max-length", AMQPValue::LongInt(2))]).await;
    publish_n(&ch, "short", 5).await;
    for want in ["m3", "m4"] {
        let m = ch
            .basic_get("short".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(m.delivery.data, want.as_bytes());
    }
    assert!(ch
        .basic_get("short".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());
}

/// Single active consumer: the second consumer gets nothing until the first cancels,
/// then gets what the first had not acknowledged, first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_hands_over_on_cancel() {
    let broker = common::start_broker().await;
    let (_c1, ch1) = open(&broker.uri()).await;
    let (_c2, ch2) = open(&broker.uri()).await;
    declare_qq(
        &ch1,
        "sac",
        &[("x-single-active-consumer", AMQPValue::Boolean(true))],
    )
    .await;
    let mut first = ch1
        .basic_consume(
            "sac".into(),
            "first".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut second = ch2
        .basic_consume(
            "sac".into(),
            "second".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish_n(&ch1, "sac", 2).await;
    let a = common::within(T, first.next()).await.unwrap().unwrap();
    let b = common::within(T, first.next()).await.unwrap().unwrap();
    assert_eq!((&a.data[..], &b.data[..]), (&b"m0"[..], &b"m1"[..]));
    a.ack(BasicAckOptions::default()).await.unwrap();
    // Closing the channel cancels `first`; m1 (unacked) goes to `second`, redelivered.
    ch1.close(200, "bye".into()).await.unwrap();
    let d = common::within(T, second.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"m1");
    assert!(d.redelivered);
}

/// The delivery count survives a restart (kill -9): each return is in the message log.
#[test]
fn the_delivery_count_survives_kill_9() {
    let dir = common::temp_data_dir();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = common::spawn_warren(&dir, &[]);
    rt.block_on(async {
        let (_conn, ch) = open(&w.uri).await;
        declare_qq(&ch, "counted", &[]).await;
        publish_n(&ch, "counted", 1).await;
        for _ in 0..2 {
            let m = ch
                .basic_get("counted".into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
                .expect("a message");
            m.delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        // The returns are in the message log ahead of a later confirmed publish, so once
        // that is confirmed they are on disk too.
        ch.basic_publish(
            "".into(),
            "counted".into(),
            BasicPublishOptions::default(),
            b"barrier",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });
    drop(w); // SIGKILL
    let w = common::spawn_warren(&dir, &[]);
    rt.block_on(async {
        let (_conn, ch) = open(&w.uri).await;
        let m = common::within(T, async {
            loop {
                if let Some(m) = ch
                    .basic_get("counted".into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                {
                    return m;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(m.delivery.redelivered);
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        assert_eq!(
            headers.inner().get("x-delivery-count"),
            Some(&AMQPValue::LongLongInt(2))
        );
    });
}

/// A backlog past `--queue-memory-budget` goes to page files and comes back intact, in
/// order, with acks, returns and basic.get; the page files go once the queue is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_the_memory_budget_is_paged_and_read_back() {
    let broker = common::start_broker_with(|c| c.queue_memory_budget = 4096).await;
    let pages = broker.broker.config.data_dir.join("pages");
    let (_conn, ch) = open(&broker.uri()).await;
    declare_qq(&ch, "paged", &[]).await;
    const N: usize = 2000;
    let body = |i: usize| format!("{i:04}-{}", "x".repeat(200));
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..N {
        ch.basic_publish(
            "".into(),
            "paged".into(),
            BasicPublishOptions::default(),
            body(i).as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let files = || std::fs::read_dir(&pages).map_or(0, |d| d.count());
    assert!(files() > 0, "the backlog is in page files");
    // basic.get with ack, then a return: the message comes back from its page.
    let first = ch
        .basic_get("paged".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(first.delivery.data, body(0).as_bytes());
    first
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            "paged".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Without a delivery limit a return goes to the back: 1..N, then 0.
    let order: Vec<usize> = (1..N).chain([0]).collect();
    for i in order {
        let d = common::within(T, c.next()).await.unwrap().unwrap();
        assert_eq!(d.data, body(i).as_bytes(), "message {i}");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let q = broker.broker.vhost("/").unwrap().queue("paged").unwrap();
    common::within(T, async {
        while q.unacked_count() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(q.message_count(), 0);
    // Only the head page file is left, emptied.
    let sizes: Vec<u64> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert!(
        sizes.iter().all(|s| *s == 0),
        "page files emptied: {sizes:?}"
    );
}
