//! Queue arguments in general: `x-queue-type`, `x-queue-mode`, argument equivalence on
//! redeclare and unknown arguments.

use super::*;
use crate::{Ctx, Outcome, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("ext.args.queue_type_classic_ok", "x-queue-type", classic_ok),
        scenario!(
            "ext.args.quorum_non_durable_406",
            "x-queue-type quorum",
            quorum_non_durable
        ),
        scenario!(
            "ext.args.quorum_exclusive_406",
            "x-queue-type quorum",
            quorum_exclusive
        ),
        scenario!(
            "ext.args.stream_non_durable_406",
            "x-queue-type stream",
            stream_non_durable
        ),
        scenario!(
            "ext.args.quorum_auto_delete_406",
            "x-queue-type quorum",
            quorum_auto_delete
        ),
        scenario!(
            "ext.args.unknown_queue_type_406",
            "x-queue-type",
            unknown_type
        ),
        scenario!("ext.args.queue_mode_lazy_ok", "x-queue-mode", lazy_ok),
        scenario!(
            "ext.args.invalid_queue_mode_406",
            "x-queue-mode",
            invalid_mode
        ),
        scenario!(
            "ext.args.unknown_argument_ignored",
            "queue.declare arguments",
            unknown_arg
        ),
        scenario!(
            "ext.args.inequivalent_max_length_406",
            "queue.declare arguments",
            inequivalent
        ),
        scenario!(
            "ext.args.integer_width_equivalent",
            "queue.declare arguments",
            width_equivalent
        ),
    ]
}

async fn classic_ok(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-queue-type", lstr("classic"))])).await?;
    declare_x(&ch, &q, table(vec![("x-queue-type", lstr("classic"))])).await?;
    publish(&ch, "", &q, b"m").await?;
    check_eq("works", drain(&ch, &q).await?, vec!["m".to_string()])
}

async fn non_durable(ctx: &Ctx, kind: &str, exclusive: bool, text: &str) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    let r = declare_with(
        &ch,
        &q,
        exclusive,
        table(vec![("x-queue-type", lstr(kind))]),
    )
    .await;
    expect_error(r, 406, &text.replace("{Q}", &q))?;
    expect_connection_usable(&c).await
}

async fn quorum_non_durable(ctx: Ctx) -> Outcome {
    non_durable(
        &ctx,
        "quorum",
        false,
        "PRECONDITION_FAILED - invalid property 'non-durable' for queue '{Q}' in vhost '/'",
    )
    .await
}

async fn quorum_exclusive(ctx: Ctx) -> Outcome {
    non_durable(
        &ctx,
        "quorum",
        true,
        "PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue '{Q}' in vhost '/'",
    )
    .await
}

async fn stream_non_durable(ctx: Ctx) -> Outcome {
    non_durable(
        &ctx,
        "stream",
        false,
        "PRECONDITION_FAILED - invalid property 'non-durable' for queue '{Q}' in vhost '/'",
    )
    .await
}

/// Durable but auto-delete: the first property a quorum queue refuses.
async fn quorum_auto_delete(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        let r = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    auto_delete: true,
                    ..Default::default()
                },
                table(vec![("x-queue-type", lstr("quorum"))]),
            )
            .await;
        expect_error(
            r,
            406,
            &format!(
                "PRECONDITION_FAILED - invalid property 'auto-delete' for queue '{q}' in vhost '/'"
            ),
        )?;
        expect_connection_usable(&c).await
    })
    .await
}

async fn unknown_type(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-queue-type", lstr("fancy"))]),
        &invalid_arg("x-queue-type", &q, "\"unsupported queue type 'fancy'\""),
    )
    .await
}

async fn lazy_ok(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-queue-mode", lstr("lazy"))])).await?;
    publish(&ch, "", &q, b"m").await?;
    check_eq(
        "works",
        get_one(&ch, &q, true).await.map(|m| body(&m.delivery))?,
        "m".into(),
    )
}

async fn invalid_mode(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-queue-mode", lstr("sleepy"))]),
        &invalid_arg("x-queue-mode", &q, "\"unsupported queue mode 'sleepy'\""),
    )
    .await
}

async fn unknown_arg(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(
        &ch,
        &q,
        table(vec![
            ("x-no-such-argument", lstr("a")),
            ("x-consumer-timeout", int(1000)),
        ]),
    )
    .await?;
    // Unknown arguments are not compared on redeclare.
    declare_x(&ch, &q, table(vec![("x-no-such-argument", int(7))])).await?;
    declare_x(&ch, &q, FieldTable::default()).await?;
    publish(&ch, "", &q, b"m").await?;
    check_eq("works", drain(&ch, &q).await?, vec!["m".to_string()])
}

async fn inequivalent(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-max-length", int(10))])).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    expect_error(
        declare_with(&ch2, &q, true, table(vec![("x-max-length", int(5))])).await,
        406,
        &format!("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received '5' but current is '10'"),
    )?;
    let ch3 = c.create_channel().await.step("channel.open")?;
    expect_error(
        declare_with(&ch3, &q, true, FieldTable::default()).await,
        406,
        &format!("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received none but current is the value '10' of type 'signedint'"),
    )?;
    expect_connection_usable(&c).await
}

/// Integer arguments compare by value whatever their width: 60000 as `I` and as `l` are
/// equivalent; another value is not (the text then shows only the values).
async fn width_equivalent(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, table(vec![("x-message-ttl", int(60000))])).await?;
    declare_x(
        &ch,
        &q,
        table(vec![("x-message-ttl", AMQPValue::LongLongInt(60000))]),
    )
    .await?;
    declare_x(
        &ch,
        &q,
        table(vec![("x-message-ttl", AMQPValue::LongUInt(60000))]),
    )
    .await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    expect_error(
        declare_with(&ch2, &q, true, table(vec![("x-message-ttl", AMQPValue::ShortInt(1000))])).await,
        406,
        &format!("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received '1000' but current is '60000'"),
    )?;
    expect_connection_usable(&c).await
}
