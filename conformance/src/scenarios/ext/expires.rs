//! Queue expiry: `x-expires` deletes a queue that has been unused (no consumers, no
//! basic.get, no redeclare — RabbitMQ also counts a passive declare as a use) for the given
//! number of milliseconds, whether or not it holds messages. A consumer keeps it alive.
//! The value must be a positive integer.

use super::*;
use crate::{Ctx, Outcome, Scenario};
use std::time::Duration;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.expires.unused_queue_deleted",
            "x-expires",
            unused_deleted
        ),
        scenario!(
            "ext.expires.deleted_with_messages",
            "x-expires",
            with_messages
        ),
        scenario!(
            "ext.expires.consumer_keeps_alive",
            "x-expires",
            consumer_keeps
        ),
        scenario!("ext.expires.zero_406", "x-expires", zero),
        scenario!("ext.expires.negative_406", "x-expires", negative),
        scenario!("ext.expires.wrong_type_406", "x-expires", wrong_type),
    ]
}

/// Longer than the 100 ms `x-expires` used below (each poll restarts the timer).
const POLL: Duration = Duration::from_millis(250);

fn expires(ms: i32) -> FieldTable {
    table(vec![("x-expires", int(ms))])
}

async fn unused_deleted(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        let ok = declare_with(&ch, &q, false, expires(100))
            .await
            .step("queue.declare")?;
        check_eq(
            "declare-ok counts",
            (ok.message_count(), ok.consumer_count()),
            (0, 0),
        )?;
        wait_queue_gone(&c, &q, POLL).await
    })
    .await
}

async fn with_messages(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        declare_with(&ch, &q, false, expires(100))
            .await
            .step("queue.declare")?;
        publish(&ch, "", &q, b"m1").await?;
        publish(&ch, "", &q, b"m2").await?;
        wait_queue_gone(&c, &q, POLL).await
    })
    .await
}

async fn consumer_keeps(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("consumed"));
    let companion = cl.queue(ctx.name("companion"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        declare_with(&ch, &q, false, expires(100))
            .await
            .step("queue.declare")?;
        let _cons = consume(&ch, &q, true).await?;
        declare_with(&ch, &companion, false, expires(100))
            .await
            .step("queue.declare")?;
        // The companion, declared after the consumed queue with the same x-expires, is gone.
        wait_queue_gone(&c, &companion, POLL).await?;
        check_eq(
            "consumed queue still there (messages, consumers)",
            counts(&ch, &q).await?,
            (0, 1),
        )
    })
    .await
}

async fn zero(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        expires(0),
        &invalid_arg("x-expires", &q, "{value_zero,0}"),
    )
    .await
}

async fn negative(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        expires(-5),
        &invalid_arg("x-expires", &q, "{value_negative,-5}"),
    )
    .await
}

async fn wrong_type(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-expires", lstr("100"))]),
        &invalid_arg("x-expires", &q, "\"expected integer, got longstr\""),
    )
    .await
}
