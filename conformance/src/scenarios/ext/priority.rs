//! Priority queues: `x-max-priority` (1..255). Higher-priority messages are delivered first,
//! FIFO within a priority; a message without priority counts as 0, one above the maximum
//! counts as the maximum.

use super::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::BasicProperties;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("ext.priority.higher_first", "x-max-priority", higher_first),
        scenario!(
            "ext.priority.fifo_within_priority",
            "x-max-priority",
            fifo_within
        ),
        scenario!("ext.priority.none_is_zero", "x-max-priority", none_is_zero),
        scenario!("ext.priority.above_max_is_max", "x-max-priority", above_max),
        scenario!(
            "ext.priority.consumer_prefetch_one",
            "x-max-priority + basic.qos",
            prefetch_one
        ),
        scenario!(
            "ext.priority.requeue_keeps_priority",
            "x-max-priority + requeue",
            requeue
        ),
        scenario!("ext.priority.max_255_ok", "x-max-priority", max_255),
        scenario!("ext.priority.above_255_406", "x-max-priority", above_255),
        scenario!("ext.priority.zero_accepted", "x-max-priority", zero),
        scenario!("ext.priority.wrong_type_406", "x-max-priority", wrong_type),
    ]
}

fn prio(p: u8) -> BasicProperties {
    BasicProperties::default().with_priority(p)
}

fn max(n: i32) -> FieldTable {
    table(vec![("x-max-priority", int(n))])
}

/// Declares an exclusive priority queue, publishes (body, priority) pairs and drains it.
async fn order(
    ctx: &Ctx,
    max_p: i32,
    msgs: &[(&str, Option<u8>)],
) -> Result<Vec<String>, crate::Failure> {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, max(max_p)).await?;
    for (b, p) in msgs {
        let props = p.map(prio).unwrap_or_default();
        publish_p(&ch, "", &q, b, props).await?;
    }
    wait_message_count(&ch, &q, msgs.len() as u32).await?;
    drain(&ch, &q).await
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn higher_first(ctx: Ctx) -> Outcome {
    let got = order(
        &ctx,
        10,
        &[("low", Some(1)), ("mid", Some(5)), ("high", Some(9))],
    )
    .await?;
    check_eq("order", got, strs(&["high", "mid", "low"]))
}

async fn fifo_within(ctx: Ctx) -> Outcome {
    let got = order(
        &ctx,
        10,
        &[
            ("a", Some(5)),
            ("b", Some(5)),
            ("c", Some(1)),
            ("d", Some(5)),
        ],
    )
    .await?;
    check_eq("order", got, strs(&["a", "b", "d", "c"]))
}

async fn none_is_zero(ctx: Ctx) -> Outcome {
    let got = order(
        &ctx,
        10,
        &[
            ("none", None),
            ("zero", Some(0)),
            ("one", Some(1)),
            ("none2", None),
        ],
    )
    .await?;
    check_eq("order", got, strs(&["one", "none", "zero", "none2"]))
}

async fn above_max(ctx: Ctx) -> Outcome {
    let got = order(
        &ctx,
        5,
        &[
            ("nine", Some(9)),
            ("five", Some(5)),
            ("seven", Some(7)),
            ("four", Some(4)),
        ],
    )
    .await?;
    check_eq("order", got, strs(&["nine", "five", "seven", "four"]))
}

async fn prefetch_one(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, max(10)).await?;
    publish_p(&ch, "", &q, "low1", prio(1)).await?;
    wait_message_count(&ch, &q, 1).await?;
    ch.basic_qos(1, BasicQosOptions::default())
        .await
        .step("basic.qos")?;
    let mut cons = consume(&ch, &q, false).await?;
    let d = next_delivery(&mut cons).await?;
    check_eq("first", body(&d), "low1".into())?;
    publish_p(&ch, "", &q, "low2", prio(1)).await?;
    publish_p(&ch, "", &q, "high", prio(9)).await?;
    wait_message_count(&ch, &q, 2).await?;
    d.acker
        .ack(BasicAckOptions::default())
        .await
        .step("basic.ack")?;
    let d = next_delivery(&mut cons).await?;
    check_eq("second", body(&d), "high".into())?;
    d.acker
        .ack(BasicAckOptions::default())
        .await
        .step("basic.ack")?;
    check_eq(
        "third",
        body(&next_delivery(&mut cons).await?),
        "low2".into(),
    )
}

async fn requeue(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, max(10)).await?;
    publish_p(&ch, "", &q, "high", prio(9)).await?;
    let m = get_one(&ch, &q, false).await?;
    publish_p(&ch, "", &q, "low", prio(1)).await?;
    publish_p(&ch, "", &q, "high2", prio(9)).await?;
    wait_message_count(&ch, &q, 2).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .step("basic.reject requeue")?;
    wait_message_count(&ch, &q, 3).await?;
    check_eq(
        "order",
        drain(&ch, &q).await?,
        strs(&["high", "high2", "low"]),
    )
}

async fn max_255(ctx: Ctx) -> Outcome {
    let got = order(
        &ctx,
        255,
        &[("a", Some(254)), ("b", Some(255)), ("c", Some(100))],
    )
    .await?;
    check_eq("order", got, strs(&["b", "a", "c"]))
}

async fn above_255(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        max(256),
        &invalid_arg("x-max-priority", &q, "{max_value_exceeded,256}"),
    )
    .await
}

/// x-max-priority 0 is accepted (RabbitMQ only refuses negatives and values above 255);
/// every priority then counts as 0: plain FIFO.
async fn zero(ctx: Ctx) -> Outcome {
    let got = order(&ctx, 0, &[("a", Some(1)), ("b", Some(9)), ("c", None)]).await?;
    check_eq("order", got, strs(&["a", "b", "c"]))
}

async fn wrong_type(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-max-priority", lstr("10"))]),
        &invalid_arg("x-max-priority", &q, "\"expected integer, got longstr\""),
    )
    .await
}
