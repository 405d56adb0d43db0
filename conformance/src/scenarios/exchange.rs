//! exchange.declare / exchange.delete, the default exchange and the amq.* exchanges, and
//! publishing to internal or missing exchanges.
//!
//! Reply texts recorded from RabbitMQ 3.10 are the ones asserted below.

use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::{options::*, types::AMQPValue, types::FieldTable, Channel, ExchangeKind};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "exchange.declare.each_type",
            "exchange.declare",
            declare_each_type
        ),
        scenario!(
            "exchange.declare.passive_existing",
            "exchange.declare passive",
            passive_existing
        ),
        scenario!(
            "exchange.declare.passive_missing_404",
            "exchange.declare passive",
            passive_missing
        ),
        scenario!(
            "exchange.declare.passive_ignores_type",
            "exchange.declare passive",
            passive_ignores_type
        ),
        scenario!(
            "exchange.declare.redeclare_equivalent_ok",
            "exchange.declare",
            redeclare_equivalent
        ),
        scenario!(
            "exchange.declare.inequivalent_type_406",
            "exchange.declare",
            inequivalent_type
        ),
        scenario!(
            "exchange.declare.inequivalent_durable_406",
            "exchange.declare",
            inequivalent_durable
        ),
        scenario!(
            "exchange.declare.inequivalent_auto_delete_406",
            "exchange.declare",
            inequivalent_auto_delete
        ),
        scenario!(
            "exchange.declare.inequivalent_internal_406",
            "exchange.declare",
            inequivalent_internal
        ),
        scenario!(
            "exchange.declare.inequivalent_args_406",
            "exchange.declare arguments",
            inequivalent_args
        ),
        scenario!(
            "exchange.declare.amq_prefix_403",
            "exchange.declare",
            amq_prefix
        ),
        scenario!(
            "exchange.declare.invalid_type_503",
            "exchange.declare",
            invalid_type
        ),
        scenario!(
            "exchange.declare.amq_builtins_exist",
            "amq.* exchanges",
            builtins_exist
        ),
        scenario!(
            "exchange.declare.amq_builtin_redeclare",
            "amq.* exchanges",
            builtin_redeclare
        ),
        scenario!(
            "exchange.declare.default_403",
            "default exchange",
            default_declare
        ),
        scenario!(
            "exchange.delete.ok_then_missing",
            "exchange.delete",
            delete_ok
        ),
        scenario!(
            "exchange.delete.missing_ok",
            "exchange.delete",
            delete_missing
        ),
        scenario!(
            "exchange.delete.if_unused_in_use_406",
            "exchange.delete if-unused",
            delete_if_unused_in_use
        ),
        scenario!(
            "exchange.delete.if_unused_unused_ok",
            "exchange.delete if-unused",
            delete_if_unused_ok
        ),
        scenario!(
            "exchange.delete.default_403",
            "default exchange",
            default_delete
        ),
        scenario!(
            "exchange.delete.amq_builtin_403",
            "amq.* exchanges",
            builtin_delete
        ),
        scenario!(
            "exchange.delete.removes_bindings",
            "exchange.delete",
            delete_removes_bindings
        ),
        scenario!(
            "exchange.auto_delete.last_binding",
            "exchange.declare auto-delete",
            auto_delete_last_binding
        ),
        scenario!(
            "exchange.publish.internal_403",
            "exchange.declare internal",
            publish_internal
        ),
        scenario!(
            "exchange.publish.missing_404",
            "basic.publish",
            publish_missing
        ),
        scenario!(
            "exchange.bind.default_403",
            "default exchange",
            default_bind
        ),
        scenario!(
            "exchange.default.routes_by_queue_name",
            "default exchange",
            default_routes
        ),
    ]
}

fn opts(durable: bool, auto_delete: bool, internal: bool) -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable,
        auto_delete,
        internal,
        ..Default::default()
    }
}

async fn declare(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    o: ExchangeDeclareOptions,
) -> lapin::Result<()> {
    ch.exchange_declare(name.into(), kind, o, FieldTable::default())
        .await
}

async fn passive(ch: &Channel, name: &str) -> lapin::Result<()> {
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

async fn delete(ch: &Channel, name: &str, if_unused: bool) -> lapin::Result<()> {
    ch.exchange_delete(
        name.into(),
        ExchangeDeleteOptions {
            if_unused,
            ..Default::default()
        },
    )
    .await
}

async fn declare_each_type(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let names: Vec<(String, ExchangeKind)> = vec![
        (cl.exchange(ctx.name("direct")), ExchangeKind::Direct),
        (cl.exchange(ctx.name("fanout")), ExchangeKind::Fanout),
        (cl.exchange(ctx.name("topic")), ExchangeKind::Topic),
        (cl.exchange(ctx.name("headers")), ExchangeKind::Headers),
    ];
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        for (n, k) in &names {
            declare(&ch, n, k.clone(), opts(false, false, false))
                .await
                .step(&format!("declare {n}"))?;
            passive(&ch, n)
                .await
                .step(&format!("passive declare {n}"))?;
            delete(&ch, n, false).await.step(&format!("delete {n}"))?;
        }
        Ok(())
    })
    .await
}

async fn passive_existing(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare(&ch, &x, ExchangeKind::Fanout, opts(false, false, false))
            .await
            .step("declare")?;
        // A second connection sees it too.
        let (_c2, ch2) = open(&ctx.uri).await?;
        passive(&ch2, &x)
            .await
            .step("passive declare from another connection")?;
        delete(&ch, &x, false).await.step("delete")?;
        Ok(())
    })
    .await
}

async fn passive_missing(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let x = ctx.name("missing");
    expect_error(
        passive(&ch, &x).await,
        404,
        &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
    )?;
    expect_channel_unusable(&ch).await
}

async fn passive_ignores_type(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare(&ch, &x, ExchangeKind::Topic, opts(false, false, false))
            .await
            .step("declare topic")?;
        // Passive declare with another type and flags: only existence is checked.
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                durable: true,
                auto_delete: true,
                internal: true,
                nowait: false,
            },
            FieldTable::default(),
        )
        .await
        .step("passive declare with a different type and flags")?;
        delete(&ch, &x, false).await.step("delete")
    })
    .await
}

async fn redeclare_equivalent(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare(&ch, &x, ExchangeKind::Direct, opts(false, true, false))
            .await
            .step("declare")?;
        declare(&ch, &x, ExchangeKind::Direct, opts(false, true, false))
            .await
            .step("identical redeclare")?;
        delete(&ch, &x, false).await.step("delete")
    })
    .await
}

/// Declares `x` with `first`, redeclares with `second` and expects 406 with `text`.
async fn inequivalent(
    ctx: &Ctx,
    first: (ExchangeKind, ExchangeDeclareOptions, FieldTable),
    second: (ExchangeKind, ExchangeDeclareOptions, FieldTable),
    text: impl Fn(&str) -> String,
) -> Outcome {
    let cl = Cleanup::new(ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        ch.exchange_declare(x.as_str().into(), first.0, first.1, first.2)
            .await
            .step("first declare")?;
        let r = ch
            .exchange_declare(x.as_str().into(), second.0, second.1, second.2)
            .await;
        expect_error(r, 406, &text(&x))?;
        // Channel error only: the connection goes on, and the exchange is unchanged.
        expect_connection_usable(&c).await?;
        let ch2 = c.create_channel().await.step("channel.open")?;
        delete(&ch2, &x, false).await.step("delete")
    })
    .await
}

async fn inequivalent_type(ctx: Ctx) -> Outcome {
    let d = ExchangeDeclareOptions::default();
    inequivalent(
        &ctx,
        (ExchangeKind::Direct, d, FieldTable::default()),
        (ExchangeKind::Fanout, d, FieldTable::default()),
        |x| format!("PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'fanout' but current is 'direct'"),
    )
    .await
}

async fn inequivalent_durable(ctx: Ctx) -> Outcome {
    inequivalent(
        &ctx,
        (ExchangeKind::Direct, opts(false, true, false), FieldTable::default()),
        (ExchangeKind::Direct, opts(true, true, false), FieldTable::default()),
        |x| format!("PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '/': received 'true' but current is 'false'"),
    )
    .await
}

async fn inequivalent_auto_delete(ctx: Ctx) -> Outcome {
    inequivalent(
        &ctx,
        (ExchangeKind::Direct, opts(false, false, false), FieldTable::default()),
        (ExchangeKind::Direct, opts(false, true, false), FieldTable::default()),
        |x| format!("PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange '{x}' in vhost '/': received 'true' but current is 'false'"),
    )
    .await
}

async fn inequivalent_internal(ctx: Ctx) -> Outcome {
    inequivalent(
        &ctx,
        (ExchangeKind::Direct, opts(false, false, false), FieldTable::default()),
        (ExchangeKind::Direct, opts(false, false, true), FieldTable::default()),
        |x| format!("PRECONDITION_FAILED - inequivalent arg 'internal' for exchange '{x}' in vhost '/': received 'true' but current is 'false'"),
    )
    .await
}

async fn inequivalent_args(ctx: Ctx) -> Outcome {
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("some-ae".into()),
    );
    inequivalent(
        &ctx,
        (ExchangeKind::Direct, opts(false, false, false), FieldTable::default()),
        (ExchangeKind::Direct, opts(false, false, false), args),
        |x| format!("PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': received the value 'some-ae' of type 'longstr' but current is none"),
    )
    .await
}

async fn amq_prefix(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let x = format!("amq.{}", ctx.name("x"));
    let r = declare(&ch, &x, ExchangeKind::Direct, opts(false, true, false)).await;
    expect_error(
        r,
        403,
        &format!("ACCESS_REFUSED - exchange name '{x}' contains reserved prefix 'amq.*'"),
    )?;
    expect_connection_usable(&c).await
}

async fn invalid_type(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let x = ctx.name("x");
    let r = declare(
        &ch,
        &x,
        ExchangeKind::Custom("no-such-type".into()),
        opts(false, true, false),
    )
    .await;
    // A connection error in RabbitMQ.
    expect_error(
        r,
        503,
        "COMMAND_INVALID - unknown exchange type 'no-such-type'",
    )?;
    wait_connection_closed(&c).await?;
    let (_c2, ch2) = open(&ctx.uri).await?;
    expect_error(
        passive(&ch2, &x).await,
        404,
        &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
    )
}

async fn builtins_exist(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    for x in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    ] {
        passive(&ch, x)
            .await
            .step(&format!("passive declare {x}"))?;
    }
    Ok(())
}

/// The amq.* exchanges are durable, of their type; redeclaring them equivalently is allowed
/// (the reserved-prefix check only applies to creation), a different type is a 406.
async fn builtin_redeclare(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    for (x, k) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        declare(&ch, x, k, opts(true, false, false))
            .await
            .step(&format!("equivalent redeclare of {x}"))?;
    }
    let r = declare(
        &ch,
        "amq.topic",
        ExchangeKind::Direct,
        opts(true, false, false),
    )
    .await;
    expect_error(
        r,
        406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.topic' in vhost '/': received 'direct' but current is 'topic'",
    )
}

async fn default_declare(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    // RabbitMQ refuses even a passive declare of the default exchange.
    expect_error(
        passive(&ch, "").await,
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )?;
    let ch = c.create_channel().await.step("channel.open")?;
    let r = declare(&ch, "", ExchangeKind::Direct, opts(true, false, false)).await;
    expect_error(
        r,
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )?;
    expect_connection_usable(&c).await
}

async fn delete_ok(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare(&ch, &x, ExchangeKind::Fanout, opts(false, false, false))
            .await
            .step("declare")?;
        delete(&ch, &x, false).await.step("delete")?;
        expect_error(
            passive(&ch, &x).await,
            404,
            &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
        )
    })
    .await
}

async fn delete_missing(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let x = ctx.name("never-declared");
    // RabbitMQ 3.10 answers delete-ok for an exchange that does not exist.
    delete(&ch, &x, false)
        .await
        .step("exchange.delete of a missing exchange")?;
    delete(&ch, &x, true)
        .await
        .step("exchange.delete if-unused of a missing exchange")?;
    sync(&ch).await
}

async fn delete_if_unused_in_use(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        declare(&ch, &x, ExchangeKind::Direct, opts(false, false, false))
            .await
            .step("declare")?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &x, "k").await?;
        expect_error(
            delete(&ch, &x, true).await,
            406,
            &format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use"),
        )?;
        let ch2 = c.create_channel().await.step("channel.open")?;
        passive(&ch2, &x).await.step("exchange still exists")?;
        delete(&ch2, &x, false).await.step("unconditional delete")
    })
    .await
}

async fn delete_if_unused_ok(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare(&ch, &x, ExchangeKind::Direct, opts(false, false, false))
            .await
            .step("declare")?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &x, "k").await?;
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            FieldTable::default(),
        )
        .await
        .step("queue.unbind")?;
        delete(&ch, &x, true)
            .await
            .step("delete if-unused after the last binding went")?;
        expect_error(
            passive(&ch, &x).await,
            404,
            &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
        )
    })
    .await
}

async fn default_delete(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    expect_error(
        delete(&ch, "", false).await,
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )?;
    expect_connection_usable(&c).await
}

async fn builtin_delete(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    expect_error(
        delete(&ch, "amq.direct", false).await,
        403,
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed",
    )?;
    expect_connection_usable(&c).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    passive(&ch2, "amq.direct")
        .await
        .step("amq.direct still exists")
}

async fn delete_removes_bindings(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        declare(&ch, &x, ExchangeKind::Fanout, opts(false, false, false))
            .await
            .step("declare")?;
        bind(&ch, &q, &x, "").await?;
        delete(&ch, &x, false).await.step("delete")?;
        // Re-creating the exchange does not bring the old binding back.
        declare(&ch, &x, ExchangeKind::Fanout, opts(false, false, false))
            .await
            .step("redeclare")?;
        publish(&ch, &x, "", b"after").await?;
        publish(&ch, "", &q, b"marker").await?;
        check_eq(
            "messages in the queue",
            drain(&ch, &q).await?,
            vec!["marker".to_string()],
        )?;
        delete(&ch, &x, false).await.step("delete")
    })
    .await
}

async fn auto_delete_last_binding(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare(&ch, &x, ExchangeKind::Direct, opts(false, true, false))
            .await
            .step("declare auto-delete")?;
        // Never bound: it stays.
        passive(&ch, &x)
            .await
            .step("auto-delete exchange exists before any binding")?;
        let q1 = ctx.name("q1");
        let q2 = ctx.name("q2");
        declare_exclusive(&ch, &q1).await?;
        declare_exclusive(&ch, &q2).await?;
        bind(&ch, &q1, &x, "a").await?;
        bind(&ch, &q2, &x, "b").await?;
        ch.queue_unbind(
            q1.as_str().into(),
            x.as_str().into(),
            "a".into(),
            FieldTable::default(),
        )
        .await
        .step("unbind first")?;
        passive(&ch, &x)
            .await
            .step("exchange exists while one binding is left")?;
        ch.queue_unbind(
            q2.as_str().into(),
            x.as_str().into(),
            "b".into(),
            FieldTable::default(),
        )
        .await
        .step("unbind last")?;
        expect_error(
            passive(&ch, &x).await,
            404,
            &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
        )
    })
    .await
}

async fn publish_internal(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        declare(&ch, &x, ExchangeKind::Fanout, opts(false, false, true))
            .await
            .step("declare internal")?;
        let mut ev = events(&c);
        publish(&ch, &x, "", b"x").await?;
        expect_async_error(
            &mut ev,
            403,
            &format!("ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '/'"),
        )
        .await?;
        expect_connection_usable(&c).await?;
        let ch2 = c.create_channel().await.step("channel.open")?;
        delete(&ch2, &x, false).await.step("delete")
    })
    .await
}

async fn publish_missing(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let x = ctx.name("missing");
    let mut ev = events(&c);
    publish(&ch, &x, "k", b"x").await?;
    expect_async_error(
        &mut ev,
        404,
        &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
    )
    .await?;
    expect_channel_unusable(&ch).await?;
    expect_connection_usable(&c).await
}

async fn default_bind(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let r = ch
        .queue_bind(
            q.as_str().into(),
            "".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_error(
        r,
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let r = ch2
        .queue_unbind(
            q.as_str().into(),
            "".into(),
            q.as_str().into(),
            FieldTable::default(),
        )
        .await;
    expect_error(
        r,
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )
}

async fn default_routes(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish(&ch, "", &q, b"direct-to-queue").await?;
    publish(&ch, "", &ctx.name("nobody"), b"lost").await?;
    let m = get_one(&ch, &q, true).await?;
    check_eq("exchange", m.delivery.exchange.as_str(), "")?;
    check_eq("routing key", m.delivery.routing_key.as_str(), q.as_str())?;
    check_eq(
        "body",
        m.delivery.data.as_slice(),
        b"direct-to-queue".as_slice(),
    )?;
    expect_empty(&ch, &q).await
}
