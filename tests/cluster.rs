//! Three `warren` processes on loopback form a cluster (`--cluster-nodes`): definitions
//! declared on one node are on every node once declare-ok is sent, the survivors of a
//! `kill -9` of the leader elect a new one and accept declares, and the killed node,
//! restarted, catches up.

use crate::common;
use crate::common::cluster::{channel, free_port, Node};

use common::http::eventually;
use lapin::{
    options::*, types::FieldTable, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn passive_queue(ch: &Channel, name: &str) -> Result<(), lapin::Error> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
}

/// Waits until every running node in `nodes` names the same leader; returns its name.
async fn agreed_leader(nodes: &[&Node], secs: u64) -> String {
    eventually(secs, "a leader all nodes agree on", || async {
        let mut leader = None;
        for n in nodes {
            let s = n.status().await?;
            let l = s["leader"].as_str()?.to_string();
            if leader.get_or_insert(l.clone()) != &l {
                return None;
            }
        }
        leader
    })
    .await
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

fn running(nodes: &Value, name: &str) -> Option<bool> {
    nodes.as_array()?.iter().find(|n| n["name"] == name)?["running"].as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_definitions_fail_over_and_catch_up() {
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
    eventually(20, "management on every node", || async {
        for n in &nodes {
            n.status().await?;
        }
        Some(())
    })
    .await;
    let all: Vec<&Node> = nodes.iter().collect();
    let first = agreed_leader(&all, 20).await;
    assert_eq!(
        first, "n1",
        "the first name in sort order bootstraps and leads"
    );

    // Declared through AMQP on n1 (the leader) and n2 (a follower, forwarded).
    let (_c1, ch1) = channel(&nodes[0]).await;
    let durable_x = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch1.exchange_declare(
        "orders".into(),
        ExchangeKind::Topic,
        durable_x,
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch1.queue_declare("orders.eu".into(), durable_q, FieldTable::default())
        .await
        .unwrap();
    ch1.queue_bind(
        "orders.eu".into(),
        "orders".into(),
        "eu.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (_c2, ch2) = channel(&nodes[1]).await;
    ch2.queue_declare("from-n2".into(), durable_q, FieldTable::default())
        .await
        .unwrap();
    // A user and its permissions through the management API of n1.
    let api1 = nodes[0].api();
    let r = api1
        .put(
            "/api/users/carol",
            json!({"password": "pw", "tags": "management"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api1
        .put(
            "/api/permissions/%2F/carol",
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // Visible on every node right after the replies: AMQP passive declares (no retry
    // loop: declare-ok means committed, and a miss waits for this node to apply) and
    // the management API.
    for n in &nodes {
        let (_c, ch) = channel(n).await;
        ch.exchange_declare(
            "orders".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("exchange on {}: {e}", n.name));
        passive_queue(&ch, "orders.eu").await.unwrap();
        passive_queue(&ch, "from-n2").await.unwrap();
        let api = n.api();
        assert_eq!(api.get("/api/queues/%2F/orders.eu").await.status, 200);
        assert_eq!(api.get("/api/exchanges/%2F/orders").await.status, 200);
        let b = api.get_json("/api/bindings/%2F/e/orders/q/orders.eu").await;
        assert_eq!(b[0]["routing_key"], "eu.#", "{} bindings: {b}", n.name);
        let u = api.get_json("/api/users/carol").await;
        assert_eq!(u["tags"], json!(["management"]));
        // The hash made on n1, not one salted again on each node.
        let on_n1 = api1.get_json("/api/users/carol").await;
        assert_eq!(u["password_hash"], on_n1["password_hash"]);
        // The user logs in on this node with the password set on n1.
        let carol = format!("amqp://carol:pw@127.0.0.1:{}/%2f", n.amqp);
        Connection::connect(&carol, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("carol on {}: {e}", n.name));
    }
    // A queue that does not exist anywhere is still a 404 (after the barrier).
    let (_c3, ch3) = channel(&nodes[2]).await;
    let e = passive_queue(&ch3, "nowhere").await.unwrap_err();
    assert!(
        e.to_string().contains("404") || e.to_string().contains("NOT_FOUND"),
        "{e}"
    );
    let nodes_json = nodes[2].api().get_json("/api/nodes").await;
    assert_eq!(nodes_json.as_array().unwrap().len(), 3);
    for n in ["n1", "n2", "n3"] {
        assert_eq!(running(&nodes_json, n), Some(true), "{nodes_json}");
    }

    // Liveness is probe-based (a probe answered in the last 1.5 s): on a loaded machine a
    // late probe can drop a node from "Running Nodes" for a moment, so poll.
    let status = eventually(20, "every node running in cluster_status", || async {
        let s = ctl(&nodes[1], warren::ctl::Command::ClusterStatus)
            .await
            .ok()?;
        s.contains("Running Nodes\n\nn1\nn2\nn3\n").then_some(s)
    })
    .await;
    assert!(
        status.starts_with("Cluster status of node n2 ..."),
        "{status}"
    );
    assert!(status.contains("Disk Nodes\n\nn1\nn2\nn3\n"), "{status}");
    assert!(status.contains("Running Nodes\n\nn1\nn2\nn3\n"), "{status}");
    assert!(status.contains("Metadata Store Leader\n\nn1\n"), "{status}");

    // kill -9 the leader: the other two elect one within a few seconds.
    let killed = nodes.iter().position(|n| n.name == first).unwrap();
    let killed_at = Instant::now();
    nodes[killed].kill();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.name != first).collect();
    let new_leader = eventually(15, "a new leader", || async {
        let mut leader = None;
        for n in &survivors {
            let s = n.status().await?;
            let l = s["leader"].as_str()?.to_string();
            if l == first || leader.get_or_insert(l.clone()) != &l {
                return None;
            }
        }
        leader
    })
    .await;
    let failover = killed_at.elapsed();
    println!("leader {first} killed; {new_leader} elected after {failover:?}");
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );

    // The survivors accept declares, and see each other's.
    let (_ca, cha) = channel(survivors[0]).await;
    let (_cb, chb) = channel(survivors[1]).await;
    cha.queue_declare("after-failover".into(), durable_q, FieldTable::default())
        .await
        .unwrap();
    passive_queue(&chb, "after-failover").await.unwrap();
    chb.queue_delete("from-n2".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert!(passive_queue(&cha, "from-n2").await.is_err());
    // The dead node is reported as not running.
    eventually(10, "the killed node reported not running", || async {
        let v = survivors[0].api().get_json("/api/nodes").await;
        (running(&v, &first) == Some(false)).then_some(())
    })
    .await;

    // Restarted, it catches up: it has the queue declared and the one deleted while
    // it was down.
    nodes[killed].start(&members);
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.name != first).collect();
    let (_ck, chk) = channel(&nodes[killed]).await;
    passive_queue(&chk, "after-failover").await.unwrap();
    let (_ck2, chk2) = channel(&nodes[killed]).await;
    assert!(passive_queue(&chk2, "from-n2").await.is_err());
    let back = nodes[killed].api();
    eventually(10, "the deleted queue gone from management", || async {
        (back.get("/api/queues/%2F/from-n2").await.status == 404).then_some(())
    })
    .await;
    eventually(10, "every node running again", || async {
        let v = survivors[0].api().get_json("/api/nodes").await;
        ["n1", "n2", "n3"]
            .iter()
            .all(|n| running(&v, n) == Some(true))
            .then_some(())
    })
    .await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = agreed_leader(&all, 10).await;

    // forget_cluster_node takes a follower out of the membership; join_cluster, run on
    // that node, brings it back as a voter, and it sees what was declared meanwhile.
    let lead = nodes.iter().find(|n| n.name == leader).unwrap();
    let out = nodes.iter().find(|n| n.name != leader).unwrap();
    let e = ctl(
        lead,
        warren::ctl::Command::ForgetClusterNode { node: "n9".into() },
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("400"), "{e}");
    let r = lead.api().delete("/api/cluster/nodes/n9").await;
    assert!(r.text().contains("not a cluster member"), "{}", r.text());
    ctl(
        lead,
        warren::ctl::Command::ForgetClusterNode {
            node: out.name.clone(),
        },
    )
    .await
    .unwrap();
    let v = lead.api().get_json("/api/nodes").await;
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(running(&v, &out.name), None);
    let (_cl, chl) = channel(lead).await;
    chl.queue_declare("while-out".into(), durable_q, FieldTable::default())
        .await
        .unwrap();
    let seed = format!("{}@127.0.0.1:{}", lead.name, lead.cluster);
    ctl(out, warren::ctl::Command::JoinCluster { node: seed })
        .await
        .unwrap();
    eventually(10, "the rejoined node a voter again", || async {
        let st = out.status().await?;
        let members = st["members"].as_array()?.clone();
        (members.len() == 3 && members.iter().all(|m| m["voter"] == true)).then_some(())
    })
    .await;
    let (_co, cho) = channel(out).await;
    passive_queue(&cho, "while-out").await.unwrap();
    println!("cluster test took {:?}", started.elapsed());
}
