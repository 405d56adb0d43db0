//! A replicated quorum queue's deliveries after a member catches up (three `warren`
//! processes on loopback): a consumer's node stops answering (SIGSTOP) while messages
//! keep coming; the leader first gives some of them to that consumer, then declares its
//! node down and gives them to a consumer elsewhere, redelivered. When the node answers
//! again it applies that part of the log in a run: it must not hand its consumer, as new,
//! a message another consumer already got flagged. Every published message is delivered.

use crate::common;
use crate::common::cluster::{channel, publish_acked as publish, Node};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{options::*, types::AMQPValue, types::FieldTable, Channel};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the clients saw, in the order they saw it: (body, consumer, redelivered).
type Seen = Arc<Mutex<Vec<(String, &'static str, bool)>>>;

async fn queue(n: &Node, name: &str) -> Option<serde_json::Value> {
    tokio::net::TcpStream::connect(("127.0.0.1", n.mgmt))
        .await
        .ok()?;
    let r = n.api().get(&format!("/api/queues/%2F/{name}")).await;
    (r.status == 200).then(|| r.json())
}

/// A consumer that acknowledges everything it gets and notes it in `seen`.
async fn consume(ch: &Channel, queue: &str, tag: &'static str, seen: Seen) {
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut c = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(Ok(d)) = c.next().await {
            let body = String::from_utf8_lossy(&d.data).into_owned();
            seen.lock().unwrap().push((body, tag, d.redelivered));
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
    });
}

fn delivered(seen: &Seen) -> BTreeSet<String> {
    seen.lock().unwrap().iter().map(|s| s.0.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_catching_up_never_delivers_unflagged_what_went_elsewhere_flagged() {
    let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let members = crate::common::cluster::members(&nodes);
    for n in &mut nodes {
        n.start(&members);
    }
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    eventually(30, "the quorum queue declared", || async {
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let (_c, ch) = channel(&nodes[0]).await;
        ch.queue_declare("qc".into(), opts, args.clone()).await.ok()
    })
    .await;
    eventually(30, "n1 leading, three members online", || async {
        let q = queue(&nodes[0], "qc").await?;
        (q["leader"] == "n1" && q["online"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    ch1.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // Consumers on n2 (a) and n3 (b) share the queue, round robin.
    let seen: Seen = Arc::default();
    let (_c2, ch2) = channel(&nodes[1]).await;
    consume(&ch2, "qc", "a", seen.clone()).await;
    let (_c3, ch3) = channel(&nodes[2]).await;
    consume(&ch3, "qc", "b", seen.clone()).await;
    let mut published: Vec<String> = (0..20).map(|i| format!("m{i:03}")).collect();
    publish(&ch1, "qc", published.clone().into_iter()).await;
    eventually(20, "the first twenty delivered", || async {
        (delivered(&seen).len() == 20).then_some(())
    })
    .await;

    // n2 stops answering. Publishing goes on in small batches: until the leader declares
    // n2 down, it gives every other message to a, in entries n2 does not have yet; then
    // b gets those, redelivered (the pause is at least that long).
    nodes[1].pause();
    let mut next = 20;
    let mut batches = 0;
    loop {
        let batch: Vec<String> = (next..next + 2).map(|i| format!("m{i:03}")).collect();
        next += 2;
        publish(&ch1, "qc", batch.clone().into_iter()).await;
        published.extend(batch);
        batches += 1;
        let flagged = seen.lock().unwrap().iter().any(|s| s.1 == "b" && s.2);
        if flagged {
            break;
        }
        assert!(batches < 200, "b never got a's messages back, redelivered");
        // Pacing: a few messages per tenth of a second while the leader notices.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes[1].resume();

    // n2 catches up and a checks out again (after applying the Down); once a gets new
    // messages, n2 has applied everything before them. Published a few at a time until
    // then, as b takes whatever comes while a is not back.
    let mut z = 0;
    loop {
        let batch: Vec<String> = (z..z + 2).map(|i| format!("z{i:03}")).collect();
        z += 2;
        publish(&ch1, "qc", batch.clone().into_iter()).await;
        published.extend(batch);
        let a_again = seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.1 == "a" && s.0.starts_with('z'));
        if a_again {
            break;
        }
        assert!(z < 400, "a never got deliveries again after n2 resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = delivered(&seen);
        let missing: Vec<&String> = published.iter().filter(|p| !got.contains(*p)).collect();
        let a_again = seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.1 == "a" && s.0.starts_with('z'));
        if missing.is_empty() && a_again {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {missing:?}, a served again: {a_again}; seen {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let seen = seen.lock().unwrap().clone();
    let mut flagged: BTreeMap<&str, &str> = BTreeMap::new();
    for (body, who, redelivered) in &seen {
        if *redelivered {
            flagged.entry(body).or_insert(who);
        } else if let Some(first) = flagged.get(body.as_str()) {
            panic!(
                "{body} delivered to {who} unflagged after {first} got it redelivered: {seen:?}"
            );
        }
    }
    assert!(!flagged.is_empty(), "no message was redelivered: {seen:?}");
}
