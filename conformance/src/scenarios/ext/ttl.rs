//! Message TTL: the `x-message-ttl` queue argument and the per-message `expiration`
//! property (a string of milliseconds). The lower of the two applies. Expired messages are
//! never delivered; RabbitMQ removes them when they reach the head of the queue (a message
//! with a short TTL behind one with a long TTL stays counted until then). TTL 0 means
//! "deliver now or drop". A requeued message keeps its original expiry.

use super::*;
use crate::{Ctx, Outcome, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.ttl.queue_ttl_expires_ready",
            "x-message-ttl",
            queue_ttl_expires
        ),
        scenario!(
            "ext.ttl.expired_never_delivered",
            "x-message-ttl",
            never_delivered
        ),
        scenario!(
            "ext.ttl.zero_dropped_without_consumer",
            "x-message-ttl 0",
            zero_dropped
        ),
        scenario!(
            "ext.ttl.zero_delivered_to_waiting_consumer",
            "x-message-ttl 0",
            zero_delivered
        ),
        scenario!(
            "ext.ttl.expires_while_consumer_blocked",
            "x-message-ttl + basic.qos",
            consumer_blocked
        ),
        scenario!(
            "ext.ttl.per_message_expiration",
            "expiration property",
            per_message
        ),
        scenario!(
            "ext.ttl.per_message_zero_dropped",
            "expiration property",
            per_message_zero
        ),
        scenario!(
            "ext.ttl.expired_behind_head_kept_until_head",
            "expiration property",
            behind_head
        ),
        scenario!(
            "ext.ttl.lower_of_queue_and_message",
            "x-message-ttl + expiration",
            lower_wins
        ),
        scenario!(
            "ext.ttl.requeue_keeps_expiry",
            "x-message-ttl + requeue",
            requeue_keeps
        ),
        scenario!(
            "ext.ttl.requeued_expired_dead_lettered",
            "x-message-ttl + requeue + x-dead-letter-exchange",
            requeue_expired_dl
        ),
        scenario!(
            "ext.ttl.expiration_property_delivered",
            "expiration property",
            property_kept
        ),
        scenario!(
            "ext.ttl.invalid_expiration_406",
            "expiration property",
            invalid_expiration
        ),
        scenario!(
            "ext.ttl.negative_expiration_406",
            "expiration property",
            negative_expiration
        ),
        scenario!(
            "ext.ttl.fractional_expiration_406",
            "expiration property",
            fractional_expiration
        ),
        scenario!(
            "ext.ttl.empty_expiration_406",
            "expiration property",
            empty_expiration
        ),
        scenario!(
            "ext.ttl.large_expiration_accepted",
            "expiration property",
            large_expiration
        ),
        scenario!(
            "ext.ttl.plus_sign_expiration_accepted",
            "expiration property",
            plus_sign
        ),
        scenario!("ext.ttl.large_ttl_accepted", "x-message-ttl", large_ttl),
        scenario!("ext.ttl.wrong_type_406", "x-message-ttl", wrong_type),
        scenario!("ext.ttl.negative_406", "x-message-ttl", negative_ttl),
    ]
}

fn ttl_args(ms: i32) -> FieldTable {
    table(vec![("x-message-ttl", int(ms))])
}

async fn queue_ttl_expires(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, ttl_args(2000)).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    check(
        "ack",
        publish_c(&ch, "", &q, "m", Default::default())
            .await?
            .is_ack(),
    )?;
    let (n, _) = counts(&ch, &q).await?;
    check_eq("message_count right after the publish", n, 1)?;
    wait_message_count(&ch, &q, 0).await?;
    expect_empty(&ch, &q).await
}

async fn never_delivered(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, ttl_args(100)).await?;
    publish_acked(&ch, "", &q, "expired", Default::default()).await?;
    wait_message_count(&ch, &q, 0).await?;
    let mut cons = consume(&ch, &q, true).await?;
    publish_acked(&ch, "", &q, "fresh", Default::default()).await?;
    check_eq(
        "first delivery",
        body(&next_delivery(&mut cons).await?),
        "fresh".into(),
    )
}

/// A message that expires while the only consumer is at its prefetch limit is never
/// delivered to it.
async fn consumer_blocked(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    let companion = ctx.name("companion");
    declare_x(&ch, &q, ttl_args(100)).await?;
    declare_x(&ch, &companion, ttl_args(100)).await?;
    ch.basic_qos(1, BasicQosOptions::default())
        .await
        .step("basic.qos")?;
    let mut cons = consume(&ch, &q, false).await?;
    publish_acked(&ch, "", &q, "first", Default::default()).await?;
    let d = next_delivery(&mut cons).await?;
    publish_acked(&ch, "", &q, "expires", Default::default()).await?;
    publish_acked(&ch, "", &companion, "later", Default::default()).await?;
    wait_message_count(&ch, &companion, 0).await?;
    d.acker
        .ack(BasicAckOptions::default())
        .await
        .step("basic.ack")?;
    publish_acked(&ch, "", &q, "fresh", Default::default()).await?;
    check_eq(
        "next delivery",
        body(&next_delivery(&mut cons).await?),
        "fresh".into(),
    )
}

async fn zero_dropped(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, ttl_args(0)).await?;
    publish_acked(&ch, "", &q, "nobody-waiting", Default::default()).await?;
    sync(&ch).await?;
    let mut cons = consume(&ch, &q, true).await?;
    publish_acked(&ch, "", &q, "waited-for", Default::default()).await?;
    check_eq(
        "first delivery",
        body(&next_delivery(&mut cons).await?),
        "waited-for".into(),
    )?;
    check_eq("counts", counts(&ch, &q).await?, (0, 1))
}

async fn zero_delivered(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, ttl_args(0)).await?;
    let mut cons = consume(&ch, &q, false).await?;
    for b in ["a", "b", "c"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    check_eq(
        "deliveries",
        bodies(&mut cons, 3).await?,
        vec!["a".into(), "b".into(), "c".into()],
    )
}

async fn per_message(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish_acked(&ch, "", &q, "short", expiring("100")).await?;
    publish_acked(&ch, "", &q, "long", expiring("60000")).await?;
    publish_acked(&ch, "", &q, "none", Default::default()).await?;
    wait_message_count(&ch, &q, 2).await?;
    check_eq(
        "remaining",
        drain(&ch, &q).await?,
        vec!["long".into(), "none".into()],
    )
}

async fn per_message_zero(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish_acked(&ch, "", &q, "zero", expiring("0")).await?;
    publish_acked(&ch, "", &q, "kept", Default::default()).await?;
    wait_message_count(&ch, &q, 1).await?;
    let mut cons = consume(&ch, &q, true).await?;
    check_eq(
        "first delivery",
        body(&next_delivery(&mut cons).await?),
        "kept".into(),
    )?;
    publish_acked(&ch, "", &q, "zero-with-consumer", expiring("0")).await?;
    check_eq(
        "delivered to a waiting consumer",
        body(&next_delivery(&mut cons).await?),
        "zero-with-consumer".into(),
    )
}

/// A short-TTL message behind a long-TTL one is not removed before it reaches the head: the
/// count still includes it after its TTL passed, and the head comes out first. What happens
/// next is not deterministic on RabbitMQ 3.10 (its classic queue fetches, then drops expired
/// messages; the expired one was seen both dropped and delivered), so it is not asserted.
async fn behind_head(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    let companion = ctx.name("companion");
    declare_exclusive(&ch, &q).await?;
    declare_exclusive(&ch, &companion).await?;
    publish_acked(&ch, "", &q, "long", expiring("60000")).await?;
    publish_acked(&ch, "", &q, "short", expiring("10")).await?;
    publish_acked(&ch, "", &companion, "c", expiring("100")).await?;
    // The companion, published after "short" with a longer TTL, has expired: so has "short".
    wait_message_count(&ch, &companion, 0).await?;
    check_eq(
        "counts of the queue (short still counted)",
        counts(&ch, &q).await?.0,
        2,
    )?;
    let m = get_one(&ch, &q, true).await?;
    check_eq("head", body(&m.delivery), "long".into())?;
    check("get-ok message_count is 0 or 1", m.message_count <= 1)?;
    let rest = drain(&ch, &q).await?;
    check(
        &format!("left: nothing or the expired one ({rest:?})"),
        rest.is_empty() || rest == ["short"],
    )
}

async fn lower_wins(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let a = ctx.name("queue-long");
    let b = ctx.name("queue-short");
    declare_x(&ch, &a, ttl_args(60000)).await?;
    declare_x(&ch, &b, ttl_args(100)).await?;
    publish_acked(&ch, "", &a, "message-short", expiring("100")).await?;
    publish_acked(&ch, "", &a, "stays", Default::default()).await?;
    publish_acked(&ch, "", &b, "message-long", expiring("60000")).await?;
    wait_message_count(&ch, &a, 1).await?;
    wait_message_count(&ch, &b, 0).await?;
    check_eq(
        "left in the long-TTL queue",
        drain(&ch, &a).await?,
        vec!["stays".into()],
    )
}

async fn requeue_keeps(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    let companion = ctx.name("companion");
    declare_x(&ch, &q, ttl_args(200)).await?;
    declare_x(&ch, &companion, ttl_args(200)).await?;
    publish_acked(&ch, "", &q, "held", Default::default()).await?;
    let m = get_one(&ch, &q, false).await?;
    publish_acked(&ch, "", &companion, "later", Default::default()).await?;
    wait_message_count(&ch, &companion, 0).await?;
    // "held" was published before "later" with the same TTL: it is past its expiry now.
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .step("basic.reject requeue")?;
    sync(&ch).await?;
    expect_empty(&ch, &q).await?;
    check_eq("count", counts(&ch, &q).await?.0, 0)
}

/// A message rejected with requeue=true after its expiry is dead-lettered as `expired`.
async fn requeue_expired_dl(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let (dlx, dlq) = super::dlx::dead_letter_target(&ch, &ctx).await?;
    let q = ctx.name("q");
    let companion = ctx.name("companion");
    declare_x(
        &ch,
        &q,
        super::dlx::dl_args(&dlx, vec![("x-message-ttl", int(200))]),
    )
    .await?;
    declare_x(&ch, &companion, ttl_args(200)).await?;
    publish_acked(&ch, "", &q, "held", Default::default()).await?;
    let m = get_one(&ch, &q, false).await?;
    publish_acked(&ch, "", &companion, "later", Default::default()).await?;
    wait_message_count(&ch, &companion, 0).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .step("basic.reject requeue")?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq("dead-lettered", body(&d), "held".into())?;
    super::dlx::check_x_death(
        &d.properties,
        &[super::dlx::Death {
            count: 1,
            reason: "expired",
            queue: &q,
            exchange: "",
            routing_keys: vec![&q],
            original_expiration: None,
        }],
    )?;
    expect_empty(&ch, &q).await
}

async fn property_kept(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, ttl_args(60000)).await?;
    publish_acked(&ch, "", &q, "m", expiring("60000")).await?;
    let m = get_one(&ch, &q, true).await?;
    check_eq(
        "expiration property",
        m.delivery
            .properties
            .expiration()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        Some("60000".to_string()),
    )
}

async fn bad_expiration(ctx: &Ctx, value: &str, text: &str) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut ev = events(&c);
    publish_p(&ch, "", &q, "m", expiring(value)).await?;
    expect_async_error(&mut ev, 406, text).await?;
    expect_channel_unusable(&ch).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    check_eq("messages enqueued", counts(&ch2, &q).await?.0, 0)
}

async fn invalid_expiration(ctx: Ctx) -> Outcome {
    bad_expiration(
        &ctx,
        "abc",
        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
    )
    .await
}

async fn negative_expiration(ctx: Ctx) -> Outcome {
    bad_expiration(
        &ctx,
        "-1",
        "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}",
    )
    .await
}

async fn fractional_expiration(ctx: Ctx) -> Outcome {
    bad_expiration(
        &ctx,
        "1.5",
        "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}",
    )
    .await
}

async fn empty_expiration(ctx: Ctx) -> Outcome {
    bad_expiration(
        &ctx,
        "",
        "PRECONDITION_FAILED - invalid expiration '': no_integer",
    )
    .await
}

/// No upper bound below 2^32 ms on RabbitMQ 3.10: 4294967296 is accepted.
async fn large_expiration(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    confirming(&ch).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish_acked(&ch, "", &q, "m", expiring("4294967296")).await?;
    check_eq(
        "body",
        body(&get_one(&ch, &q, true).await?.delivery),
        "m".into(),
    )
}

/// Erlang's `string:to_integer` accepts a leading `+`; the property is delivered as sent.
async fn plus_sign(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish_p(&ch, "", &q, "m", expiring("+60000")).await?;
    let m = get_one(&ch, &q, true).await?;
    check_eq(
        "expiration property",
        m.delivery
            .properties
            .expiration()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        Some("+60000".to_string()),
    )
}

async fn large_ttl(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(
        &ch,
        &q,
        table(vec![("x-message-ttl", AMQPValue::LongLongInt(4294967296))]),
    )
    .await?;
    publish(&ch, "", &q, b"m").await?;
    check_eq(
        "body",
        body(&get_one(&ch, &q, true).await?.delivery),
        "m".into(),
    )
}

async fn wrong_type(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-message-ttl", lstr("1000"))]),
        &invalid_arg("x-message-ttl", &q, "\"expected integer, got longstr\""),
    )
    .await
}

async fn negative_ttl(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        ttl_args(-1),
        &invalid_arg("x-message-ttl", &q, "{value_negative,-1}"),
    )
    .await
}
