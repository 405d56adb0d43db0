//! Policies set through the management API change how queues and exchanges behave, as in
//! RabbitMQ 3.10: what a lapin client observes (message counts, which messages remain,
//! dead letters, expiry, alternate exchanges), plus persistence across a restart and the
//! management API's per-vhost visibility for non-administrators.

use crate::common;

use common::http::{eventually, Api};
use lapin::message::BasicGetMessage;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde_json::{json, Value};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

struct Env {
    broker: warren::BrokerHandle,
    api: Api,
    _conn: Connection,
    ch: Channel,
}

async fn env_with(dir: Option<std::path::PathBuf>) -> Env {
    let broker = common::start_broker_with(move |c| {
        if let Some(d) = dir {
            c.data_dir = d;
        }
    })
    .await;
    let api = Api::new(broker.mgmt_addr.expect("management enabled"));
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    Env {
        broker,
        api,
        _conn: conn,
        ch,
    }
}

async fn env() -> Env {
    env_with(None).await
}

fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

async fn declare(ch: &Channel, name: &str, a: FieldTable) {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), a)
        .await
        .unwrap_or_else(|e| panic!("declare {name}: {e:?}"));
}

async fn fanout(ch: &Channel, exchange: &str, queue: &str) {
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(ch, queue, FieldTable::default()).await;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

async fn publish(ch: &Channel, exchange: &str, rk: &str, body: &str) {
    ch.basic_publish(
        exchange.into(),
        rk.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    )
    .await
    .unwrap();
}

/// Publishes `bodies` to `queue` through the default exchange.
async fn fill(ch: &Channel, queue: &str, bodies: &[&str]) {
    for b in bodies {
        publish(ch, "", queue, b).await;
    }
}

/// Ready messages as queue.declare(passive) reports them. The reply comes after the
/// channel's earlier publishes were enqueued, so it also synchronises with them.
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
    .unwrap_or_else(|e| panic!("passive declare {queue}: {e:?}"))
    .message_count()
}

async fn get(ch: &Channel, queue: &str) -> Option<BasicGetMessage> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
}

/// Every ready message's body, taken with basic.get.
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match get(ch, queue).await {
            Some(m) => out.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
            None => return out,
        }
    }
    panic!("{queue} did not drain");
}

/// Waits (bounded) until `queue` reports `n` ready messages.
async fn wait_count(ch: &Channel, queue: &str, n: u32) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let c = count(ch, queue).await;
        if c == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue}: {c} messages, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put_policy(api: &Api, vhost: &str, name: &str, body: Value) {
    let r = api
        .put(&format!("/api/policies/{vhost}/{name}"), body)
        .await;
    assert!(
        r.status == 201 || r.status == 204,
        "PUT policy {name}: {} {}",
        r.status,
        r.text()
    );
}

async fn delete_policy(api: &Api, vhost: &str, name: &str) {
    let r = api.delete(&format!("/api/policies/{vhost}/{name}")).await;
    assert_eq!(r.status, 204, "DELETE policy {name}: {}", r.text());
}

fn queues_policy(pattern: &str, definition: Value) -> Value {
    json!({"pattern": pattern, "definition": definition, "apply-to": "queues"})
}

/// The x-death entries of a dead-lettered message.
fn deaths(m: &BasicGetMessage) -> Vec<FieldTable> {
    let headers = m
        .delivery
        .properties
        .headers()
        .clone()
        .expect("dead letter has headers");
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry {other:?}"),
            })
            .collect(),
        other => panic!("x-death: {other:?}"),
    }
}

fn field(t: &FieldTable, k: &str) -> String {
    match t.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{k}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_policy_trims_queue_and_lifts_when_deleted() {
    let e = env().await;
    declare(&e.ch, "ml.q", FieldTable::default()).await;
    fill(&e.ch, "ml.q", &["1", "2", "3", "4", "5"]).await;
    assert_eq!(count(&e.ch, "ml.q").await, 5);

    put_policy(
        &e.api,
        "%2F",
        "cap",
        queues_policy("^ml\\.", json!({"max-length": 2})),
    )
    .await;
    // Applied before the PUT is answered: the head was dropped at once.
    assert_eq!(count(&e.ch, "ml.q").await, 2);
    let q = e.api.get_json("/api/queues/%2F/ml.q").await;
    assert_eq!(q["policy"], "cap");
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 2}));
    assert_eq!(drain(&e.ch, "ml.q").await, ["4", "5"]);

    // New messages obey the limit too.
    fill(&e.ch, "ml.q", &["6", "7", "8"]).await;
    assert_eq!(drain(&e.ch, "ml.q").await, ["7", "8"]);

    delete_policy(&e.api, "%2F", "cap").await;
    fill(&e.ch, "ml.q", &["a", "b", "c", "d", "e"]).await;
    assert_eq!(count(&e.ch, "ml.q").await, 5);
    let q = e.api.get_json("/api/queues/%2F/ml.q").await;
    assert_eq!(q["policy"], Value::Null);
    assert_eq!(q["effective_policy_definition"], json!({}));
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_limits_take_the_lower_of_argument_and_policy() {
    let e = env().await;
    put_policy(
        &e.api,
        "%2F",
        "limits",
        queues_policy("^num\\.", json!({"max-length": 3, "max-length-bytes": 100})),
    )
    .await;
    // Argument lower than the policy: the argument's limit.
    declare(
        &e.ch,
        "num.arg-lower",
        args(&[("x-max-length", AMQPValue::LongInt(1))]),
    )
    .await;
    // Policy lower than the argument: the policy's.
    declare(
        &e.ch,
        "num.pol-lower",
        args(&[("x-max-length", AMQPValue::LongInt(10))]),
    )
    .await;
    // No argument: the policy's.
    declare(&e.ch, "num.none", FieldTable::default()).await;
    // Bytes: argument 10 bytes beats the policy's 100.
    declare(
        &e.ch,
        "num.bytes",
        args(&[("x-max-length-bytes", AMQPValue::LongInt(10))]),
    )
    .await;
    for q in ["num.arg-lower", "num.pol-lower", "num.none"] {
        fill(&e.ch, q, &["1", "2", "3", "4", "5"]).await;
    }
    fill(&e.ch, "num.bytes", &["aaaa", "bbbb", "cccc", "dddd"]).await;
    assert_eq!(drain(&e.ch, "num.arg-lower").await, ["5"]);
    assert_eq!(drain(&e.ch, "num.pol-lower").await, ["3", "4", "5"]);
    assert_eq!(drain(&e.ch, "num.none").await, ["3", "4", "5"]);
    assert_eq!(drain(&e.ch, "num.bytes").await, ["cccc", "dddd"]);
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_argument_wins_for_overflow_and_dead_letter_exchange() {
    let e = env().await;
    fanout(&e.ch, "dlx.arg", "dead.arg").await;
    fanout(&e.ch, "dlx.pol", "dead.pol").await;
    put_policy(
        &e.api,
        "%2F",
        "p",
        queues_policy(
            "^win\\.",
            json!({"max-length": 1, "overflow": "drop-head", "dead-letter-exchange": "dlx.pol",
                   "dead-letter-routing-key": "pol"}),
        ),
    )
    .await;
    declare(
        &e.ch,
        "win.q",
        args(&[
            ("x-overflow", text("reject-publish")),
            ("x-dead-letter-exchange", text("dlx.arg")),
        ]),
    )
    .await;
    e.ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for body in ["first", "second"] {
        let c =
            e.ch.basic_publish(
                "".into(),
                "win.q".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        outcomes.push(matches!(c, Confirmation::Ack(_)));
    }
    // reject-publish (the argument) refused the second, where drop-head would drop the first.
    assert_eq!(outcomes, [true, false]);
    let m =
        e.ch.basic_get("win.q".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("first message");
    assert_eq!(&m.delivery.data[..], b"first");
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    // The argument's dead-letter exchange, with the message's own routing key (the policy's
    // routing key applies too, since the queue has none: RabbitMQ resolves each key alone).
    wait_count(&e.ch, "dead.arg", 1).await;
    assert_eq!(count(&e.ch, "dead.pol").await, 0);
    let d = get(&e.ch, "dead.arg").await.expect("dead letter");
    assert_eq!(d.delivery.routing_key.as_str(), "pol");
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_policy_dead_letters_rejected_and_dropped_messages() {
    let e = env().await;
    fanout(&e.ch, "dlx", "dead").await;
    declare(&e.ch, "work", FieldTable::default()).await;
    put_policy(
        &e.api,
        "%2F",
        "dl",
        queues_policy("^work$", json!({"dead-letter-exchange": "dlx"})),
    )
    .await;
    fill(&e.ch, "work", &["job"]).await;
    let m =
        e.ch.basic_get("work".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("job");
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    wait_count(&e.ch, "dead", 1).await;
    let d = get(&e.ch, "dead").await.unwrap();
    assert_eq!(&d.delivery.data[..], b"job");
    let x = deaths(&d);
    assert_eq!(x.len(), 1);
    assert_eq!(field(&x[0], "queue"), "work");
    assert_eq!(field(&x[0], "reason"), "rejected");
    assert_eq!(field(&x[0], "exchange"), "");

    // A max-length added to the policy drops the head into the dead-letter exchange.
    fill(&e.ch, "work", &["m1", "m2", "m3"]).await;
    assert_eq!(count(&e.ch, "work").await, 3);
    put_policy(
        &e.api,
        "%2F",
        "dl",
        queues_policy(
            "^work$",
            json!({"dead-letter-exchange": "dlx", "max-length": 1}),
        ),
    )
    .await;
    assert_eq!(count(&e.ch, "work").await, 1);
    wait_count(&e.ch, "dead", 2).await;
    for want in ["m1", "m2"] {
        let d = get(&e.ch, "dead").await.unwrap();
        assert_eq!(String::from_utf8_lossy(&d.delivery.data), want);
        assert_eq!(field(&deaths(&d)[0], "reason"), "maxlen");
    }
    assert_eq!(drain(&e.ch, "work").await, ["m3"]);
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ttl_policy_expires_messages() {
    let e = env().await;
    declare(&e.ch, "ttl.q", FieldTable::default()).await;
    // A long queue TTL argument loses to the policy's shorter one.
    declare(
        &e.ch,
        "ttl.long",
        args(&[("x-message-ttl", AMQPValue::LongInt(600_000))]),
    )
    .await;
    fill(&e.ch, "ttl.q", &["before"]).await;
    // The publish is asynchronous: make sure it was enqueued before the policy is set.
    assert_eq!(count(&e.ch, "ttl.q").await, 1);
    put_policy(
        &e.api,
        "%2F",
        "ttl",
        queues_policy("^ttl\\.", json!({"message-ttl": 50})),
    )
    .await;
    fill(&e.ch, "ttl.long", &["x", "y"]).await;
    wait_count(&e.ch, "ttl.long", 0).await;

    // As in RabbitMQ, a message's expiry is fixed when it is enqueued: the one queued before
    // the policy stays, and the one published after it expires once it reaches the head.
    fill(&e.ch, "ttl.q", &["after"]).await;
    let m = get(&e.ch, "ttl.q")
        .await
        .expect("message from before the policy");
    assert_eq!(&m.delivery.data[..], b"before");
    wait_count(&e.ch, "ttl.q", 0).await;

    delete_policy(&e.api, "%2F", "ttl").await;
    fill(&e.ch, "ttl.q", &["kept"]).await;
    // A round trip later the message is still there (no TTL any more); the long argument
    // TTL applies again to the other queue.
    fill(&e.ch, "ttl.long", &["z"]).await;
    assert_eq!(count(&e.ch, "ttl.long").await, 1);
    assert_eq!(drain(&e.ch, "ttl.q").await, ["kept"]);
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_policy_deletes_an_unused_queue() {
    let e = env().await;
    declare(&e.ch, "exp.q", FieldTable::default()).await;
    declare(&e.ch, "exp.used", FieldTable::default()).await;
    let _consumer =
        e.ch.basic_consume(
            "exp.used".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    put_policy(
        &e.api,
        "%2F",
        "exp",
        queues_policy("^exp\\.", json!({"expires": 100})),
    )
    .await;
    // Polled over HTTP: a passive declare would count as use and restart the timer.
    let api = e.api.clone();
    eventually(10, "exp.q expired", || {
        let api = api.clone();
        async move { (api.get("/api/queues/%2F/exp.q").await.status == 404).then_some(()) }
    })
    .await;
    // The queue with a consumer is in use and stays.
    assert_eq!(e.api.get("/api/queues/%2F/exp.used").await.status, 200);
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_policy_wins() {
    let e = env().await;
    put_policy(
        &e.api,
        "%2F",
        "low",
        json!({"pattern": "^prio", "definition": {"max-length": 1}, "priority": 1, "apply-to": "queues"}),
    )
    .await;
    put_policy(
        &e.api,
        "%2F",
        "high",
        json!({"pattern": "^prio\\.q$", "definition": {"max-length": 3}, "priority": 5, "apply-to": "all"}),
    )
    .await;
    // A policy for exchanges only never applies to queues, whatever its priority.
    put_policy(
        &e.api,
        "%2F",
        "xs",
        json!({"pattern": ".*", "definition": {"max-length": 0}, "priority": 9, "apply-to": "exchanges"}),
    )
    .await;
    declare(&e.ch, "prio.q", FieldTable::default()).await;
    fill(&e.ch, "prio.q", &["1", "2", "3", "4", "5"]).await;
    assert_eq!(count(&e.ch, "prio.q").await, 3);
    assert_eq!(
        e.api.get_json("/api/queues/%2F/prio.q").await["policy"],
        "high"
    );

    delete_policy(&e.api, "%2F", "high").await;
    assert_eq!(count(&e.ch, "prio.q").await, 1);
    assert_eq!(
        e.api.get_json("/api/queues/%2F/prio.q").await["policy"],
        "low"
    );
    assert_eq!(drain(&e.ch, "prio.q").await, ["5"]);
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_policy_applies_unless_the_argument_names_one() {
    let e = env().await;
    fanout(&e.ch, "ae.pol", "ae.pol.q").await;
    fanout(&e.ch, "ae.arg", "ae.arg.q").await;
    for (name, a) in [
        ("src.plain", FieldTable::default()),
        (
            "src.with-arg",
            args(&[("alternate-exchange", text("ae.arg"))]),
        ),
    ] {
        e.ch.exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            a,
        )
        .await
        .unwrap();
    }
    put_policy(
        &e.api,
        "%2F",
        "ae",
        json!({"pattern": "^src\\.", "definition": {"alternate-exchange": "ae.pol"}, "apply-to": "exchanges"}),
    )
    .await;
    publish(&e.ch, "src.plain", "nowhere", "p").await;
    publish(&e.ch, "src.with-arg", "nowhere", "a").await;
    assert_eq!(drain(&e.ch, "ae.pol.q").await, ["p"]);
    assert_eq!(drain(&e.ch, "ae.arg.q").await, ["a"]);
    delete_policy(&e.api, "%2F", "ae").await;
    publish(&e.ch, "src.plain", "nowhere", "gone").await;
    assert_eq!(count(&e.ch, "ae.pol.q").await, 0);
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart() {
    let dir = common::temp_data_dir();
    let e = env_with(Some(dir.clone())).await;
    put_policy(
        &e.api,
        "%2F",
        "keep",
        json!({"pattern": "^kept", "definition": {"max-length": 2}, "priority": 3, "apply-to": "queues"}),
    )
    .await;
    e.ch.queue_declare(
        "kept".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    e.broker.shutdown().await;

    let e = env_with(Some(dir)).await;
    assert_eq!(
        e.api.get_json("/api/policies/%2F/keep").await,
        json!({"vhost": "/", "name": "keep", "pattern": "^kept", "apply-to": "queues",
               "definition": {"max-length": 2}, "priority": 3})
    );
    fill(&e.ch, "kept", &["1", "2", "3", "4"]).await;
    assert_eq!(drain(&e.ch, "kept").await, ["3", "4"]);
    let q = e.api.get_json("/api/queues/%2F/kept").await;
    assert_eq!(q["policy"], "keep");
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 2}));
    e.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_priority_is_not_a_policy_setting() {
    let e = env().await;
    let r = e
        .api
        .put(
            "/api/policies/%2F/prio",
            queues_policy("^x$", json!({"max-priority": 3})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    e.broker.shutdown().await;
}

/// Names in a JSON list of objects.
fn names(v: &Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|o| o[key].as_str().unwrap_or_default().to_string())
        .collect();
    n.sort();
    n.dedup();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_users_see_only_their_vhosts() {
    let e = env().await;
    let admin = &e.api;
    assert_eq!(admin.put("/api/vhosts/team", json!({})).await.status, 201);
    for (u, tags) in [
        ("m", "management"),
        ("mon", "monitoring"),
        ("pm", "policymaker"),
    ] {
        let r = admin
            .put(
                &format!("/api/users/{u}"),
                json!({"password": "p", "tags": tags}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    for u in ["m", "pm"] {
        let full = json!({"configure": ".*", "write": ".*", "read": ".*"});
        assert_eq!(
            admin
                .put(&format!("/api/permissions/team/{u}"), full)
                .await
                .status,
            201
        );
    }
    assert_eq!(
        admin
            .put("/api/queues/team/tq", json!({"durable": false}))
            .await
            .status,
        201
    );
    declare(&e.ch, "rootq", FieldTable::default()).await;
    put_policy(
        admin,
        "%2F",
        "rootp",
        queues_policy("^none", json!({"max-length": 1})),
    )
    .await;
    put_policy(
        admin,
        "team",
        "teamp",
        queues_policy("^none", json!({"max-length": 1})),
    )
    .await;

    let m = admin.as_user("m", "p");
    assert_eq!(names(&m.get_json("/api/vhosts").await, "name"), ["team"]);
    assert_eq!(names(&m.get_json("/api/queues").await, "vhost"), ["team"]);
    assert_eq!(
        names(&m.get_json("/api/exchanges").await, "vhost"),
        ["team"]
    );
    assert_eq!(names(&m.get_json("/api/policies").await, "name"), ["teamp"]);
    assert_eq!(
        m.get_json("/api/bindings").await.as_array().unwrap().len(),
        1
    );
    assert_eq!(names(&m.get_json("/api/queues/team").await, "name"), ["tq"]);
    // guest's connection is not m's to see.
    assert_eq!(m.get_json("/api/connections").await, json!([]));
    assert_eq!(
        m.get_json("/api/overview").await["object_totals"]["queues"],
        1
    );
    for path in [
        "/api/queues/%2F",
        "/api/queues/%2F/rootq",
        "/api/exchanges/%2F",
        "/api/bindings/%2F",
        "/api/policies/%2F",
    ] {
        let r = m.get(path).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.json(),
            json!({"error": "not_authorised", "reason": "User not authorised to access virtual host"}),
            "{path}"
        );
    }
    assert_eq!(m.put("/api/queues/%2F/sneaky", json!({})).await.status, 401);
    // One policy needs policymaker as well.
    assert_eq!(m.get("/api/policies/team/teamp").await.status, 401);
    let pm = admin.as_user("pm", "p");
    assert_eq!(pm.get("/api/policies/team/teamp").await.status, 200);
    assert_eq!(pm.get("/api/policies/%2F/rootp").await.status, 401);

    // A monitor lists every vhost, but objects only where it has permissions (none here).
    let mon = admin.as_user("mon", "p");
    assert_eq!(
        names(&mon.get_json("/api/vhosts").await, "name"),
        ["/", "team"]
    );
    assert_eq!(mon.get_json("/api/queues").await, json!([]));
    assert_eq!(
        mon.get_json("/api/connections")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(mon.get("/api/queues/team").await.status, 401);

    // The administrator sees everything.
    assert_eq!(
        names(&admin.get_json("/api/queues").await, "vhost"),
        ["/", "team"]
    );
    e.broker.shutdown().await;
}
