//! The management HTTP API against an in-process Warren: RabbitMQ's paths, JSON shapes
//! and status codes, with counts and rates driven by a real AMQP client.

use crate::common;

use common::http::{eventually, Api};
use futures_lite::StreamExt;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(|s| s.as_str())
        .collect();
    k.sort();
    k
}

fn assert_has(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(v.get(f).is_some(), "missing field {f} in {v}");
    }
}

async fn start() -> (warren::BrokerHandle, Api) {
    let b = common::start_broker().await;
    let api = Api::new(b.mgmt_addr.expect("management enabled"));
    (b, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_as_rabbitmq() {
    let (b, api) = start().await;
    let r = api.anonymous().get("/api/overview").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"RabbitMQ Management\"")
    );
    let r = api.as_user("guest", "wrong").get("/api/overview").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": "not_authorized", "reason": "Login failed"})
    );
    assert_eq!(
        api.get_json("/api/whoami").await,
        json!({"name": "guest", "tags": ["administrator"]})
    );
    // The console and metrics need no API credentials.
    let r = api.anonymous().get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("console.js"));
    assert_eq!(api.anonymous().get("/metrics").await.status, 200);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_nodes_vhosts_health() {
    let (b, api) = start().await;
    let o = api.get_json("/api/overview").await;
    assert_has(
        &o,
        &[
            "management_version",
            "rates_mode",
            "exchange_types",
            "rabbitmq_version",
            "cluster_name",
            "message_stats",
            "queue_totals",
            "object_totals",
            "node",
            "listeners",
            "contexts",
            "churn_rates",
            "statistics_db_event_queue",
        ],
    );
    assert_eq!(o["object_totals"]["exchanges"], 7);
    assert_eq!(o["object_totals"]["queues"], 0);
    // The four built-in types and the three plugin types Warren implements.
    let types: Vec<&str> = o["exchange_types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "direct",
            "fanout",
            "headers",
            "topic",
            "x-consistent-hash",
            "x-random",
            "x-delayed-message"
        ]
    );
    let nodes = api.get_json("/api/nodes").await;
    assert_eq!(nodes[0]["name"], o["node"]);
    assert_eq!(nodes[0]["running"], true);
    assert_has(
        &nodes[0],
        &[
            "mem_used",
            "fd_used",
            "uptime",
            "disk_free_alarm",
            "mem_alarm",
        ],
    );
    let node_path = format!("/api/nodes/{}", o["node"].as_str().unwrap());
    assert_eq!(api.get(&node_path).await.status, 200);
    let vhosts = api.get_json("/api/vhosts").await;
    assert_eq!(vhosts[0]["name"], "/");
    assert_has(
        &vhosts[0],
        &[
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "tracing",
            "metadata",
        ],
    );
    assert_eq!(
        api.get_json("/api/health/checks/alarms").await,
        json!({"status": "ok"})
    );
    assert_eq!(
        api.get_json("/api/aliveness-test/%2F").await,
        json!({"status": "ok"})
    );
    assert_eq!(api.get("/api/aliveness-test/nope").await.status, 404);
    let users = api.get_json("/api/users").await;
    assert_eq!(users[0]["name"], "guest");
    assert_eq!(users[0]["tags"], json!(["administrator"]));
    let perms = api.get_json("/api/permissions").await;
    assert_eq!(
        perms[0],
        json!({"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"})
    );
    let r = api.get("/api/no-such-thing").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_bind_publish_get_purge_delete() {
    let (b, api) = start().await;
    // Queues: 201 when created, 204 when equivalent, 400 with RabbitMQ's reason otherwise.
    assert_eq!(
        api.put("/api/queues/%2F/work", json!({"durable": true}))
            .await
            .status,
        201
    );
    assert_eq!(
        api.put("/api/queues/%2F/work", json!({"durable": true}))
            .await
            .status,
        204
    );
    let r = api
        .put("/api/queues/%2F/work", json!({"durable": false}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": "inequivalent arg 'durable' for queue 'work' in vhost '/': received 'false' but current is 'true'"})
    );
    let q = api.get_json("/api/queues/%2F/work").await;
    assert!(
        keys(&q).len() >= 40,
        "queue object has RabbitMQ's many fields: {:?}",
        keys(&q)
    );
    assert_has(
        &q,
        &[
            "name",
            "vhost",
            "durable",
            "auto_delete",
            "exclusive",
            "arguments",
            "node",
            "type",
            "state",
            "consumers",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "message_bytes",
            "policy",
            "effective_policy_definition",
            "consumer_details",
            "message_stats",
            "messages_details",
            "exclusive_consumer_tag",
        ],
    );
    assert_eq!(q["type"], "classic");
    // Exchanges.
    assert_eq!(
        api.put(
            "/api/exchanges/%2F/logs",
            json!({"type": "topic", "durable": true})
        )
        .await
        .status,
        201
    );
    let x = api.get_json("/api/exchanges/%2F/logs").await;
    assert_eq!(x["type"], "topic");
    assert_has(
        &x,
        &[
            "name",
            "vhost",
            "durable",
            "auto_delete",
            "internal",
            "arguments",
        ],
    );
    let all = api.get_json("/api/exchanges/%2F").await;
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "amq.topic"));
    assert_eq!(api.get("/api/exchanges/%2F/nope").await.status, 404);
    // Bindings: POST answers 201 with a Location; the binding appears in every listing.
    let r = api
        .post(
            "/api/bindings/%2F/e/logs/q/work",
            json!({"routing_key": "app.#", "arguments": {}}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r.header("location").is_some());
    let bs = api.get_json("/api/bindings/%2F/e/logs/q/work").await;
    assert_eq!(
        bs,
        json!([{"source": "logs", "vhost": "/", "destination": "work", "destination_type": "queue",
                "routing_key": "app.#", "arguments": {}, "properties_key": "app.%23"}])
    );
    let qb = api.get_json("/api/queues/%2F/work/bindings").await;
    assert_eq!(
        qb.as_array().unwrap().len(),
        2,
        "default binding + ours: {qb}"
    );
    assert_eq!(
        api.get_json("/api/exchanges/%2F/logs/bindings/source")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        api.get_json("/api/bindings")
            .await
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    // Publish through the exchange; routed or not.
    for i in 0..3 {
        let r = api
            .post(
                "/api/exchanges/%2F/logs/publish",
                json!({"routing_key": "app.web", "payload": format!("m{i}"), "payload_encoding": "string",
                       "properties": {"delivery_mode": 2, "headers": {"n": i}}}),
            )
            .await;
        assert_eq!(r.json(), json!({"routed": true}));
    }
    let r = api
        .post("/api/exchanges/%2F/logs/publish", json!({"routing_key": "other", "payload": "x", "payload_encoding": "string", "properties": {}}))
        .await;
    assert_eq!(r.json(), json!({"routed": false}));
    let r = api
        .post("/api/exchanges/%2F/amq.default/publish", json!({"routing_key": "work", "payload": "aGk=", "payload_encoding": "base64", "properties": {}}))
        .await;
    assert_eq!(r.json(), json!({"routed": true}));
    let q = api.get_json("/api/queues/%2F/work").await;
    assert_eq!(q["messages_ready"], 4);
    assert_eq!(q["messages"], 4);
    assert_eq!(q["message_stats"]["publish"], 4);
    // Get: requeue keeps the messages, ack removes them.
    let got = api
        .post("/api/queues/%2F/work/get", json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}))
        .await
        .json();
    assert_eq!(got.as_array().unwrap().len(), 2);
    assert_eq!(
        got[0],
        json!({"payload_bytes": 2, "redelivered": false, "exchange": "logs", "routing_key": "app.web",
               "message_count": 3, "properties": {"delivery_mode": 2, "headers": {"n": 0}},
               "payload": "m0", "payload_encoding": "string"})
    );
    assert_eq!(
        api.get_json("/api/queues/%2F/work").await["messages_ready"],
        4
    );
    let got = api
        .post(
            "/api/queues/%2F/work/get",
            json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}),
        )
        .await
        .json();
    assert_eq!(got[0]["redelivered"], true);
    assert_eq!(
        api.get_json("/api/queues/%2F/work").await["messages_ready"],
        3
    );
    let r = api
        .post(
            "/api/queues/%2F/work/get",
            json!({"count": 1, "ackmode": "bogus"}),
        )
        .await;
    assert_eq!(r.status, 400);
    // Purge.
    assert_eq!(
        api.delete("/api/queues/%2F/work/contents").await.status,
        204
    );
    assert_eq!(
        api.get_json("/api/queues/%2F/work").await["messages_ready"],
        0
    );
    // Unbind by properties key, delete, 404 afterwards.
    assert_eq!(
        api.delete("/api/bindings/%2F/e/logs/q/work/app.%2523")
            .await
            .status,
        204
    );
    assert_eq!(
        api.get_json("/api/bindings/%2F/e/logs/q/work").await,
        json!([])
    );
    assert_eq!(api.delete("/api/exchanges/%2F/logs").await.status, 204);
    assert_eq!(api.delete("/api/queues/%2F/work").await.status, 204);
    assert_eq!(api.get("/api/queues/%2F/work").await.status, 404);
    assert_eq!(api.delete("/api/queues/%2F/work").await.status, 404);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_traffic_shows_in_counts_rates_and_listings() {
    let (b, api) = start().await;
    let props = ConnectionProperties::default();
    let conn = Connection::connect(&b.uri(), props).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "traffic".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "traffic".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    const N: usize = 200;
    for _ in 0..N {
        ch.basic_publish(
            "".into(),
            "traffic".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    for _ in 0..N {
        let d = common::within(std::time::Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Counters are exact; rates appear once the sampler has seen the traffic.
    let q = eventually(10, "queue counters and rates", || async {
        let q = api.get_json("/api/queues/%2F/traffic").await;
        let s = &q["message_stats"];
        (s["publish"] == N
            && s["deliver"] == N
            && s["ack"] == N
            && s["publish_details"]["rate"].as_f64().unwrap() > 0.0
            && s["ack_details"]["rate"].as_f64().unwrap() > 0.0)
            .then_some(q)
    })
    .await;
    assert_eq!(q["consumers"], 1);
    assert_eq!(q["messages"], 0);
    assert_eq!(q["consumer_details"][0]["consumer_tag"], "c1");
    assert_eq!(q["consumer_details"][0]["prefetch_count"], 10);
    let o = eventually(10, "overview rates", || async {
        let o = api.get_json("/api/overview").await;
        (o["message_stats"]["publish"] == N
            && o["message_stats"]["publish_details"]["rate"]
                .as_f64()
                .unwrap()
                > 0.0)
            .then_some(o)
    })
    .await;
    assert_eq!(o["message_stats"]["deliver_get"], N);
    assert_eq!(o["object_totals"]["connections"], 1);
    assert_eq!(o["object_totals"]["channels"], 2);
    assert_eq!(o["object_totals"]["consumers"], 1);
    // Connections, channels, consumers.
    let conns = api.get_json("/api/connections").await;
    let c = &conns[0];
    assert_has(
        c,
        &[
            "name",
            "node",
            "user",
            "vhost",
            "host",
            "port",
            "peer_host",
            "peer_port",
            "protocol",
            "channels",
            "client_properties",
            "connected_at",
            "recv_oct",
            "send_oct",
            "timeout",
            "frame_max",
            "channel_max",
            "state",
            "type",
            "ssl",
            "auth_mechanism",
        ],
    );
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["protocol"], "AMQP 0-9-1");
    assert_eq!(c["channels"], 2);
    assert!(c["recv_oct"].as_u64().unwrap() > 0);
    assert!(c["client_properties"]["capabilities"].is_object());
    let name = c["name"].as_str().unwrap().to_string();
    assert!(name.contains(" -> "), "{name}");
    let chans = api.get_json("/api/channels").await;
    assert_eq!(chans.as_array().unwrap().len(), 2);
    assert_eq!(chans[0]["name"], format!("{name} (1)"));
    assert_eq!(chans[1]["consumer_count"], 1);
    assert_has(
        &chans[0],
        &[
            "number",
            "user",
            "vhost",
            "connection_details",
            "messages_unacknowledged",
            "prefetch_count",
            "confirm",
            "transactional",
        ],
    );
    let consumers = api.get_json("/api/consumers").await;
    assert_eq!(
        consumers[0]["queue"],
        json!({"name": "traffic", "vhost": "/"})
    );
    assert_eq!(consumers[0]["channel_details"]["connection_name"], name);
    assert_eq!(consumers[0]["ack_required"], true);
    // Metrics carry RabbitMQ's names.
    let m = api.anonymous().get("/metrics").await.text();
    for metric in [
        "rabbitmq_connections 1",
        "rabbitmq_channels 2",
        "rabbitmq_consumers 1",
        "rabbitmq_queue_messages_ready 0",
        &format!("rabbitmq_global_messages_received_total {N}"),
        &format!("rabbitmq_global_messages_acknowledged_total {N}"),
        "rabbitmq_detailed_queue_messages_ready{vhost=\"/\",queue=\"traffic\"} 0",
    ] {
        assert!(m.lines().any(|l| l == metric), "missing {metric:?} in\n{m}");
    }
    // Closing a connection from the API: 320 CONNECTION_FORCED with X-Reason.
    let path = format!(
        "/api/connections/{}",
        name.replace(' ', "%20").replace('>', "%3E")
    );
    assert_eq!(api.get(&path).await.status, 200);
    let r = api
        .request("DELETE", &path, None, &[("X-Reason", "maintenance")])
        .await;
    assert_eq!(r.status, 204);
    let end = common::within(std::time::Duration::from_secs(5), consumer.next()).await;
    let err = match end {
        Some(Err(e)) => e,
        other => panic!("expected the connection to be closed, got {other:?}"),
    };
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => {
            assert_eq!(e.get_id(), 320);
            assert_eq!(e.get_message().as_str(), "CONNECTION_FORCED - maintenance");
        }
        other => panic!("expected 320, got {other:?}"),
    }
    eventually(5, "connection gone", || async {
        api.get_json("/api/connections")
            .await
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    // Totals do not go down when the connection is gone.
    assert_eq!(
        api.get_json("/api/overview").await["message_stats"]["publish"],
        N
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_and_policies() {
    let (b, api) = start().await;
    let defs = json!({
        "vhosts": [{"name": "/"}],
        "queues": [{"name": "imported", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {"x-max-length": 10}}],
        "exchanges": [{"name": "ix", "vhost": "/", "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
        "bindings": [{"source": "ix", "vhost": "/", "destination": "imported", "destination_type": "queue", "routing_key": "", "arguments": {}}],
        "policies": [{"vhost": "/", "name": "cap", "pattern": "^imp", "apply-to": "queues", "definition": {"max-length": 5}, "priority": 1}]
    });
    assert_eq!(api.post("/api/definitions", defs).await.status, 204);
    let q = api.get_json("/api/queues/%2F/imported").await;
    assert_eq!(q["arguments"], json!({"x-max-length": 10}));
    assert_eq!(q["policy"], "cap");
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 5}));
    let export = api.get_json("/api/definitions").await;
    assert_has(
        &export,
        &[
            "rabbit_version",
            "users",
            "vhosts",
            "permissions",
            "policies",
            "queues",
            "exchanges",
            "bindings",
            "parameters",
            "global_parameters",
            "topic_permissions",
        ],
    );
    assert!(export["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "imported"));
    assert!(export["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["source"] == "ix"));
    assert_eq!(export["policies"][0]["name"], "cap");
    // Policies: PUT 201/204, validation as RabbitMQ (400), GET, DELETE.
    let p = json!({"pattern": "^x", "definition": {"message-ttl": 1000}, "apply-to": "queues", "priority": 2});
    assert_eq!(
        api.put("/api/policies/%2F/ttl", p.clone()).await.status,
        201
    );
    assert_eq!(api.put("/api/policies/%2F/ttl", p).await.status, 204);
    assert_eq!(
        api.get_json("/api/policies/%2F/ttl").await,
        json!({"vhost": "/", "name": "ttl", "pattern": "^x", "apply-to": "queues", "definition": {"message-ttl": 1000}, "priority": 2})
    );
    let bad = api
        .put(
            "/api/policies/%2F/bad",
            json!({"pattern": "^x", "definition": {"max-length": -5}}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "bad_request");
    assert_eq!(
        api.get_json("/api/policies")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(api.delete("/api/policies/%2F/ttl").await.status, 204);
    assert_eq!(api.get("/api/policies/%2F/ttl").await.status, 404);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_can_be_disabled() {
    let b = common::start_broker_with(|c| c.management_port = None).await;
    assert!(b.mgmt_addr.is_none());
    b.shutdown().await;
}
