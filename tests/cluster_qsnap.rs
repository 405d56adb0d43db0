//! Snapshots and log compaction of quorum queue groups, with three `warren` processes on
//! loopback (snapshots every 64 KiB of log, WAL segments of 256 KiB, so a few MB of
//! traffic shows it): published and acknowledged messages leave a snapshot and a
//! bounded WAL behind; a member that was down meanwhile catches up by the leader's
//! snapshot; a restarted member starts from its own snapshot and log tail; a member
//! added after compaction gets every message; a damaged snapshot file is refused with
//! a clear error (the node runs, the queue keeps working on the others); tx.commit-ok
//! waits for the group's commit.

use crate::common;
use crate::common::cluster::{channel, Node};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{options::*, types::AMQPValue, types::FieldTable, BasicProperties, Channel};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const QUEUE: &str = "snapq";
/// Snapshots every 64 KiB of log, WAL segments of 256 KiB.
const ENV: &[(&str, &str)] = &[
    ("WARREN_QSNAP_MIN_BYTES", "65536"),
    ("WARREN_CLUSTER_WAL_SEGMENT_BYTES", "262144"),
];

/// Removes the nodes' log files at the end.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if std::thread::panicking() {
                // What the nodes said, for the failure's report.
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                println!("--- {} (last {} lines)", p.display(), tail.len());
                for l in tail.iter().rev() {
                    println!("{l}");
                }
            }
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The queue as `node`'s management API reports it (None while it cannot answer).
async fn queue_of(node: &Node) -> Option<Value> {
    tokio::net::TcpStream::connect(("127.0.0.1", node.mgmt))
        .await
        .ok()?;
    let r = node.api().get(&format!("/api/queues/%2F/{QUEUE}")).await;
    (r.status == 200).then(|| r.json())
}

/// Bytes of the node's WAL segments, and its queue snapshot files.
fn disk(node: &Node) -> (u64, Vec<std::path::PathBuf>) {
    let dir = node.dir.join("cluster");
    let wal = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("wal."))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    let snaps = std::fs::read_dir(dir.join("qsnap"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    (wal, snaps)
}

/// Publishes `bodies` with confirms; a nacked one is published again, as a client must
/// (a quorum queue nacks what its group could not commit in time, e.g. on a machine
/// loaded by the whole suite), at most 5 times.
async fn publish_confirmed(ch: &Channel, bodies: impl Iterator<Item = String>) {
    let mut todo: Vec<String> = bodies.collect();
    for attempt in 0..5 {
        let mut confirms = Vec::new();
        for b in todo.drain(..) {
            let c = ch
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    b.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push((b, c));
        }
        for (b, c) in confirms {
            let c = tokio::time::timeout(Duration::from_secs(20), c)
                .await
                .expect("confirm in time")
                .unwrap();
            if !c.is_ack() {
                todo.push(b);
            }
        }
        if todo.is_empty() {
            return;
        }
        println!("attempt {attempt}: {} nacked, published again", todo.len());
    }
    panic!("{} still nacked after 5 attempts", todo.len());
}

/// Consumes `n` messages on `ch`, acknowledging each; returns their bodies in order.
async fn consume(ch: &Channel, tag: &str, n: usize) -> Vec<String> {
    ch.basic_qos(200, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            QUEUE.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(15), c.next())
            .await
            .unwrap_or_else(|_| panic!("a delivery ({} of {n} so far)", out.len()))
            .expect("consumer open")
            .unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        out.push(String::from_utf8_lossy(&d.data).into_owned());
    }
    ch.basic_cancel(tag.into(), BasicCancelOptions::default())
        .await
        .unwrap();
    out
}

/// Waits until `node` reports `ready` messages ready on every member (all three
/// online).
async fn ready_on(node: &Node, ready: u64) {
    eventually(30, "the member's replica caught up", || async {
        let q = queue_of(node).await?;
        (q["messages_ready"] == ready && q["online"].as_array()?.len() == 3).then_some(())
    })
    .await;
}

fn kept(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("keep-{i:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_groups_snapshot_compact_and_catch_up_by_snapshot() {
    let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let members = crate::common::cluster::members(&nodes);
    let logs: Vec<PathBuf> = nodes.iter().map(|n| n.dir.with_extension("log")).collect();
    let _cleanup = Cleanup(logs.clone());
    // Warnings too: the log's tail is printed should the test fail.
    let start = |n: &mut Node, log: &Path| {
        n.start_full(
            &members,
            &["--log-level".into(), "warn".into()],
            ENV,
            Some(log),
        )
    };
    for (n, log) in nodes.iter_mut().zip(&logs) {
        start(n, log);
    }
    eventually(20, "a metadata leader on every node", || async {
        for n in &nodes {
            n.status().await?["leader"].as_str()?;
        }
        Some(())
    })
    .await;

    // A three-member quorum queue declared on n1 (which leads it).
    let (_c1, ch1) = channel(&nodes[0]).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch1.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    ch1.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ready_on(&nodes[0], 0).await;

    // n3 goes down; 8 MiB go through the queue (published on n1, consumed and acked on
    // n2), then 300 messages stay.
    nodes[2].kill();
    let (_c2, ch2) = channel(&nodes[1]).await;
    let pad = "x".repeat(1000);
    for round in 0..16 {
        publish_confirmed(&ch1, (0..500).map(|i| format!("gone-{round}-{i}-{pad}"))).await;
        let got = consume(&ch2, &format!("drain{round}"), 500).await;
        assert!(got.iter().all(|b| b.starts_with("gone-")));
    }
    publish_confirmed(&ch1, kept(300).into_iter()).await;

    // The two live members snapshotted and purged: their WAL holds far less than the
    // 8 MiB of bodies that went through (and their settles).
    for n in &nodes[..2] {
        let (wal, snaps) = eventually(20, "a snapshot and a compacted WAL", || async {
            let (wal, snaps) = disk(n);
            (!snaps.is_empty() && wal < 3 << 20).then_some((wal, snaps))
        })
        .await;
        println!("{}: WAL {wal} bytes, snapshots {snaps:?}", n.name);
    }

    // n3 comes back: its log ends long before what the others kept, so it installs the
    // leader's snapshot and then has the 300.
    start(&mut nodes[2], &logs[2]);
    ready_on(&nodes[2], 300).await;
    assert!(
        !disk(&nodes[2]).1.is_empty(),
        "n3 saved the snapshot it installed"
    );

    // n1 restarts: from its snapshot and log tail, the same 300.
    drop(ch1);
    nodes[0].kill();
    start(&mut nodes[0], &logs[0]);
    ready_on(&nodes[0], 300).await;
    ready_on(&nodes[1], 300).await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    ch1.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // n2 leaves the group and is added back after compaction: its new member gets the
    // state by snapshot. Consumed there: exactly the 300, in order.
    let r = nodes[0]
        .api()
        .delete(&format!("/api/quorum-queues/%2F/{QUEUE}/members/n2"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    eventually(20, "n2 out of the group", || async {
        let q = queue_of(&nodes[0]).await?;
        (q["members"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let r = nodes[0]
        .api()
        .post(
            &format!("/api/quorum-queues/%2F/{QUEUE}/members"),
            serde_json::json!({"node": "n2"}),
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    ready_on(&nodes[1], 300).await;
    let (_c2b, ch2b) = channel(&nodes[1]).await;
    assert_eq!(consume(&ch2b, "added", 300).await, kept(300));
    ready_on(&nodes[2], 0).await;

    // A damaged snapshot: n3's is cut in half while it is down. It starts and says so;
    // its member is not started; the queue goes on with n1 and n2.
    let (_, snaps) = disk(&nodes[2]);
    nodes[2].kill();
    let snap = snaps.first().expect("n3's snapshot").clone();
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() / 2]).unwrap();
    start(&mut nodes[2], &logs[2]);
    let log = logs[2].clone();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if text_has(&log, "unusable snapshot") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "n3's log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let line = eventually(20, "the error in n3's log", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .find(|l| l.contains("unusable snapshot"))
            .map(String::from)
    })
    .await;
    assert!(
        line.contains(&*snap.file_name().unwrap().to_string_lossy()) && line.contains("truncated"),
        "{line}"
    );
    assert!(nodes[2].status().await.is_some(), "n3 runs");
    assert!(!text_has(&log, "panicked"), "no panic");
    // n3 may have led the group: wait for n1 or n2 to lead before publishing.
    eventually(30, "a leader among the running members", || async {
        let q = queue_of(&nodes[0]).await?;
        let l = q["leader"].as_str()?;
        (l == "n1" || l == "n2").then_some(())
    })
    .await;
    publish_confirmed(&ch1, ["after".to_string()].into_iter()).await;
    ready_on_two(&nodes[1], 1).await;

    // tx.commit waits for the group's commit: with n2 down too (n3's member is not
    // running) the queue has no majority and commit-ok does not come; once n2 is back
    // it does, and the message is there.
    let (_ct, cht) = channel(&nodes[0]).await;
    cht.tx_select().await.unwrap();
    nodes[1].kill();
    cht.basic_publish(
        "".into(),
        QUEUE.into(),
        BasicPublishOptions::default(),
        b"in-tx",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap();
    let commit = tokio::spawn(async move { cht.tx_commit().await });
    let early = tokio::time::timeout(Duration::from_secs(2), async {
        while !commit.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(early.is_err(), "commit-ok without a majority");
    start(&mut nodes[1], &logs[1]);
    let done = tokio::time::timeout(Duration::from_secs(20), commit)
        .await
        .expect("commit-ok once the majority is back")
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
    ready_on_two(&nodes[0], 2).await;
}

fn text_has(p: &Path, what: &str) -> bool {
    std::fs::read_to_string(p).is_ok_and(|t| t.contains(what))
}

/// `ready` messages on a member while only two members answer.
async fn ready_on_two(node: &Node, ready: u64) {
    eventually(20, "the message on a live member", || async {
        let q = queue_of(node).await?;
        (q["messages_ready"] == ready).then_some(())
    })
    .await;
}
