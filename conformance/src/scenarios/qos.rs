//! basic.qos: per-consumer prefetch (global=false) and RabbitMQ's reinterpretation of
//! global=true as a limit shared by all consumers of the channel.

use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::options::*;
use std::time::Duration;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "basic.qos.prefetch_per_consumer",
            "basic.qos",
            prefetch_per_consumer
        ),
        scenario!(
            "basic.qos.prefetch_global_per_channel",
            "basic.qos global",
            prefetch_global
        ),
        scenario!(
            "basic.qos.only_later_consumers",
            "basic.qos",
            qos_only_later_consumers
        ),
        scenario!("basic.qos.both_limits", "basic.qos global", qos_both_limits),
        scenario!(
            "basic.qos.consumer_qos_clears_global",
            "basic.qos global",
            qos_consumer_clears_global
        ),
        scenario!(
            "basic.qos.prefetch_ignores_get_and_no_ack",
            "basic.qos",
            qos_ignores_no_ack
        ),
    ]
}

/// How long to watch for a delivery that must not come (prefetch limits).
const QUIET: Duration = Duration::from_millis(300);

async fn prefetch_per_consumer(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    for i in 0..5 {
        publish(&ch, "", &q, i.to_string().as_bytes()).await?;
    }
    wait_message_count(&ch, &q, 5).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    cch.basic_qos(2, BasicQosOptions { global: false })
        .await
        .step("basic.qos 2")?;
    let mut cons = consume(&cch, &q, false).await?;
    let d1 = next_delivery(&mut cons).await?;
    let _d2 = next_delivery(&mut cons).await?;
    sync(&cch).await?;
    expect_no_delivery(&mut cons, QUIET).await?;
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq("ready messages while 2 are unacked", ok.message_count(), 3)?;
    d1.acker.ack(BasicAckOptions::default()).await.step("ack")?;
    let d3 = next_delivery(&mut cons).await?;
    check_eq("third body", d3.data.as_slice(), b"2".as_slice())?;
    sync(&cch).await?;
    expect_no_delivery(&mut cons, QUIET).await
}

/// RabbitMQ reinterprets global=true as a limit shared by all consumers on the channel.
async fn prefetch_global(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q1 = ctx.name("q1");
    let q2 = ctx.name("q2");
    declare_exclusive(&ch, &q1).await?;
    declare_exclusive(&ch, &q2).await?;
    for i in 0..4 {
        publish(&ch, "", &q1, format!("a{i}").as_bytes()).await?;
        publish(&ch, "", &q2, format!("b{i}").as_bytes()).await?;
    }
    wait_message_count(&ch, &q1, 4).await?;
    wait_message_count(&ch, &q2, 4).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    cch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .step("basic.qos 3 global")?;
    let mut a = consume(&cch, &q1, false).await?;
    let mut b = consume(&cch, &q2, false).await?;
    // Collect everything that arrives: exactly 3 in total across both consumers.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            d = next_delivery(&mut a) => got.push(d?),
            d = next_delivery(&mut b) => got.push(d?),
        }
    }
    check_eq("deliveries within the channel limit", got.len(), 3)?;
    sync(&cch).await?;
    expect_no_delivery(&mut a, QUIET).await?;
    expect_no_delivery(&mut b, Duration::from_millis(50)).await?;
    let ok1 = declare_exclusive(&ch, &q1).await?;
    let ok2 = declare_exclusive(&ch, &q2).await?;
    check_eq(
        "ready messages left",
        ok1.message_count() + ok2.message_count(),
        5,
    )?;
    // Everything up to the last tag, rather than tag 0: lapin drops the deliveries it has
    // buffered when it sends an ack of tag 0 with multiple, and under load the three that
    // this ack lets through can arrive before it does so.
    let last = got.iter().map(|d| d.delivery_tag).max().unwrap_or(0);
    cch.basic_ack(last, BasicAckOptions { multiple: true })
        .await
        .step("ack all")?;
    // Three more may now flow.
    let mut more = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while more < 3 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            d = next_delivery(&mut a) => { d?; more += 1; }
            d = next_delivery(&mut b) => { d?; more += 1; }
        }
    }
    check_eq("deliveries after acking", more, 3)
}

/// A per-consumer prefetch applies to consumers started after basic.qos, not before.
async fn qos_only_later_consumers(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q1 = ctx.name("before");
    let q2 = ctx.name("after");
    declare_exclusive(&ch, &q1).await?;
    declare_exclusive(&ch, &q2).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    let mut before = consume(&cch, &q1, false).await?;
    cch.basic_qos(1, BasicQosOptions { global: false })
        .await
        .step("basic.qos 1")?;
    let mut after = consume(&cch, &q2, false).await?;
    for i in 0..3 {
        publish(&ch, "", &q1, i.to_string().as_bytes()).await?;
        publish(&ch, "", &q2, i.to_string().as_bytes()).await?;
    }
    check_eq(
        "unlimited consumer gets all",
        bodies(&mut before, 3).await?.len(),
        3,
    )?;
    check_eq(
        "limited consumer gets one",
        bodies(&mut after, 1).await?.len(),
        1,
    )?;
    sync(&cch).await?;
    expect_no_delivery(&mut after, QUIET).await
}

/// With both a consumer limit and then a channel (global) limit, the smaller one holds.
async fn qos_both_limits(ctx: Ctx) -> Outcome {
    qos_pair(&ctx, (4, false), (2, true), 2).await
}

/// RabbitMQ quirk: basic.qos with global=false removes an earlier channel-wide (global)
/// limit, so global 2 followed by per-consumer 4 lets 4 through.
async fn qos_consumer_clears_global(ctx: Ctx) -> Outcome {
    qos_pair(&ctx, (2, true), (4, false), 4).await
}

/// Applies two basic.qos in order, starts one consumer on 6 ready messages and expects
/// exactly `expected` deliveries before any ack.
async fn qos_pair(ctx: &Ctx, first: (u16, bool), second: (u16, bool), expected: usize) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    for i in 0..6 {
        publish(&ch, "", &q, i.to_string().as_bytes()).await?;
    }
    wait_message_count(&ch, &q, 6).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    for (n, global) in [first, second] {
        cch.basic_qos(n, BasicQosOptions { global })
            .await
            .step(&format!("basic.qos {n} global={global}"))?;
    }
    let mut cons = consume(&cch, &q, false).await?;
    let want: Vec<String> = (0..expected).map(|i| i.to_string()).collect();
    check_eq("deliveries", bodies(&mut cons, expected).await?, want)?;
    sync(&cch).await?;
    expect_no_delivery(&mut cons, QUIET).await
}

/// Prefetch does not limit no-ack consumers, nor basic.get.
async fn qos_ignores_no_ack(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    for i in 0..5 {
        publish(&ch, "", &q, i.to_string().as_bytes()).await?;
    }
    wait_message_count(&ch, &q, 5).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    cch.basic_qos(1, BasicQosOptions { global: false })
        .await
        .step("basic.qos 1")?;
    cch.basic_qos(1, BasicQosOptions { global: true })
        .await
        .step("basic.qos 1 global")?;
    let g1 = get_one(&cch, &q, false).await?;
    let g2 = get_one(&cch, &q, false).await?;
    check_eq(
        "two unacked basic.get",
        (g1.delivery.delivery_tag, g2.delivery.delivery_tag),
        (1, 2),
    )?;
    let mut cons = consume(&cch, &q, true).await?;
    check_eq(
        "no-ack consumer gets the rest",
        bodies(&mut cons, 3).await?,
        vec!["2".to_string(), "3".to_string(), "4".to_string()],
    )
}
