//! Streams through a real client: messages survive a restart (with their offsets), the
//! numbering continues after it, retention and segment rolls work through declare
//! arguments, and deleting a stream removes its files.

use crate::common;

use futures_lite::StreamExt;
use lapin::{
    options::*, types::AMQPValue, types::FieldTable, BasicProperties, Channel, Connection,
    ConnectionProperties,
};
use std::time::Duration;

fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(ch: &Channel, q: &str, args: FieldTable) -> lapin::Queue {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("stream declared")
}

/// Publishes with confirms; every other message is transient (a stream keeps it anyway).
async fn publish_confirmed(conn: &Connection, q: &str, bodies: impl Iterator<Item = String>) {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for (i, b) in bodies.enumerate() {
        let props = BasicProperties::default().with_delivery_mode(if i % 2 == 0 { 2 } else { 1 });
        pending.push(
            ch.basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                props,
            )
            .await
            .unwrap(),
        );
    }
    for c in pending {
        assert!(c.await.unwrap().is_ack());
    }
}

/// Reads `n` deliveries from `offset` and returns (x-stream-offset, body) pairs.
async fn read(conn: &Connection, q: &str, offset: AMQPValue, n: usize) -> Vec<(i64, String)> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    let mut cons = ch
        .basic_consume(q.into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = common::within(Duration::from_secs(10), cons.next())
            .await
            .expect("delivery")
            .unwrap();
        let off = match d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset"))
        {
            Some(AMQPValue::LongLongInt(o)) => *o,
            other => panic!("x-stream-offset header: {other:?}"),
        };
        out.push((off, String::from_utf8_lossy(&d.data).into_owned()));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = ch.close(200, "done".into()).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_survives_restart_and_keeps_numbering() {
    let dir = common::temp_data_dir();
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    {
        let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        // Small segments: the stream spans many files.
        let args = stream_args(&[("x-stream-max-segment-size-bytes", AMQPValue::LongInt(4096))]);
        declare(&ch, "events", args).await;
        publish_confirmed(&conn, "events", (0..300).map(|i| format!("e{i}"))).await;
        let _ = conn.close(200, "bye".into()).await;
    }
    broker.shutdown().await;
    let segments = std::fs::read_dir(dir.join("streams"))
        .unwrap()
        .flatten()
        .map(|e| {
            std::fs::read_dir(e.path())
                .unwrap()
                .flatten()
                .filter(|f| f.file_name().to_string_lossy().ends_with(".seg"))
                .count()
        })
        .sum::<usize>();
    assert!(segments > 3, "{segments} segment files");

    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let args = stream_args(&[("x-stream-max-segment-size-bytes", AMQPValue::LongInt(4096))]);
    let ok = declare(&ch, "events", args).await;
    assert_eq!((ok.message_count(), ok.consumer_count()), (300, 0));
    let got = read(&conn, "events", AMQPValue::LongString("first".into()), 300).await;
    for (i, (off, body)) in got.iter().enumerate() {
        assert_eq!((*off, body.as_str()), (i as i64, format!("e{i}").as_str()));
    }
    let mid = read(&conn, "events", AMQPValue::LongLongInt(150), 1).await;
    assert_eq!(mid, vec![(150, "e150".to_string())]);
    publish_confirmed(&conn, "events", std::iter::once("after".to_string())).await;
    let tail = read(&conn, "events", AMQPValue::LongLongInt(300), 1).await;
    assert_eq!(tail, vec![(300, "after".to_string())]);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_length_bytes_drops_old_segments() {
    let broker = common::start_broker().await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let args = stream_args(&[
        ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(2000)),
        ("x-max-length-bytes", AMQPValue::LongInt(5000)),
    ]);
    declare(&ch, "capped", args).await;
    let body = "x".repeat(500);
    publish_confirmed(&conn, "capped", (0..100).map(|_| body.clone())).await;
    let ok = declare(
        &ch,
        "capped",
        stream_args(&[
            ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(2000)),
            ("x-max-length-bytes", AMQPValue::LongInt(5000)),
        ]),
    )
    .await;
    let left = ok.message_count();
    assert!(left > 0 && left < 20, "{left} messages kept");
    // `first` is the oldest message kept, not offset 0.
    let got = read(&conn, "capped", AMQPValue::LongString("first".into()), 1).await;
    assert_eq!(got[0].0, 100 - left as i64);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_reports_a_stream() {
    let broker = common::start_broker().await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "reported", stream_args(&[])).await;
    publish_confirmed(&conn, "reported", (0..3).map(|i| i.to_string())).await;
    let api = common::http::Api::new(broker.mgmt_addr.expect("management enabled"));
    let q = api.get_json("/api/queues/%2F/reported").await;
    assert_eq!(q["type"], "stream");
    assert_eq!(q["messages_ready"], 3);
    assert_eq!(q["committed_offset"], 2);
    assert_eq!(q["first_offset"], 0);
    assert_eq!(q["segments"], 1);
    assert_eq!(q["members"].as_array().map(Vec::len), Some(1));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_stream_removes_its_files() {
    let dir = common::temp_data_dir();
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "doomed", stream_args(&[])).await;
    publish_confirmed(&conn, "doomed", (0..10).map(|i| i.to_string())).await;
    let count = || std::fs::read_dir(dir.join("streams")).map_or(0, |d| d.count());
    assert_eq!(count(), 1);
    ch.queue_delete("doomed".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(count(), 0);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
