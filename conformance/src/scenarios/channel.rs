//! channel.open / channel.close / channel.flow, and the isolation of channel errors.

use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::options::*;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("channel.open_several", "channel.open", open_several),
        scenario!(
            "channel.many_sequential",
            "channel.open / channel.close",
            many_sequential
        ),
        scenario!("channel.close_one_others_work", "channel.close", close_one),
        scenario!(
            "channel.error_closes_only_that_channel",
            "channel.close (error)",
            error_isolated
        ),
        scenario!(
            "channel.closed_channel_refuses_operations",
            "channel.close",
            closed_refuses
        ),
        scenario!(
            "channel.close_cancels_consumers",
            "channel.close",
            close_cancels_consumers
        ),
        scenario!("channel.flow_active", "channel.flow", flow_active),
        scenario!("channel.flow_inactive_540", "channel.flow", flow_inactive),
    ]
}

async fn open_several(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let mut chans = Vec::new();
    for _ in 0..10 {
        chans.push(conn.create_channel().await.step("channel.open")?);
    }
    let mut ids: Vec<u16> = chans.iter().map(|c| c.id()).collect();
    ids.sort();
    ids.dedup();
    check_eq("distinct channel ids", ids.len(), 10)?;
    let q = ctx.name("q");
    declare_exclusive(&chans[0], &q).await?;
    // Each channel can publish and get independently.
    for (i, ch) in chans.iter().enumerate() {
        publish(ch, "", &q, i.to_string().as_bytes()).await?;
    }
    wait_message_count(&chans[0], &q, 10).await?;
    for ch in &chans {
        get_one(ch, &q, false).await?;
    }
    Ok(())
}

async fn many_sequential(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    for i in 0..100 {
        let ch = conn
            .create_channel()
            .await
            .step(&format!("channel.open #{i}"))?;
        sync(&ch).await?;
        ch.close(200, "bye".into()).await.step("channel.close")?;
    }
    expect_connection_usable(&conn).await
}

async fn close_one(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let a = conn.create_channel().await.step("channel.open")?;
    let b = conn.create_channel().await.step("channel.open")?;
    let q = ctx.name("q");
    declare_exclusive(&a, &q).await?;
    let mut cons = consume(&b, &q, true).await?;
    let c = conn.create_channel().await.step("channel.open")?;
    c.close(200, "bye".into()).await.step("channel.close")?;
    publish(&a, "", &q, b"still-works").await?;
    check_eq(
        "delivery on the surviving channel",
        bodies(&mut cons, 1).await?,
        vec!["still-works".to_string()],
    )
}

async fn error_isolated(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let good = conn.create_channel().await.step("channel.open")?;
    let bad = conn.create_channel().await.step("channel.open")?;
    let q = ctx.name("q");
    declare_exclusive(&good, &q).await?;
    let mut cons = consume(&good, &q, false).await?;
    let missing = ctx.name("missing");
    let r = bad
        .queue_declare(
            missing.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    expect_error(
        r,
        404,
        &format!("NOT_FOUND - no queue '{missing}' in vhost '/'"),
    )?;
    expect_channel_unusable(&bad).await?;
    publish(&good, "", &q, b"after-error").await?;
    let d = next_delivery(&mut cons).await?;
    check_eq("body", d.data.as_slice(), b"after-error".as_slice())?;
    d.acker
        .ack(BasicAckOptions::default())
        .await
        .step("ack on the good channel")?;
    check("connection still open", conn.status().connected())
}

async fn closed_refuses(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    ch.close(200, "bye".into()).await.step("channel.close")?;
    match ch.basic_qos(1, BasicQosOptions::default()).await {
        Ok(()) => Err(crate::Failure::new(
            "an error on a closed channel",
            "basic.qos-ok",
        )),
        Err(_) => Ok(()),
    }
}

async fn close_cancels_consumers(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let ch = conn.create_channel().await.step("channel.open")?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let cch = conn.create_channel().await.step("channel.open")?;
    let _a = consume(&cch, &q, false).await?;
    let _b = consume(&cch, &q, false).await?;
    check_eq(
        "consumers",
        declare_exclusive(&ch, &q).await?.consumer_count(),
        2,
    )?;
    cch.close(200, "bye".into()).await.step("channel.close")?;
    check_eq(
        "consumers after the channel closed",
        declare_exclusive(&ch, &q).await?.consumer_count(),
        0,
    )
}

async fn flow_active(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let active = ch
        .channel_flow(ChannelFlowOptions { active: true })
        .await
        .step("channel.flow active=true")?;
    check_eq("flow-ok active", active, true)?;
    sync(&ch).await
}

/// RabbitMQ does not let clients stop deliveries with channel.flow: a connection error.
async fn flow_inactive(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let r = ch.channel_flow(ChannelFlowOptions { active: false }).await;
    expect_error(r, 540, "NOT_IMPLEMENTED - active=false")?;
    wait_connection_closed(&c).await
}
