//! Quorum queues as Raft groups, with three `warren` processes on loopback: messages
//! published with confirms on one node are consumed on the two others, exactly once;
//! after `kill -9` of the queue's leader a new one is elected and a consumer on a
//! surviving node gets every confirmed message (those the dead node's consumer held come
//! back redelivered, acknowledged ones never); the killed node, restarted, catches up.

use crate::common;
use crate::common::cluster::{channel, Node};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{options::*, types::AMQPValue, types::FieldTable, Channel};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

impl Node {
    /// The queue as this node's management API reports it (None while it cannot answer).
    async fn queue(&self, name: &str) -> Option<Value> {
        tokio::net::TcpStream::connect(("127.0.0.1", self.mgmt))
            .await
            .ok()?;
        let r = self.api().get(&format!("/api/queues/%2F/{name}")).await;
        (r.status == 200).then(|| r.json())
    }
}

/// Publishes `bodies` with confirms; all must be acked.
async fn publish_confirmed(ch: &Channel, queue: &str, bodies: impl Iterator<Item = String>) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    common::cluster::publish_acked(ch, queue, bodies).await;
}

async fn consumer(ch: &Channel, queue: &str, tag: &str, prefetch: u16) -> lapin::Consumer {
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// (body, redelivered) of the next delivery, acked when `ack`.
async fn next(c: &mut lapin::Consumer, ack: bool) -> Option<(String, bool)> {
    let d = tokio::time::timeout(Duration::from_secs(15), c.next())
        .await
        .ok()??
        .ok()?;
    if ack {
        d.acker.ack(BasicAckOptions::default()).await.ok()?;
    }
    Some((String::from_utf8_lossy(&d.data).into_owned(), d.redelivered))
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_replicates_serves_every_member_fails_over_and_catches_up() {
    let started = Instant::now();
    let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let members = crate::common::cluster::members(&nodes);
    for n in &mut nodes {
        n.start(&members);
    }
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();

    eventually(20, "a metadata leader on every node", || async {
        for n in &nodes {
            tokio::net::TcpStream::connect(("127.0.0.1", n.mgmt))
                .await
                .ok()?;
            let s = n.api().get("/api/cluster-status").await;
            (s.status == 200).then_some(())?;
            s.json()["leader"].as_str()?;
        }
        Some(())
    })
    .await;

    // Declared on n2: a group of three; every node reports its members and leader.
    let (_c2, ch2) = channel(&nodes[1]).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch2.queue_declare(
        "qq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    for n in &nodes {
        let q = eventually(20, "a leader reported", || async {
            let q = n.queue("qq").await?;
            q["leader"].as_str()?;
            (names(&q["online"]).len() == 3).then_some(q)
        })
        .await;
        assert_eq!(names(&q["members"]), all, "{}: {q}", n.name);
        assert_eq!(q["node"], q["leader"], "{q}");
        assert_eq!(q["type"], "quorum");
    }

    // 200 confirmed on n2, consumed on n3 and n1: each exactly once, none redelivered.
    publish_confirmed(&ch2, "qq", (0..200).map(|i| format!("a{i}"))).await;
    let (_c3, ch3) = channel(&nodes[2]).await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (i, ch) in [&ch3, &ch1].into_iter().enumerate() {
        let mut c = consumer(ch, "qq", &format!("c{i}"), 10).await;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(d) = next(&mut c, true).await {
                if tx.send((d, i)).is_err() {
                    break;
                }
            }
        }));
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut per_node = [0u32; 2];
    while seen.values().sum::<u32>() < 200 {
        let ((body, redelivered), i) = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a delivery ({} so far)", seen.len()));
        assert!(!redelivered, "{body} redelivered");
        *seen.entry(body).or_default() += 1;
        per_node[i] += 1;
    }
    for t in tasks {
        t.abort();
    }
    assert_eq!(seen.len(), 200, "every message once");
    assert!(seen.values().all(|n| *n == 1));
    assert!(
        per_node[0] > 0 && per_node[1] > 0,
        "both members delivered: {per_node:?}"
    );
    println!("200 messages: {per_node:?} delivered on n3/n1");
    ch1.close(200, "bye".into()).await.unwrap();
    ch3.close(200, "bye".into()).await.unwrap();

    // 100 more confirmed; a consumer on the leader holds 10 unacknowledged. Then the
    // leader is killed.
    let leader = eventually(10, "the leader", || async {
        nodes[1].queue("qq").await?["leader"]
            .as_str()
            .map(String::from)
    })
    .await;
    let li = nodes.iter().position(|n| n.name == leader).unwrap();
    let (_cp, chp) = channel(&nodes[(li + 1) % 3]).await;
    publish_confirmed(&chp, "qq", (0..100).map(|i| format!("b{i}"))).await;
    let (_cl, chl) = channel(&nodes[li]).await;
    let mut held = consumer(&chl, "qq", "on-leader", 10).await;
    let mut held_bodies = BTreeSet::new();
    for _ in 0..10 {
        let (body, _) = next(&mut held, false).await.expect("held delivery");
        held_bodies.insert(body);
    }
    let killed_at = Instant::now();
    nodes[li].kill();
    let survivor = &nodes[(li + 1) % 3];
    let new_leader = eventually(15, "a new leader", || async {
        let l = survivor.queue("qq").await?["leader"].as_str()?.to_string();
        (l != leader).then_some(l)
    })
    .await;
    let failover = killed_at.elapsed();
    println!("queue leader {leader} killed; {new_leader} leads after {failover:?}");
    assert!(failover < Duration::from_secs(10), "{failover:?}");

    // A consumer on a survivor gets all 100: the 10 the dead node's consumer held come
    // back redelivered; nothing acknowledged before comes again.
    let (_cs, chs) = channel(survivor).await;
    let mut after = consumer(&chs, "qq", "survivor", 50).await;
    let mut got = BTreeMap::new();
    while got.len() < 100 {
        let (body, redelivered) = next(&mut after, true)
            .await
            .unwrap_or_else(|| panic!("delivery after failover ({} so far)", got.len()));
        assert!(body.starts_with('b'), "acked message {body} came back");
        assert!(got.insert(body, redelivered).is_none(), "duplicate");
    }
    for b in &held_bodies {
        assert_eq!(got.get(b), Some(&true), "{b} should come back redelivered");
    }
    assert_eq!(
        got.values().filter(|r| **r).count(),
        10,
        "only those were redelivered"
    );

    // While the node is down, 50 more; restarted, it catches up (replays its WAL, then
    // the leader's log) and its own consumer gets them.
    publish_confirmed(&chs, "qq", (0..50).map(|i| format!("c{i}"))).await;
    drop(after);
    chs.close(200, "bye".into()).await.unwrap();
    nodes[li].start(&members);
    let back = &nodes[li];
    eventually(20, "the restarted member caught up", || async {
        let q = back.queue("qq").await?;
        (q["messages_ready"] == 50 && names(&q["online"]).len() == 3).then_some(())
    })
    .await;
    let (_cb, chb) = channel(back).await;
    let mut mine = consumer(&chb, "qq", "back", 50).await;
    let mut c = BTreeSet::new();
    while c.len() < 50 {
        let (body, _) = next(&mut mine, true)
            .await
            .expect("delivery on the restarted node");
        assert!(body.starts_with('c'), "{body}");
        c.insert(body);
    }
    drop(mine);
    chb.close(200, "bye".into()).await.unwrap();

    // Membership: delete_member and add_member change `members` on every node, as do
    // shrink and grow; a member added back catches up from the log and serves.
    let ctl_on = &nodes[0];
    let vhost = || "/".to_string();
    let members_everywhere = |want: BTreeSet<String>| {
        let nodes = &nodes;
        async move {
            eventually(15, "members changed on every node", || async {
                for n in nodes {
                    let q = n.queue("qq").await?;
                    (names(&q["members"]) == want).then_some(())?;
                }
                Some(())
            })
            .await
        }
    };
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };
    // The management route under warren-ctl delete_member.
    let r = ctl_on
        .api()
        .delete("/api/quorum-queues/%2F/qq/members/n3")
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    members_everywhere(set(&["n1", "n2"])).await;
    let e = ctl(
        ctl_on,
        warren::ctl::Command::DeleteMember {
            vhost: vhost(),
            queue: "qq".into(),
            node: "n3".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("400"), "{e}");
    // Published while n3 is out, then n3 added back: its new member gets them.
    let (_c1b, ch1b) = channel(&nodes[0]).await;
    publish_confirmed(&ch1b, "qq", (0..5).map(|i| format!("d{i}"))).await;
    ctl(
        ctl_on,
        warren::ctl::Command::AddMember {
            vhost: vhost(),
            queue: "qq".into(),
            node: "n3".into(),
        },
    )
    .await
    .unwrap();
    members_everywhere(all.clone()).await;
    let (_c3b, ch3b) = channel(&nodes[2]).await;
    let mut on3 = consumer(&ch3b, "qq", "n3-again", 10).await;
    let mut d = BTreeSet::new();
    while d.len() < 5 {
        let (body, _) = next(&mut on3, true)
            .await
            .expect("delivery on the re-added member");
        assert!(body.starts_with('d'), "{body}");
        d.insert(body);
    }
    drop(on3);
    ch3b.close(200, "bye".into()).await.unwrap();
    let out = ctl(
        ctl_on,
        warren::ctl::Command::Shrink {
            node: "n2".into(),
            vhost: None,
        },
    )
    .await
    .unwrap();
    assert!(out.contains("/\tqq\tok"), "{out}");
    members_everywhere(set(&["n1", "n3"])).await;
    ctl(
        ctl_on,
        warren::ctl::Command::Grow {
            node: "n2".into(),
            strategy: "even".into(),
            vhost: None,
        },
    )
    .await
    .unwrap();
    members_everywhere(all.clone()).await;
    let out = ctl(
        ctl_on,
        warren::ctl::Command::Rebalance {
            kind: "quorum".into(),
            vhost: None,
        },
    )
    .await
    .unwrap();
    assert!(out.starts_with("Leaders moved: "), "{out}");
    println!("cluster quorum test took {:?}", started.elapsed());
}

/// Runs a `warren-ctl` command against a node's management API.
async fn ctl(node: &Node, cmd: warren::ctl::Command) -> Result<String, String> {
    let url = format!("http://127.0.0.1:{}", node.mgmt);
    tokio::task::spawn_blocking(move || {
        let ep = warren::ctl::http::Endpoint::parse(&url, "guest", "guest")
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        warren::ctl::run(&ep, &cmd, &mut out).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
    .await
    .unwrap()
}
