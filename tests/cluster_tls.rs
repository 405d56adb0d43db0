//! Inter-node TLS (`--cluster-tls-*`), with three `warren` processes on loopback and
//! certificates made here (rcgen, as the amqps tests): a TLS cluster with mutual
//! verification replicates definitions, a quorum queue, a classic queue used from
//! another node (forwarding link) and a stream (replication link); its cluster port
//! answers no plain-TCP request; a node speaking plain TCP and one whose certificate comes
//! from another CA are refused, logged by the TLS nodes, and do not join; a node whose
//! TLS files are missing or inconsistent stops at start with an error naming the problem.

use crate::common;
use crate::common::cluster::{channel, Node};
use crate::tls::{ca, leaf};

use common::http::eventually;
use futures_lite::StreamExt;
use lapin::{options::*, types::AMQPValue, types::FieldTable, BasicProperties, Channel};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);

/// A CA and, for each name, a certificate for 127.0.0.1 / localhost signed by it, in
/// `dir` as `ca.pem`, `{name}.pem`, `{name}.key`.
fn pki(dir: &Path, ca_name: &str, nodes: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let (ca_cert, ca_key) = ca(ca_name);
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    for n in nodes {
        let (cert, key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            n,
            &ca_cert,
            &ca_key,
        );
        std::fs::write(dir.join(format!("{n}.pem")), cert).unwrap();
        std::fs::write(dir.join(format!("{n}.key")), key).unwrap();
    }
}

/// The options of a node with mutual verification: its certificate from `certs`, the
/// CA it trusts from `trust`.
fn tls_args(certs: &Path, trust: &Path, name: &str) -> Vec<String> {
    let p = |f: &str| certs.join(f).display().to_string();
    vec![
        "--cluster-tls-cert-file".into(),
        p(&format!("{name}.pem")),
        "--cluster-tls-key-file".into(),
        p(&format!("{name}.key")),
        "--cluster-tls-ca-file".into(),
        trust.join("ca.pem").display().to_string(),
        "--cluster-tls-verify-peer".into(),
        "--cluster-tls-fail-if-no-peer-cert".into(),
        "--log-level".into(),
        "warn".into(),
    ]
}

fn members(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.name, n.cluster))
        .collect::<Vec<_>>()
        .join(",")
}

/// Waits until every node names the same leader and reports every node running.
async fn formed(nodes: &[&Node]) {
    eventually(
        30,
        "a leader every node agrees on, every node running",
        || async {
            let mut leader = None;
            for n in nodes {
                let s = n.status().await?;
                let l = s["leader"].as_str()?.to_string();
                if leader.get_or_insert(l.clone()) != &l {
                    return None;
                }
                let running = s["members"]
                    .as_array()?
                    .iter()
                    .filter(|m| m["running"] == true)
                    .count();
                (running == nodes.len()).then_some(())?;
            }
            leader
        },
    )
    .await;
}

fn queue_args(kind: &str) -> FieldTable {
    let mut a = FieldTable::default();
    a.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    a
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Publishes `n` messages `{prefix}{i}` to `queue` with confirms; all must be acks.
async fn publish_confirmed(ch: &Channel, queue: &str, prefix: &str, n: usize) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
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
        assert!(c.is_ack(), "{queue}: confirm {c:?}");
    }
}

/// Consumes `n` messages from `queue` on `ch` (with `args`), acking each; their bodies.
async fn consume(ch: &Channel, queue: &str, n: usize, args: FieldTable) -> Vec<String> {
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
    let mut got = Vec::new();
    while got.len() < n {
        let d = common::within(T, c.next())
            .await
            .unwrap_or_else(|| panic!("{queue}: {} of {n} messages", got.len()))
            .unwrap();
        got.push(String::from_utf8_lossy(&d.data).into_owned());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    got
}

fn expect_once(queue: &str, got: Vec<String>, prefix: &str, n: usize) {
    let want: BTreeSet<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    assert_eq!(got.len(), n, "{queue}: {got:?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want, "{queue}");
}

fn log_of(dir: &Path) -> PathBuf {
    dir.with_extension("log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_replicates_definitions_queues_and_streams() {
    let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
    let certs = nodes[0].dir.with_extension("pki");
    pki(&certs, "Warren cluster CA", &["n1", "n2", "n3"]);
    let list = members(&nodes.iter().collect::<Vec<_>>());
    for n in &mut nodes {
        let args = tls_args(&certs, &certs, &n.name);
        let log = log_of(&n.dir);
        n.start_with(&list, &args, Some(&log));
    }
    formed(&nodes.iter().collect::<Vec<_>>()).await;
    let (_c1, ch1) = channel(&nodes[0]).await;
    let (_c2, ch2) = channel(&nodes[1]).await;
    let (_c3, ch3) = channel(&nodes[2]).await;

    // The cluster port speaks only TLS: a plain request gets no answer.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", nodes[0].cluster))
        .await
        .unwrap();
    let ping = br#""Ping""#;
    raw.write_all(&(ping.len() as u32).to_be_bytes())
        .await
        .unwrap();
    raw.write_all(ping).await.unwrap();
    let mut buf = [0u8; 64];
    let n = common::within(T, raw.read(&mut buf)).await.unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("Pong"),
        "a plain request answered"
    );

    // Definitions: an exchange declared on n1 is on n3.
    ch1.exchange_declare(
        "tls-x".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let x = nodes[2].api().get("/api/exchanges/%2F/tls-x").await;
    assert_eq!(x.status, 200, "{}", x.text());

    // A quorum queue declared on n2: three members, published on n1, consumed on n3.
    ch2.queue_declare("tls-qq".into(), durable(), queue_args("quorum"))
        .await
        .unwrap();
    let q = nodes[0].api().get_json("/api/queues/%2F/tls-qq").await;
    assert_eq!(q["members"].as_array().map(Vec::len), Some(3), "{q}");
    publish_confirmed(&ch1, "tls-qq", "q", 50).await;
    let got = consume(&ch3, "tls-qq", 50, FieldTable::default()).await;
    expect_once("tls-qq", got, "q", 50);

    // A classic queue homed on n1, published on n2 and consumed on n3 (forwarding links).
    ch1.queue_declare("tls-cq".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    eventually(20, "tls-cq reachable from n2 and n3", || async {
        for n in &nodes[1..] {
            let r = n.api().get("/api/queues/%2F/tls-cq").await;
            (r.status == 200 && r.json()["state"] == "running").then_some(())?;
        }
        Some(())
    })
    .await;
    publish_confirmed(&ch2, "tls-cq", "c", 50).await;
    let got = consume(&ch3, "tls-cq", 50, FieldTable::default()).await;
    expect_once("tls-cq", got, "c", 50);

    // A stream led by n1, published on n2 (forwarded), read from its first offset on n3.
    ch1.queue_declare("tls-s".into(), durable(), queue_args("stream"))
        .await
        .unwrap();
    eventually(20, "the stream's placement on n2 and n3", || async {
        for n in &nodes[1..] {
            let r = n.api().get("/api/queues/%2F/tls-s").await;
            (r.status == 200 && r.json()["leader"] == "n1").then_some(())?;
        }
        Some(())
    })
    .await;
    publish_confirmed(&ch2, "tls-s", "s", 50).await;
    let mut first = FieldTable::default();
    first.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let got = consume(&ch3, "tls-s", 50, first).await;
    expect_once("tls-s", got, "s", 50);
    let _ = std::fs::remove_dir_all(&certs);
    for n in &nodes {
        let _ = std::fs::remove_file(log_of(&n.dir));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_foreign_ca_peers_are_refused_logged_and_do_not_join() {
    let mut good: Vec<Node> = (1..=2).map(Node::new).collect();
    let mut plain = Node::new(3);
    let mut foreign = Node::new(4);
    let certs = good[0].dir.with_extension("pki");
    let other = good[0].dir.with_extension("pki-other");
    pki(&certs, "Warren cluster CA", &["n1", "n2"]);
    pki(&other, "Another CA", &["n4"]);
    let list = members(&good.iter().collect::<Vec<_>>());
    for n in &mut good {
        let args = tls_args(&certs, &certs, &n.name);
        let log = log_of(&n.dir);
        n.start_with(&list, &args, Some(&log));
    }
    formed(&good.iter().collect::<Vec<_>>()).await;
    let seed = format!("n1@127.0.0.1:{}", good[0].cluster);

    // n3: no TLS at all. n4: trusts the cluster's CA, but its own certificate is from
    // another CA. Each lists itself and asks n1 to join.
    let alone = |n: &Node| format!("{}@127.0.0.1:{}", n.name, n.cluster);
    plain.start_with(&alone(&plain), &[], None);
    let foreign_args = tls_args(&other, &certs, "n4");
    foreign.start_with(&alone(&foreign), &foreign_args, Some(&log_of(&foreign.dir)));
    for n in [&plain, &foreign] {
        eventually(20, "the node's management API", || async {
            n.status().await
        })
        .await;
        let r = n
            .api()
            .post("/api/cluster/join", serde_json::json!({ "node": seed }))
            .await;
        assert_eq!(r.status, 503, "{} joined: {}", n.name, r.text());
    }

    // Both refused, and n1 says why.
    let log = log_of(&good[0].dir);
    eventually(20, "n1's log of both refusals", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        let refused: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("cluster connection refused"))
            .collect();
        let not_tls = refused.iter().any(|l| l.contains("not TLS"));
        let unknown_ca = refused
            .iter()
            .any(|l| l.contains("UnknownIssuer") || l.contains("unknown issuer"));
        (not_tls && unknown_ca).then_some(())
    })
    .await;

    // The cluster is still n1 and n2; the two others lead nothing and know no leader.
    for n in &good {
        let s = n.status().await.unwrap();
        let names: BTreeSet<&str> = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert_eq!(names, BTreeSet::from(["n1", "n2"]), "{s}");
    }
    for n in [&plain, &foreign] {
        let s = n.status().await.unwrap();
        assert!(s["leader"].is_null(), "{}: {s}", n.name);
    }
    // A definition made in the cluster does not reach them.
    let (_c, ch) = channel(&good[0]).await;
    ch.queue_declare("tls-only".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    let r = good[1].api().get("/api/queues/%2F/tls-only").await;
    assert_eq!(r.status, 200);
    for n in [&plain, &foreign] {
        let r = n.api().get("/api/queues/%2F/tls-only").await;
        assert_eq!(r.status, 404, "{}", n.name);
    }
    let _ = std::fs::remove_dir_all(&certs);
    let _ = std::fs::remove_dir_all(&other);
    for n in good.iter().chain([&plain, &foreign]) {
        let _ = std::fs::remove_file(log_of(&n.dir));
    }
}

/// Runs `warren` with `args` (a cluster of one, free ports); its exit status and stderr.
/// A node that is still running after 20 s is killed and the test fails.
fn start_fails(args: &[String]) -> (std::process::ExitStatus, String) {
    let n = Node::new(1);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--node-name", "n1", "--port", &n.amqp.to_string()])
        .args(["--management-port", &n.mgmt.to_string()])
        .args(["--cluster-port", &n.cluster.to_string()])
        .args(["--cluster-nodes", &format!("n1@127.0.0.1:{}", n.cluster)])
        .arg("--data-dir")
        .arg(&n.dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run warren");
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?}: still running after {T:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (status, err)
}

#[test]
fn a_misconfigured_node_stops_with_a_clear_error() {
    let dir = common::temp_data_dir().with_extension("pki");
    pki(&dir, "Warren cluster CA", &["n1"]);
    let s = |p: PathBuf| p.display().to_string();
    let cert = s(dir.join("n1.pem"));
    let key = s(dir.join("n1.key"));
    let missing = s(dir.join("missing.pem"));
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "--cluster-tls-cert-file".into(),
                missing.clone(),
                "--cluster-tls-key-file".into(),
                key.clone(),
            ],
            format!("cluster TLS: {missing}"),
        ),
        (
            vec![
                "--cluster-tls-cert-file".into(),
                cert.clone(),
                "--cluster-tls-key-file".into(),
                cert.clone(),
            ],
            "no private key".into(),
        ),
        (
            vec![
                "--cluster-tls-cert-file".into(),
                cert.clone(),
                "--cluster-tls-key-file".into(),
                key.clone(),
                "--cluster-tls-verify-peer".into(),
            ],
            "--cluster-tls-verify-peer needs a CA file".into(),
        ),
        (
            vec!["--cluster-tls-cert-file".into(), cert.clone()],
            "--cluster-tls-key-file".into(),
        ),
    ];
    for (args, want) in cases {
        let (status, err) = start_fails(&args);
        assert!(!status.success(), "{args:?} started");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
