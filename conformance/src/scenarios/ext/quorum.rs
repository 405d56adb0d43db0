//! Quorum queues (`x-queue-type: quorum`) as an AMQP 0-9-1 client sees them on one node:
//! the declare rules and their texts (durable only, not exclusive, not auto-delete, no
//! server-named queue), the arguments another queue type owns are refused, redeclare
//! equivalence includes `x-queue-type`, the delivery count (`x-delivery-count`, a `long`,
//! absent on a first delivery) and `x-delivery-limit` (drop, or dead-letter with reason
//! `delivery_limit`), basic.get refused with single active consumer, global QoS refused,
//! prefetch 0 meaning 2000, and declare-ok's counts. Also the classic-queue rule that
//! `x-queue-type: classic` and no `x-queue-type` are equivalent.
//!
//! Quorum queues are durable, so every scenario deletes what it declared ([`Cleanup`]).

use super::dlx::{check_x_death, Death};
use super::*;
use crate::{Ctx, Outcome, Scenario};
use std::time::Duration;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("ext.quorum.declare", "x-queue-type quorum", declare_ok),
        scenario!(
            "ext.quorum.invalid_properties_406",
            "x-queue-type quorum",
            invalid_properties
        ),
        scenario!(
            "ext.quorum.server_named_406",
            "x-queue-type quorum",
            server_named
        ),
        scenario!(
            "ext.quorum.other_types_args_406",
            "x-queue-type quorum",
            other_types_args
        ),
        scenario!(
            "ext.quorum.accepted_args",
            "x-queue-type quorum",
            accepted_args
        ),
        scenario!(
            "ext.quorum.bad_arg_values_406",
            "x-queue-type quorum",
            bad_arg_values
        ),
        scenario!(
            "ext.quorum.redeclare_equivalence",
            "x-queue-type quorum",
            redeclare
        ),
        scenario!(
            "ext.quorum.passive_ignores_args",
            "x-queue-type quorum",
            passive
        ),
        scenario!(
            "ext.quorum.delivery_count_header",
            "x-delivery-count",
            delivery_count
        ),
        scenario!(
            "ext.quorum.delivery_limit_dead_letters",
            "x-delivery-limit",
            delivery_limit_dlx
        ),
        scenario!(
            "ext.quorum.delivery_limit_drops",
            "x-delivery-limit",
            delivery_limit_drop
        ),
        scenario!(
            "ext.quorum.sac_get_405",
            "x-queue-type quorum / basic.get",
            sac_get
        ),
        scenario!(
            "ext.quorum.get_and_ack",
            "x-queue-type quorum / basic.get",
            get_and_ack
        ),
        scenario!(
            "ext.quorum.global_qos_540",
            "x-queue-type quorum / basic.qos",
            global_qos
        ),
        scenario!(
            "ext.quorum.prefetch_zero_is_2000",
            "x-queue-type quorum / basic.qos",
            prefetch_zero
        ),
        scenario!(
            "ext.quorum.consumer_count",
            "x-queue-type quorum / queue.declare-ok",
            consumer_count
        ),
        scenario!(
            "ext.quorum.stream_offset_consume_arg_406",
            "x-queue-type quorum / basic.consume",
            stream_offset_arg
        ),
        scenario!(
            "ext.quorum.confirm_transient",
            "x-queue-type quorum / confirms",
            confirm_transient
        ),
        scenario!(
            "ext.quorum.delete_cancels_consumer",
            "x-queue-type quorum / queue.delete",
            delete_cancels
        ),
        scenario!(
            "ext.quorum.delete_if_unused_if_empty_540",
            "x-queue-type quorum / queue.delete",
            delete_flags
        ),
        scenario!(
            "ext.classic.other_types_args_406",
            "x-queue-type classic",
            classic_other_types_args
        ),
        scenario!(
            "ext.classic.queue_type_equivalent",
            "x-queue-type classic",
            classic_equivalent
        ),
    ]
}

fn qq_args(kv: Vec<(&str, AMQPValue)>) -> FieldTable {
    typed_args("quorum", kv)
}

async fn declare_qq(ch: &Channel, q: &str, kv: Vec<(&str, AMQPValue)>) -> Result<(), Failure> {
    declare_durable(ch, q, qq_args(kv))
        .await
        .step(&format!("queue.declare {q} x-queue-type=quorum"))
        .map(|_| ())
}

/// RabbitMQ's text for an argument the queue type does not take.
fn not_of_type(arg: &str, q: &str) -> String {
    format!(
        "PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"
    )
}

async fn consume_manual(
    ch: &Channel,
    q: &str,
    args: FieldTable,
) -> Result<lapin::Consumer, lapin::Error> {
    ch.basic_consume(q.into(), "".into(), BasicConsumeOptions::default(), args)
        .await
}

async fn declare_ok(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        let ok = declare_durable(&ch, &q, qq_args(vec![]))
            .await
            .step("queue.declare quorum")?;
        check_eq(
            "declare-ok counts",
            (ok.message_count(), ok.consumer_count()),
            (0, 0),
        )?;
        confirming(&ch).await?;
        publish_acked(&ch, "", &q, "one", BasicProperties::default()).await?;
        let ok = declare_durable(&ch, &q, qq_args(vec![]))
            .await
            .step("redeclare quorum")?;
        check_eq("message_count after publish", ok.message_count(), 1)?;
        let m = get_one(&ch, &q, true).await?;
        check_eq("body", m.delivery.data.as_slice(), b"one".as_slice())?;
        check("first get not redelivered", !m.delivery.redelivered)
    })
    .await
}

async fn invalid_properties(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("qq");
    let cases = [
        (
            QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
            "auto-delete",
        ),
        (
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
            "exclusive-owner",
        ),
        (QueueDeclareOptions::default(), "non-durable"),
    ];
    for (opts, prop) in cases {
        let ch = c.create_channel().await.step("channel.open")?;
        let r = ch
            .queue_declare(q.as_str().into(), opts, qq_args(vec![]))
            .await;
        expect_error(
            r,
            406,
            &format!(
                "PRECONDITION_FAILED - invalid property '{prop}' for queue '{q}' in vhost '/'"
            ),
        )?;
    }
    expect_connection_usable(&c).await
}

async fn server_named(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let r = declare_durable(&ch, "", qq_args(vec![])).await;
    expect_error(
        r,
        406,
        "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue",
    )?;
    expect_connection_usable(&c).await
}

async fn other_types_args(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("qq");
    for (arg, v) in [
        ("x-max-priority", int(10)),
        ("x-queue-mode", lstr("lazy")),
        ("x-max-age", lstr("1D")),
        ("x-stream-max-segment-size-bytes", int(1000)),
    ] {
        let ch = c.create_channel().await.step("channel.open")?;
        let r = declare_durable(&ch, &q, qq_args(vec![(arg, v)])).await;
        expect_error(r, 406, &not_of_type(arg, &q))?;
    }
    expect_connection_usable(&c).await
}

async fn accepted_args(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    let dlx = cl.exchange(ctx.name("dlx"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_qq(
            &ch,
            &q,
            vec![
                ("x-delivery-limit", int(5)),
                ("x-dead-letter-exchange", lstr(&dlx)),
                ("x-dead-letter-routing-key", lstr("dead")),
                ("x-dead-letter-strategy", lstr("at-least-once")),
                ("x-overflow", lstr("reject-publish")),
                ("x-max-length", int(100)),
                ("x-max-length-bytes", int(1_000_000)),
                ("x-message-ttl", int(60_000)),
                ("x-expires", int(600_000)),
                ("x-single-active-consumer", AMQPValue::Boolean(true)),
                ("x-quorum-initial-group-size", int(3)),
                ("x-queue-leader-locator", lstr("client-local")),
                ("x-max-in-memory-length", int(10)),
                ("x-max-in-memory-bytes", int(10_000)),
            ],
        )
        .await
    })
    .await
}

async fn bad_arg_values(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("qq");
    for (arg, v, why) in [
        (
            "x-dead-letter-strategy",
            lstr("sometimes"),
            "invalid_dlx_strategy",
        ),
        ("x-overflow", lstr("never"), "invalid_overflow"),
        ("x-quorum-initial-group-size", int(0), "{value_zero,0}"),
    ] {
        let ch = c.create_channel().await.step("channel.open")?;
        let r = declare_durable(&ch, &q, qq_args(vec![(arg, v)])).await;
        expect_error(r, 406, &invalid_arg(arg, &q, why))?;
    }
    let ch = c.create_channel().await.step("channel.open")?;
    let r = declare_durable(&ch, &q, table(vec![("x-queue-type", lstr("fifo"))])).await;
    expect_error(
        r,
        406,
        &invalid_arg("x-queue-type", &q, "\"unsupported queue type 'fifo'\""),
    )?;
    expect_connection_usable(&c).await
}

async fn redeclare(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let c = connect(&ctx.uri).await?;
        let ch = c.create_channel().await.step("channel.open")?;
        declare_qq(&ch, &q, vec![("x-delivery-limit", int(3))]).await?;
        declare_qq(&ch, &q, vec![("x-delivery-limit", int(3))]).await?;
        let r = declare_durable(&ch, &q, table(vec![("x-delivery-limit", int(3))])).await;
        expect_error(
            r,
            406,
            &format!("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' in vhost '/': received none but current is the value 'quorum' of type 'longstr'"),
        )?;
        let ch = c.create_channel().await.step("channel.open")?;
        let r = declare_durable(&ch, &q, qq_args(vec![("x-delivery-limit", int(4))])).await;
        expect_error(
            r,
            406,
            &format!("PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue '{q}' in vhost '/': received '4' but current is '3'"),
        )?;
        expect_connection_usable(&c).await
    })
    .await
}

async fn passive(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            table(vec![("x-max-priority", int(3))]),
        )
        .await
        .step("passive declare with other arguments")
        .map(|_| ())
    })
    .await
}

fn delivery_count_of(d: &lapin::message::Delivery) -> Option<AMQPValue> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
}

async fn delivery_count(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        let hdr = table(vec![("app", lstr("kept"))]);
        publish_p(
            &ch,
            "",
            &q,
            "poison",
            BasicProperties::default().with_headers(hdr),
        )
        .await?;
        let mut cons = consume_manual(&ch, &q, FieldTable::default())
            .await
            .step("basic.consume")?;
        let mut d = next_delivery(&mut cons).await?;
        check("first delivery not redelivered", !d.redelivered)?;
        check_eq(
            "first delivery's x-delivery-count",
            delivery_count_of(&d),
            None,
        )?;
        for n in 1..=2i64 {
            d_reject(&ch, d.delivery_tag, true).await?;
            d = next_delivery(&mut cons).await?;
            check(&format!("redelivery {n} marked redelivered"), d.redelivered)?;
            check_eq(
                &format!("x-delivery-count on redelivery {n}"),
                delivery_count_of(&d),
                Some(AMQPValue::LongLongInt(n)),
            )?;
            check_eq(
                "the publisher's header is kept",
                d.properties
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get("app").cloned()),
                Some(lstr("kept")),
            )?;
        }
        ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
            .await
            .step("basic.ack")
    })
    .await
}

async fn d_reject(ch: &Channel, tag: u64, requeue: bool) -> Outcome {
    ch.basic_reject(tag, BasicRejectOptions { requeue })
        .await
        .step("basic.reject")
}

async fn delivery_limit_dlx(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    let dlx = cl.exchange(ctx.name("dlx"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        ch.exchange_declare(
            dlx.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .step("exchange.declare dlx")?;
        let dead = ctx.name("dead");
        declare_x(&ch, &dead, FieldTable::default()).await?;
        bind(&ch, &dead, &dlx, "").await?;
        declare_qq(
            &ch,
            &q,
            vec![
                ("x-delivery-limit", int(1)),
                ("x-dead-letter-exchange", lstr(&dlx)),
            ],
        )
        .await?;
        publish_p(&ch, "", &q, "poison", BasicProperties::default()).await?;
        let mut cons = consume_manual(&ch, &q, FieldTable::default())
            .await
            .step("basic.consume")?;
        // Limit 1: the first return is allowed, the second kills the message.
        for _ in 0..2 {
            let d = next_delivery(&mut cons).await?;
            d_reject(&ch, d.delivery_tag, true).await?;
        }
        let m = get_one(&ch, &dead, true).await?;
        check_eq(
            "dead-lettered body",
            m.delivery.data.as_slice(),
            b"poison".as_slice(),
        )?;
        check_x_death(
            &m.delivery.properties,
            &[Death {
                count: 1,
                reason: "delivery_limit",
                queue: &q,
                exchange: "",
                routing_keys: vec![&q],
                original_expiration: None,
            }],
        )?;
        expect_no_delivery(&mut cons, Duration::from_millis(100)).await
    })
    .await
}

async fn delivery_limit_drop(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![("x-delivery-limit", int(0))]).await?;
        confirming(&ch).await?;
        publish_acked(&ch, "", &q, "poison", BasicProperties::default()).await?;
        let m = get_one(&ch, &q, false).await?;
        ch.basic_nack(
            m.delivery.delivery_tag,
            BasicNackOptions {
                requeue: true,
                ..Default::default()
            },
        )
        .await
        .step("basic.nack requeue")?;
        wait_message_count(&ch, &q, 0).await
    })
    .await
}

async fn sac_get(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![("x-single-active-consumer", AMQPValue::Boolean(true))])
            .await?;
        let r = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await;
        expect_error(
            r,
            405,
            &format!("RESOURCE_LOCKED - cannot obtain access to locked queue '{q}' in vhost '/'. basic.get operations are not supported by quorum queues with single active consumer"),
        )?;
        expect_connection_usable(&c).await
    })
    .await
}

async fn get_and_ack(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        confirming(&ch).await?;
        publish_acked(&ch, "", &q, "a", BasicProperties::default()).await?;
        publish_acked(&ch, "", &q, "b", BasicProperties::default()).await?;
        let m = get_one(&ch, &q, false).await?;
        check_eq("get-ok message_count", m.message_count, 1)?;
        // Unlike a consumer's first delivery, basic.get-ok always carries the count.
        check_eq(
            "x-delivery-count on a first basic.get",
            delivery_count_of(&m.delivery),
            Some(AMQPValue::LongLongInt(0)),
        )?;
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .step("basic.ack")?;
        let m = get_one(&ch, &q, false).await?;
        check_eq("second body", m.delivery.data.as_slice(), b"b".as_slice())?;
        ch.basic_reject(
            m.delivery.delivery_tag,
            BasicRejectOptions { requeue: true },
        )
        .await
        .step("basic.reject requeue")?;
        let m = get_one(&ch, &q, true).await?;
        check("requeued get is redelivered", m.delivery.redelivered)?;
        check_eq(
            "x-delivery-count on basic.get",
            delivery_count_of(&m.delivery),
            Some(AMQPValue::LongLongInt(1)),
        )
    })
    .await
}

async fn global_qos(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        ch.basic_qos(10, BasicQosOptions { global: true })
            .await
            .step("basic.qos global")?;
        let r = consume_manual(&ch, &q, FieldTable::default()).await;
        expect_error(
            r,
            540,
            &format!("NOT_IMPLEMENTED - queue '{q}' in vhost '/' does not support global qos"),
        )?;
        wait_connection_closed(&c).await
    })
    .await
}

async fn prefetch_zero(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        confirming(&ch).await?;
        for i in 0..2100 {
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .step("basic.publish")?;
        }
        ch.wait_for_confirms().await.step("wait for confirms")?;
        let cch = _c.create_channel().await.step("channel.open")?;
        let mut cons = consume_manual(&cch, &q, FieldTable::default())
            .await
            .step("basic.consume")?;
        let got = bodies(&mut cons, 2000).await?;
        check_eq("first of 2000", got.first().map(String::as_str), Some("m0"))?;
        expect_no_delivery(&mut cons, Duration::from_millis(200)).await?;
        let ok = declare_durable(&ch, &q, qq_args(vec![]))
            .await
            .step("redeclare")?;
        check_eq("ready after 2000 in flight", ok.message_count(), 100)
    })
    .await
}

async fn consumer_count(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        let cons = consume_manual(&ch, &q, FieldTable::default())
            .await
            .step("basic.consume")?;
        let ok = declare_durable(&ch, &q, qq_args(vec![]))
            .await
            .step("redeclare")?;
        check_eq("consumer_count with a consumer", ok.consumer_count(), 1)?;
        ch.basic_cancel(cons.tag(), BasicCancelOptions::default())
            .await
            .step("basic.cancel")?;
        let ok = declare_durable(&ch, &q, qq_args(vec![]))
            .await
            .step("redeclare")?;
        check_eq("consumer_count after cancel", ok.consumer_count(), 0)
    })
    .await
}

async fn stream_offset_arg(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        let r = consume_manual(&ch, &q, table(vec![("x-stream-offset", lstr("first"))])).await;
        expect_error(r, 406, &not_of_type("x-stream-offset", &q))?;
        let ch = c.create_channel().await.step("channel.open")?;
        let r = consume_manual(&ch, &q, table(vec![("x-priority", lstr("high"))])).await;
        expect_error(
            r,
            406,
            &invalid_arg("x-priority", &q, "\"expected integer, got longstr\""),
        )?;
        expect_connection_usable(&c).await
    })
    .await
}

async fn confirm_transient(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        confirming(&ch).await?;
        // delivery_mode 1: a quorum queue stores it all the same and confirms it.
        publish_acked(
            &ch,
            "",
            &q,
            "transient",
            BasicProperties::default().with_delivery_mode(1),
        )
        .await?;
        let m = get_one(&ch, &q, true).await?;
        check_eq(
            "delivery_mode kept",
            *m.delivery.properties.delivery_mode(),
            Some(1),
        )
    })
    .await
}

async fn delete_cancels(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        let (c, ch) = open(&ctx.uri).await?;
        declare_qq(&ch, &q, vec![]).await?;
        let mut cons = consume_manual(&ch, &q, FieldTable::default())
            .await
            .step("basic.consume")?;
        let other = c.create_channel().await.step("channel.open")?;
        other
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .step("queue.delete")?;
        // lapin ends the consumer stream on a server basic.cancel.
        match tokio::time::timeout(WAIT, futures_lite::StreamExt::next(&mut cons)).await {
            Ok(None) => Ok(()),
            Ok(Some(other)) => Err(Failure::new(
                "the consumer ended by basic.cancel",
                format!("{other:?}"),
            )),
            Err(_) => Err(Failure::new(
                "the consumer ended by basic.cancel",
                "nothing within the wait",
            )),
        }
    })
    .await
}

async fn classic_equivalent(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let a = cl.queue(ctx.name("a"));
    let b = cl.queue(ctx.name("b"));
    cl.finish(async move {
        let (_c, ch) = open(&ctx.uri).await?;
        let classic = || table(vec![("x-queue-type", lstr("classic"))]);
        declare_durable(&ch, &a, classic())
            .await
            .step("declare with x-queue-type classic")?;
        declare_durable(&ch, &a, FieldTable::default())
            .await
            .step("redeclare without x-queue-type")?;
        declare_durable(&ch, &b, FieldTable::default())
            .await
            .step("declare without x-queue-type")?;
        declare_durable(&ch, &b, classic())
            .await
            .step("redeclare with x-queue-type classic")
            .map(|_| ())
    })
    .await
}

async fn classic_other_types_args(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("cq");
    for (arg, v) in [
        ("x-delivery-limit", int(3)),
        ("x-max-age", lstr("1D")),
        ("x-dead-letter-strategy", lstr("at-least-once")),
    ] {
        let ch = c.create_channel().await.step("channel.open")?;
        let r = declare_with(&ch, &q, true, table(vec![(arg, v)])).await;
        expect_error(
            r,
            406,
            &format!("PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"),
        )?;
    }
    expect_connection_usable(&c).await
}

/// queue.delete with if-unused or if-empty on a quorum queue: RabbitMQ refuses both with
/// 540 (a connection error), the queue stays.
async fn delete_flags(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("qq"));
    cl.finish(async move {
        for (flag, opts) in [
            (
                "if-unused",
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            ),
            (
                "if-empty",
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            ),
        ] {
            let (c, ch) = open(&ctx.uri).await?;
            declare_qq(&ch, &q, vec![]).await?;
            let r = ch.queue_delete(q.as_str().into(), opts).await;
            expect_error(
                r,
                540,
                &format!(
                    "NOT_IMPLEMENTED - cannot delete queue '{q}' in vhost '/'. queue.delete operations with {flag} flag set are not supported by quorum queues"
                ),
            )?;
            wait_connection_closed(&c).await?;
        }
        // Still there.
        let (_c, ch) = open(&ctx.uri).await?;
        crate::scenarios::queue::passive(&ch, &q)
            .await
            .step("passive declare: the queue is still there")?;
        Ok(())
    })
    .await
}
