//! Replicated streams on three `warren` processes (`--cluster-nodes`): a stream declared
//! on n1 is led by n1 with every node a member; publishes with confirms on n2 are
//! forwarded to the leader and confirmed once a majority has them; consumers from `first`
//! on n3 and n1 read the same messages at the same offsets; after a `kill -9` of the
//! leader the survivors choose a new one, publishing goes on, consumers see every
//! confirmed message once, in offset order; the old leader, restarted, catches up.

use crate::common;
use crate::common::cluster::{channel, free_port, Node};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{options::*, types::AMQPValue, types::FieldTable, BasicProperties, Channel};
use serde_json::Value;
use std::time::{Duration, Instant};

impl Node {
    async fn get(&self, path: &str) -> Option<Value> {
        tokio::net::TcpStream::connect(("127.0.0.1", self.mgmt))
            .await
            .ok()?;
        let r = self.api().get(path).await;
        (r.status == 200).then(|| r.json())
    }
}

/// Publishes `bodies` with confirms on `ch`; the bodies the broker acked.
async fn publish_confirmed(ch: &Channel, bodies: &[String]) -> Vec<String> {
    let mut pending = Vec::new();
    for b in bodies {
        let c = ch
            .basic_publish(
                "".into(),
                "events".into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        pending.push((b.clone(), c));
    }
    let mut acked = Vec::new();
    for (b, c) in pending {
        let conf = tokio::time::timeout(Duration::from_secs(15), c)
            .await
            .expect("a confirm within 15 s")
            .unwrap();
        if conf.is_ack() {
            acked.push(b);
        }
    }
    acked
}

/// Consumes the stream on `node` from `first` until `n` messages arrived; (offset, body).
async fn read_from_first(node: &Node, n: usize) -> Vec<(i64, String)> {
    let (_conn, ch) = channel(node).await;
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut consumer = ch
        .basic_consume(
            "events".into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("consume on {}: {e}", node.name));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = match tokio::time::timeout(left, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            other => panic!(
                "{}: {} of {n} messages, then {:?}",
                node.name,
                got.len(),
                other.map(|o| o.map(|r| r.map(|_| ())))
            ),
        };
        let off = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        let off = match off {
            Some(AMQPValue::LongLongInt(o)) => o,
            other => panic!("x-stream-offset header: {other:?}"),
        };
        got.push((off, String::from_utf8_lossy(&d.data).into_owned()));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    got
}

/// Offsets strictly increasing and no body twice.
fn assert_once_in_order(what: &str, got: &[(i64, String)]) {
    for w in got.windows(2) {
        assert!(w[0].0 < w[1].0, "{what}: offsets out of order: {w:?}");
    }
    let mut bodies: Vec<&String> = got.iter().map(|(_, b)| b).collect();
    bodies.sort();
    let n = bodies.len();
    bodies.dedup();
    assert_eq!(bodies.len(), n, "{what}: a message twice");
}

async fn stream_info(node: &Node) -> Option<Value> {
    node.get("/api/queues/%2F/events").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_stream_confirms_on_a_majority_fails_over_and_catches_up() {
    let started = Instant::now();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node {
            name: format!("n{i}"),
            amqp: free_port(),
            mgmt: free_port(),
            cluster: free_port(),
            dir: common::temp_data_dir(),
            child: None,
        })
        .collect();
    let members = crate::common::cluster::members(&nodes);
    for n in &mut nodes {
        n.start(&members);
    }
    eventually(20, "a metadata leader", || async {
        let s = nodes[0].get("/api/cluster-status").await?;
        s["leader"].as_str().map(|_| ())
    })
    .await;

    // Declared on n1: n1 leads, every node is a member.
    let (_c1, ch1) = channel(&nodes[0]).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch1.queue_declare(
        "events".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    for n in &nodes {
        let q = eventually(10, "the stream's placement on every node", || async {
            let q = stream_info(n).await?;
            (q["members"].as_array()?.len() == 3).then_some(q)
        })
        .await;
        assert_eq!(q["leader"], "n1", "{}: {q}", n.name);
        assert_eq!(q["node"], "n1");
        assert_eq!(q["type"], "stream");
        assert_eq!(q["members"], serde_json::json!(["n1", "n2", "n3"]));
    }

    // Published with confirms on n2 (forwarded to n1).
    let (_c2, ch2) = channel(&nodes[1]).await;
    ch2.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let first: Vec<String> = (0..300).map(|i| format!("a{i}")).collect();
    let acked = publish_confirmed(&ch2, &first).await;
    assert_eq!(acked, first, "every publish on n2 confirmed");

    // From `first` on n3 and n1: everything, same order, same offsets.
    let on_n3 = read_from_first(&nodes[2], first.len()).await;
    let on_n1 = read_from_first(&nodes[0], first.len()).await;
    assert_eq!(on_n3, on_n1);
    let bodies: Vec<String> = on_n3.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, first);
    assert_eq!(on_n3[0].0, 0);

    // kill -9 the leader: n2 or n3 leads in epoch 2.
    drop(ch1);
    drop(_c1);
    let killed_at = Instant::now();
    nodes[0].kill();
    let q = eventually(20, "a new stream leader", || async {
        let q = stream_info(&nodes[1]).await?;
        (q["leader"] != "n1" && q["epoch"] == 2).then_some(q)
    })
    .await;
    println!(
        "stream leader after kill -9: {} in {:?}",
        q["leader"],
        killed_at.elapsed()
    );
    // Publishing goes on, from a survivor.
    let more: Vec<String> = (0..200).map(|i| format!("b{i}")).collect();
    let acked_more = publish_confirmed(&ch2, &more).await;
    assert!(
        acked_more.len() >= 190,
        "most publishes after the failover confirmed: {}",
        acked_more.len()
    );
    let confirmed: Vec<String> = first.iter().chain(acked_more.iter()).cloned().collect();
    // Consumers on both survivors: every confirmed message once, in offset order.
    for n in &nodes[1..] {
        let got = read_from_first(n, confirmed.len()).await;
        assert_once_in_order(&n.name, &got);
        for b in &confirmed {
            assert!(got.iter().any(|(_, g)| g == b), "{}: {b} missing", n.name);
        }
    }

    // n1 comes back as a follower and catches up without help.
    nodes[0].start(&members);
    let back = eventually(30, "n1 caught up", || async {
        let q = stream_info(&nodes[0]).await?;
        (q["messages"].as_u64()? >= confirmed.len() as u64).then_some(q)
    })
    .await;
    assert_ne!(back["leader"], "n1");
    let got = read_from_first(&nodes[0], confirmed.len()).await;
    assert_once_in_order("n1 after restart", &got);
    let on_n2 = read_from_first(&nodes[1], confirmed.len()).await;
    assert_eq!(got, on_n2, "n1 holds what n2 holds, at the same offsets");
    println!("test took {:?}", started.elapsed());
}
