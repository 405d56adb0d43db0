//! queue.bind / queue.unbind: missing ends, idempotence, binding arguments.

use super::queue::no_queue;
use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::{options::*, types::AMQPValue, types::FieldTable, ExchangeKind};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "queue.bind.missing_queue_404",
            "queue.bind",
            bind_missing_queue
        ),
        scenario!(
            "queue.bind.missing_exchange_404",
            "queue.bind",
            bind_missing_exchange
        ),
        scenario!("queue.bind.idempotent", "queue.bind", bind_idempotent),
        scenario!(
            "queue.bind.arguments_distinguish",
            "queue.bind arguments",
            bind_arguments
        ),
        scenario!("queue.unbind.stops_routing", "queue.unbind", unbind_stops),
        scenario!(
            "queue.unbind.missing_binding_ok",
            "queue.unbind",
            unbind_missing_binding
        ),
        scenario!(
            "queue.unbind.missing_queue_or_exchange",
            "queue.unbind",
            unbind_missing_entities
        ),
    ]
}

async fn bind_missing_queue(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("missing");
    let r = ch
        .queue_bind(
            q.as_str().into(),
            "amq.direct".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_error(r, 404, &no_queue(&q))?;
    expect_connection_usable(&c).await
}

async fn bind_missing_exchange(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    let x = ctx.name("missing-x");
    declare_exclusive(&ch, &q).await?;
    let r = ch
        .queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_error(
        r,
        404,
        &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
    )
}

/// Binding twice with the same key and arguments is one binding: one copy per message.
async fn bind_idempotent(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        let q = ctx.name("q");
        declare_exchange(&ch, &x, ExchangeKind::Direct).await?;
        declare_exclusive(&ch, &q).await?;
        bind(&ch, &q, &x, "k").await?;
        bind(&ch, &q, &x, "k").await?;
        publish(&ch, &x, "k", b"once").await?;
        publish(&ch, "", &q, b"marker").await?;
        wait_message_count(&ch, &q, 2).await?;
        check_eq(
            "bodies",
            drain(&ch, &q).await?,
            vec!["once".to_string(), "marker".to_string()],
        )?;
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            FieldTable::default(),
        )
        .await
        .step("unbind")?;
        publish(&ch, &x, "k", b"after-unbind").await?;
        publish(&ch, "", &q, b"marker").await?;
        wait_message_count(&ch, &q, 1).await?;
        check_eq(
            "one unbind removes the binding",
            drain(&ch, &q).await?,
            vec!["marker".to_string()],
        )
    })
    .await
}

/// On a direct exchange, bindings that differ only by arguments are distinct bindings; unbind
/// must name the same arguments; a message still reaches the queue once.
async fn bind_arguments(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        let q = ctx.name("q");
        declare_exchange(&ch, &x, ExchangeKind::Direct).await?;
        declare_exclusive(&ch, &q).await?;
        let mut a1 = FieldTable::default();
        a1.insert("tag".into(), AMQPValue::LongString("one".into()));
        let mut a2 = FieldTable::default();
        a2.insert("tag".into(), AMQPValue::LongString("two".into()));
        bind_args(&ch, &q, &x, "k", a1.clone()).await?;
        bind_args(&ch, &q, &x, "k", a2.clone()).await?;
        publish(&ch, &x, "k", b"m1").await?;
        publish(&ch, "", &q, b"marker").await?;
        wait_message_count(&ch, &q, 2).await?;
        check_eq(
            "delivered once despite two bindings",
            drain(&ch, &q).await?,
            vec!["m1".to_string(), "marker".to_string()],
        )?;
        // Unbinding with the plain key (no arguments) removes neither.
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            FieldTable::default(),
        )
        .await
        .step("unbind without args")?;
        ch.queue_unbind(q.as_str().into(), x.as_str().into(), "k".into(), a1)
            .await
            .step("unbind with args one")?;
        publish(&ch, &x, "k", b"m2").await?;
        publish(&ch, "", &q, b"marker").await?;
        wait_message_count(&ch, &q, 2).await?;
        check_eq(
            "binding two still routes",
            drain(&ch, &q).await?,
            vec!["m2".to_string(), "marker".to_string()],
        )?;
        ch.queue_unbind(q.as_str().into(), x.as_str().into(), "k".into(), a2)
            .await
            .step("unbind with args two")?;
        publish(&ch, &x, "k", b"m3").await?;
        publish(&ch, "", &q, b"marker").await?;
        wait_message_count(&ch, &q, 1).await?;
        check_eq(
            "no binding left",
            drain(&ch, &q).await?,
            vec!["marker".to_string()],
        )
    })
    .await
}

async fn unbind_stops(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    bind(&ch, &q, "amq.direct", &q).await?;
    publish(&ch, "amq.direct", &q, b"bound").await?;
    get_one(&ch, &q, true).await?;
    ch.queue_unbind(
        q.as_str().into(),
        "amq.direct".into(),
        q.as_str().into(),
        FieldTable::default(),
    )
    .await
    .step("queue.unbind")?;
    publish(&ch, "amq.direct", &q, b"unbound").await?;
    publish(&ch, "", &q, b"marker").await?;
    wait_message_count(&ch, &q, 1).await?;
    check_eq("bodies", drain(&ch, &q).await?, vec!["marker".to_string()])
}

async fn unbind_missing_binding(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    ch.queue_unbind(
        q.as_str().into(),
        "amq.direct".into(),
        "never-bound".into(),
        FieldTable::default(),
    )
    .await
    .step("queue.unbind of a binding that does not exist")?;
    sync(&ch).await
}

/// Unbinding a queue or from an exchange that does not exist: RabbitMQ 3.10 answers
/// unbind-ok (unbind is idempotent).
async fn unbind_missing_entities(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("missing-q");
    let x = ctx.name("missing-x");
    ch.queue_unbind(
        q.as_str().into(),
        "amq.direct".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .step("queue.unbind of a missing queue")?;
    let q2 = ctx.name("q");
    declare_exclusive(&ch, &q2).await?;
    ch.queue_unbind(
        q2.as_str().into(),
        x.as_str().into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .step("queue.unbind from a missing exchange")?;
    sync(&ch).await
}
