//! Resource alarms block publishers: lapin receives connection.blocked with RabbitMQ's
//! reason, the broker stops taking its messages, and connection.unblocked follows when the
//! alarm clears. Consumers keep working meanwhile.

use crate::common;

use futures_lite::StreamExt;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties, Event};
use std::time::Duration;
use warren::alarm::{Resource, Watermark};

const DEADLINE: Duration = Duration::from_secs(10);

async fn next_flow_event(events: &mut (impl futures_lite::Stream<Item = Event> + Unpin)) -> Event {
    common::within(DEADLINE, async {
        loop {
            match events.next().await {
                Some(e @ (Event::ConnectionBlocked(_) | Event::ConnectionUnblocked)) => return e,
                Some(Event::Error(e)) => panic!("connection error: {e}"),
                Some(_) => continue,
                None => panic!("event stream ended"),
            }
        }
    })
    .await
}

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

async fn wait_ready(broker: &warren::BrokerHandle, q: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ready(broker, q) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {q} has {} ready messages, expected {n}",
            ready(broker, q)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_alarm_blocks_and_unblocks_publisher() {
    let broker = common::start_broker_with(|c| {
        c.memory_monitor_interval = Duration::from_millis(20);
    })
    .await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let mut events = Box::pin(conn.events_listener());
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "alarm-q".into(),
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let publish = |body: &'static [u8]| {
        let ch = ch.clone();
        async move {
            let _confirm = ch
                .basic_publish(
                    "".into(),
                    "alarm-q".into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }
    };
    publish(b"before").await;
    wait_ready(&broker, "alarm-q", 1).await;

    // A watermark of one byte: the monitor raises the memory alarm.
    broker.broker.alarms.set_watermark(Watermark::Absolute(1));
    common::within(DEADLINE, async {
        while !broker.broker.alarms.active().contains(&Resource::Memory) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // The next publish blocks the connection (RabbitMQ blocks on publish, not before).
    common::within(DEADLINE, publish(b"during")).await;
    match next_flow_event(&mut events).await {
        Event::ConnectionBlocked(reason) => assert_eq!(reason, "low on memory"),
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    // Blocked: lapin holds further publishes (and the broker would not read them).
    let held = tokio::spawn(publish(b"during-2"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        ready(&broker, "alarm-q") <= 2,
        "blocked publisher's messages were read"
    );

    // Another connection can still consume while the publisher is blocked.
    let got = common::within(DEADLINE, async {
        let consumer = Connection::connect(&broker.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let cch = consumer.create_channel().await.unwrap();
        let opts = lapin::options::BasicGetOptions { no_ack: true };
        cch.basic_get("alarm-q".into(), opts)
            .await
            .unwrap()
            .expect("a message")
    })
    .await;
    assert_eq!(got.delivery.data, b"before");

    broker
        .broker
        .alarms
        .set_watermark(Watermark::Relative(0.99));
    match next_flow_event(&mut events).await {
        Event::ConnectionUnblocked => {}
        other => panic!("expected connection.unblocked, got {other:?}"),
    }
    common::within(DEADLINE, held).await.unwrap();
    // "during" and "during-2" arrive once the alarm clears ("before" was taken).
    wait_ready(&broker, "alarm-q", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_alarm_set_by_hand_names_disk() {
    let broker = common::start_broker().await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let mut events = Box::pin(conn.events_listener());
    let ch = conn.create_channel().await.unwrap();
    broker.broker.alarms.set(Resource::Disk);
    ch.basic_publish(
        "".into(),
        "nowhere".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    match next_flow_event(&mut events).await {
        Event::ConnectionBlocked(reason) => assert_eq!(reason, "low on disk"),
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    broker.broker.alarms.clear(Resource::Disk);
    assert!(matches!(
        next_flow_event(&mut events).await,
        Event::ConnectionUnblocked
    ));
    // The connection works again.
    ch.queue_declare(
        "after".into(),
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_free_limit_raises_the_disk_alarm() {
    // A limit above any real free space: the monitor raises the alarm at once.
    let broker = common::start_broker_with(|c| {
        c.disk_free_limit = u64::MAX;
        c.disk_monitor_interval = Duration::from_millis(20);
    })
    .await;
    let free = warren::store::disk::free_bytes(&broker.broker.config.data_dir).unwrap();
    assert!(free > 0);
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let mut events = Box::pin(conn.events_listener());
    let ch = conn.create_channel().await.unwrap();
    // As in RabbitMQ, a connection is blocked when it publishes while an alarm is on: wait
    // for the monitor's first check before publishing.
    common::within(DEADLINE, async {
        while !broker.broker.alarms.active().contains(&Resource::Disk) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    ch.basic_publish(
        "".into(),
        "nowhere".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    match next_flow_event(&mut events).await {
        Event::ConnectionBlocked(reason) => assert_eq!(reason, "low on disk"),
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    assert_eq!(broker.broker.alarms.active(), vec![Resource::Disk]);
    broker.shutdown().await;
}
