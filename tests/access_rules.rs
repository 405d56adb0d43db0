//! Access rules as RabbitMQ 3.10.8 applies them, through lapin over TCP and the management
//! API: topic permissions, per-user limits, operator policies, MD5 password hashes, a
//! vhost's default queue type, and definitions loaded at boot (`--load-definitions`).
//! Every expected text below is what RabbitMQ 3.10.8 sent for the same steps (pika against
//! the reference node; see conformance/README.md, "Access rules").

use crate::common;

use common::http::Api;
use conformance::support::amqp_error;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

fn uri(b: &warren::BrokerHandle, user: &str, pass: &str, vhost: &str) -> String {
    format!(
        "amqp://{user}:{pass}@{}/{}",
        b.addr,
        vhost.replace('%', "%25").replace('/', "%2f")
    )
}

async fn connect(b: &warren::BrokerHandle, user: &str, pass: &str, vhost: &str) -> Connection {
    Connection::connect(&uri(b, user, pass, vhost), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"))
}

/// The (code, text) a failed lapin call reports.
fn err<T: std::fmt::Debug>(r: lapin::Result<T>) -> (u16, String) {
    let e = r.expect_err("refused");
    amqp_error(&e).unwrap_or_else(|| panic!("not a protocol error: {e}"))
}

fn api(b: &warren::BrokerHandle) -> Api {
    Api::new(b.mgmt_addr.expect("management enabled"))
}

async fn add_user(api: &Api, name: &str) {
    let r = api
        .put(
            &format!("/api/users/{name}"),
            json!({"password": "p", "tags": ""}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .put(
            &format!("/api/permissions/%2F/{name}"),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

fn topic_refused(rk: &str) -> (u16, String) {
    (
        403,
        format!("ACCESS_REFUSED - access to topic '{rk}' in exchange 'amq.topic' in vhost '/' refused for user 'tu'"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions() {
    let b = common::start_broker().await;
    let api = api(&b);
    add_user(&api, "tu").await;
    // Refusals of the API, as RabbitMQ's.
    let r = api
        .put("/api/topic-permissions/%2F/tu", json!({"write": "x"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "[{key_missing,exchange},{key_missing,read}]"
    );
    let r = api
        .put(
            "/api/topic-permissions/%2F/nobody",
            json!({"exchange": "amq.topic", "write": "", "read": ""}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "vhost_or_user_not_found");
    let r = api
        .put(
            "/api/topic-permissions/%2F/tu",
            json!({"exchange": "amq.topic", "write": "^{username}\\.", "read": "^r\\."}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .put(
            "/api/topic-permissions/%2F/tu",
            json!({"exchange": "amq.topic", "write": "^{username}\\.", "read": "^r\\."}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        api.get_json("/api/topic-permissions/%2F/tu").await,
        json!([{"user": "tu", "vhost": "/", "exchange": "amq.topic", "write": "^{username}\\.", "read": "^r\\."}])
    );
    let defs = api.get_json("/api/definitions").await;
    assert_eq!(defs["topic_permissions"][0]["exchange"], "amq.topic");

    common::within(DEADLINE, async {
        let conn = connect(&b, "tu", "p", "/").await;
        let publish = |ch: lapin::Channel, x: &'static str, rk: &'static str| async move {
            // In confirm mode the publish's own confirm carries the outcome: lapin fails a
            // pending confirm with the channel.close that refused it. (A round trip after the
            // publish instead races the close: sent after it, it fails with "channel closed"
            // and no reply code.)
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            ch.basic_publish(
                x.into(),
                rk.into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            )
            .await?
            .await
            .map(|_| ())
        };
        // Write: the routing key against `^{username}\.` with the user's name in it.
        publish(conn.create_channel().await.unwrap(), "amq.topic", "tu.x")
            .await
            .expect("allowed key");
        let e = err(publish(conn.create_channel().await.unwrap(), "amq.topic", "other.x").await);
        assert_eq!(e, topic_refused("other.x"));
        // Not a topic exchange: not checked.
        publish(
            conn.create_channel().await.unwrap(),
            "amq.direct",
            "other.x",
        )
        .await
        .expect("direct exchange");
        // Read: bindings with a topic exchange as the source.
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let qn = q.name().as_str().to_string();
        ch.queue_bind(
            qn.as_str().into(),
            "amq.topic".into(),
            "r.a".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("allowed binding key");
        let e = err(ch
            .queue_bind(
                qn.as_str().into(),
                "amq.topic".into(),
                "zz".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await);
        assert_eq!(e, topic_refused("zz"));
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            "tpx".into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let e = err(ch
            .exchange_bind(
                "tpx".into(),
                "amq.topic".into(),
                "zz".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await);
        assert_eq!(e, topic_refused("zz"));
        let _ = conn.close(200, "".into()).await;
    })
    .await;

    // warren-ctl: list, then clear one exchange's.
    let ep = warren::ctl::http::Endpoint::parse(
        &format!("http://{}", b.mgmt_addr.unwrap()),
        "guest",
        "guest",
    )
    .unwrap();
    let ctl = |cmd: warren::ctl::Command| {
        let ep = ep.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                warren::ctl::run(&ep, &cmd, &mut out).map(|_| String::from_utf8(out).unwrap())
            })
            .await
            .unwrap()
        }
    };
    ctl(warren::ctl::Command::SetTopicPermissions {
        vhost: "/".into(),
        user: "tu".into(),
        exchange: "t2".into(),
        write: "^a".into(),
        read: ".*".into(),
    })
    .await
    .unwrap();
    let listed = ctl(warren::ctl::Command::ListTopicPermissions { vhost: "/".into() })
        .await
        .unwrap();
    assert_eq!(
        listed,
        "tu\tamq.topic\t^{username}\\.\t^r\\.\ntu\tt2\t^a\t.*\n"
    );
    ctl(warren::ctl::Command::ClearTopicPermissions {
        vhost: "/".into(),
        user: "tu".into(),
        exchange: Some("amq.topic".into()),
    })
    .await
    .unwrap();
    assert_eq!(
        api.get_json("/api/topic-permissions").await,
        json!([{"user": "tu", "vhost": "/", "exchange": "t2", "write": "^a", "read": ".*"}])
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limits() {
    let b = common::start_broker().await;
    let api = api(&b);
    add_user(&api, "tu").await;
    let r = api
        .put("/api/user-limits/tu/max-foo", json!({"value": 2}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "Unrecognised terms [{<<\"max-foo\">>,2}] in user-limits"
    );
    let r = api
        .put("/api/user-limits/tu/max-channels", json!({"valu": 2}))
        .await;
    assert_eq!(r.json()["reason"], "[{key_missing,value}]");
    for (k, v) in [("max-connections", 1), ("max-channels", 2)] {
        let r = api
            .put(&format!("/api/user-limits/tu/{k}"), json!({ "value": v }))
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    assert_eq!(
        api.get_json("/api/user-limits").await,
        json!([{"user": "tu", "value": {"max-channels": 2, "max-connections": 1}}])
    );
    assert_eq!(
        api.get_json("/api/users/tu").await["limits"],
        json!({"max-channels": 2, "max-connections": 1})
    );
    common::within(DEADLINE, async {
        let c1 = connect(&b, "tu", "p", "/").await;
        let e = err(
            Connection::connect(&uri(&b, "tu", "p", "/"), ConnectionProperties::default()).await,
        );
        assert_eq!(
            e,
            (
                530,
                "NOT_ALLOWED - connection refused for user 'tu': user connection limit (1) is reached"
                    .into()
            )
        );
        // Other users are not limited.
        let g = connect(&b, "guest", "guest", "/").await;
        let _a = c1.create_channel().await.unwrap();
        let _b = c1.create_channel().await.unwrap();
        let e = err(c1.create_channel().await);
        assert_eq!(
            e,
            (
                530,
                "NOT_ALLOWED - number of channels opened for user 'tu' has reached the maximum allowed user limit of (2)"
                    .into()
            )
        );
        for _ in 0..3 {
            g.create_channel().await.unwrap();
        }
        let _ = g.close(200, "".into()).await;
    })
    .await;
    let r = api.delete("/api/user-limits/tu/max-channels").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        api.get_json("/api/user-limits/tu").await,
        json!([{"user": "tu", "value": {"max-connections": 1}}])
    );
    let defs = api.get_json("/api/definitions").await;
    let tu = defs["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "tu")
        .unwrap()
        .clone();
    assert_eq!(tu["limits"], json!({"max-connections": 1}));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_policies_cap_user_policies() {
    let b = common::start_broker().await;
    let api = api(&b);
    let r = api
        .put(
            "/api/operator-policies/%2F/cap2",
            json!({"pattern": "^op", "definition": {"dead-letter-exchange": "x"}, "apply-to": "queues"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "Validation failed\n\n[{<<\"dead-letter-exchange\">>,<<\"x\">>}] are not recognised policy settings\n"
    );
    let r = api
        .put(
            "/api/operator-policies/%2F/cap",
            json!({"pattern": "^op", "definition": {"max-length": 5, "message-ttl": 1000}, "apply-to": "queues"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .put(
            "/api/policies/%2F/user",
            json!({"pattern": "^op", "definition": {"max-length": 3, "message-ttl": 5000, "dead-letter-exchange": "dlx"}, "apply-to": "queues"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .put("/api/queues/%2F/opq", json!({"durable": true}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let q = api.get_json("/api/queues/%2F/opq").await;
    assert_eq!(q["policy"], "user");
    assert_eq!(q["operator_policy"], "cap");
    assert_eq!(
        q["effective_policy_definition"],
        json!({"dead-letter-exchange": "dlx", "max-length": 3, "message-ttl": 1000})
    );
    // The operator's cap wins over a higher user policy value.
    let r = api
        .put(
            "/api/policies/%2F/user",
            json!({"pattern": "^op", "definition": {"max-length": 50}, "apply-to": "queues"}),
        )
        .await;
    assert_eq!(r.status, 204);
    common::within(DEADLINE, async {
        let conn = connect(&b, "guest", "guest", "/").await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for _ in 0..10 {
            ch.basic_publish(
                "".into(),
                "opq".into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        let q = ch
            .queue_declare(
                "opq".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(q.message_count(), 5, "operator max-length 5 beats 50");
        let _ = conn.close(200, "".into()).await;
    })
    .await;
    let defs = api.get_json("/api/definitions").await;
    let op: Vec<_> = defs["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["component"] == "operator_policy")
        .cloned()
        .collect();
    assert_eq!(op.len(), 1);
    assert_eq!(op[0]["value"]["definition"]["max-length"], 5);
    let r = api.delete("/api/operator-policies/%2F/cap").await;
    assert_eq!(r.status, 204);
    let q = api.get_json("/api/queues/%2F/opq").await;
    assert_eq!(q["operator_policy"], serde_json::Value::Null);
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 50}));
    b.shutdown().await;
}

/// base64(salt ‖ md5(salt ‖ "md5pw")) with salt 01020304: RabbitMQ 3.10.8 logged this in.
const MD5_HASH: &str = "AQIDBI3Ab4iH1xcn+PIEm5vk1JM=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_password_hashes_log_in() {
    let b = common::start_broker().await;
    let api = api(&b);
    let r = api
        .put(
            "/api/users/m5",
            json!({"password_hash": MD5_HASH, "hashing_algorithm": "rabbit_password_hashing_md5", "tags": ""}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    api.put(
        "/api/permissions/%2F/m5",
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await;
    common::within(DEADLINE, async {
        let c = connect(&b, "m5", "md5pw", "/").await;
        let _ = c.close(200, "".into()).await;
        let r = Connection::connect(
            &uri(&b, "m5", "wrong", "/"),
            ConnectionProperties::default(),
        )
        .await;
        assert!(r.is_err(), "a wrong password is refused");
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_default_queue_type() {
    let b = common::start_broker().await;
    let api = api(&b);
    let r = api
        .put("/api/vhosts/dq", json!({"default_queue_type": "quorum"}))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        api.get_json("/api/vhosts/dq").await["default_queue_type"],
        "quorum"
    );
    api.put(
        "/api/permissions/dq/guest",
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await;
    common::within(DEADLINE, async {
        let conn = connect(&b, "guest", "guest", "dq").await;
        let ch = conn.create_channel().await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("dq1".into(), durable, FieldTable::default())
            .await
            .unwrap();
        ch.queue_declare("dq2".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_declare(
            "dqa".into(),
            QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        // Redeclaring without a type is equivalent; with another type it is not.
        ch.queue_declare("dq1".into(), durable, FieldTable::default())
            .await
            .unwrap();
        let mut classic = FieldTable::default();
        classic.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
        let e = err(ch.queue_declare("dq1".into(), durable, classic).await);
        assert_eq!(
            e,
            (406, "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'dq1' in vhost 'dq': received 'classic' but current is 'quorum'".into())
        );
        let _ = conn.close(200, "".into()).await;
    })
    .await;
    let types: Vec<(String, String, serde_json::Value)> = api
        .get_json("/api/queues/dq")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["type"].as_str().unwrap().to_string(),
                q["arguments"].clone(),
            )
        })
        .collect();
    assert_eq!(
        types,
        vec![
            (
                "dq1".into(),
                "quorum".into(),
                json!({"x-queue-type": "quorum"})
            ),
            ("dq2".into(), "classic".into(), json!({})),
            ("dqa".into(), "classic".into(), json!({})),
        ]
    );
    let defs = api.get_json("/api/definitions").await;
    assert!(defs["vhosts"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "dq", "default_queue_type": "quorum"})));
    let r = api
        .put("/api/vhosts/dq3", json!({"default_queue_type": "bogus"}))
        .await;
    assert_eq!(r.status, 400);
    b.shutdown().await;
}

/// `--load-definitions`: a file with an MD5 user, its topic permission and limits, an
/// operator policy, a vhost with a default queue type and a queue is imported at start;
/// on a first start its users replace the default user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_loaded_at_boot() {
    let dir = common::temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("boot-definitions.json");
    let defs = json!({
        "users": [
            {"name": "admin", "password_hash": MD5_HASH,
             "hashing_algorithm": "rabbit_password_hashing_md5", "tags": ["administrator"],
             "limits": {"max-connections": 3}}
        ],
        "vhosts": [{"name": "/"}, {"name": "apps", "metadata": {"default_queue_type": "quorum"}}],
        "permissions": [
            {"user": "admin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "admin", "vhost": "apps", "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "topic_permissions": [
            {"user": "admin", "vhost": "/", "exchange": "amq.topic", "write": "^a", "read": ".*"}
        ],
        "parameters": [
            {"component": "operator_policy", "name": "cap", "vhost": "/",
             "value": {"pattern": ".*", "definition": {"max-length": 7}, "priority": 0, "apply-to": "queues"}}
        ],
        "queues": [
            {"name": "boot-q", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}
        ]
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    let data = dir.join("data");
    let b = common::start_broker_with(|c| {
        c.data_dir = data.clone();
        c.load_definitions = Some(file.clone());
    })
    .await;
    let api = api(&b).as_user("admin", "md5pw");
    assert_eq!(
        api.get_json("/api/vhosts/apps").await["default_queue_type"],
        "quorum"
    );
    let q = api.get_json("/api/queues/%2F/boot-q").await;
    assert_eq!(q["operator_policy"], "cap");
    assert_eq!(
        api.get_json("/api/user-limits/admin").await,
        json!([{"user": "admin", "value": {"max-connections": 3}}])
    );
    assert_eq!(
        api.get_json("/api/topic-permissions").await[0]["write"],
        "^a"
    );
    let users: Vec<_> = api
        .get_json("/api/users")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(users, ["admin"], "the file's users replace guest");
    b.shutdown().await;
    // A file that does not parse stops the start.
    std::fs::write(&file, "{not json").unwrap();
    let r = warren::start(warren::Config {
        port: 0,
        management_port: None,
        data_dir: data.clone(),
        load_definitions: Some(file.clone()),
        ..warren::Config::default()
    })
    .await;
    let e = r.expect_err("a broken definitions file stops the start");
    assert!(e.to_string().contains("boot-definitions.json"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
