//! Single active consumer: `x-single-active-consumer: true`. Only the first registered
//! consumer receives messages; when it goes (basic.cancel, channel or connection close) the
//! next one in registration order takes over. When the first consumer's channel or
//! connection closes, its unacknowledged messages are requeued (redelivered=true) ahead of the
//! rest and go to the new active consumer; a basic.cancel does not requeue them (they stay
//! unacked on the old channel until it closes or acks them).
//!
//! Seen on RabbitMQ 3.10.8, not asserted: after the active consumer's basic.cancel (with
//! messages still unacked), the ready messages are not pushed to the next consumer (acking
//! the old consumer's messages did not help within 1 s); they are delivered with the requeue
//! when the old channel closes. A *publish* in that state crashes the classic queue process
//! (`{badmatch,false}` in `rabbit_amqqueue_process:attempt_delivery/4`): the queue is
//! restarted empty-handed and every consumer receives basic.cancel — a RabbitMQ bug, which
//! `ext.sac.cancel_hands_over` steers clear of. declare-ok's
//! consumer_count counts every consumer, active or waiting.

use super::*;
use crate::{Ctx, Outcome, Scenario};
use std::time::Duration;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.sac.only_first_receives",
            "x-single-active-consumer",
            only_first
        ),
        scenario!(
            "ext.sac.cancel_hands_over",
            "x-single-active-consumer",
            cancel_hands_over
        ),
        scenario!(
            "ext.sac.channel_close_hands_over",
            "x-single-active-consumer",
            channel_close
        ),
        scenario!(
            "ext.sac.connection_close_hands_over",
            "x-single-active-consumer",
            connection_close
        ),
        scenario!(
            "ext.sac.consumer_count_counts_all",
            "x-single-active-consumer",
            consumer_count
        ),
        scenario!(
            "ext.sac.wrong_type_406",
            "x-single-active-consumer",
            wrong_type
        ),
    ]
}

fn sac() -> FieldTable {
    table(vec![("x-single-active-consumer", AMQPValue::Boolean(true))])
}

async fn only_first(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, sac()).await?;
    let ch1 = c.create_channel().await.step("channel.open")?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let mut a = consume(&ch1, &q, true).await?;
    let mut b = consume(&ch2, &q, true).await?;
    for i in 0..4 {
        publish(&ch, "", &q, format!("m{i}").as_bytes()).await?;
    }
    check_eq(
        "first consumer",
        bodies(&mut a, 4).await?,
        (0..4).map(|i| format!("m{i}")).collect::<Vec<_>>(),
    )?;
    sync(&ch2).await?;
    expect_no_delivery(&mut b, Duration::from_millis(100)).await
}

#[derive(Clone, Copy)]
enum Leave {
    Cancel,
    ChannelClose,
    ConnectionClose,
}

/// Consumer `a` (on its own connection) holds two unacked messages, then goes by `how`;
/// `b` gets them back first (redelivered) and then the rest.
async fn hand_over(ctx: &Ctx, how: Leave) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_with(&ch, &q, false, sac())
        .await
        .step("queue.declare")?;
    let ca = connect(&ctx.uri).await?;
    let cha = ca.create_channel().await.step("channel.open")?;
    cha.basic_qos(2, BasicQosOptions::default())
        .await
        .step("basic.qos")?;
    let mut a = consume(&cha, &q, false).await?;
    let chb = c.create_channel().await.step("channel.open")?;
    let mut b = consume(&chb, &q, false).await?;
    for m in ["1", "2"] {
        publish(&ch, "", &q, m.as_bytes()).await?;
    }
    let d1 = next_delivery(&mut a).await?;
    let d2 = next_delivery(&mut a).await?;
    check_eq(
        "active consumer",
        (body(&d1), body(&d2)),
        ("1".to_string(), "2".into()),
    )?;
    publish(&ch, "", &q, b"3").await?;
    wait_message_count(&ch, &q, 1).await?;
    match how {
        Leave::Cancel => cha
            .basic_cancel(a.tag(), BasicCancelOptions::default())
            .await
            .step("basic.cancel")?,
        Leave::ChannelClose => cha.close(200, "bye".into()).await.step("channel.close")?,
        Leave::ConnectionClose => ca.close(200, "bye".into()).await.step("connection.close")?,
    }
    let mut got = Vec::new();
    if let Leave::Cancel = how {
        // basic.cancel does not requeue the unacked messages: they come back when the first
        // consumer's channel closes (see the module docs for why nothing else is published
        // in between).
        cha.close(200, "bye".into()).await.step("channel.close")?;
    }
    for _ in 0..3 {
        let d = next_delivery(&mut b).await?;
        got.push((body(&d), d.redelivered));
    }
    check_eq(
        "the next consumer",
        got,
        vec![
            ("1".to_string(), true),
            ("2".into(), true),
            ("3".into(), false),
        ],
    )?;
    Ok(())
}

async fn cancel_hands_over(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    cl.queue(ctx.name("q"));
    cl.finish(hand_over(&ctx, Leave::Cancel)).await
}

async fn channel_close(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    cl.queue(ctx.name("q"));
    cl.finish(hand_over(&ctx, Leave::ChannelClose)).await
}

async fn connection_close(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    cl.queue(ctx.name("q"));
    cl.finish(hand_over(&ctx, Leave::ConnectionClose)).await
}

async fn consumer_count(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, sac()).await?;
    let ch1 = c.create_channel().await.step("channel.open")?;
    let _a = consume(&ch1, &q, true).await?;
    let _b = consume(&ch1, &q, true).await?;
    let _c2 = consume(&ch1, &q, true).await?;
    let ok = declare_x(&ch, &q, sac()).await?;
    check_eq("declare-ok consumer_count", ok.consumer_count(), 3)
}

async fn wrong_type(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-single-active-consumer", lstr("true"))]),
        &invalid_arg(
            "x-single-active-consumer",
            &q,
            "{unacceptable_type,longstr}",
        ),
    )
    .await
}
