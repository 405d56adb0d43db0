//! Dynamic shovels: moving a live queue into Warren with `ack-mode: on-confirm`, every
//! message exactly once while a publisher keeps publishing to the source. The source is a
//! second Warren (always runs) or a RabbitMQ (`WARREN_SHOVEL_RABBITMQ_URI`, default the
//! reference node `amqp://guest:guest@127.0.0.1:5682/%2f`; skipped, saying so, when it is
//! not reachable). Also: the management API's shapes, and a shovel restarted at boot.

use crate::common;

use common::http::Api;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BACKLOG: u32 = 500;
const LIVE: u32 = 500;

async fn channel(uri: &str) -> (Connection, Channel) {
    let c = Connection::connect(uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {uri}: {e}"));
    let ch = c.create_channel().await.unwrap();
    (c, ch)
}

/// Publishes `m-from` .. `m-to` persistently to `queue`, each confirmed.
async fn publish(ch: &Channel, queue: &str, from: u32, to: u32) {
    for i in from..to {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("m-{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "message {i} confirmed");
    }
}

async fn count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes (bounded).
async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    for _ in 0..(deadline.as_millis() / 20 + 1) {
        if cond().await {
            return;
        }
        if start.elapsed() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {deadline:?}");
}

/// The migration scenario: `BACKLOG` messages wait in `queue` at `src_uri`; a shovel
/// defined on `dest` (on-confirm, src-delete-after = all the messages) moves them into
/// `queue`-moved while `LIVE` more are published to the source. Once the shovel has
/// deleted itself the source is empty and the destination holds each message once.
async fn migrate(src_uri: &str, dest: &warren::BrokerHandle, queue: &str) {
    let api = Api::new(dest.mgmt_addr.unwrap());
    let (src_conn, src) = channel(src_uri).await;
    src.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let _ = src
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    src.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&src, queue, 0, BACKLOG).await;
    let moved = format!("{queue}-moved");
    let r = api
        .put(
            &format!("/api/parameters/shovel/%2F/{queue}"),
            json!({"value": {
                "src-uri": src_uri,
                "src-queue": queue,
                "dest-uri": "amqp://",
                "dest-queue": moved,
                "ack-mode": "on-confirm",
                "src-prefetch-count": 100,
                "reconnect-delay": 1,
                "src-delete-after": BACKLOG + LIVE,
            }}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // The live publisher, while the shovel drains the backlog.
    publish(&src, queue, BACKLOG, BACKLOG + LIVE).await;
    eventually("the shovel deletes itself", Duration::from_secs(60), || {
        let api = api.clone();
        async move { api.get_json("/api/shovels").await == json!([]) }
    })
    .await;
    assert_eq!(count(&src, queue).await, 0, "source drained");
    let (dest_conn, d) = channel(&dest.uri()).await;
    assert_eq!(count(&d, &moved).await, BACKLOG + LIVE, "no duplicates");
    let mut seen = BTreeMap::new();
    for _ in 0..BACKLOG + LIVE {
        let m = d
            .basic_get(moved.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
        *seen
            .entry(String::from_utf8(m.delivery.data.clone()).unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len() as u32, BACKLOG + LIVE, "every message arrived");
    assert!(seen.values().all(|n| *n == 1), "each exactly once");
    let _ = src
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = src_conn.close(200, "".into()).await;
    let _ = dest_conn.close(200, "".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_to_warren_exactly_once() {
    let src = common::start_broker().await;
    let dest = common::start_broker().await;
    common::within(
        Duration::from_secs(90),
        migrate(&src.uri(), &dest, "legacy"),
    )
    .await;
    dest.shutdown().await;
    src.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_to_warren_exactly_once() {
    let uri = std::env::var("WARREN_SHOVEL_RABBITMQ_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5682/%2f".into());
    let reachable = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await;
    match reachable {
        Ok(Ok(c)) => {
            let _ = c.close(200, "".into()).await;
        }
        _ => {
            println!("SKIPPED: no RabbitMQ at {uri} (bash ../shared/rabbitmq-reference.sh start 5682, or set WARREN_SHOVEL_RABBITMQ_URI)");
            return;
        }
    }
    let dest = common::start_broker().await;
    common::within(
        Duration::from_secs(90),
        migrate(&uri, &dest, "warren-shovel-test"),
    )
    .await;
    dest.shutdown().await;
}

/// The API's shapes and refusals, and a shovel saved with the definitions that runs again
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_restart() {
    let dir = common::temp_data_dir();
    let b = common::start_broker_with(|c| c.data_dir = dir.clone()).await;
    let api = Api::new(b.mgmt_addr.unwrap());
    let r = api
        .put(
            "/api/parameters/shovel/%2F/bad",
            json!({"value": {"src-uri": "amqp://", "dest-uri": "amqp://", "dest-queue": "b"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "Validation failed\n\nMust specify 'src-queue' or 'src-exchange'"
    );
    let value = json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://",
                       "dest-queue": "b", "add-forward-headers": true});
    let r = api
        .put("/api/parameters/shovel/%2F/ab", json!({ "value": value }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        api.get_json("/api/parameters/shovel/%2F/ab").await,
        json!({"component": "shovel", "vhost": "/", "name": "ab", "value": value})
    );
    eventually("the shovel runs", Duration::from_secs(20), || {
        let api = api.clone();
        async move { api.get_json("/api/shovels").await[0]["state"] == "running" }
    })
    .await;
    let s = api.get_json("/api/shovels/%2F").await;
    assert_eq!(s[0]["name"], "ab");
    assert_eq!(s[0]["type"], "dynamic");
    assert_eq!(s[0]["src_queue"], "a");
    assert_eq!(s[0]["dest_queue"], "b");
    let defs = api.get_json("/api/definitions").await;
    assert!(defs["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["component"] == "shovel" && p["name"] == "ab"));
    b.shutdown().await;

    let b = common::start_broker_with(|c| c.data_dir = dir.clone()).await;
    let api = Api::new(b.mgmt_addr.unwrap());
    assert_eq!(api.get_json("/api/shovels").await[0]["name"], "ab");
    let (conn, ch) = channel(&b.uri()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    eventually("the shovel runs again", Duration::from_secs(20), || {
        let api = api.clone();
        async move { api.get_json("/api/shovels").await[0]["state"] == "running" }
    })
    .await;
    publish(&ch, "a", 0, 1).await;
    let mut got = None;
    // Bounded: 20 s at most.
    for _ in 0..1000 {
        let m = ch
            .basic_get("b".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if let Some(m) = m {
            got = Some(m.delivery);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = got.expect("the message is moved within 20 s");
    assert_eq!(m.data, b"m-0");
    let hops = m
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-shovelled").cloned())
        .expect("x-shovelled header");
    let lapin::types::AMQPValue::FieldArray(a) = hops else {
        panic!("x-shovelled is {hops:?}")
    };
    let lapin::types::AMQPValue::FieldTable(t) = &a.as_slice()[0] else {
        panic!("hop is not a table")
    };
    assert_eq!(
        t.inner().get("shovel-name"),
        Some(&lapin::types::AMQPValue::LongString("ab".into()))
    );
    let r = api.delete("/api/parameters/shovel/%2F/ab").await;
    assert_eq!(r.status, 204);
    assert_eq!(api.get_json("/api/shovels").await, json!([]));
    let _ = conn.close(200, "".into()).await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The source broker restarts while the shovel runs: the shovel reconnects after
/// `reconnect-delay` and nothing is lost (a message confirmed at the destination but not
/// yet acknowledged at the source when the connection dropped may arrive twice: at least
/// once, as rabbitmq_shovel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_source_restarts() {
    let src_dir = common::temp_data_dir();
    let src = common::start_broker_with(|c| c.data_dir = src_dir.clone()).await;
    let port = src.addr.port();
    let src_uri = src.uri();
    let dest = common::start_broker().await;
    let api = Api::new(dest.mgmt_addr.unwrap());
    let (c, ch) = channel(&src_uri).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "r".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "r", 0, 200).await;
    let _ = c.close(200, "".into()).await;
    let r = api
        .put(
            "/api/parameters/shovel/%2F/r",
            json!({"value": {"src-uri": src_uri, "src-queue": "r", "dest-uri": "amqp://",
                             "dest-queue": "r-moved", "reconnect-delay": 1,
                             "src-prefetch-count": 50}}),
        )
        .await;
    assert_eq!(r.status, 201);
    eventually("the first messages move", Duration::from_secs(20), || {
        let api = api.clone();
        async move {
            let s = api.get_json("/api/shovels").await;
            s[0]["state"] == "running"
        }
    })
    .await;
    src.shutdown().await;
    eventually("the shovel notices", Duration::from_secs(20), || {
        let api = api.clone();
        async move { api.get_json("/api/shovels").await[0]["state"] != "running" }
    })
    .await;
    let src = common::start_broker_with(|c| {
        c.data_dir = src_dir.clone();
        c.port = port;
    })
    .await;
    let (c, ch) = channel(&src_uri).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish(&ch, "r", 200, 400).await;
    let (dc, d) = channel(&dest.uri()).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    let start = Instant::now();
    // Bounded: until all 400 arrived, at most 60 s.
    while seen.len() < 400 && start.elapsed() < Duration::from_secs(60) {
        match d
            .basic_get("r-moved".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => {
                total += 1;
                seen.insert(String::from_utf8(m.delivery.data.clone()).unwrap());
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(seen.len(), 400, "every message arrived");
    // Duplicates only from the window in flight when the source went away.
    assert!(total <= 400 + 50, "{total} deliveries for 400 messages");
    eventually("the source is drained", Duration::from_secs(20), || {
        let ch = ch.clone();
        async move { count(&ch, "r").await == 0 }
    })
    .await;
    let _ = c.close(200, "".into()).await;
    let _ = dc.close(200, "".into()).await;
    src.shutdown().await;
    dest.shutdown().await;
    let _ = std::fs::remove_dir_all(&src_dir);
}
