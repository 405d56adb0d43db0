//! A client on any node reaches a durable classic queue that lives on another node
//! (its home: the node whose client declared it). Three `warren` processes on loopback:
//! publishes with confirms on n2 and through an exchange on n3 reach a queue homed on
//! n1 and are consumed on n3 exactly once, in order per publisher, within the prefetch;
//! basic.get, nack/requeue, purge and delete work from another node; a `kill -9` of the
//! home cancels remote consumers and makes the queue 404 with RabbitMQ's text elsewhere;
//! once the home is back, its persistent messages are consumable from another node.

use crate::common;
use crate::common::cluster::{channel, three_nodes, Node};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{
    options::*, types::FieldTable, BasicProperties, Channel, Connection, ConnectionProperties,
    ExchangeKind,
};
use std::collections::HashSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

async fn passive(ch: &Channel, name: &str) -> Result<u32, lapin::Error> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|q| q.message_count())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes `n` persistent messages `{prefix}{i}` and checks every confirm is an ack.
async fn publish_confirmed(ch: &Channel, exchange: &str, rk: &str, prefix: &str, n: usize) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        pending.push(
            ch.basic_publish(
                exchange.into(),
                rk.into(),
                BasicPublishOptions::default(),
                format!("{prefix}{i}").as_bytes(),
                persistent(),
            )
            .await
            .unwrap(),
        );
    }
    for p in pending {
        let c = common::within(T, p).await.unwrap();
        assert!(c.is_ack(), "confirm of a forwarded publish is an ack");
    }
}

/// Waits until `node` has the queue's definition and reaches its home.
async fn reachable(node: &Node, ch: &Channel, name: &str) {
    let path = format!("/api/queues/%2f/{name}");
    eventually(20, "the queue's definition with its home", || async {
        let r = node.api().get(&path).await;
        (r.status == 200 && r.json()["state"] == "running").then_some(())
    })
    .await;
    passive(ch, name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_homed_on_one_node_is_used_from_the_others() {
    let mut nodes = three_nodes().await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    let (_c2, ch2) = channel(&nodes[1]).await;
    let (_c3, ch3) = channel(&nodes[2]).await;

    // Declared on n1: its home is n1, as every node's management API reports.
    ch1.queue_declare("fq".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    ch1.exchange_declare(
        "fx".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch1.queue_bind(
        "fq".into(),
        "fx".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for n in &nodes {
        let q = n.api().get_json("/api/queues/%2f/fq").await;
        assert_eq!(q["node"], "n1", "{} reports the home", n.name);
    }
    reachable(&nodes[1], &ch2, "fq").await;
    reachable(&nodes[2], &ch3, "fq").await;

    // A consumer on n3 with manual acks and prefetch 10.
    let (_cc, cons) = channel(&nodes[2]).await;
    cons.basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = cons
        .basic_consume(
            "fq".into(),
            "c3".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // Publishers: on n2 to the default exchange, on n3 through the exchange binding.
    const N: usize = 300;
    let (_p2, pub2) = channel(&nodes[1]).await;
    let (_p3, pub3) = channel(&nodes[2]).await;
    tokio::join!(
        publish_confirmed(&pub2, "", "fq", "a", N),
        publish_confirmed(&pub3, "fx", "k", "b", N),
    );

    // Every message once, in order per publisher; never more than 10 unacknowledged.
    let mut seen = HashSet::new();
    let (mut next_a, mut next_b) = (0, 0);
    let mut held = Vec::new();
    for _ in 0..2 * N {
        let d = common::within(T, consumer.next())
            .await
            .expect("a delivery")
            .unwrap();
        let body = String::from_utf8(d.data.clone()).unwrap();
        assert!(seen.insert(body.clone()), "{body} delivered twice");
        let (prefix, i) = body.split_at(1);
        let i: usize = i.parse().unwrap();
        match prefix {
            "a" => {
                assert_eq!(i, next_a, "n2's messages in order");
                next_a += 1;
            }
            _ => {
                assert_eq!(i, next_b, "n3's messages in order");
                next_b += 1;
            }
        }
        held.push(d);
        if held.len() == 10 && seen.len() == 10 {
            // The first full window: nothing more comes until something is acked.
            let more = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
            assert!(more.is_err(), "prefetch 10 holds across the link");
        }
        // Ack in bursts of 10, so the window is really filled.
        if held.len() == 10 || seen.len() == 2 * N {
            for d in held.drain(..) {
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
        }
    }
    assert_eq!(seen.len(), 2 * N);
    cons.basic_cancel("c3".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    eventually(10, "the acks reach the home", || async {
        let q = nodes[0].api().get_json("/api/queues/%2f/fq").await;
        (q["messages"] == 0 && q["consumers"] == 0).then_some(())
    })
    .await;

    // basic.get from n2: the head, with the count left; acked from n2.
    for i in 0..3 {
        ch1.basic_publish(
            "".into(),
            "fq".into(),
            BasicPublishOptions::default(),
            format!("g{i}").as_bytes(),
            persistent(),
        )
        .await
        .unwrap();
    }
    // The three must all be on the home before the get, or message_count races them.
    eventually(10, "the three messages reach the home", || async {
        let q = nodes[0].api().get_json("/api/queues/%2f/fq").await;
        (q["messages"] == 3).then_some(())
    })
    .await;
    let m = eventually(10, "a message for basic.get", || async {
        ch2.basic_get("fq".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
    })
    .await;
    assert_eq!(m.delivery.data, b"g0");
    assert_eq!(m.message_count, 2);
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();

    // A consumer on n2 nacks with requeue: the message comes back, redelivered.
    ch2.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut c2 = ch2
        .basic_consume(
            "fq".into(),
            "c2".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = common::within(T, c2.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"g1");
    assert!(!d.redelivered);
    d.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = common::within(T, c2.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"g1");
    assert!(d.redelivered, "a requeued message is redelivered");
    d.ack(BasicAckOptions::default()).await.unwrap();
    let d = common::within(T, c2.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"g2");
    // basic.reject without requeue: gone (no dead-letter exchange).
    d.reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    ch2.basic_cancel("c2".into(), BasicCancelOptions::default())
        .await
        .unwrap();

    // Purge from n2.
    for i in 0..5 {
        ch1.basic_publish(
            "".into(),
            "fq".into(),
            BasicPublishOptions::default(),
            format!("p{i}").as_bytes(),
            persistent(),
        )
        .await
        .unwrap();
    }
    eventually(10, "five messages in fq", || async {
        (passive(&ch2, "fq").await.ok()? == 5).then_some(())
    })
    .await;
    let purged = ch2
        .queue_purge("fq".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    assert_eq!(purged, 5);
    assert_eq!(passive(&ch1, "fq").await.unwrap(), 0);

    // Delete from n2: delete-ok counts the home's messages, and it is gone everywhere.
    ch1.queue_declare("fq2".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    publish_confirmed(&ch1, "", "fq2", "d", 2).await;
    reachable(&nodes[1], &ch2, "fq2").await;
    let deleted = ch2
        .queue_delete("fq2".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    let (_c1b, ch1b) = channel(&nodes[0]).await;
    let e = passive(&ch1b, "fq2").await.unwrap_err().to_string();
    assert!(e.contains("NOT_FOUND"), "{e}");

    // The home goes down: a consumer on n3 is cancelled, passive declare on n2 is 404.
    let (_cd, chd) = channel(&nodes[0]).await;
    chd.queue_declare("dq".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    publish_confirmed(&chd, "", "dq", "k", 3).await;
    let (_c3b, ch3b) = channel(&nodes[2]).await;
    reachable(&nodes[2], &ch3b, "dq").await;
    ch3b.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut watcher = ch3b
        .basic_consume(
            "dq".into(),
            "w".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = common::within(T, watcher.next()).await.unwrap().unwrap();
    assert_eq!(first.data, b"k0");
    nodes[0].kill();
    // basic.cancel from the server ends lapin's consumer stream.
    common::within(T, async {
        while let Some(d) = watcher.next().await {
            assert!(d.is_ok());
        }
    })
    .await;
    // Down once the link stayed lost for its grace (1.5 s).
    let e = eventually(10, "dq answering 404 on n2", || async {
        let c = Connection::connect(&nodes[1].uri(), ConnectionProperties::default())
            .await
            .ok()?;
        let ch = c.create_channel().await.ok()?;
        passive(&ch, "dq").await.err().map(|e| e.to_string())
    })
    .await;
    assert!(
        e.contains(
            "NOT_FOUND - home node 'n1' of durable queue 'dq' in vhost '/' is down or inaccessible"
        ),
        "{e}"
    );

    // A redeclare is refused the same way (RabbitMQ checks the home first).
    let (_c2d, ch2d) = channel(&nodes[1]).await;
    let e = ch2d
        .queue_declare("dq".into(), durable(), FieldTable::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("NOT_FOUND - home node 'n1'"), "{e}");

    // Back: its persistent messages (the unacknowledged one included) from n2.
    let members = crate::common::cluster::members(&nodes);
    nodes[0].start(&members);
    let (_c2c, ch2c) = channel(&nodes[1]).await;
    eventually(30, "dq reachable again with its 3 messages", || async {
        let c = Connection::connect(&nodes[1].uri(), ConnectionProperties::default())
            .await
            .ok()?;
        let ch = c.create_channel().await.ok()?;
        (passive(&ch, "dq").await.ok()? == 3).then_some(())
    })
    .await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let m = ch2c
            .basic_get("dq".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a recovered message");
        bodies.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    bodies.sort();
    assert_eq!(bodies, ["k0", "k1", "k2"]);
}
