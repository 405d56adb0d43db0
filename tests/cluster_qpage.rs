//! Replicated quorum queues page their backlog like a single node's: three `warren`
//! processes on loopback with a 64 KiB `--queue-memory-budget` (and snapshots every
//! 64 KiB of log). A backlog of 3 000 × 1 KiB puts page files on every member, the one
//! that was down and caught up by snapshot included; a restarted member gives every
//! message back intact, each once, in order, with the redelivered flag on exactly the
//! ones a closed channel returned; once consumed, the page files are gone.

use crate::common;
use crate::common::cluster::{channel, publish_acked, Node};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{options::*, types::AMQPValue, types::FieldTable, Channel};
use std::time::Duration;

const QUEUE: &str = "pageq";
const N: usize = 3000;
/// Messages a consumer takes and leaves unacknowledged (returned, redelivered).
const RETURNED: usize = 500;
const ENV: &[(&str, &str)] = &[
    ("WARREN_QSNAP_MIN_BYTES", "65536"),
    ("WARREN_CLUSTER_WAL_SEGMENT_BYTES", "262144"),
];

fn body(i: usize) -> String {
    let head = format!("m-{i:05}-");
    format!("{head}{}", "p".repeat(1024 - head.len()))
}

/// Bytes in the node's page files.
fn paged_bytes(node: &Node) -> u64 {
    std::fs::read_dir(node.dir.join("pages"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".page"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Waits until `node` reports `ready` messages ready and `online` members answering.
async fn ready_on(node: &Node, ready: u64, online: usize) {
    eventually(60, "the member's replica caught up", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", node.mgmt))
            .await
            .ok()?;
        let q = common::cluster::queue(node, QUEUE).await?;
        (q["messages_ready"] == ready && q["online"].as_array()?.len() == online).then_some(())
    })
    .await;
}

/// Receives `n` deliveries on a new consumer of `ch` (acking each when `ack`), as
/// (index, redelivered); the bodies must be intact.
async fn take(ch: &Channel, tag: &str, n: usize, ack: bool) -> Vec<(usize, bool)> {
    ch.basic_qos(RETURNED as u16, BasicQosOptions::default())
        .await
        .unwrap();
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
        let d = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .unwrap_or_else(|_| panic!("a delivery ({} of {n} so far)", out.len()))
            .expect("consumer open")
            .unwrap();
        let text = String::from_utf8_lossy(&d.data).into_owned();
        let i: usize = text[2..7].parse().expect("a body of this test");
        assert_eq!(text, body(i), "body of message {i} intact");
        out.push((i, d.redelivered));
        if ack {
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_backlog_is_paged_on_every_member_and_comes_back_intact() {
    let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let members = common::cluster::members(&nodes);
    let extra: Vec<String> = ["--queue-memory-budget", "65536"].map(String::from).into();
    let start = |n: &mut Node| n.start_full(&members, &extra, ENV, None);
    for n in &mut nodes {
        start(n);
    }
    eventually(30, "a metadata leader on every node", || async {
        for n in &nodes {
            n.status().await?["leader"].as_str()?;
        }
        Some(())
    })
    .await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch1.queue_declare(QUEUE.into(), durable, args)
        .await
        .unwrap();
    ch1.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ready_on(&nodes[2], 0, 3).await;

    // n3 is down while the backlog is published: it catches up by snapshot later.
    nodes[2].kill();
    for chunk in 0..(N / 500) {
        publish_acked(&ch1, QUEUE, (chunk * 500..(chunk + 1) * 500).map(body)).await;
    }
    for n in &nodes[..2] {
        ready_on(n, N as u64, 2).await;
        let bytes = eventually(30, "page files on the member", || async {
            let b = paged_bytes(n);
            (b > (N as u64) * 1024 / 2).then_some(b)
        })
        .await;
        println!("{}: {bytes} bytes in page files", n.name);
    }
    start(&mut nodes[2]);
    ready_on(&nodes[2], N as u64, 3).await;
    let bytes = eventually(30, "page files on the member that caught up", || async {
        let b = paged_bytes(&nodes[2]);
        (b > (N as u64) * 1024 / 2).then_some(b)
    })
    .await;
    println!("n3: {bytes} bytes in page files");
    assert!(
        std::fs::read_dir(nodes[2].dir.join("cluster/qsnap"))
            .is_ok_and(|mut d| d
                .any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "snap")))),
        "n3 installed a snapshot"
    );

    // A consumer on n2 takes the first 500 (from page files or memory) and its
    // connection closes without acking: they go back, redelivered.
    {
        let (c2, ch2) = channel(&nodes[1]).await;
        let got = take(&ch2, "leaves", RETURNED, false).await;
        let want: Vec<(usize, bool)> = (0..RETURNED).map(|i| (i, false)).collect();
        assert_eq!(got, want);
        c2.close(200, "bye".into()).await.unwrap();
    }
    ready_on(&nodes[0], N as u64, 3).await;

    // n1 restarts (from its snapshot and log tail), then gives every message back.
    drop(ch1);
    nodes[0].kill();
    start(&mut nodes[0]);
    ready_on(&nodes[0], N as u64, 3).await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    let got = take(&ch1, "all", N, true).await;
    let mut seen = vec![false; N];
    let (mut returned, mut fresh) = (Vec::new(), Vec::new());
    for (i, redelivered) in got {
        assert!(!seen[i], "message {i} delivered twice");
        seen[i] = true;
        assert_eq!(redelivered, i < RETURNED, "redelivered flag of message {i}");
        if i < RETURNED {
            returned.push(i);
        } else {
            fresh.push(i);
        }
    }
    assert_eq!(
        returned,
        (0..RETURNED).collect::<Vec<_>>(),
        "returned in order"
    );
    assert_eq!(
        fresh,
        (RETURNED..N).collect::<Vec<_>>(),
        "the rest in order"
    );

    // Consumed everywhere: every member's page segments are unlinked.
    for n in &nodes {
        ready_on(n, 0, 3).await;
        eventually(30, "page files gone", || async {
            (paged_bytes(n) == 0).then_some(())
        })
        .await;
    }
}
