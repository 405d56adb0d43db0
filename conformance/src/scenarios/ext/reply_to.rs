//! Direct reply-to: a requester consumes the pseudo-queue `amq.rabbitmq.reply-to` in no-ack
//! mode and publishes requests with `reply_to: amq.rabbitmq.reply-to`; the broker rewrites
//! that property to `amq.rabbitmq.reply-to.<opaque>`, and a reply published to that name
//! through the default exchange is delivered straight to the requester's consumer.

use super::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use lapin::BasicProperties;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.direct_reply_to.round_trip",
            "direct reply-to",
            round_trip
        ),
        scenario!(
            "ext.direct_reply_to.reply_after_requester_gone",
            "direct reply-to",
            requester_gone
        ),
        scenario!(
            "ext.direct_reply_to.consume_twice_406",
            "direct reply-to",
            consume_twice
        ),
        scenario!(
            "ext.direct_reply_to.publish_after_cancel_406",
            "direct reply-to",
            after_cancel
        ),
        scenario!(
            "ext.direct_reply_to.ack_mode_406",
            "direct reply-to",
            ack_mode
        ),
        scenario!(
            "ext.direct_reply_to.publish_without_consumer_406",
            "direct reply-to",
            no_consumer
        ),
        scenario!(
            "ext.direct_reply_to.passive_declare",
            "direct reply-to",
            passive_declare
        ),
        scenario!(
            "ext.direct_reply_to.unknown_name_404",
            "direct reply-to",
            unknown_name
        ),
    ]
}

const PSEUDO: &str = "amq.rabbitmq.reply-to";

async fn requester(ch: &lapin::Channel) -> Result<lapin::Consumer, Failure> {
    ch.basic_consume(
        PSEUDO.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step("basic.consume amq.rabbitmq.reply-to no-ack")
}

/// Requester and server on two connections: returns the rewritten reply_to the server saw.
async fn exchange_request(ctx: &Ctx) -> Result<String, Failure> {
    let (_rc, rch) = open(&ctx.uri).await?;
    let (_sc, sch) = open(&ctx.uri).await?;
    let q = ctx.name("rpc");
    declare_exclusive(&sch, &q).await?;
    let mut replies = requester(&rch).await?;
    publish_p(
        &rch,
        "",
        &q,
        "request",
        BasicProperties::default().with_reply_to(PSEUDO.into()),
    )
    .await?;
    let req = get_one(&sch, &q, true).await?.delivery;
    let reply_to = req
        .properties
        .reply_to()
        .as_ref()
        .map(|s| s.as_str().to_string())
        .ok_or_else(|| Failure::new("a reply_to on the request", "none"))?;
    check(
        &format!("reply_to {reply_to:?} starts with amq.rabbitmq.reply-to. and has more"),
        reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > PSEUDO.len() + 1,
    )?;
    // The server can check that the requester is still there.
    let ok = sch
        .queue_declare(
            reply_to.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step("passive queue.declare of the reply-to name")?;
    check_eq(
        "passive declare-ok",
        (
            ok.name().as_str().to_string(),
            ok.message_count(),
            ok.consumer_count(),
        ),
        (reply_to.clone(), 0, 1),
    )?;
    publish_p(
        &sch,
        "",
        &reply_to,
        "reply",
        BasicProperties::default().with_correlation_id("c1".into()),
    )
    .await?;
    let d = next_delivery(&mut replies).await?;
    check_eq("reply body", body(&d), "reply".into())?;
    check_eq(
        "reply exchange and routing key",
        (
            d.exchange.as_str().to_string(),
            d.routing_key.as_str().to_string(),
        ),
        (String::new(), reply_to.clone()),
    )?;
    check_eq(
        "correlation_id",
        d.properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        Some("c1".into()),
    )?;
    check_eq("redelivered", d.redelivered, false)?;
    Ok(reply_to)
}

async fn round_trip(ctx: Ctx) -> Outcome {
    exchange_request(&ctx).await.map(|_| ())
}

/// A reply to a requester whose channel has closed is dropped silently; the replying channel
/// stays open, and the name no longer passes a passive declare.
async fn requester_gone(ctx: Ctx) -> Outcome {
    let (rc, rch) = open(&ctx.uri).await?;
    let (sc, sch) = open(&ctx.uri).await?;
    let q = ctx.name("rpc");
    declare_exclusive(&sch, &q).await?;
    let _replies = requester(&rch).await?;
    publish_p(
        &rch,
        "",
        &q,
        "request",
        BasicProperties::default().with_reply_to(PSEUDO.into()),
    )
    .await?;
    let req = get_one(&sch, &q, true).await?.delivery;
    let reply_to = req
        .properties
        .reply_to()
        .as_ref()
        .map(|s| s.as_str().to_string())
        .ok_or_else(|| Failure::new("a reply_to on the request", "none"))?;
    rch.close(200, "bye".into()).await.step("channel.close")?;
    publish_p(&sch, "", &reply_to, "late reply", Default::default()).await?;
    sync(&sch).await?;
    let ch2 = sc.create_channel().await.step("channel.open")?;
    let r = ch2
        .queue_declare(
            reply_to.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    expect_error(
        r,
        404,
        &format!("NOT_FOUND - no queue '{reply_to}' in vhost '/'"),
    )?;
    expect_connection_usable(&sc).await?;
    expect_connection_usable(&rc).await
}

async fn consume_twice(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let _first = requester(&ch).await?;
    let r = ch
        .basic_consume(
            PSEUDO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    expect_error(
        r.map(|_| ()),
        406,
        "PRECONDITION_FAILED - reply consumer already set",
    )?;
    expect_connection_usable(&c).await
}

/// After the reply consumer is cancelled, publishing with the pseudo reply_to fails again.
async fn after_cancel(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("rpc");
    declare_exclusive(&ch, &q).await?;
    let cons = requester(&ch).await?;
    ch.basic_cancel(cons.tag(), BasicCancelOptions::default())
        .await
        .step("basic.cancel")?;
    let mut ev = events(&c);
    publish_p(
        &ch,
        "",
        &q,
        "request",
        BasicProperties::default().with_reply_to(PSEUDO.into()),
    )
    .await?;
    expect_async_error(
        &mut ev,
        406,
        "PRECONDITION_FAILED - fast reply consumer does not exist",
    )
    .await?;
    expect_channel_unusable(&ch).await
}

async fn ack_mode(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let r = ch
        .basic_consume(
            PSEUDO.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_error(
        r.map(|_| ()),
        406,
        "PRECONDITION_FAILED - reply consumer cannot acknowledge",
    )?;
    expect_connection_usable(&c).await
}

async fn no_consumer(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("rpc");
    declare_exclusive(&ch, &q).await?;
    let mut ev = events(&c);
    publish_p(
        &ch,
        "",
        &q,
        "request",
        BasicProperties::default().with_reply_to(PSEUDO.into()),
    )
    .await?;
    expect_async_error(
        &mut ev,
        406,
        "PRECONDITION_FAILED - fast reply consumer does not exist",
    )
    .await?;
    expect_channel_unusable(&ch).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    check_eq("request not enqueued", counts(&ch2, &q).await?.0, 0)
}

async fn passive_declare(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let ok = ch
        .queue_declare(
            PSEUDO.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step("passive queue.declare amq.rabbitmq.reply-to")?;
    check_eq(
        "declare-ok",
        (ok.name().as_str(), ok.message_count(), ok.consumer_count()),
        (PSEUDO, 0, 1),
    )
}

async fn unknown_name(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let name = "amq.rabbitmq.reply-to.no-such-requester";
    let r = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    expect_error(
        r,
        404,
        &format!("NOT_FOUND - no queue '{name}' in vhost '/'"),
    )?;
    expect_connection_usable(&c).await
}
