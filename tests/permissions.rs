//! The access-control table, method by method: each operation once allowed and once denied
//! for a user whose permissions on `/` are configure `^c`, write `^w`, read `^r`, with the
//! reply code and text RabbitMQ 3.10 sends (checked against it with the same user).

use crate::common;

use conformance::support::{amqp_error, events, next_error, sync, Events};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

type Op = fn(Channel) -> Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>>;

/// What the client observed: success, or the (code, text) of the close.
#[derive(Debug, PartialEq)]
enum Seen {
    Ok,
    Closed(u16, String),
}

fn refused(kind: &str, name: &str) -> Seen {
    Seen::Closed(
        403,
        format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user 'u'"),
    )
}

fn uri(broker: &warren::BrokerHandle, user: &str, pass: &str, vhost: &str) -> String {
    format!("amqp://{user}:{pass}@{}/{}", broker.addr, urlencode(vhost))
}

fn urlencode(v: &str) -> String {
    v.replace('%', "%25").replace('/', "%2f")
}

/// Runs `op` on a fresh connection as `u`, then a round trip, and reports what happened.
async fn run(broker: &warren::BrokerHandle, user: &str, op: Op) -> Seen {
    common::within(DEADLINE, async {
        let conn = Connection::connect(
            &uri(broker, user, "p", "/"),
            ConnectionProperties::default(),
        )
        .await
        .expect("connect");
        let mut ev = events(&conn);
        let ch = conn.create_channel().await.expect("channel");
        let r = op(ch.clone()).await;
        let r = match r {
            Ok(()) => sync(&ch).await.map_err(|_| None),
            Err(e) => Err(amqp_error(&e)),
        };
        let seen = match r {
            Ok(()) => Seen::Ok,
            Err(Some((c, t))) => Seen::Closed(c, t),
            Err(None) => {
                let (c, t) = next_error(&mut ev).await.expect("an error event");
                Seen::Closed(c, t)
            }
        };
        let _ = conn.close(200, "bye".into()).await;
        seen
    })
    .await
}

fn args(k: &str, v: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(k.into(), AMQPValue::LongString(v.into()));
    t
}

async fn setup() -> warren::BrokerHandle {
    let broker = common::start_broker().await;
    let b = &broker.broker;
    b.add_user("u", "p", vec![]).unwrap();
    b.set_permissions("u", "/", "^c", "^w", "^r").unwrap();
    b.add_user("imp", "p", vec!["impersonator".into()]).unwrap();
    b.set_permissions("imp", "/", ".*", ".*", ".*").unwrap();
    // Fixtures declared by guest.
    let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in ["xq", "wq", "rq", "cq-existing"] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for x in ["xx", "wx", "rx", "cx-existing"] {
        ch.exchange_declare(
            x.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    conn.close(200, "".into()).await.unwrap();
    broker
}

macro_rules! op {
    (|$ch:ident| $body:expr) => {{
        fn f($ch: Channel) -> Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>> {
            Box::pin(async move {
                $body;
                Ok(())
            })
        }
        f as Op
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_table() {
    let broker = setup().await;
    let declare_q = |passive| QueueDeclareOptions {
        passive,
        ..Default::default()
    };
    let _ = declare_q;
    let cases: Vec<(&str, Op, Seen)> = vec![
        (
            "queue.declare with configure",
            op!(|ch| ch.queue_declare("cq".into(), QueueDeclareOptions::default(), FieldTable::default()).await?),
            Seen::Ok,
        ),
        (
            "queue.declare without configure",
            op!(|ch| ch.queue_declare("xq".into(), QueueDeclareOptions::default(), FieldTable::default()).await?),
            refused("queue", "xq"),
        ),
        (
            "queue.declare passive needs nothing",
            op!(|ch| ch.queue_declare("xq".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await?),
            Seen::Ok,
        ),
        (
            "queue.declare with a dead-letter exchange needs read on the queue",
            op!(|ch| ch.queue_declare("cdl".into(), QueueDeclareOptions::default(), args("x-dead-letter-exchange", "wx")).await?),
            refused("queue", "cdl"),
        ),
        (
            "queue.delete with configure",
            op!(|ch| { ch.queue_delete("cq-existing".into(), QueueDeleteOptions::default()).await?; }),
            Seen::Ok,
        ),
        (
            "queue.delete without configure",
            op!(|ch| { ch.queue_delete("xq".into(), QueueDeleteOptions::default()).await?; }),
            refused("queue", "xq"),
        ),
        (
            "queue.purge with read",
            op!(|ch| { ch.queue_purge("rq".into(), QueuePurgeOptions::default()).await?; }),
            Seen::Ok,
        ),
        (
            "queue.purge without read",
            op!(|ch| { ch.queue_purge("wq".into(), QueuePurgeOptions::default()).await?; }),
            refused("queue", "wq"),
        ),
        (
            "queue.bind: write on queue, read on exchange",
            op!(|ch| ch.queue_bind("wq".into(), "rx".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await?),
            Seen::Ok,
        ),
        (
            "queue.bind without write on the queue",
            op!(|ch| ch.queue_bind("rq".into(), "rx".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await?),
            refused("queue", "rq"),
        ),
        (
            "queue.bind without read on the exchange",
            op!(|ch| ch.queue_bind("wq".into(), "amq.direct".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await?),
            refused("exchange", "amq.direct"),
        ),
        (
            "queue.unbind without read on the exchange",
            op!(|ch| ch.queue_unbind("wq".into(), "amq.direct".into(), "k".into(), FieldTable::default()).await?),
            refused("exchange", "amq.direct"),
        ),
        (
            "exchange.declare with configure",
            op!(|ch| ch.exchange_declare("cx".into(), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default()).await?),
            Seen::Ok,
        ),
        (
            "exchange.declare without configure",
            op!(|ch| ch.exchange_declare("xx".into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default()).await?),
            refused("exchange", "xx"),
        ),
        (
            "exchange.declare with an alternate exchange needs read on it",
            op!(|ch| ch.exchange_declare("cae".into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), args("alternate-exchange", "wx")).await?),
            refused("exchange", "cae"),
        ),
        (
            "exchange.declare passive needs nothing",
            op!(|ch| ch.exchange_declare("xx".into(), ExchangeKind::Direct, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await?),
            Seen::Ok,
        ),
        (
            "exchange.delete with configure",
            op!(|ch| ch.exchange_delete("cx-existing".into(), ExchangeDeleteOptions::default()).await?),
            Seen::Ok,
        ),
        (
            "exchange.delete without configure",
            op!(|ch| ch.exchange_delete("xx".into(), ExchangeDeleteOptions::default()).await?),
            refused("exchange", "xx"),
        ),
        (
            "exchange.bind: write on destination, read on source",
            op!(|ch| ch.exchange_bind("wx".into(), "rx".into(), "k".into(), ExchangeBindOptions::default(), FieldTable::default()).await?),
            Seen::Ok,
        ),
        (
            "exchange.bind without write on the destination",
            op!(|ch| ch.exchange_bind("rx".into(), "wx".into(), "k".into(), ExchangeBindOptions::default(), FieldTable::default()).await?),
            refused("exchange", "rx"),
        ),
        (
            "exchange.unbind without read on the source",
            op!(|ch| ch.exchange_unbind("wx".into(), "xx".into(), "k".into(), ExchangeUnbindOptions::default(), FieldTable::default()).await?),
            refused("exchange", "xx"),
        ),
        (
            "basic.publish with write on the exchange",
            op!(|ch| { ch.basic_publish("wx".into(), "k".into(), BasicPublishOptions::default(), b"m", BasicProperties::default()).await?; }),
            Seen::Ok,
        ),
        (
            "basic.publish to the default exchange (amq.default)",
            op!(|ch| { ch.basic_publish("".into(), "rq".into(), BasicPublishOptions::default(), b"m", BasicProperties::default()).await?; }),
            refused("exchange", "amq.default"),
        ),
        (
            "basic.publish without write",
            op!(|ch| { ch.basic_publish("amq.fanout".into(), "".into(), BasicPublishOptions::default(), b"m", BasicProperties::default()).await?; }),
            refused("exchange", "amq.fanout"),
        ),
        (
            "basic.publish with a foreign user-id",
            op!(|ch| { ch.basic_publish("wx".into(), "k".into(), BasicPublishOptions::default(), b"m", BasicProperties::default().with_user_id("other".into())).await?; }),
            Seen::Closed(406, "PRECONDITION_FAILED - user_id property set to 'other' but authenticated user was 'u'".into()),
        ),
        (
            "basic.publish with its own user-id",
            op!(|ch| { ch.basic_publish("wx".into(), "k".into(), BasicPublishOptions::default(), b"m", BasicProperties::default().with_user_id("u".into())).await?; }),
            Seen::Ok,
        ),
        (
            "basic.get with read",
            op!(|ch| { ch.basic_get("rq".into(), BasicGetOptions::default()).await?; }),
            Seen::Ok,
        ),
        (
            "basic.get without read",
            op!(|ch| { ch.basic_get("wq".into(), BasicGetOptions::default()).await?; }),
            refused("queue", "wq"),
        ),
        (
            "basic.consume with read",
            op!(|ch| { ch.basic_consume("rq".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?; }),
            Seen::Ok,
        ),
        (
            "basic.consume without read",
            op!(|ch| { ch.basic_consume("wq".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?; }),
            refused("queue", "wq"),
        ),
        (
            "basic.consume of direct reply-to needs nothing",
            op!(|ch| { ch.basic_consume("amq.rabbitmq.reply-to".into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await?; }),
            Seen::Ok,
        ),
    ];
    let mut failures = Vec::new();
    for (name, op, expected) in cases {
        let seen = run(&broker, "u", op).await;
        if seen != expected {
            failures.push(format!("{name}: expected {expected:?}, saw {seen:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queues_need_configure_on_amq_gen() {
    let broker = setup().await;
    let seen = run(
        &broker,
        "u",
        op!(|ch| ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions::default(),
                FieldTable::default()
            )
            .await?),
    )
    .await;
    match seen {
        Seen::Closed(403, t) => assert!(
            t.starts_with("ACCESS_REFUSED - access to queue 'amq.gen-")
                && t.ends_with("' in vhost '/' refused for user 'u'"),
            "{t}"
        ),
        other => panic!("{other:?}"),
    }
    broker
        .broker
        .set_permissions("u", "/", "^(c|amq\\.gen-)", "^w", "^r")
        .unwrap();
    let seen = run(
        &broker,
        "u",
        op!(|ch| ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions::default(),
                FieldTable::default()
            )
            .await?),
    )
    .await;
    assert_eq!(seen, Seen::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonator_may_set_any_user_id() {
    let broker = setup().await;
    let seen = run(
        &broker,
        "imp",
        op!(|ch| {
            ch.basic_publish(
                "".into(),
                "rq".into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default().with_user_id("someone".into()),
            )
            .await?;
        }),
    )
    .await;
    assert_eq!(seen, Seen::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_access_and_login() {
    let broker = setup().await;
    broker.broker.add_vhost("other");
    // No permission in the vhost: 530 at connection.open.
    let e = Connection::connect(
        &uri(&broker, "u", "p", "other"),
        ConnectionProperties::default(),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        amqp_error(&e),
        Some((
            530,
            "NOT_ALLOWED - access to vhost 'other' refused for user 'u'".into()
        ))
    );
    let e = Connection::connect(
        &uri(&broker, "u", "p", "nope"),
        ConnectionProperties::default(),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        amqp_error(&e),
        Some((530, "NOT_ALLOWED - vhost nope not found".into()))
    );
    // A wrong password (lapin asks for authentication_failure_close): 403.
    let e = Connection::connect(
        &uri(&broker, "u", "wrong", "/"),
        ConnectionProperties::default(),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        amqp_error(&e),
        Some((
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".into()
        ))
    );
    // After the permission is granted the same user gets in; after deletion, out again.
    broker
        .broker
        .set_permissions("u", "other", ".*", ".*", ".*")
        .unwrap();
    Connection::connect(
        &uri(&broker, "u", "p", "other"),
        ConnectionProperties::default(),
    )
    .await
    .expect("allowed now");
    broker.broker.delete_user("u").unwrap();
    assert!(Connection::connect(
        &uri(&broker, "u", "p", "other"),
        ConnectionProperties::default()
    )
    .await
    .is_err());
}

/// Publishes one message to `x` and waits for the broker's answer: Ok, or the close's
/// (code, text) whether lapin reports it on the call or as a connection event.
async fn publish_to(ch: &Channel, x: &str, ev: &mut Events) -> Result<(), (u16, String)> {
    let r = match ch
        .basic_publish(
            x.into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
    {
        Ok(_) => sync(ch).await.map_err(|_| None),
        Err(e) => Err(amqp_error(&e)),
    };
    match r {
        Ok(()) => Ok(()),
        Err(Some(ct)) => Err(ct),
        Err(None) => Err(next_error(ev).await.expect("channel error")),
    }
}

/// A channel remembers the exchange it publishes to and its write permission on it; a
/// permission change and a deleted exchange must still be seen by the next publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_channel_sees_revoked_permission_and_deleted_exchange() {
    let broker = setup().await;
    let b = &broker.broker;
    common::within(DEADLINE, async {
        let conn = Connection::connect(
            &uri(&broker, "u", "p", "/"),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let mut ev = events(&conn);
        let ch = conn.create_channel().await.unwrap();
        publish_to(&ch, "wx", &mut ev)
            .await
            .expect("allowed at first");
        publish_to(&ch, "wx", &mut ev).await.expect("allowed again");
        b.set_permissions("u", "/", "^c", "^nothing$", "^r")
            .unwrap();
        let refused = publish_to(&ch, "wx", &mut ev).await;
        assert_eq!(
            refused,
            Err((
                403,
                "ACCESS_REFUSED - access to exchange 'wx' in vhost '/' refused for user 'u'".into()
            )),
            "publish after write permission was revoked"
        );

        // Deleted exchange: 404 on the next publish from the same channel.
        b.set_permissions("u", "/", ".*", ".*", ".*").unwrap();
        let ch = conn.create_channel().await.unwrap();
        publish_to(&ch, "wx", &mut ev)
            .await
            .expect("allowed with full permissions");
        let guest = Connection::connect(&broker.uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let gch = guest.create_channel().await.unwrap();
        gch.exchange_delete("wx".into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
        let missing = publish_to(&ch, "wx", &mut ev).await;
        assert_eq!(
            missing,
            Err((404, "NOT_FOUND - no exchange 'wx' in vhost '/'".into())),
            "publish to a deleted exchange"
        );
    })
    .await;
}
