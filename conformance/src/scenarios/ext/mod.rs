//! RabbitMQ extensions to AMQP 0-9-1: message TTL, queue expiry, length limits,
//! dead-lettering, priorities, consumer priorities, single active consumer, direct reply-to,
//! queue arguments and consumer arguments. Every scenario name starts with `ext.`.
//!
//! These are kept in their own list (see [`scenarios`]) so the broker under test can opt in
//! while it implements them; every scenario was validated against RabbitMQ 3.10.8.
//!
//! Timing: TTL and expiry scenarios use small intervals (50–400 ms) and never sleep to
//! synchronise. Where time has to pass, they wait for an observable event: a queue's message
//! count reaching 0 (`wait_message_count`), a queue disappearing (passive declare polled at
//! an interval longer than its `x-expires`, because RabbitMQ counts a passive declare as a
//! use and restarts the expiry timer), or a *companion* message published later with the same
//! TTL having expired (so the message under test is expired too).

use crate::support::*;
use crate::{Failure, Scenario};
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Connection,
};
use std::time::Duration;

pub mod args;
pub mod cancel;
pub mod consumer_priority;
pub mod dlx;
pub mod expires;
pub mod maxlen;
pub mod plugin_exchanges;
pub mod priority;
pub mod quorum;
pub mod reply_to;
pub mod sac;
pub mod stream;
pub mod ttl;

pub fn scenarios() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(ttl::scenarios());
    v.extend(expires::scenarios());
    v.extend(maxlen::scenarios());
    v.extend(dlx::scenarios());
    v.extend(priority::scenarios());
    v.extend(consumer_priority::scenarios());
    v.extend(sac::scenarios());
    v.extend(reply_to::scenarios());
    v.extend(args::scenarios());
    v.extend(cancel::scenarios());
    v.extend(quorum::scenarios());
    v.extend(stream::scenarios());
    v.extend(plugin_exchanges::scenarios());
    v
}

/// A field table from pairs.
pub(crate) fn table(kv: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in kv {
        t.insert(k.into(), v);
    }
    t
}

/// A signed 32-bit integer argument (`I`), what most clients send for numbers.
pub(crate) fn int(i: i32) -> AMQPValue {
    AMQPValue::LongInt(i)
}

/// A long string argument (`S`).
pub(crate) fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// queue.declare with arguments; exclusive or plain (non-durable, not auto-delete).
pub(crate) async fn declare_with(
    ch: &Channel,
    q: &str,
    exclusive: bool,
    args: FieldTable,
) -> Result<lapin::Queue, lapin::Error> {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            exclusive,
            ..Default::default()
        },
        args,
    )
    .await
}

/// queue.declare durable (not exclusive, not auto-delete) with `args`; the result unchecked.
/// Quorum queues and streams must be declared so.
pub(crate) async fn declare_durable(
    ch: &Channel,
    q: &str,
    args: FieldTable,
) -> Result<lapin::Queue, lapin::Error> {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
}

/// `x-queue-type: kind` plus `extra`.
pub(crate) fn typed_args(kind: &str, extra: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = table(extra);
    t.insert("x-queue-type".into(), lstr(kind));
    t
}

/// Exclusive queue.declare with arguments that must succeed.
pub(crate) async fn declare_x(
    ch: &Channel,
    q: &str,
    args: FieldTable,
) -> Result<lapin::Queue, Failure> {
    declare_with(ch, q, true, args)
        .await
        .step(&format!("queue.declare {q} with arguments"))
}

/// RabbitMQ's text for an argument its validator refused: `~255p` of the error term.
pub(crate) fn invalid_arg(arg: &str, q: &str, err: &str) -> String {
    format!("PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '/': {err}")
}

/// Asserts that declaring `q` with `args` closes the channel with 406 and exactly `text`,
/// and that the connection survives.
pub(crate) async fn expect_declare_406(
    conn: &Connection,
    q: &str,
    args: FieldTable,
    text: &str,
) -> Result<(), Failure> {
    let ch = conn.create_channel().await.step("channel.open")?;
    expect_error(declare_with(&ch, q, true, args).await, 406, text)?;
    expect_connection_usable(conn).await
}

/// Publishes with properties on a plain channel.
pub(crate) async fn publish_p(
    ch: &Channel,
    exchange: &str,
    rk: &str,
    body: &str,
    props: BasicProperties,
) -> Result<(), Failure> {
    publish_props(ch, exchange, rk, body.as_bytes(), props).await
}

/// Publishes with properties on a confirm channel and returns the confirmation.
pub(crate) async fn publish_c(
    ch: &Channel,
    exchange: &str,
    rk: &str,
    body: &str,
    props: BasicProperties,
) -> Result<lapin::Confirmation, Failure> {
    let c = ch
        .basic_publish(
            exchange.into(),
            rk.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .step("basic.publish")?;
    match tokio::time::timeout(WAIT, c).await {
        Ok(r) => r.step("publisher confirm"),
        Err(_) => Err(Failure::new(
            "a publisher confirm",
            format!("nothing within {WAIT:?}"),
        )),
    }
}

/// Puts `ch` in confirm mode.
pub(crate) async fn confirming(ch: &Channel) -> Result<(), Failure> {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")
}

/// Publishes on a confirm channel and requires basic.ack. Used before waiting for a queue's
/// count to drop: the ack means the queue has the message, whereas a passive declare (which
/// RabbitMQ's queue process handles with priority) can overtake a publish still in flight.
pub(crate) async fn publish_acked(
    ch: &Channel,
    exchange: &str,
    rk: &str,
    body: &str,
    props: BasicProperties,
) -> Result<(), Failure> {
    let c = publish_c(ch, exchange, rk, body, props).await?;
    check(&format!("{body:?} confirmed with basic.ack"), c.is_ack())
}

/// Properties with a per-message TTL.
pub(crate) fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

/// Polls until `q` no longer exists: a passive declare on a fresh channel (a 404 closes the
/// channel) every `interval`, which must be longer than the queue's `x-expires` since RabbitMQ
/// restarts the expiry timer on each passive declare. Bounded by [`WAIT`].
pub(crate) async fn wait_queue_gone(
    conn: &Connection,
    q: &str,
    interval: Duration,
) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ch = conn.create_channel().await.step("channel.open")?;
        let r = ch
            .queue_declare(
                q.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match r {
            Err(e) => {
                return match amqp_error(&e) {
                    Some((404, _)) => Ok(()),
                    _ => Err(Failure::new(
                        format!("{q} deleted (passive declare 404)"),
                        format!("{e:?}"),
                    )),
                }
            }
            Ok(_) => {
                let _ = ch.close(200, "poll".into()).await;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                format!("{q} deleted by x-expires"),
                "still there at the deadline",
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// Passive declare that must find `q`; returns (messages, consumers).
pub(crate) async fn counts(ch: &Channel, q: &str) -> Result<(u32, u32), Failure> {
    let ok = ch
        .queue_declare(
            q.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step(&format!("passive queue.declare {q}"))?;
    Ok((ok.message_count(), ok.consumer_count()))
}

/// A header of a delivered message.
pub(crate) fn header<'a>(p: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    p.headers().as_ref().and_then(|h| h.inner().get(key))
}

/// Consumes `q` with arguments (and optional tag), acknowledging mode as given.
pub(crate) async fn consume_args(
    ch: &Channel,
    q: &str,
    no_ack: bool,
    args: FieldTable,
) -> Result<lapin::Consumer, lapin::Error> {
    ch.basic_consume(
        q.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        args,
    )
    .await
}

/// The body of a delivery as a string.
pub(crate) fn body(d: &lapin::message::Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}
