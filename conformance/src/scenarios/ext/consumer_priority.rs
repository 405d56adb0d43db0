//! Consumer priorities: the `x-priority` consume argument. Messages go to the
//! highest-priority consumer that has prefetch capacity; lower-priority consumers get
//! messages only while all higher ones are blocked. Consumers of equal priority share
//! round-robin. The default priority is 0; negative priorities are allowed.

use super::*;
use crate::{Ctx, Outcome, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.consumer_priority.higher_gets_messages",
            "basic.consume x-priority",
            higher_gets
        ),
        scenario!(
            "ext.consumer_priority.falls_back_when_blocked",
            "basic.consume x-priority",
            falls_back
        ),
        scenario!(
            "ext.consumer_priority.negative_below_default",
            "basic.consume x-priority",
            negative
        ),
        scenario!(
            "ext.consumer_priority.equal_round_robin",
            "basic.consume x-priority",
            equal_round_robin
        ),
        scenario!(
            "ext.consumer_priority.wrong_type_406",
            "basic.consume x-priority",
            wrong_type
        ),
    ]
}

fn prio(p: i32) -> FieldTable {
    table(vec![("x-priority", int(p))])
}

/// A channel with prefetch `n` and a consumer of `q` with the given arguments.
async fn consumer_on(
    conn: &lapin::Connection,
    q: &str,
    prefetch: u16,
    args: FieldTable,
) -> Result<(lapin::Channel, lapin::Consumer), crate::Failure> {
    let ch = conn.create_channel().await.step("channel.open")?;
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .step("basic.qos")?;
    let cons = consume_args(&ch, q, false, args)
        .await
        .step("basic.consume")?;
    Ok((ch, cons))
}

async fn higher_gets(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    // The low-priority consumer registers first: registration order does not matter.
    let (lch, mut low) = consumer_on(&c, &q, 10, FieldTable::default()).await?;
    let (_hch, mut high) = consumer_on(&c, &q, 10, prio(10)).await?;
    for i in 0..5 {
        publish(&ch, "", &q, format!("m{i}").as_bytes()).await?;
    }
    check_eq(
        "high consumer",
        bodies(&mut high, 5).await?,
        (0..5).map(|i| format!("m{i}")).collect::<Vec<_>>(),
    )?;
    sync(&lch).await?;
    expect_no_delivery(&mut low, std::time::Duration::from_millis(100)).await
}

async fn falls_back(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let (_lch, mut low) = consumer_on(&c, &q, 10, prio(1)).await?;
    let (_hch, mut high) = consumer_on(&c, &q, 1, prio(5)).await?;
    for b in ["a", "b", "c"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    let h = next_delivery(&mut high).await?;
    check_eq("high gets the first", body(&h), "a".into())?;
    check_eq(
        "low gets the rest while high is blocked",
        bodies(&mut low, 2).await?,
        vec!["b".to_string(), "c".into()],
    )?;
    h.acker
        .ack(BasicAckOptions::default())
        .await
        .step("basic.ack")?;
    publish(&ch, "", &q, b"d").await?;
    check_eq(
        "high again once it has capacity",
        body(&next_delivery(&mut high).await?),
        "d".into(),
    )
}

async fn negative(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let (_nch, mut neg) = consumer_on(&c, &q, 1, prio(-5)).await?;
    let (_dch, mut dflt) = consumer_on(&c, &q, 1, FieldTable::default()).await?;
    publish(&ch, "", &q, b"a").await?;
    publish(&ch, "", &q, b"b").await?;
    check_eq(
        "default-priority consumer first",
        body(&next_delivery(&mut dflt).await?),
        "a".into(),
    )?;
    check_eq(
        "then the negative one",
        body(&next_delivery(&mut neg).await?),
        "b".into(),
    )
}

/// Two consumers of the same (non-default) priority above a default one share round-robin.
async fn equal_round_robin(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let (dch, mut dflt) = consumer_on(&c, &q, 10, FieldTable::default()).await?;
    let (_ach, mut a) = consumer_on(&c, &q, 10, prio(3)).await?;
    let (_bch, mut b) = consumer_on(&c, &q, 10, prio(3)).await?;
    for i in 0..4 {
        publish(&ch, "", &q, format!("m{i}").as_bytes()).await?;
    }
    check_eq(
        "first",
        bodies(&mut a, 2).await?,
        vec!["m0".to_string(), "m2".into()],
    )?;
    check_eq(
        "second",
        bodies(&mut b, 2).await?,
        vec!["m1".to_string(), "m3".into()],
    )?;
    sync(&dch).await?;
    expect_no_delivery(&mut dflt, std::time::Duration::from_millis(100)).await
}

async fn wrong_type(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let r = consume_args(&ch2, &q, false, table(vec![("x-priority", lstr("high"))])).await;
    expect_error(
        r.map(|_| ()),
        406,
        &invalid_arg("x-priority", &q, "\"expected integer, got longstr\""),
    )?;
    expect_connection_usable(&c).await
}
