//! basic.get on replicated quorum queues, with three `warren` processes on loopback: the
//! get is a dequeue through the queue's Raft group, so it works on the leader, on a
//! follower and on a node that is not a member (forwarded to the leader), answers
//! get-empty or get-ok with the ready count after the dequeue, keeps an unacknowledged
//! get's message until it is acked, rejected (requeued: redelivered, `x-delivery-count`)
//! or its channel closes (back in the queue), and never gives one message to two gets,
//! even when gets on every node race for the same messages.

use crate::common;
use crate::common::cluster::{channel, queue, three_nodes, Node};

use common::http::eventually;
use lapin::{options::*, types::AMQPValue, types::FieldTable, Channel};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(String::from))
        .collect()
}

/// Declares quorum queue `name` on `ch` with `size` members (None: the default, every
/// node).
async fn declare(ch: &Channel, name: &str, size: Option<i64>) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(s) = size {
        args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(s),
        );
    }
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), opts, args).await.unwrap();
}

/// Waits until every node reports the queue's leader and `members` members online; the
/// (leader, members) names.
async fn placed(nodes: &[Node], name: &str, members: usize) -> (String, BTreeSet<String>) {
    eventually(30, &format!("{name} placed and led"), || async {
        let mut seen = None;
        for n in nodes {
            let q = queue(n, name).await?;
            let m = names(&q["members"]);
            (m.len() == members).then_some(())?;
            if !m.contains(&n.name) {
                // A node outside the group knows its members only.
                continue;
            }
            let leader = q["leader"].as_str()?.to_string();
            if n.name == leader {
                (names(&q["online"]).len() == members).then_some(())?;
            }
            if seen.get_or_insert((leader.clone(), m.clone())) != &(leader, m) {
                return None;
            }
        }
        seen
    })
    .await
}

/// Publishes `bodies` persistent with confirms on a fresh channel of `node`.
async fn publish(node: &Node, queue: &str, bodies: impl Iterator<Item = String>) {
    let (_c, ch) = channel(node).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    common::cluster::publish_acked(&ch, queue, bodies).await;
}

/// A get's body, redelivered flag, message count and `x-delivery-count`.
struct Got {
    body: String,
    redelivered: bool,
    left: u32,
    count: Option<i64>,
    delivery: lapin::message::Delivery,
}

async fn get(ch: &Channel, queue: &str, no_ack: bool) -> Option<Got> {
    let m = common::within(T, ch.basic_get(queue.into(), BasicGetOptions { no_ack }))
        .await
        .unwrap()?;
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    let count = match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => Some(*n),
        Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
        _ => None,
    };
    Some(Got {
        body: String::from_utf8_lossy(&m.delivery.data).into_owned(),
        redelivered: m.delivery.redelivered,
        left: m.message_count,
        count,
        delivery: m.delivery,
    })
}

/// Waits until `node` reports `ready` ready messages and `unacked` unacknowledged (its
/// replica's: the whole queue's, whichever node's channels hold them, as RabbitMQ
/// reports a quorum queue).
async fn counts(node: &Node, name: &str, ready: u64, unacked: u64) {
    eventually(
        20,
        &format!("{name}: {ready} ready, {unacked} unacked on {}", node.name),
        || async {
            let q = queue(node, name).await?;
            (q["messages_ready"] == ready && q["messages_unacknowledged"] == unacked).then_some(())
        },
    )
    .await;
}

/// Gets, acks, rejects and a closing channel, on the leader and a follower of a group of
/// three and on the node outside a group of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_on_replicated_quorum_queues_from_every_node() {
    let nodes = three_nodes().await;
    let by_name = |n: &str| nodes.iter().find(|x| x.name == n).unwrap();
    let (_c1, ch1) = channel(&nodes[0]).await;
    declare(&ch1, "qg", None).await;
    let (leader, _) = placed(&nodes, "qg", 3).await;
    let leader = by_name(&leader);
    let follower = nodes.iter().find(|n| n.name != leader.name).unwrap();
    let (_cl, chl) = channel(leader).await;
    let (_cf, chf) = channel(follower).await;

    // Empty: get-empty on both.
    assert!(get(&chl, "qg", false).await.is_none());
    assert!(get(&chf, "qg", true).await.is_none());

    publish(&nodes[0], "qg", (0..5).map(|i| format!("m{i}"))).await;
    // A follower's get: the head, with the ready count after it, held until acked.
    let g = get(&chf, "qg", false).await.expect("m0");
    assert_eq!((g.body.as_str(), g.left, g.redelivered), ("m0", 4, false));
    counts(follower, "qg", 4, 1).await;
    counts(leader, "qg", 4, 1).await;
    g.delivery.ack(BasicAckOptions::default()).await.unwrap();
    // The leader's, without ack.
    let g = get(&chl, "qg", true).await.expect("m1");
    assert_eq!((g.body.as_str(), g.left), ("m1", 3));
    // Rejected with requeue on the follower: it comes back redelivered, counted once.
    let g = get(&chf, "qg", false).await.expect("m2");
    assert_eq!((g.body.as_str(), g.left, g.count), ("m2", 2, Some(0)));
    g.delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    counts(follower, "qg", 3, 0).await;
    let mut rest = Vec::new();
    for ch in [&chl, &chf, &chl] {
        let g = get(ch, "qg", false).await.expect("one of m2..m4");
        rest.push((g.body.clone(), g.redelivered, g.count));
        g.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    rest.sort();
    assert_eq!(
        rest,
        [
            ("m2".to_string(), true, Some(1)),
            ("m3".to_string(), false, Some(0)),
            ("m4".to_string(), false, Some(0))
        ]
    );
    assert!(get(&chf, "qg", false).await.is_none());
    counts(leader, "qg", 0, 0).await;

    // Held by a channel that closes: back in the queue, for a get on another node.
    publish(&nodes[0], "qg", std::iter::once("c0".to_string())).await;
    let (cc, chc) = channel(follower).await;
    let g = get(&chc, "qg", false).await.expect("c0");
    assert_eq!(g.body, "c0");
    counts(follower, "qg", 0, 1).await;
    chc.close(200, "bye".into()).await.unwrap();
    drop(cc);
    counts(follower, "qg", 1, 0).await;
    let g = get(&chl, "qg", true).await.expect("c0 again");
    assert_eq!((g.body.as_str(), g.redelivered, g.left), ("c0", true, 0));

    // A group of two: the third node is no member; its gets go to the leader.
    declare(&ch1, "qg2", Some(2)).await;
    let (leader2, members2) = placed(&nodes, "qg2", 2).await;
    let outside = nodes.iter().find(|n| !members2.contains(&n.name)).unwrap();
    let leader2 = by_name(&leader2);
    let (_co, cho) = channel(outside).await;
    assert!(get(&cho, "qg2", false).await.is_none());
    publish(outside, "qg2", (0..3).map(|i| format!("o{i}"))).await;
    let g = get(&cho, "qg2", false).await.expect("o0");
    assert_eq!((g.body.as_str(), g.left), ("o0", 2));
    counts(leader2, "qg2", 2, 1).await;
    g.delivery.ack(BasicAckOptions::default()).await.unwrap();
    counts(leader2, "qg2", 2, 0).await;
    let g = get(&cho, "qg2", false).await.expect("o1");
    assert_eq!(g.body, "o1");
    g.delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    counts(leader2, "qg2", 2, 0).await;
    let (cc, chc) = channel(outside).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let g = get(&chc, "qg2", false).await.expect("o1 or o2");
        seen.push((g.body.clone(), g.redelivered));
    }
    seen.sort();
    assert_eq!(seen, [("o1".to_string(), true), ("o2".to_string(), false)]);
    // The outside channel closes holding both: they return, for the leader's gets.
    chc.close(200, "bye".into()).await.unwrap();
    drop(cc);
    counts(leader2, "qg2", 2, 0).await;
    let (_c, chl2) = channel(leader2).await;
    let mut again = BTreeSet::new();
    for _ in 0..2 {
        let g = get(&chl2, "qg2", true).await.expect("o1 or o2 again");
        assert!(g.redelivered, "{}", g.body);
        again.insert(g.body);
    }
    assert_eq!(again, ["o1", "o2"].map(String::from).into());
    assert!(get(&cho, "qg2", true).await.is_none());
}

/// Gets on all three nodes (two members and one outside a group of two) race for the
/// same 300 messages: each is got exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_on_different_nodes_never_get_one_message_twice() {
    let nodes = three_nodes().await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    declare(&ch1, "race", Some(2)).await;
    placed(&nodes, "race", 2).await;
    const N: usize = 300;
    publish(&nodes[1], "race", (0..N).map(|i| format!("r{i}"))).await;
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (c, ch) = channel(n).await;
        tasks.push(tokio::spawn(async move {
            let _c = c;
            let mut got = Vec::new();
            // Bounded: every message once at most, then get-empty.
            for _ in 0..=N {
                let Some(g) = get(&ch, "race", i == 0).await else {
                    break;
                };
                if i != 0 {
                    g.delivery.ack(BasicAckOptions::default()).await.unwrap();
                }
                got.push(g.body);
            }
            got
        }));
    }
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        per_node.push(got.len());
        all.extend(got);
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        distinct.len(),
        "a message got twice ({per_node:?})"
    );
    assert_eq!(distinct.len(), N, "every message got once ({per_node:?})");
    eprintln!("gets per node: {per_node:?}");
}

/// A node killed while its channel holds an unacknowledged get: the leader declares it
/// down and the message comes back, redelivered, for a get on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_held_by_a_node_that_dies_comes_back() {
    let mut nodes = three_nodes().await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    declare(&ch1, "qd", None).await;
    let (leader, _) = placed(&nodes, "qd", 3).await;
    let li = nodes.iter().position(|n| n.name == leader).unwrap();
    let fi = (li + 1) % 3;
    publish(&nodes[li], "qd", (0..2).map(|i| format!("d{i}"))).await;
    let (cf, chf) = channel(&nodes[fi]).await;
    let g = get(&chf, "qd", false).await.expect("d0");
    assert_eq!((g.body.as_str(), g.left), ("d0", 1));
    drop((g, chf, cf));
    nodes[fi].kill();
    let (_cl, chl) = channel(&nodes[li]).await;
    let g = get(&chl, "qd", true).await.expect("d1");
    assert_eq!((g.body.as_str(), g.redelivered), ("d1", false));
    let g = eventually(20, "d0 back after its node is declared down", || async {
        get(&chl, "qd", true).await
    })
    .await;
    assert_eq!((g.body.as_str(), g.redelivered, g.left), ("d0", true, 0));
}
