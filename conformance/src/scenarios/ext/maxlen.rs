//! Length limits: `x-max-length` (messages) and `x-max-length-bytes` (body bytes) with
//! `x-overflow`: `drop-head` (the default: the oldest messages are dropped, or
//! dead-lettered with reason `maxlen`), `reject-publish` (the new message is refused:
//! basic.nack on a confirm channel, silently dropped otherwise) and `reject-publish-dlx`
//! (refused and dead-lettered). Only ready messages count towards the limit.

use super::dlx::{check_x_death, dead_letter_target, dl_args, Death};
use super::*;
use crate::{Ctx, Outcome, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.maxlen.drop_head_default",
            "x-max-length",
            drop_head_default
        ),
        scenario!(
            "ext.maxlen.drop_head_explicit",
            "x-max-length x-overflow drop-head",
            drop_head_explicit
        ),
        scenario!("ext.maxlen.zero_keeps_nothing", "x-max-length", zero),
        scenario!("ext.maxlen.bytes_drop_head", "x-max-length-bytes", bytes),
        scenario!(
            "ext.maxlen.bytes_count_body_only",
            "x-max-length-bytes",
            bytes_body_only
        ),
        scenario!(
            "ext.maxlen.unacked_not_counted",
            "x-max-length",
            unacked_not_counted
        ),
        scenario!(
            "ext.maxlen.reject_publish_nack",
            "x-overflow reject-publish",
            reject_publish
        ),
        scenario!(
            "ext.maxlen.reject_publish_without_confirms",
            "x-overflow reject-publish",
            reject_publish_plain
        ),
        scenario!(
            "ext.maxlen.reject_publish_dlx",
            "x-overflow reject-publish-dlx",
            reject_publish_dlx
        ),
        scenario!(
            "ext.maxlen.reject_publish_dlx_without_confirms",
            "x-overflow reject-publish-dlx",
            reject_publish_dlx_plain
        ),
        scenario!(
            "ext.maxlen.reject_publish_not_dead_lettered",
            "x-overflow reject-publish",
            reject_publish_no_dl
        ),
        scenario!(
            "ext.maxlen.invalid_overflow_406",
            "x-overflow",
            invalid_overflow
        ),
        scenario!("ext.maxlen.negative_406", "x-max-length", negative),
    ]
}

async fn drop_head_default(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-max-length", int(2))])).await?;
    for b in ["1", "2", "3", "4"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    wait_message_count(&ch, &q, 2).await?;
    check_eq(
        "kept",
        drain(&ch, &q).await?,
        vec!["3".to_string(), "4".into()],
    )
}

async fn drop_head_explicit(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(
        &ch,
        &q,
        table(vec![
            ("x-max-length", int(1)),
            ("x-overflow", lstr("drop-head")),
        ]),
    )
    .await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    for b in ["1", "2"] {
        check(
            &format!("{b} acked"),
            publish_c(&ch, "", &q, b, Default::default())
                .await?
                .is_ack(),
        )?;
    }
    check_eq("kept", drain(&ch, &q).await?, vec!["2".to_string()])
}

async fn zero(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-max-length", int(0))])).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    check(
        "acked",
        publish_c(&ch, "", &q, "gone", Default::default())
            .await?
            .is_ack(),
    )?;
    check_eq("count", counts(&ch, &q).await?.0, 0)?;
    // A waiting consumer still gets messages: they never sit in the queue.
    let mut cons = consume(&ch, &q, true).await?;
    publish_c(&ch, "", &q, "direct", Default::default()).await?;
    check_eq(
        "delivered",
        body(&next_delivery(&mut cons).await?),
        "direct".into(),
    )
}

async fn bytes(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-max-length-bytes", int(10))])).await?;
    for b in ["aaaaa", "bbbbb", "ccccc", "dd"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    wait_message_count(&ch, &q, 2).await?;
    check_eq(
        "kept (10 bytes at most)",
        drain(&ch, &q).await?,
        vec!["ccccc".to_string(), "dd".into()],
    )
}

/// Only body bytes count: a 5-byte body with large headers fits a 5-byte limit.
async fn bytes_body_only(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-max-length-bytes", int(5))])).await?;
    let big = lstr(&"h".repeat(1000));
    let props = lapin::BasicProperties::default()
        .with_headers(table(vec![("big", big)]))
        .with_correlation_id("c".repeat(200).as_str().into());
    for b in ["11111", "22222"] {
        publish_p(&ch, "", &q, b, props.clone()).await?;
    }
    publish_p(&ch, "", &q, "", Default::default()).await?;
    wait_message_count(&ch, &q, 2).await?;
    check_eq(
        "kept",
        drain(&ch, &q).await?,
        vec!["22222".to_string(), "".into()],
    )
}

async fn unacked_not_counted(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-max-length", int(1))])).await?;
    publish(&ch, "", &q, b"unacked").await?;
    let m = get_one(&ch, &q, false).await?;
    publish(&ch, "", &q, b"ready").await?;
    wait_message_count(&ch, &q, 1).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .step("basic.reject requeue")?;
    // Requeued above the limit: RabbitMQ drops from the head again (the requeued message).
    sync(&ch).await?;
    check_eq(
        "after requeue",
        drain(&ch, &q).await?,
        vec!["ready".to_string()],
    )
}

async fn reject_publish(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(
        &ch,
        &q,
        table(vec![
            ("x-max-length", int(1)),
            ("x-overflow", lstr("reject-publish")),
        ]),
    )
    .await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    check(
        "first acked",
        publish_c(&ch, "", &q, "1", Default::default())
            .await?
            .is_ack(),
    )?;
    check(
        "second nacked",
        publish_c(&ch, "", &q, "2", Default::default())
            .await?
            .is_nack(),
    )?;
    check(
        "third nacked",
        publish_c(&ch, "", &q, "3", Default::default())
            .await?
            .is_nack(),
    )?;
    check_eq("kept", drain(&ch, &q).await?, vec!["1".to_string()])?;
    check(
        "acked once there is room",
        publish_c(&ch, "", &q, "4", Default::default())
            .await?
            .is_ack(),
    )?;
    check_eq("kept", drain(&ch, &q).await?, vec!["4".to_string()])
}

async fn reject_publish_plain(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(
        &ch,
        &q,
        table(vec![
            ("x-max-length", int(1)),
            ("x-overflow", lstr("reject-publish")),
        ]),
    )
    .await?;
    for b in ["1", "2", "3"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    sync(&ch).await?;
    wait_message_count(&ch, &q, 1).await?;
    check_eq("kept", drain(&ch, &q).await?, vec!["1".to_string()])?;
    expect_connection_usable(&c).await
}

async fn reject_publish_dlx(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let q = ctx.name("q");
    let args = dl_args(
        &dlx,
        vec![
            ("x-max-length", int(1)),
            ("x-overflow", lstr("reject-publish-dlx")),
        ],
    );
    declare_x(&ch, &q, args).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    check(
        "first acked",
        publish_c(&ch, "", &q, "1", Default::default())
            .await?
            .is_ack(),
    )?;
    check(
        "second nacked",
        publish_c(&ch, "", &q, "2", Default::default())
            .await?
            .is_nack(),
    )?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq("dead-lettered", body(&d), "2".into())?;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "maxlen",
            queue: &q,
            exchange: "",
            routing_keys: vec![&q],
            original_expiration: None,
        }],
    )?;
    check_eq("kept", drain(&ch, &q).await?, vec!["1".to_string()])
}

async fn reject_publish_dlx_plain(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let q = ctx.name("q");
    let args = dl_args(
        &dlx,
        vec![
            ("x-max-length", int(1)),
            ("x-overflow", lstr("reject-publish-dlx")),
        ],
    );
    declare_x(&ch, &q, args).await?;
    for b in ["1", "2", "3"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    let a = get_one(&ch, &dlq, true).await?.delivery;
    let b = get_one(&ch, &dlq, true).await?.delivery;
    check_eq(
        "dead-lettered",
        (body(&a), body(&b)),
        ("2".to_string(), "3".to_string()),
    )?;
    check_eq("kept", drain(&ch, &q).await?, vec!["1".to_string()])
}

async fn reject_publish_no_dl(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let q = ctx.name("q");
    let args = dl_args(
        &dlx,
        vec![
            ("x-max-length", int(1)),
            ("x-overflow", lstr("reject-publish")),
        ],
    );
    declare_x(&ch, &q, args).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    check(
        "first acked",
        publish_c(&ch, "", &q, "1", Default::default())
            .await?
            .is_ack(),
    )?;
    check(
        "second nacked",
        publish_c(&ch, "", &q, "2", Default::default())
            .await?
            .is_nack(),
    )?;
    sync(&ch).await?;
    check_eq("dead-letter queue", counts(&ch, &dlq).await?.0, 0)
}

async fn invalid_overflow(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-overflow", lstr("drop-tail"))]),
        &invalid_arg("x-overflow", &q, "invalid_overflow"),
    )
    .await
}

async fn negative(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-max-length", int(-1))]),
        &invalid_arg("x-max-length", &q, "{value_negative,-1}"),
    )
    .await
}
