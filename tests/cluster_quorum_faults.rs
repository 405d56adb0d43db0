//! Replicated quorum queues under faults, with three `warren` processes on loopback
//! (the longer runs are `bench/cluster_faults.sh`'s): a consumer whose node stopped
//! answering long enough for the leader to declare it down (its messages go to the
//! consumers of other nodes, redelivered) keeps its channel, and once its node answers
//! again it gets deliveries again, as a RabbitMQ quorum queue reinstates it.

use crate::common;
use crate::common::cluster::{channel, publish_acked as publish, Node};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{options::*, types::AMQPValue, types::FieldTable, Channel};
use std::time::Duration;

async fn queue(n: &Node, name: &str) -> Option<serde_json::Value> {
    tokio::net::TcpStream::connect(("127.0.0.1", n.mgmt))
        .await
        .ok()?;
    let r = n.api().get(&format!("/api/queues/%2F/{name}")).await;
    (r.status == 200).then(|| r.json())
}

async fn consume(ch: &Channel, queue: &str, tag: &str) -> lapin::Consumer {
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// The next delivery within `secs`: (body, redelivered, delivery).
async fn next(c: &mut lapin::Consumer, secs: u64) -> Option<lapin::message::Delivery> {
    tokio::time::timeout(Duration::from_secs(secs), c.next())
        .await
        .ok()??
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_declared_down_gets_deliveries_again_once_its_node_answers() {
    let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let members = crate::common::cluster::members(&nodes);
    for n in &mut nodes {
        n.start(&members);
    }
    let (_c1, ch1) = channel(&nodes[0]).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    // Declared on n1 (client-local): n1 leads; every member answers.
    eventually(30, "the quorum queue declared", || async {
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let (_c, ch) = channel(&nodes[0]).await;
        ch.queue_declare("qf".into(), opts, args.clone()).await.ok()
    })
    .await;
    eventually(30, "n1 leading, three members online", || async {
        let q = queue(&nodes[0], "qf").await?;
        (q["leader"] == "n1" && q["online"].as_array()?.len() == 3).then_some(())
    })
    .await;
    ch1.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // A consumer on n2 holds five messages, unacknowledged; then one on n3 attaches.
    let (_c2, ch2) = channel(&nodes[1]).await;
    let mut a = consume(&ch2, "qf", "a").await;
    publish(&ch1, "qf", (0..5).map(|i| format!("m{i}"))).await;
    for _ in 0..5 {
        let d = next(&mut a, 15)
            .await
            .expect("n2's consumer gets the first five");
        assert!(!d.redelivered);
    }
    let (_c3, ch3) = channel(&nodes[2]).await;
    let mut b = consume(&ch3, "qf", "b").await;
    // n1, which has neither consumer, reports the queue's: two consumers, five
    // unacknowledged (as RabbitMQ reports a quorum queue on any node).
    eventually(
        20,
        "n1 reports both consumers and the five unacked",
        || async {
            let q = queue(&nodes[0], "qf").await?;
            (q["consumers"] == 2 && q["messages_unacknowledged"] == 5 && q["messages"] == 5)
                .then_some(())
        },
    )
    .await;

    // n2 stops answering: the leader declares its consumers down and n3's consumer
    // gets the five, redelivered.
    nodes[1].pause();
    for _ in 0..5 {
        let d = next(&mut b, 20)
            .await
            .expect("n3's consumer gets n2's five back");
        assert!(d.redelivered, "{:?}", String::from_utf8_lossy(&d.data));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    nodes[1].resume();
    // n3's consumer leaves: n2's is the only one (if it is registered again).
    ch3.close(200, "bye".into()).await.unwrap();

    publish(&ch1, "qf", (0..10).map(|i| format!("n{i}"))).await;
    let mut got = Vec::new();
    while got.len() < 10 {
        let d = next(&mut a, 20).await.unwrap_or_else(|| {
            panic!("n2's consumer gets deliveries again after its node answers (got {got:?})")
        });
        let body = String::from_utf8_lossy(&d.data).into_owned();
        if body.starts_with('n') {
            got.push(body);
        }
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    got.sort();
    assert_eq!(got, (0..10).map(|i| format!("n{i}")).collect::<Vec<_>>());
}
