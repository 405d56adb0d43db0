//! queue.declare (server-named, passive, durable, equivalence, arguments), queue.purge and
//! queue.delete. Exclusive and auto-delete lifetimes are in `lifetime`, bindings in `binding`.

use crate::support::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use lapin::{options::*, types::AMQPValue, types::FieldTable, Channel, ExchangeKind};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("queue.declare.counts", "queue.declare", declare_counts),
        scenario!(
            "queue.declare.consumer_count",
            "queue.declare",
            declare_consumer_count
        ),
        scenario!(
            "queue.declare.passive_missing_404",
            "queue.declare passive",
            passive_missing
        ),
        scenario!(
            "queue.declare.passive_existing",
            "queue.declare passive",
            passive_existing
        ),
        scenario!(
            "queue.declare.server_named",
            "queue.declare server-named",
            server_named
        ),
        scenario!(
            "queue.declare.empty_name_means_last_queue",
            "queue.* empty queue name",
            empty_name_last_queue
        ),
        scenario!(
            "queue.declare.empty_name_without_previous_404",
            "queue.* empty queue name",
            empty_name_no_previous
        ),
        scenario!("queue.declare.durable", "queue.declare durable", durable),
        scenario!(
            "queue.declare.inequivalent_durable_406",
            "queue.declare",
            inequivalent_durable
        ),
        scenario!(
            "queue.declare.inequivalent_auto_delete_406",
            "queue.declare",
            inequivalent_auto_delete
        ),
        scenario!(
            "queue.declare.inequivalent_args_406",
            "queue.declare arguments",
            inequivalent_args
        ),
        scenario!(
            "queue.declare.inequivalent_exclusive_405",
            "queue.declare exclusive",
            inequivalent_exclusive
        ),
        scenario!("queue.declare.amq_prefix_403", "queue.declare", amq_prefix),
        scenario!("queue.declare.name_255_bytes", "queue.declare", name_255),
        scenario!(
            "queue.declare.long_reply_text_truncated",
            "reply texts",
            long_reply_text
        ),
        scenario!(
            "queue.declare.invalid_arg_type_406",
            "queue.declare arguments",
            invalid_arg_type
        ),
        scenario!("queue.purge.count", "queue.purge", purge_count),
        scenario!(
            "queue.purge.keeps_unacked",
            "queue.purge",
            purge_keeps_unacked
        ),
        scenario!("queue.purge.missing_404", "queue.purge", purge_missing),
        scenario!("queue.delete.count", "queue.delete", delete_count),
        scenario!("queue.delete.missing_ok", "queue.delete", delete_missing),
        scenario!(
            "queue.delete.if_unused_406",
            "queue.delete if-unused",
            delete_if_unused
        ),
        scenario!(
            "queue.delete.if_empty_406",
            "queue.delete if-empty",
            delete_if_empty
        ),
        scenario!(
            "queue.delete.if_empty_ok_when_empty",
            "queue.delete if-empty",
            delete_if_empty_ok
        ),
    ]
}

pub(crate) fn locked(q: &str) -> String {
    reply_text(&format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. \
         It could be originally declared on another connection or the exclusive property value \
         does not match that of the original declaration."
    ))
}

pub(crate) fn no_queue(q: &str) -> String {
    format!("NOT_FOUND - no queue '{q}' in vhost '/'")
}

pub(crate) async fn qdecl(
    ch: &Channel,
    name: &str,
    o: QueueDeclareOptions,
    args: FieldTable,
) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(name.into(), o, args).await
}

pub(crate) async fn passive(ch: &Channel, name: &str) -> lapin::Result<lapin::Queue> {
    qdecl(
        ch,
        name,
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

pub(crate) async fn qdelete(
    ch: &Channel,
    name: &str,
    if_unused: bool,
    if_empty: bool,
) -> lapin::Result<u32> {
    ch.queue_delete(
        name.into(),
        QueueDeleteOptions {
            if_unused,
            if_empty,
            nowait: false,
        },
    )
    .await
}

async fn declare_counts(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        let ok = declare_queue(&ch, &q).await?;
        check_eq("queue name", ok.name().as_str(), q.as_str())?;
        check_eq("message_count", ok.message_count(), 0)?;
        publish(&ch, "", &q, b"one").await?;
        publish(&ch, "", &q, b"two").await?;
        wait_message_count(&ch, &q, 2).await?;
        let ok = declare_queue(&ch, &q).await?;
        check_eq("message_count", ok.message_count(), 2)?;
        check_eq("consumer_count", ok.consumer_count(), 0)?;
        check_eq(
            "delete-ok message_count",
            qdelete(&ch, &q, false, false).await.step("queue.delete")?,
            2,
        )
    })
    .await
}

async fn declare_consumer_count(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let _a = consume(&ch, &q, false).await?;
    let _b = consume(&ch, &q, false).await?;
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq("consumer_count", ok.consumer_count(), 2)?;
    let ok = passive(&ch, &q).await.step("passive declare")?;
    check_eq("consumer_count (passive)", ok.consumer_count(), 2)?;
    check_eq("message_count (passive)", ok.message_count(), 0)
}

async fn passive_missing(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("missing");
    expect_error(passive(&ch, &q).await, 404, &no_queue(&q))?;
    expect_channel_unusable(&ch).await?;
    expect_connection_usable(&c).await
}

async fn passive_existing(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish(&ch, "", &q, b"m").await?;
    wait_message_count(&ch, &q, 1).await?;
    let ok = passive(&ch, &q).await.step("passive declare")?;
    check_eq("name", ok.name().as_str(), q.as_str())?;
    check_eq("message_count", ok.message_count(), 1)?;
    check_eq("consumer_count", ok.consumer_count(), 0)
}

/// RabbitMQ names server-named queues `amq.gen-` followed by 22 characters of URL-safe
/// base64 (16 random bytes, no padding).
async fn server_named(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let a = qdecl(
        &ch,
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step("queue.declare with an empty name")?;
    let b = qdecl(
        &ch,
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step("second queue.declare with an empty name")?;
    for n in [a.name().as_str(), b.name().as_str()] {
        check(
            &format!("{n:?} starts with amq.gen-"),
            n.starts_with("amq.gen-"),
        )?;
        check_eq(&format!("length of {n:?}"), n.len(), 30)?;
        check(
            &format!("{n:?} suffix is URL-safe base64"),
            n["amq.gen-".len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        )?;
    }
    check("two server-named queues differ", a.name() != b.name())?;
    publish(&ch, "", a.name().as_str(), b"to-generated").await?;
    let m = get_one(&ch, a.name().as_str(), true).await?;
    check_eq(
        "body",
        m.delivery.data.as_slice(),
        b"to-generated".as_slice(),
    )
}

/// An empty queue name in bind/consume/get/purge/delete means the channel's last declared
/// queue (RabbitMQ's shortcut for server-named queues).
async fn empty_name_last_queue(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let x = ctx.name("x");
    declare_exchange_ad(&ch, &x, ExchangeKind::Direct).await?;
    let q = qdecl(
        &ch,
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step("server-named declare")?;
    let qn = q.name().as_str().to_string();
    ch.queue_bind(
        "".into(),
        x.as_str().into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .step("queue.bind with an empty queue name")?;
    publish(&ch, &x, "k", b"via-binding").await?;
    wait_message_count(&ch, &qn, 1).await?;
    let m = ch
        .basic_get("".into(), BasicGetOptions { no_ack: true })
        .await
        .step("basic.get with an empty queue name")?;
    check_eq(
        "body from basic.get ''",
        m.map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned()),
        Some("via-binding".to_string()),
    )?;
    publish(&ch, "", &qn, b"p").await?;
    wait_message_count(&ch, &qn, 1).await?;
    check_eq(
        "purge '' count",
        ch.queue_purge("".into(), QueuePurgeOptions::default())
            .await
            .step("queue.purge ''")?,
        1,
    )?;
    check_eq(
        "delete '' count",
        qdelete(&ch, "", false, false)
            .await
            .step("queue.delete ''")?,
        0,
    )?;
    expect_error(passive(&ch, &qn).await, 404, &no_queue(&qn))
}

async fn empty_name_no_previous(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let r = ch
        .basic_get("".into(), BasicGetOptions { no_ack: true })
        .await;
    expect_error(r, 404, "NOT_FOUND - no previously declared queue")?;
    expect_connection_usable(&c).await
}

async fn durable(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        qdecl(
            &ch,
            &q,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step("durable declare")?;
        let (_c2, ch2) = open(&ctx.uri).await?;
        passive(&ch2, &q)
            .await
            .step("passive declare from another connection")?;
        qdecl(
            &ch2,
            &q,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step("equivalent redeclare from another connection")?;
        qdelete(&ch, &q, false, false).await.step("queue.delete")?;
        Ok(())
    })
    .await
}

async fn inequivalent(
    ctx: &Ctx,
    first: (QueueDeclareOptions, FieldTable),
    second: (QueueDeclareOptions, FieldTable),
    code: u16,
    text: impl Fn(&str) -> String,
) -> Outcome {
    let cl = Cleanup::new(ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        qdecl(&ch, &q, first.0, first.1)
            .await
            .step("first declare")?;
        expect_error(qdecl(&ch, &q, second.0, second.1).await, code, &text(&q))?;
        expect_connection_usable(&c).await
    })
    .await
}

async fn inequivalent_durable(ctx: Ctx) -> Outcome {
    inequivalent(
        &ctx,
        (QueueDeclareOptions::default(), FieldTable::default()),
        (QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()),
        406,
        |q| format!("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
    )
    .await
}

async fn inequivalent_auto_delete(ctx: Ctx) -> Outcome {
    inequivalent(
        &ctx,
        (QueueDeclareOptions::default(), FieldTable::default()),
        (QueueDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default()),
        406,
        |q| format!("PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
    )
    .await
}

async fn inequivalent_args(ctx: Ctx) -> Outcome {
    let mut ttl = FieldTable::default();
    ttl.insert("x-message-ttl".into(), AMQPValue::LongInt(60000));
    inequivalent(
        &ctx,
        (QueueDeclareOptions::default(), FieldTable::default()),
        (QueueDeclareOptions::default(), ttl),
        406,
        |q| format!("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received the value '60000' of type 'signedint' but current is none"),
    )
    .await
}

async fn inequivalent_exclusive(ctx: Ctx) -> Outcome {
    inequivalent(
        &ctx,
        (QueueDeclareOptions::default(), FieldTable::default()),
        (
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
        405,
        locked,
    )
    .await
}

async fn amq_prefix(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = format!("amq.{}", ctx.name("q"));
    let r = qdecl(
        &ch,
        &q,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await;
    expect_error(
        r,
        403,
        &format!("ACCESS_REFUSED - queue name '{q}' contains reserved prefix 'amq.*'"),
    )?;
    expect_connection_usable(&c).await
}

/// A short string cannot be longer than 255 bytes on the wire; 255 is accepted.
async fn name_255(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let base = ctx.name("q");
    let q: String = base
        .chars()
        .chain(std::iter::repeat('x'))
        .take(255)
        .collect();
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq("name length", ok.name().as_str().len(), 255)?;
    publish(&ch, "", &q, b"long-name").await?;
    let m = get_one(&ch, &q, true).await?;
    check_eq("routing key", m.delivery.routing_key.as_str(), q.as_str())
}

/// A reply text longer than a short string allows is cut to 252 bytes plus `...`.
async fn long_reply_text(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q: String = ctx
        .name("missing")
        .chars()
        .chain(std::iter::repeat('y'))
        .take(255)
        .collect();
    let full = no_queue(&q);
    let expected = format!("{}...", &full[..252]);
    match passive(&ch, &q).await {
        Err(e) => check_eq("reply", amqp_error(&e), Some((404, expected))),
        Ok(_) => Err(Failure::new("404", "declare-ok")),
    }
}

async fn invalid_arg_type(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongString("ten".into()));
    let r = qdecl(
        &ch,
        &q,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        args,
    )
    .await;
    expect_error(r, 406, &format!("PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '{q}' in vhost '/': \"expected integer, got longstr\""))?;
    expect_connection_usable(&c).await
}

async fn purge_count(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    for b in [b"1", b"2", b"3"] {
        publish(&ch, "", &q, b).await?;
    }
    wait_message_count(&ch, &q, 3).await?;
    check_eq(
        "purge-ok message_count",
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await
            .step("queue.purge")?,
        3,
    )?;
    expect_empty(&ch, &q).await?;
    check_eq(
        "second purge count",
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await
            .step("queue.purge")?,
        0,
    )
}

async fn purge_keeps_unacked(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish(&ch, "", &q, b"unacked").await?;
    publish(&ch, "", &q, b"ready").await?;
    wait_message_count(&ch, &q, 2).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let held = get_one(&ch2, &q, false).await?;
    check_eq(
        "held body",
        held.delivery.data.as_slice(),
        b"unacked".as_slice(),
    )?;
    check_eq(
        "purge count (ready only)",
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await
            .step("queue.purge")?,
        1,
    )?;
    ch2.close(200, "bye".into()).await.step("channel.close")?;
    let m = get_one(&ch, &q, true).await?;
    check_eq(
        "unacked message survives the purge",
        m.delivery.data.as_slice(),
        b"unacked".as_slice(),
    )?;
    check("redelivered", m.delivery.redelivered)
}

async fn purge_missing(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("missing");
    expect_error(
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await,
        404,
        &no_queue(&q),
    )
}

async fn delete_count(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_queue(&ch, &q).await?;
        for b in [b"1", b"2", b"3", b"4"] {
            publish(&ch, "", &q, b).await?;
        }
        wait_message_count(&ch, &q, 4).await?;
        check_eq(
            "delete-ok message_count",
            qdelete(&ch, &q, false, false).await.step("queue.delete")?,
            4,
        )?;
        expect_error(passive(&ch, &q).await, 404, &no_queue(&q))
    })
    .await
}

async fn delete_missing(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("missing");
    // RabbitMQ 3.10 answers delete-ok with a count of 0 for a queue that does not exist.
    check_eq(
        "delete-ok message_count",
        qdelete(&ch, &q, false, false)
            .await
            .step("queue.delete of a missing queue")?,
        0,
    )?;
    check_eq(
        "delete-ok (if-empty)",
        qdelete(&ch, &q, true, true)
            .await
            .step("queue.delete if-unused if-empty of a missing queue")?,
        0,
    )
}

async fn delete_if_unused(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let consumer_ch = c.create_channel().await.step("channel.open")?;
    let _consumer = consume(&consumer_ch, &q, false).await?;
    expect_error(
        qdelete(&ch, &q, true, false).await,
        406,
        &format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"),
    )?;
    let ch = c.create_channel().await.step("channel.open")?;
    passive(&ch, &q).await.step("queue still there")?;
    Ok(())
}

async fn delete_if_empty(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish(&ch, "", &q, b"m").await?;
    wait_message_count(&ch, &q, 1).await?;
    expect_error(
        qdelete(&ch, &q, false, true).await,
        406,
        &format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty"),
    )?;
    let ch = c.create_channel().await.step("channel.open")?;
    let ok = passive(&ch, &q).await.step("queue still there")?;
    check_eq("message_count", ok.message_count(), 1)
}

async fn delete_if_empty_ok(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    check_eq(
        "count",
        qdelete(&ch, &q, true, true)
            .await
            .step("delete if-unused if-empty")?,
        0,
    )?;
    expect_error(passive(&ch, &q).await, 404, &no_queue(&q))
}
