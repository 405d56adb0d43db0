//! `x-delayed-message` exchanges through lapin over TCP: the plugin's declare errors,
//! delivery in due-time order with `x-delay` swapped to minus the delay, immediate routing
//! without a positive delay, mandatory returns, `messages_delayed` in the management API,
//! and delayed messages surviving a restart and `kill -9`.

use crate::common;

use common::http::{eventually, Api};
use futures_lite::StreamExt;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

async fn connect(uri: &str) -> (Connection, Channel) {
    let conn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    (conn, ch)
}

fn delayed_args(kind: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-delayed-type".into(), AMQPValue::LongString(kind.into()));
    t
}

/// A durable x-delayed-message exchange routing as `direct`, and a durable queue bound
/// with key `k`.
async fn setup(ch: &Channel, x: &str, q: &str) {
    ch.exchange_declare(
        x.into(),
        ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        delayed_args("direct"),
    )
    .await
    .expect("declare delayed exchange");
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare queue");
    ch.queue_bind(
        q.into(),
        x.into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
}

fn props(delay: Option<AMQPValue>) -> BasicProperties {
    let p = BasicProperties::default().with_delivery_mode(2);
    match delay {
        None => p,
        Some(v) => {
            let mut h = FieldTable::default();
            h.insert("x-delay".into(), v);
            p.with_headers(h)
        }
    }
}

/// Publishes (body, x-delay) pairs with confirms; panics unless every one is acked.
async fn publish(ch: &Channel, x: &str, msgs: &[(String, Option<AMQPValue>)]) {
    let mut confirms = Vec::new();
    for (body, delay) in msgs {
        confirms.push(
            ch.basic_publish(
                x.into(),
                "k".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props(delay.clone()),
            )
            .await
            .expect("publish"),
        );
    }
    for c in confirms {
        let c = common::within(T, c).await.expect("confirm");
        assert!(matches!(c, Confirmation::Ack(_)), "{c:?}");
    }
}

async fn consumer(ch: &Channel, q: &str) -> Consumer {
    ch.basic_consume(
        q.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("consume")
}

/// The next `n` deliveries: (body, x-delay header).
async fn take(c: &mut Consumer, n: usize) -> Vec<(String, Option<AMQPValue>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let d = common::within(T, c.next())
            .await
            .expect("a delivery")
            .expect("delivery ok");
        let h = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delay").cloned());
        out.push((String::from_utf8_lossy(&d.data).into_owned(), h));
    }
    out
}

fn amqp_error(e: &lapin::Error) -> (u16, String) {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => (err.get_id(), err.get_message().to_string()),
        other => panic!("not a broker error: {other:?}"),
    }
}

async fn declare_error(uri: &str, args: FieldTable) -> (u16, String) {
    let conn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let e = ch
        .exchange_declare(
            "bad-delayed".into(),
            ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions::default(),
            args,
        )
        .await
        .expect_err("declare must fail");
    amqp_error(&e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_needs_an_existing_delayed_type() {
    let broker = common::start_broker().await;
    let uri = broker.uri();
    assert_eq!(
        declare_error(&uri, FieldTable::default()).await,
        (
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type".into()
        )
    );
    assert_eq!(
        declare_error(&uri, delayed_args("x-delayed-message")).await,
        (
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'".into()
        )
    );
    assert_eq!(
        declare_error(&uri, delayed_args("nope")).await,
        (503, "COMMAND_INVALID - unknown exchange type 'nope'".into())
    );
    // A delayed consistent-hash exchange checks its arguments as the inner type does.
    let mut a = delayed_args("x-consistent-hash");
    a.insert(
        "hash-property".into(),
        AMQPValue::LongString("app_id".into()),
    );
    assert_eq!(
        declare_error(&uri, a).await,
        (
            406,
            "PRECONDITION_FAILED - Unsupported property: app_id".into()
        )
    );
    // Redeclaring with another type is refused, naming x-delayed-message.
    let (_c, ch) = connect(&uri).await;
    setup(&ch, "dx", "dq").await;
    let e = ch
        .exchange_declare(
            "dx".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            delayed_args("direct"),
        )
        .await
        .expect_err("inequivalent");
    assert_eq!(
        amqp_error(&e),
        (406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'dx' in vhost '/': received 'direct' but current is 'x-delayed-message'".into())
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_due_order_with_minus_their_delay() {
    let broker = common::start_broker().await;
    let api = Api::new(broker.mgmt_addr.unwrap());
    let (_c, ch) = connect(&broker.uri()).await;
    setup(&ch, "dx", "dq").await;
    let mut c = consumer(&ch, "dq").await;
    let started = Instant::now();
    publish(
        &ch,
        "dx",
        &[
            ("late".into(), Some(AMQPValue::LongInt(900))),
            ("early".into(), Some(AMQPValue::LongLongInt(300))),
            ("now".into(), None),
            ("middle".into(), Some(AMQPValue::LongString("600".into()))),
            ("negative".into(), Some(AMQPValue::LongInt(-100))),
            ("also-early".into(), Some(AMQPValue::ShortInt(300))),
        ],
    )
    .await;
    // Routed at once: no header, and a negative delay (kept as it was).
    let first = take(&mut c, 2).await;
    assert_eq!(
        first,
        vec![
            ("now".to_string(), None),
            ("negative".to_string(), Some(AMQPValue::LongInt(-100)))
        ]
    );
    // The management API counts the four waiting.
    let x = api.get_json("/api/exchanges/%2F/dx").await;
    assert_eq!(x["type"], "x-delayed-message");
    assert_eq!(x["arguments"]["x-delayed-type"], "direct");
    let waiting = x["messages_delayed"].as_u64().expect("messages_delayed");
    assert!(waiting <= 4, "{x}");
    let rest = take(&mut c, 4).await;
    let elapsed = started.elapsed();
    assert_eq!(
        rest,
        vec![
            ("early".to_string(), Some(AMQPValue::LongInt(-300))),
            ("also-early".to_string(), Some(AMQPValue::LongInt(-300))),
            ("middle".to_string(), Some(AMQPValue::LongInt(-600))),
            ("late".to_string(), Some(AMQPValue::LongInt(-900))),
        ]
    );
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    let x = api.get_json("/api/exchanges/%2F/dx").await;
    assert_eq!(x["messages_delayed"], 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandatory_delayed_message_is_returned_and_still_delivered() {
    let broker = common::start_broker().await;
    let (_c, ch) = connect(&broker.uri()).await;
    setup(&ch, "dx", "dq").await;
    let mut c = consumer(&ch, "dq").await;
    let conf = ch
        .basic_publish(
            "dx".into(),
            "k".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"m",
            props(Some(AMQPValue::LongInt(200))),
        )
        .await
        .unwrap();
    let conf = common::within(T, conf).await.unwrap();
    // As with the plugin: nothing is routed at publish time, so the message comes back...
    let returned = conf.take_message().expect("basic.return");
    assert_eq!(returned.reply_code, 312);
    // ...and is delivered when due all the same.
    assert_eq!(
        take(&mut c, 1).await,
        vec![("m".to_string(), Some(AMQPValue::LongInt(-200)))]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_survive_a_restart_and_segments_are_reclaimed() {
    let dir = common::temp_data_dir();
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let (conn, ch) = connect(&broker.uri()).await;
    setup(&ch, "dx", "dq").await;
    let msgs: Vec<(String, Option<AMQPValue>)> = (0..50)
        .map(|i| {
            (
                format!("m{i}"),
                Some(AMQPValue::LongInt(3000 + 10 * (49 - i))),
            )
        })
        .collect();
    publish(&ch, "dx", &msgs).await;
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let store = broker.broker.delayed.get().expect("delay store");
    assert_eq!(store.count("/", "dx"), 50);
    let (_c, ch) = connect(&broker.uri()).await;
    let mut c = consumer(&ch, "dq").await;
    let got: Vec<String> = take(&mut c, 50).await.into_iter().map(|m| m.0).collect();
    let expected: Vec<String> = (0..50).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "due order: the shortest delay first");
    assert_eq!(store.count("/", "dx"), 0);
    // Every segment but the head is gone once its messages are done.
    eventually(10, "segments reclaimed", || async {
        let n = std::fs::read_dir(dir.join("delayed")).ok()?.count();
        (n <= 2).then_some(())
    })
    .await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_confirmed_delayed_message() {
    let dir = common::temp_data_dir();
    let mut p = common::spawn_warren(&dir, &[]);
    let (_conn, ch) = connect(&p.uri).await;
    setup(&ch, "dx", "dq").await;
    // Confirmed, then the broker is killed before any is due. Delays 20 ms apart, in the
    // reverse of publish order (publishing all of them takes far less than 20 ms each).
    let msgs: Vec<(String, Option<AMQPValue>)> = (0..100)
        .map(|i| {
            (
                format!("m{i:03}"),
                Some(AMQPValue::LongInt(2000 + 20 * (99 - i))),
            )
        })
        .collect();
    publish(&ch, "dx", &msgs).await;
    p.child.kill().expect("kill -9");
    p.child.wait().unwrap();
    let mut p = common::spawn_warren(&dir, &[]);
    let (_conn, ch) = connect(&p.uri).await;
    let mut c = consumer(&ch, "dq").await;
    let got: Vec<String> = take(&mut c, 100).await.into_iter().map(|m| m.0).collect();
    let expected: Vec<String> = (0..100).rev().map(|i| format!("m{i:03}")).collect();
    assert_eq!(got, expected);
    // Nothing more: each exactly once.
    let extra = tokio::time::timeout(Duration::from_millis(300), c.next()).await;
    assert!(extra.is_err(), "a duplicate: {extra:?}");
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
