//! Consumer arguments around cancellation: `x-cancel-on-ha-failover` is accepted (and has
//! no effect on a single node). The per-queue `x-consumer-timeout` argument is a RabbitMQ
//! 3.12 feature: 3.10 accepts it as an unknown argument (see `ext.args.unknown_argument_ignored`).
//! The default consumer timeout (30 min) is not tested.

use super::*;
use crate::{Ctx, Outcome, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.cancel.cancel_on_ha_failover_accepted",
            "basic.consume x-cancel-on-ha-failover",
            ha_failover
        ),
        scenario!(
            "ext.cancel.unknown_consume_argument_accepted",
            "basic.consume arguments",
            unknown_consume_arg
        ),
        scenario!(
            "ext.cancel.queue_deleted_cancels_priority_consumer",
            "basic.cancel (server)",
            deleted_cancels
        ),
    ]
}

async fn ha_failover(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut cons = consume_args(
        &ch,
        &q,
        true,
        table(vec![("x-cancel-on-ha-failover", AMQPValue::Boolean(true))]),
    )
    .await
    .step("basic.consume x-cancel-on-ha-failover")?;
    publish(&ch, "", &q, b"m").await?;
    check_eq(
        "delivery",
        body(&next_delivery(&mut cons).await?),
        "m".into(),
    )
}

async fn unknown_consume_arg(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut cons = consume_args(
        &ch,
        &q,
        true,
        table(vec![
            ("x-no-such-argument", lstr("v")),
            ("x-consumer-timeout", int(1)),
        ]),
    )
    .await
    .step("basic.consume with unknown arguments")?;
    publish(&ch, "", &q, b"m").await?;
    check_eq(
        "delivery",
        body(&next_delivery(&mut cons).await?),
        "m".into(),
    )
}

async fn deleted_cancels(ctx: Ctx) -> Outcome {
    use futures_lite::StreamExt;
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    let mut cons = consume_args(&cch, &q, true, table(vec![("x-priority", int(5))]))
        .await
        .step("basic.consume")?;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .step("queue.delete")?;
    match tokio::time::timeout(WAIT, cons.next()).await {
        Ok(None) => Ok(()),
        other => Err(crate::Failure::new(
            "consumer stream ends (basic.cancel)",
            format!("{other:?}"),
        )),
    }
}
