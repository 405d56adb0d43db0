//! Persistent messages in durable queues survive restarts and `kill -9`; the message log
//! reports and drops damaged records; fully consumed segments are reclaimed.

use crate::common;

use futures_lite::StreamExt;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn connect(uri: &str) -> (Connection, Channel) {
    let conn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

async fn declare(ch: &Channel, name: &str, durable: bool) -> u32 {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare")
    .message_count()
}

/// Publishes with confirms and waits for every one; panics on a nack.
async fn publish_confirmed(ch: &Channel, queue: &str, bodies: &[Vec<u8>], props: BasicProperties) {
    let mut confirms = Vec::new();
    for b in bodies {
        confirms.push(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b,
                props.clone(),
            )
            .await
            .expect("publish"),
        );
    }
    for c in confirms {
        assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(_)));
    }
}

/// Takes every message of a queue with basic.get (auto-ack): (body, redelivered) in order.
async fn drain(ch: &Channel, queue: &str) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    for _ in 0..1_000_000 {
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(m) => out.push((m.delivery.data.clone(), m.delivery.redelivered)),
            None => return out,
        }
    }
    panic!("queue {queue} never ran dry");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("msgs"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_survive_a_graceful_restart() {
    let dir = common::temp_data_dir();
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let (conn, ch) = connect(&broker.uri()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(&ch, "keep", true).await;
    declare(&ch, "scratch", false).await;
    let bodies: Vec<Vec<u8>> = (0..10).map(|i| format!("p{i}").into_bytes()).collect();
    publish_confirmed(&ch, "keep", &bodies, persistent()).await;
    publish_confirmed(
        &ch,
        "keep",
        &[b"transient".to_vec()],
        BasicProperties::default(),
    )
    .await;
    publish_confirmed(
        &ch,
        "scratch",
        &[b"p-in-transient-queue".to_vec()],
        persistent(),
    )
    .await;
    // p0, p1 acked; p2, p3 delivered and still unacked when the broker stops.
    let other = conn.create_channel().await.unwrap();
    for i in 0..4 {
        let m = other
            .basic_get("keep".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("message");
        assert_eq!(m.delivery.data, format!("p{i}").into_bytes());
        if i < 2 {
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    // The acks are processed in order before this round trip answers.
    ch.queue_declare(
        "keep".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    broker.shutdown().await;

    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let report = broker.broker.message_log().unwrap().recovery_report();
    assert!(!report.after_crash, "{report:?}");
    assert!(report.damage.is_empty(), "{report:?}");
    let (_conn, ch) = connect(&broker.uri()).await;
    assert_eq!(declare(&ch, "keep", true).await, 8);
    let got = drain(&ch, "keep").await;
    let want: Vec<(Vec<u8>, bool)> = (2..10)
        .map(|i| (format!("p{i}").into_bytes(), i < 4))
        .collect();
    assert_eq!(got, want, "in order; the two unacked ones redelivered");
    assert_eq!(
        declare(&ch, "scratch", false).await,
        0,
        "transient queue is new"
    );
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_dead_letters_are_stored() {
    let dir = common::temp_data_dir();
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let (_conn, ch) = connect(&broker.uri()).await;
    declare(&ch, "dead", true).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("dead".into()),
    );
    ch.queue_declare(
        "work".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    ch.tx_select().await.unwrap();
    for b in [&b"t1"[..], b"t2"] {
        ch.basic_publish(
            "".into(),
            "work".into(),
            BasicPublishOptions::default(),
            b,
            persistent(),
        )
        .await
        .unwrap();
    }
    ch.tx_commit().await.unwrap();
    let m = ch
        .basic_get("work".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("t1");
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    ch.tx_commit().await.unwrap();
    broker.shutdown().await;

    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let (_conn, ch) = connect(&broker.uri()).await;
    let work = drain(&ch, "work").await;
    assert_eq!(work, vec![(b"t2".to_vec(), false)]);
    let dead = drain(&ch, "dead").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, b"t1");
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_tail_is_reported_and_dropped() {
    for damage in ["flip", "truncate"] {
        let dir = common::temp_data_dir();
        let d = dir.clone();
        let broker = common::within(T, common::start_broker_with(move |c| c.data_dir = d)).await;
        let (_conn, ch) = common::within(T, connect(&broker.uri())).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        declare(&ch, "q", true).await;
        let bodies: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; 100]).collect();
        common::within(T, publish_confirmed(&ch, "q", &bodies, persistent())).await;
        common::within(T, broker.shutdown()).await;

        let segs = segments(&dir);
        let last = segs.last().expect("a segment");
        let mut data = std::fs::read(last).unwrap();
        match damage {
            "flip" => {
                let n = data.len();
                data[n - 3] ^= 0xff;
            }
            _ => data.truncate(data.len() - 5),
        }
        std::fs::write(last, &data).unwrap();

        let d = dir.clone();
        let broker = common::within(T, common::start_broker_with(move |c| c.data_dir = d)).await;
        let report = broker.broker.message_log().unwrap().recovery_report();
        assert_eq!(report.damage.len(), 1, "{damage}: {report:?}");
        assert!(report.damage[0].segment.ends_with(".seg"));
        let (_conn, ch) = common::within(T, connect(&broker.uri())).await;
        let got = drain(&ch, "q").await;
        assert_eq!(
            got.len(),
            19,
            "{damage}: the damaged last record is dropped"
        );
        for (i, (b, _)) in got.iter().enumerate() {
            assert_eq!(b, &bodies[i]);
        }
        common::within(T, broker.shutdown()).await;
        // Reported once: the segment was cut at the damage.
        let d = dir.clone();
        let broker = common::within(T, common::start_broker_with(move |c| c.data_dir = d)).await;
        let report = broker.broker.message_log().unwrap().recovery_report();
        assert!(report.damage.is_empty(), "{damage}: {report:?}");
        common::within(T, broker.shutdown()).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_segments_are_reclaimed() {
    let dir = common::temp_data_dir();
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| {
        c.data_dir = d;
        c.segment_size = 4096;
    })
    .await;
    let (_conn, ch) = connect(&broker.uri()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(&ch, "q", true).await;
    let bodies: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; 200]).collect();
    for chunk in bodies.chunks(30) {
        publish_confirmed(&ch, "q", chunk, persistent()).await;
    }
    let before = segments(&dir).len();
    assert!(before >= 4, "{before} segments");
    assert_eq!(drain(&ch, "q").await.len(), 300);
    // Reclaiming follows the acks asynchronously: wait for it (bounded).
    common::within(T, async {
        loop {
            if segments(&dir).len() <= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    broker.shutdown().await;
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| c.data_dir = d).await;
    let (_conn, ch) = connect(&broker.uri()).await;
    assert_eq!(declare(&ch, "q", true).await, 0, "nothing resurrected");
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------- kill -9 ----------

fn id_of(body: &[u8]) -> u64 {
    u64::from_be_bytes(body[..8].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_confirmed_message() {
    let dir = common::temp_data_dir();
    let mut p = common::spawn_warren(&dir, &[]);
    let (pconn, pch) = connect(&p.uri).await;
    declare(&pch, "crash", true).await;
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirmed = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let acked = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let seen = Arc::new(Mutex::new(HashSet::<u64>::new()));
    // Publisher: batches of 50 with confirms, until the broker dies.
    let publisher = {
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            let mut next = 0u64;
            for _ in 0..100_000 {
                let mut batch = Vec::new();
                for _ in 0..50 {
                    let mut body = next.to_be_bytes().to_vec();
                    body.resize(256, 7);
                    let Ok(c) = pch
                        .basic_publish(
                            "".into(),
                            "crash".into(),
                            BasicPublishOptions::default(),
                            &body,
                            persistent(),
                        )
                        .await
                    else {
                        return;
                    };
                    batch.push((next, c));
                    next += 1;
                }
                for (id, c) in batch {
                    match c.await {
                        Ok(Confirmation::Ack(_)) => {
                            confirmed.lock().unwrap().insert(id);
                        }
                        _ => return,
                    }
                }
            }
        })
    };
    // Consumer: acks each message, until the broker dies.
    let (cconn, cch) = connect(&p.uri).await;
    cch.basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = cch
        .basic_consume(
            "crash".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consuming = {
        let (acked, seen) = (acked.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let id = id_of(&d.data);
                seen.lock().unwrap().insert(id);
                // Counted as acked once the ack is handed to lapin: the
                // broker may have applied it before dying even if lapin
                // never resolves the promise once the socket is gone.
                acked.lock().unwrap().insert(id);
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
            }
        })
    };
    // Kill once both sides have done real work.
    common::within(Duration::from_secs(60), async {
        loop {
            let c = confirmed.lock().unwrap().len();
            let a = acked.lock().unwrap().len();
            if c >= 3000 && a >= 1000 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    p.child.kill().expect("kill -9");
    p.child.wait().unwrap();
    // lapin need not resolve every pending promise once the socket dies,
    // so the client tasks get a bounded grace and are then stopped; the
    // sets they filled are what was observed before the crash.
    for task in [publisher, consuming] {
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    drop((pconn, cconn));
    let confirmed = confirmed.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();

    let mut p = common::spawn_warren(&dir, &[]);
    let (_conn, ch) = connect(&p.uri).await;
    let after = drain(&ch, "crash").await;
    let mut count: HashMap<u64, usize> = HashMap::new();
    for (body, redelivered) in &after {
        let id = id_of(body);
        *count.entry(id).or_default() += 1;
        if seen.contains(&id) {
            assert!(
                redelivered,
                "message {id} seen before the crash came back without redelivered=true"
            );
        }
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated after restart: {dups:?}");
    let lost: Vec<_> = confirmed
        .iter()
        .filter(|id| !acked.contains(id) && !count.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost (of {} confirmed, {} acked, {} recovered)",
        lost.len(),
        confirmed.len(),
        acked.len(),
        after.len()
    );
    eprintln!(
        "kill -9: {} confirmed, {} acked before the crash, {} recovered",
        confirmed.len(),
        acked.len(),
        after.len()
    );
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------- paging ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_beyond_the_memory_budget_is_paged() {
    let dir = common::temp_data_dir();
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| {
        c.data_dir = d;
        c.queue_memory_budget = 64 * 1024;
    })
    .await;
    let (_conn, ch) = connect(&broker.uri()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(&ch, "backlog", false).await;
    declare(&ch, "stored", true).await;
    let body = |i: u32| {
        let mut b = i.to_be_bytes().to_vec();
        b.resize(1024, (i % 251) as u8);
        b
    };
    let bodies: Vec<Vec<u8>> = (0..3000).map(body).collect();
    for chunk in bodies.chunks(500) {
        publish_confirmed(&ch, "backlog", chunk, BasicProperties::default()).await;
        publish_confirmed(&ch, "stored", chunk, persistent()).await;
    }
    let vhost = broker.broker.vhost("/").unwrap();
    for name in ["backlog", "stored"] {
        let q = vhost.queue(name).unwrap();
        assert_eq!(q.message_count(), 3000);
        // 64 KiB of 1 KiB bodies stay in memory; the rest is in the page file.
        assert!(q.paged_count() >= 2900, "{name}: {} paged", q.paged_count());
    }
    // Consumed in order, across many page-ins, with a consumer and prefetch.
    let mut consumer = ch
        .basic_consume(
            "backlog".into(),
            "c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for (i, want) in bodies.iter().enumerate() {
        let d = common::within(T, consumer.next()).await.unwrap().unwrap();
        assert!(&d.data == want, "message {i} out of order or damaged");
    }
    // The persistent ones come back paged after a restart too.
    broker.shutdown().await;
    let d = dir.clone();
    let broker = common::start_broker_with(move |c| {
        c.data_dir = d;
        c.queue_memory_budget = 64 * 1024;
    })
    .await;
    let q = broker.broker.vhost("/").unwrap().queue("stored").unwrap();
    assert_eq!(q.message_count(), 3000);
    assert!(
        q.paged_count() >= 2900,
        "{} paged after recovery",
        q.paged_count()
    );
    let (_conn, ch) = connect(&broker.uri()).await;
    let got = drain(&ch, "stored").await;
    assert_eq!(got.len(), 3000);
    assert!(got.iter().zip(&bodies).all(|((b, _), w)| b == w));
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_declare_keeps_the_confirmed_message() {
    let dir = common::temp_data_dir();
    let mut p = common::spawn_warren(&dir, &[]);
    let (_conn, ch) = connect(&p.uri).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // The definitions writer is asynchronous; the confirm must still imply the queue's
    // definition is on disk.
    declare(&ch, "fresh", true).await;
    publish_confirmed(&ch, "fresh", &[b"first".to_vec()], persistent()).await;
    p.child.kill().expect("kill -9");
    p.child.wait().unwrap();
    let mut p = common::spawn_warren(&dir, &[]);
    let (_conn, ch) = connect(&p.uri).await;
    let got = drain(&ch, "fresh").await;
    assert_eq!(got, vec![(b"first".to_vec(), true)]);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A quorum queue stores every message, transient ones too: after `kill -9` the confirmed
/// messages it held come back (acked ones do not), while the transient copies that went
/// to a durable classic queue through the same exchange are gone, as RabbitMQ does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_a_quorum_queues_transient_messages() {
    let dir = common::temp_data_dir();
    let mut p = common::spawn_warren(&dir, &[]);
    let (_conn, ch) = connect(&p.uri).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut qq = FieldTable::default();
    qq.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        "qq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        qq,
    )
    .await
    .expect("declare quorum queue");
    declare(&ch, "classic", true).await;
    ch.exchange_declare(
        "both".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for q in ["qq", "classic"] {
        ch.queue_bind(
            q.into(),
            "both".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let transient = BasicProperties::default().with_delivery_mode(1);
    let mut confirms = Vec::new();
    for i in 0..10u8 {
        confirms.push(
            ch.basic_publish(
                "both".into(),
                "".into(),
                BasicPublishOptions::default(),
                &[i],
                transient.clone(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(_)));
    }
    // The classic queue's consumer takes its copies: it must not remove the quorum
    // queue's stored ones. Two quorum messages are acked, so they stay gone.
    assert_eq!(drain(&ch, "classic").await.len(), 10);
    for _ in 0..2 {
        let m = ch
            .basic_get("qq".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    // A confirmed publish after the acks: once it is confirmed, the acks before it are
    // on disk too (one log, in order).
    publish_confirmed(&ch, "qq", &[vec![99]], transient).await;
    p.child.kill().expect("kill -9");
    p.child.wait().unwrap();
    let mut p = common::spawn_warren(&dir, &[]);
    let (_conn, ch) = connect(&p.uri).await;
    let got: Vec<Vec<u8>> = drain(&ch, "qq").await.into_iter().map(|(b, _)| b).collect();
    let want: Vec<Vec<u8>> = (2..10u8).map(|i| vec![i]).chain([vec![99]]).collect();
    assert_eq!(got, want);
    assert!(drain(&ch, "classic").await.is_empty());
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
