//! Internal flow control (RabbitMQ's credit flow, `src/flow.rs`): a publisher feeding a
//! queue that cannot hand its messages on as fast as they come, while the broker is
//! saturated, stops being read and shows `state: flow` in /api/connections; it is let go
//! as the queue catches up. A queue without consumers never holds its publisher.
//!
//! Saturation is forced with the test hook `flow_busy_threshold = 0` (always saturated),
//! and the queue is overrun deterministically by a consumer that holds its one delivery
//! (prefetch 1), with a credit of 10 messages.

use crate::common;

use common::http::Api;
use futures_lite::StreamExt;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);
const CREDIT: u32 = 10;

async fn saturated_broker() -> warren::BrokerHandle {
    common::start_broker_with(|c| {
        c.flow_credit = CREDIT;
        c.flow_busy_threshold = 0.0;
    })
    .await
}

async fn connect(broker: &warren::BrokerHandle, name: &str) -> Connection {
    Connection::connect(
        &broker.uri(),
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .unwrap()
}

/// The management `state` of the connection named `name` (None until it is listed).
async fn state(api: &Api, name: &str) -> Option<String> {
    let conns = api.get_json("/api/connections").await;
    conns.as_array()?.iter().find_map(|c: &Value| {
        (c["client_properties"]["connection_name"] == name)
            .then(|| c["state"].as_str().unwrap_or_default().to_string())
    })
}

/// Polls /api/connections until the connection shows `want` (bounded by DEADLINE).
async fn wait_state(api: &Api, name: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = state(api, name).await;
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection {name} is {now:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

async fn declare(conn: &Connection, q: &str) -> lapin::Channel {
    declare_typed(conn, q, None).await
}

/// Declares `q`, of `x-queue-type` `kind` (durable) when given.
async fn declare_typed(conn: &Connection, q: &str, kind: Option<&str>) -> lapin::Channel {
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    if let Some(k) = kind {
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString(k.into()),
        );
    }
    let opts = QueueDeclareOptions {
        durable: kind.is_some(),
        ..Default::default()
    };
    ch.queue_declare(q.into(), opts, args).await.unwrap();
    ch
}

async fn publish(ch: &lapin::Channel, q: &str, i: usize) -> lapin::PublisherConfirm {
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        format!("m{i}").as_bytes(),
        BasicProperties::default(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrun_queue_puts_its_publisher_in_flow_until_it_catches_up() {
    overrun_then_catch_up(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrun_quorum_queue_puts_its_publisher_in_flow_too() {
    overrun_then_catch_up(Some("quorum")).await;
}

async fn overrun_then_catch_up(kind: Option<&str>) {
    const N: usize = 200;
    let broker = saturated_broker().await;
    let api = Api::new(broker.mgmt_addr.unwrap());
    let cconn = connect(&broker, "flow-consumer").await;
    let cch = declare_typed(&cconn, "flow-q", kind).await;
    cch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "flow-q".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // The consumer holds its one delivery: the queue cannot hand anything on, its backlog
    // reaches the credit, and the publisher is held with the rest of its messages unread.
    let pconn = connect(&broker, "flow-publisher").await;
    let pch = pconn.create_channel().await.unwrap();
    for i in 0..N {
        publish(&pch, "flow-q", i).await;
    }
    wait_state(&api, "flow-publisher", "flow").await;
    assert_eq!(
        state(&api, "flow-consumer").await.as_deref(),
        Some("running")
    );
    let held = ready(&broker, "flow-q");
    assert!(
        (CREDIT as usize..N / 2).contains(&held),
        "{held} ready: the broker should stop reading at the credit"
    );

    // The consumer acks as it goes: the queue drains, lets its publisher go, takes the
    // rest, and every message arrives once, in order.
    let mut got = Vec::new();
    common::within(DEADLINE, async {
        while got.len() < N {
            let d = consumer.next().await.unwrap().unwrap();
            got.push(String::from_utf8(d.data.clone()).unwrap());
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    })
    .await;
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    wait_state(&api, "flow-publisher", "running").await;
    assert_eq!(ready(&broker, "flow-q"), 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_consumers_never_holds_its_publisher() {
    // Saturated, a credit of 10, and 50 times that many messages with confirms: the
    // backlog is the user's (no consumer to hand it to), so every publish is taken and
    // confirmed and the connection never shows flow.
    const N: usize = 500;
    let broker = saturated_broker().await;
    let api = Api::new(broker.mgmt_addr.unwrap());
    let pconn = connect(&broker, "lone-publisher").await;
    let pch = declare(&pconn, "no-consumers").await;
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::with_capacity(N);
    for i in 0..N {
        confirms.push(publish(&pch, "no-consumers", i).await);
    }
    common::within(DEADLINE, async {
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
    })
    .await;
    assert_eq!(ready(&broker, "no-consumers"), N);
    assert_eq!(
        state(&api, "lone-publisher").await.as_deref(),
        Some("running")
    );
    let q = broker
        .broker
        .vhost("/")
        .unwrap()
        .queue("no-consumers")
        .unwrap();
    assert!(!q.flow_overrun());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_do_not_hold_a_publisher_while_the_broker_keeps_up() {
    // The same overrun shape as the first test (a consumer holding its one delivery, a
    // credit of 10) but saturation judged from the runtime (the default threshold): a
    // broker that mostly waits for its clients is not saturated, so the long queue of a
    // slow consumer is the user's, and every publish is confirmed.
    const N: usize = 300;
    let broker = common::start_broker_with(|c| c.flow_credit = CREDIT).await;
    let cconn = connect(&broker, "slow-consumer").await;
    let cch = declare(&cconn, "slow-q").await;
    cch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "slow-q".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let pconn = connect(&broker, "slow-publisher").await;
    let pch = pconn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    common::within(DEADLINE, async {
        for i in 0..N {
            // One at a time: the broker waits for the client between publishes.
            assert!(publish(&pch, "slow-q", i).await.await.unwrap().is_ack());
        }
    })
    .await;
    let first = common::within(DEADLINE, consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first.data[..], b"m0");
    assert_eq!(ready(&broker, "slow-q"), N - 1);
    broker.shutdown().await;
}
