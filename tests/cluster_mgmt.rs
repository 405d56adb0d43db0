//! The management API's definition writes in a cluster of three `warren` processes:
//! `PUT /api/queues` of a quorum queue makes one Raft group (members and leader the same
//! on every node), of a stream one replicated stream led by the node asked, of a classic
//! queue one queue homed on that node; each is published to on another node and consumed
//! on the third. A definitions import does the same for its queues, and its exchanges and
//! bindings reach every node; `DELETE /api/queues` removes a queue from every node.

use crate::common;
use crate::common::cluster::{channel, queue, three_nodes, Node};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{options::*, types::AMQPValue, types::FieldTable, BasicProperties, Channel};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Waits until every node reports the queue with `check` true; the reports.
async fn everywhere(nodes: &[Node], name: &str, check: impl Fn(&Value) -> bool) -> Vec<Value> {
    eventually(20, &format!("{name} on every node"), || async {
        let mut out = Vec::new();
        for n in nodes {
            let q = queue(n, name).await?;
            check(&q).then_some(())?;
            out.push(q);
        }
        Some(out)
    })
    .await
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(String::from))
        .collect()
}

/// Publishes `n` messages `{prefix}{i}` through `exchange` with confirms; all acks.
async fn publish_confirmed(ch: &Channel, exchange: &str, rk: &str, prefix: &str, n: usize) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let c = ch
            .basic_publish(
                exchange.into(),
                rk.into(),
                BasicPublishOptions::default(),
                format!("{prefix}{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        pending.push(c);
    }
    for c in pending {
        let c = common::within(T, c).await.unwrap();
        assert!(c.is_ack(), "{rk}: confirm {c:?}");
    }
}

/// Consumes exactly the `n` messages `{prefix}{i}` from `queue` on `ch`, acking each.
async fn consume_all(ch: &Channel, queue: &str, args: FieldTable, prefix: &str, n: usize) {
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("consume {queue}: {e}"));
    let mut got = BTreeSet::new();
    while got.len() < n {
        let d = common::within(T, c.next())
            .await
            .unwrap_or_else(|| panic!("{queue}: {} of {n}", got.len()))
            .unwrap();
        let body = String::from_utf8_lossy(&d.data).into_owned();
        assert!(got.insert(body.clone()), "{queue}: {body} twice");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let want: BTreeSet<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    assert_eq!(got, want, "{queue}");
}

fn from_first() -> FieldTable {
    let mut a = FieldTable::default();
    a.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_declares_and_deletes_are_replicated_as_amqp_declares() {
    let nodes = three_nodes().await;
    let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let api1 = nodes[0].api();
    let (_c2, ch2) = channel(&nodes[1]).await;
    let (_c3, ch3) = channel(&nodes[2]).await;

    // A quorum queue declared through n1's API: one group, the same members and leader
    // on every node; published on n2, consumed on n3.
    let r = api1
        .put(
            "/api/queues/%2F/mq",
            json!({"durable": true, "arguments": {"x-queue-type": "quorum"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let reports = everywhere(&nodes, "mq", |q| {
        q["type"] == "quorum" && names(&q["members"]) == all && q["leader"].is_string()
    })
    .await;
    assert!(
        reports.iter().all(|q| q["leader"] == reports[0]["leader"]),
        "one leader: {reports:?}"
    );
    publish_confirmed(&ch2, "", "mq", "q", 40).await;
    consume_all(&ch3, "mq", FieldTable::default(), "q", 40).await;

    // A stream: led by n1, every node a member.
    let r = api1
        .put(
            "/api/queues/%2F/ms",
            json!({"durable": true, "arguments": {"x-queue-type": "stream"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    everywhere(&nodes, "ms", |q| {
        q["type"] == "stream" && q["leader"] == "n1" && names(&q["members"]) == all
    })
    .await;
    publish_confirmed(&ch2, "", "ms", "s", 40).await;
    consume_all(&ch3, "ms", from_first(), "s", 40).await;

    // A classic queue: homed on n1 and nowhere else.
    let r = api1
        .put("/api/queues/%2F/mc", json!({"durable": true}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    everywhere(&nodes, "mc", |q| {
        q["node"] == "n1" && q["state"] == "running"
    })
    .await;
    publish_confirmed(&ch2, "", "mc", "c", 40).await;
    consume_all(&ch3, "mc", FieldTable::default(), "c", 40).await;

    // A definitions import on n2: a quorum queue, a classic queue homed on n2, an
    // exchange bound to it, a policy.
    let defs = json!({
        "queues": [
            {"name": "dq", "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "quorum"}},
            {"name": "dc", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}
        ],
        "exchanges": [
            {"name": "dx", "vhost": "/", "type": "direct", "durable": true,
             "auto_delete": false, "internal": false, "arguments": {}}
        ],
        "bindings": [
            {"source": "dx", "vhost": "/", "destination": "dc", "destination_type": "queue",
             "routing_key": "k", "arguments": {}}
        ],
        "policies": [
            {"name": "dp", "vhost": "/", "pattern": "^dc$", "apply-to": "queues",
             "definition": {"max-length": 1000}, "priority": 0}
        ]
    });
    let r = nodes[1].api().post("/api/definitions", defs).await;
    assert!(
        r.status == 204 || r.status == 201,
        "{}: {}",
        r.status,
        r.text()
    );
    let reports = everywhere(&nodes, "dq", |q| {
        names(&q["members"]) == all && q["leader"].is_string()
    })
    .await;
    assert!(
        reports.iter().all(|q| q["leader"] == reports[0]["leader"]),
        "one leader: {reports:?}"
    );
    everywhere(&nodes, "dc", |q| {
        q["node"] == "n2" && q["state"] == "running" && q["policy"] == "dp"
    })
    .await;
    for n in &nodes {
        let b = n.api().get("/api/exchanges/%2F/dx/bindings/source").await;
        assert_eq!(b.status, 200, "{}", n.name);
        assert_eq!(b.json().as_array().map(Vec::len), Some(1), "{}", n.name);
    }
    let (_c1, ch1) = channel(&nodes[0]).await;
    publish_confirmed(&ch1, "dx", "k", "d", 40).await;
    consume_all(&ch3, "dc", FieldTable::default(), "d", 40).await;
    publish_confirmed(&ch1, "", "dq", "e", 40).await;
    consume_all(&ch2, "dq", FieldTable::default(), "e", 40).await;

    // Deleted through n3's API: gone from every node.
    drop((_c2, _c3, _c1));
    for name in ["mq", "ms", "mc", "dq"] {
        let r = nodes[2]
            .api()
            .delete(&format!("/api/queues/%2F/{name}"))
            .await;
        assert_eq!(r.status, 204, "{name}: {}", r.text());
        eventually(20, &format!("{name} gone from every node"), || async {
            for n in &nodes {
                queue(n, name).await.is_none().then_some(())?;
            }
            Some(())
        })
        .await;
    }
}
