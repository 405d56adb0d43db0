//! Injected disk faults (issue 17): the message log, stream segments, the definitions file
//! and the page files meet EIO, ENOSPC, short writes and failed fdatasyncs through the
//! failpoints of `src/store/fault.rs`. Built only with the `failpoints` feature:
//!
//! `cargo test --release --features failpoints --test disk_faults`
//!
//! Each test checks the rules: nothing is confirmed before it is synced; after a failed
//! fdatasync the unsynced bytes are lost (the failpoint zeroes them) and the store rewrites
//! them elsewhere instead of trusting a second sync; publishers get `connection.blocked`
//! while the store cannot write and `connection.unblocked` when it can again; everything
//! confirmed is there, once and in order, after a restart; the broker never panics.

#![cfg(feature = "failpoints")]

mod common;

use fail::FailScenario;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Event, PublisherConfirm};
use std::path::{Path, PathBuf};
use std::time::Duration;
use warren::alarm::Resource;

const T: Duration = Duration::from_secs(20);

async fn broker(dir: &Path, budget: usize) -> warren::BrokerHandle {
    let d = dir.to_path_buf();
    common::within(
        T,
        common::start_broker_with(move |c| {
            c.data_dir = d;
            c.segment_size = 4096;
            c.disk_monitor_interval = Duration::from_millis(20);
            c.queue_memory_budget = budget;
        }),
    )
    .await
}

async fn connect(uri: &str) -> (Connection, Channel) {
    let conn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

async fn declare(ch: &Channel, name: &str, kind: Option<&str>) -> u32 {
    let mut args = FieldTable::default();
    if let Some(k) = kind {
        args.insert("x-queue-type".into(), AMQPValue::LongString(k.into()));
    }
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declare")
    .message_count()
}

async fn publish(ch: &Channel, queue: &str, body: &[u8]) -> PublisherConfirm {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .expect("publish")
}

async fn acked(c: PublisherConfirm) {
    let c = common::within(T, c).await.expect("confirm");
    assert!(c.is_ack(), "nacked: {c:?}");
}

async fn publish_confirmed(ch: &Channel, queue: &str, bodies: &[String]) {
    let mut pending = Vec::new();
    for b in bodies {
        pending.push(publish(ch, queue, b.as_bytes()).await);
    }
    for c in pending {
        acked(c).await;
    }
}

/// Every message of a queue, in order, by basic.get (auto-ack).
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(m) => out.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
            None => return out,
        }
    }
    panic!("queue {queue} never ran dry");
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}-{i:04}-{}", "x".repeat(150)))
        .collect()
}

/// Waits (bounded) until the disk alarm is `on` — the monitor saw the store fail or work.
async fn disk_alarm(b: &warren::BrokerHandle, on: bool) {
    common::within(T, async {
        while b.broker.alarms.active().contains(&Resource::Disk) != on {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Waits (bounded) until the message log reports a failing write or sync.
async fn log_failing(b: &warren::BrokerHandle) {
    let log = b.broker.message_log().expect("message log").clone();
    common::within(T, async {
        while !log.failing() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

async fn next_flow_event(events: &mut (impl futures_lite::Stream<Item = Event> + Unpin)) -> Event {
    common::within(T, async {
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

/// A confirm that has not come yet.
async fn pending(c: &mut PublisherConfirm) {
    assert!(
        futures_lite::future::poll_once(c).await.is_none(),
        "confirmed while the store could not sync"
    );
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out
}

/// A failed fdatasync of the message log: the batch's bytes are zeroed (lost, as after
/// fsyncgate), its confirms wait, publishers are blocked, and once syncs work again the
/// batch is in a new segment — still there after a restart, while the segments around it
/// are reclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fdatasync_is_never_trusted_and_blocks_publishers() {
    let scenario = FailScenario::setup();
    let dir = common::temp_data_dir();
    let b = broker(&dir, 32 << 20).await;
    let (conn, ch) = connect(&b.uri()).await;
    let mut events = Box::pin(conn.events_listener());
    declare(&ch, "q", None).await;
    declare(&ch, "other", None).await;
    let before = names("before", 10);
    publish_confirmed(&ch, "q", &before).await;

    fail::cfg("msglog::sync", "return").unwrap();
    let mut c0 = publish(&ch, "q", b"during-0").await;
    log_failing(&b).await;
    disk_alarm(&b, true).await;
    // A connection publishing while the alarm is on is blocked (as in RabbitMQ).
    let mut c1 = publish(&ch, "q", b"during-1").await;
    match next_flow_event(&mut events).await {
        Event::ConnectionBlocked(reason) => assert_eq!(reason, "low on disk"),
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    pending(&mut c0).await;
    pending(&mut c1).await;

    fail::remove("msglog::sync");
    acked(c0).await;
    acked(c1).await;
    assert!(matches!(
        next_flow_event(&mut events).await,
        Event::ConnectionUnblocked
    ));
    // Enough to fill the segment the batch was rewritten to and move on; consumed at once,
    // so that segment's own messages are all gone while the rewritten batch is not.
    publish_confirmed(&ch, "other", &names("other", 40)).await;
    assert_eq!(drain(&ch, "other").await.len(), 40);
    publish_confirmed(&ch, "other", &names("last", 1)).await;
    drop(conn);
    common::within(T, b.shutdown()).await;

    let b = broker(&dir, 32 << 20).await;
    let report = b.broker.message_log().unwrap().recovery_report();
    let (_conn, ch) = connect(&b.uri()).await;
    let mut want = before.clone();
    want.push("during-0".into());
    want.push("during-1".into());
    assert_eq!(drain(&ch, "q").await, want, "recovery: {report:?}");
    common::within(T, b.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
    scenario.teardown();
}

/// EIO, ENOSPC and a short write (a torn record) on the message log: confirms wait until
/// the write works, and a restart finds every confirmed message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_errors_and_short_writes_lose_and_duplicate_nothing() {
    let scenario = FailScenario::setup();
    let dir = common::temp_data_dir();
    let b = broker(&dir, 32 << 20).await;
    let (conn, ch) = connect(&b.uri()).await;
    declare(&ch, "q", None).await;
    let mut want = Vec::new();
    for kind in ["eio", "enospc", "short"] {
        let ok = names(&format!("ok-{kind}"), 5);
        publish_confirmed(&ch, "q", &ok).await;
        want.extend(ok);
        fail::cfg("msglog::write", &format!("return({kind})")).unwrap();
        let mut c = publish(&ch, "q", format!("fault-{kind}").as_bytes()).await;
        log_failing(&b).await;
        pending(&mut c).await;
        fail::remove("msglog::write");
        acked(c).await;
        want.push(format!("fault-{kind}"));
    }
    drop(conn);
    common::within(T, b.shutdown()).await;

    let b = broker(&dir, 32 << 20).await;
    let report = b.broker.message_log().unwrap().recovery_report();
    let (_conn, ch) = connect(&b.uri()).await;
    assert_eq!(drain(&ch, "q").await, want, "recovery: {report:?}");
    common::within(T, b.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
    scenario.teardown();
}

/// Stream segments: a failed fdatasync and a short write each move the stream to a new
/// segment file; the confirms wait; after a restart the stream reads back every confirmed
/// message with consecutive offsets and nothing torn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_faults_rewrite_to_a_new_segment() {
    let scenario = FailScenario::setup();
    let dir = common::temp_data_dir();
    let b = broker(&dir, 32 << 20).await;
    let (conn, ch) = connect(&b.uri()).await;
    declare(&ch, "s", Some("stream")).await;
    let mut want = names("first", 5);
    publish_confirmed(&ch, "s", &want).await;
    for (point, action) in [
        ("stream::sync", "return"),
        ("stream::write", "return(short)"),
    ] {
        fail::cfg(point, action).unwrap();
        let body = format!("fault-{point}");
        let mut c = publish(&ch, "s", body.as_bytes()).await;
        log_failing(&b).await;
        disk_alarm(&b, true).await;
        pending(&mut c).await;
        fail::remove(point);
        acked(c).await;
        want.push(body);
        let more = names(&format!("after-{point}"), 3);
        publish_confirmed(&ch, "s", &more).await;
        want.extend(more);
    }
    disk_alarm(&b, false).await;
    // The first segment, then one per fault (the retried records start a new one).
    let segs = files(&dir.join("streams"), "seg").len();
    assert!(segs >= 3, "{segs} stream segments");
    drop(conn);
    common::within(T, b.shutdown()).await;

    let b = broker(&dir, 32 << 20).await;
    let (conn, ch) = connect(&b.uri()).await;
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut cons = ch
        .basic_consume("s".into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let d = common::within(T, cons.next())
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
        assert_eq!(off, got.len() as i64, "offsets are consecutive");
        got.push(String::from_utf8_lossy(&d.data).into_owned());
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(got, want);
    drop(conn);
    common::within(T, b.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
    scenario.teardown();
}

/// The definitions file cannot be written (ENOSPC, then a failed fsync): a message for a
/// queue declared meanwhile is not confirmed until the queue's definition is on disk, so
/// after a restart both are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_write_failure_holds_confirms() {
    let scenario = FailScenario::setup();
    let dir = common::temp_data_dir();
    let b = broker(&dir, 32 << 20).await;
    let (conn, ch) = connect(&b.uri()).await;
    for (point, action) in [
        ("definitions::write", "return(enospc)"),
        ("definitions::sync", "return"),
    ] {
        fail::cfg(point, action).unwrap();
        declare(&ch, point, None).await;
        let mut c = publish(&ch, point, point.as_bytes()).await;
        log_failing(&b).await;
        pending(&mut c).await;
        fail::remove(point);
        acked(c).await;
    }
    drop(conn);
    common::within(T, b.shutdown()).await;

    let b = broker(&dir, 32 << 20).await;
    let (_conn, ch) = connect(&b.uri()).await;
    for point in ["definitions::write", "definitions::sync"] {
        assert_eq!(drain(&ch, point).await, vec![point.to_string()]);
    }
    common::within(T, b.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
    scenario.teardown();
}

/// Page files of classic and quorum queues fail (EIO, then short writes) while a backlog
/// is past the memory budget: the messages stay in memory, nothing is lost or reordered,
/// and paging works again once the disk does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_file_faults_keep_every_message_in_order() {
    let scenario = FailScenario::setup();
    let dir = common::temp_data_dir();
    let b = broker(&dir, 4096).await;
    let (_conn, ch) = connect(&b.uri()).await;
    for (queue, kind, point) in [
        ("classic", None, "pager::write"),
        ("quorum", Some("quorum"), "quorum_pages::write"),
    ] {
        declare(&ch, queue, kind).await;
        let mut want = names("paged", 300);
        publish_confirmed(&ch, queue, &want).await;
        for action in ["return(eio)", "return(short)"] {
            fail::cfg(point, action).unwrap();
            let faulty = names(&format!("{point}-{action}"), 300);
            publish_confirmed(&ch, queue, &faulty).await;
            want.extend(faulty);
            fail::remove(point);
            let again = names(&format!("again-{action}"), 300);
            publish_confirmed(&ch, queue, &again).await;
            want.extend(again);
        }
        assert_eq!(drain(&ch, queue).await, want, "{queue}");
    }
    common::within(T, b.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
    scenario.teardown();
}
