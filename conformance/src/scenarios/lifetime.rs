//! Queue lifetimes: exclusive queues (owned by one connection, locked for others, deleted
//! with it) and auto-delete queues (deleted when their last consumer goes).

use super::queue::{locked, no_queue, passive, qdecl};
use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::{options::*, types::FieldTable, Channel};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "queue.exclusive.declare_other_connection_405",
            "queue.declare exclusive",
            exclusive_declare
        ),
        scenario!(
            "queue.exclusive.passive_other_connection_405",
            "queue.declare exclusive",
            exclusive_passive
        ),
        scenario!(
            "queue.exclusive.consume_other_connection_405",
            "basic.consume exclusive queue",
            exclusive_consume
        ),
        scenario!(
            "queue.exclusive.get_other_connection_405",
            "basic.get exclusive queue",
            exclusive_get
        ),
        scenario!(
            "queue.exclusive.delete_other_connection_405",
            "queue.delete exclusive queue",
            exclusive_delete
        ),
        scenario!(
            "queue.exclusive.purge_other_connection_405",
            "queue.purge exclusive queue",
            exclusive_purge
        ),
        scenario!(
            "queue.exclusive.bind_other_connection_405",
            "queue.bind exclusive queue",
            exclusive_bind
        ),
        scenario!(
            "queue.exclusive.publish_other_connection_ok",
            "queue.declare exclusive",
            exclusive_publish
        ),
        scenario!(
            "queue.exclusive.deleted_with_connection",
            "queue.declare exclusive",
            exclusive_gone
        ),
        scenario!(
            "queue.auto_delete.kept_before_first_consumer",
            "queue.declare auto-delete",
            auto_delete_kept
        ),
        scenario!(
            "queue.auto_delete.after_last_consumer",
            "queue.declare auto-delete",
            auto_delete_last
        ),
        scenario!(
            "queue.auto_delete.channel_close",
            "queue.declare auto-delete",
            auto_delete_channel_close
        ),
    ]
}

/// Declares an exclusive queue on one connection, runs `op` on a second connection's channel,
/// expects 405 with RabbitMQ's locked-queue text.
async fn exclusive_from_other(ctx: &Ctx, op: impl AsyncOp) -> Outcome {
    let (_c1, ch1) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch1, &q).await?;
    let (c2, ch2) = open(&ctx.uri).await?;
    let r = op.run(ch2.clone(), q.clone()).await;
    match r {
        Ok(()) => return Err(Failure::new(format!("405 {}", locked(&q)), "success")),
        Err(e) => match amqp_error(&e) {
            Some((405, t)) if t == locked(&q) => {}
            Some((c, t)) => {
                return Err(Failure::new(
                    format!("405 {}", locked(&q)),
                    format!("{c} {t}"),
                ))
            }
            None => {
                return Err(Failure::new(
                    format!("405 {}", locked(&q)),
                    format!("{e:?}"),
                ))
            }
        },
    }
    // A channel error: the second connection goes on, and the queue is still there for its owner.
    expect_connection_usable(&c2).await?;
    passive(&ch1, &q).await.step("owner's passive declare")?;
    Ok(())
}

use crate::Failure;
use std::future::Future;
use std::pin::Pin;

/// An operation on (channel, queue name) for [`exclusive_from_other`].
trait AsyncOp {
    fn run(
        &self,
        ch: Channel,
        q: String,
    ) -> Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>>;
}

impl<F, Fut> AsyncOp for F
where
    F: Fn(Channel, String) -> Fut,
    Fut: Future<Output = lapin::Result<()>> + Send + 'static,
{
    fn run(
        &self,
        ch: Channel,
        q: String,
    ) -> Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>> {
        Box::pin(self(ch, q))
    }
}

async fn exclusive_declare(ctx: Ctx) -> Outcome {
    exclusive_from_other(&ctx, |ch: Channel, q: String| async move {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ())
    })
    .await
}

async fn exclusive_passive(ctx: Ctx) -> Outcome {
    exclusive_from_other(&ctx, |ch: Channel, q: String| async move {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
    })
    .await
}

async fn exclusive_consume(ctx: Ctx) -> Outcome {
    exclusive_from_other(&ctx, |ch: Channel, q: String| async move {
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ())
    })
    .await
}

async fn exclusive_get(ctx: Ctx) -> Outcome {
    exclusive_from_other(&ctx, |ch: Channel, q: String| async move {
        ch.basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .map(|_| ())
    })
    .await
}

async fn exclusive_delete(ctx: Ctx) -> Outcome {
    exclusive_from_other(&ctx, |ch: Channel, q: String| async move {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .map(|_| ())
    })
    .await
}

async fn exclusive_purge(ctx: Ctx) -> Outcome {
    exclusive_from_other(&ctx, |ch: Channel, q: String| async move {
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await
            .map(|_| ())
    })
    .await
}

async fn exclusive_bind(ctx: Ctx) -> Outcome {
    exclusive_from_other(&ctx, |ch: Channel, q: String| async move {
        ch.queue_bind(
            q.as_str().into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await
}

/// Publishing to an exclusive queue from another connection is allowed.
async fn exclusive_publish(ctx: Ctx) -> Outcome {
    let (_c1, ch1) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch1, &q).await?;
    let (_c2, ch2) = open(&ctx.uri).await?;
    publish(&ch2, "", &q, b"from-other").await?;
    let m = get_one(&ch1, &q, true).await?;
    check_eq("body", m.delivery.data.as_slice(), b"from-other".as_slice())
}

async fn exclusive_gone(ctx: Ctx) -> Outcome {
    let q = ctx.name("q");
    let (observer, och) = open(&ctx.uri).await?;
    {
        let (c1, ch1) = open(&ctx.uri).await?;
        declare_exclusive(&ch1, &q).await?;
        let _consumer = consume(&ch1, &q, false).await?;
        publish(&ch1, "", &q, b"m").await?;
        c1.close(200, "bye".into()).await.step("connection.close")?;
    }
    // The queue is deleted as part of the owner's connection close, which the broker may
    // finish after close-ok: poll with a deadline. While the queue is still there a passive
    // declare from another connection fails with 405 RESOURCE_LOCKED (and closes the
    // channel), as in RabbitMQ.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ch = och;
    loop {
        let got = match passive(&ch, &q).await {
            Err(e) => amqp_error(&e),
            Ok(_) => None,
        };
        if got == Some((404, no_queue(&q))) {
            return Ok(());
        }
        let locked = matches!(&got, Some((405, text)) if text.starts_with("RESOURCE_LOCKED"));
        if !locked && got.is_some() {
            return Err(Failure::new(
                format!("404 {}", no_queue(&q)),
                format!("{got:?}"),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                "exclusive queue deleted with its connection",
                format!("still there ({got:?})"),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        if locked {
            ch = observer.create_channel().await.step("channel.open")?;
        }
    }
}

async fn auto_delete_kept(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        qdecl(
            &ch,
            &q,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step("declare auto-delete")?;
        publish(&ch, "", &q, b"m").await?;
        wait_message_count(&ch, &q, 1).await?;
        // Messages come and go without a consumer: the queue stays.
        get_one(&ch, &q, true).await?;
        let ok = passive(&ch, &q)
            .await
            .step("passive declare: still there without ever having a consumer")?;
        check_eq("message_count", ok.message_count(), 0)
    })
    .await
}

async fn auto_delete_last(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        qdecl(
            &ch,
            &q,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step("declare auto-delete")?;
        let a = consume(&ch, &q, false).await?;
        let b = consume(&ch, &q, false).await?;
        ch.basic_cancel(a.tag(), BasicCancelOptions::default())
            .await
            .step("cancel first consumer")?;
        let ok = passive(&ch, &q)
            .await
            .step("still there with one consumer")?;
        check_eq("consumer_count", ok.consumer_count(), 1)?;
        ch.basic_cancel(b.tag(), BasicCancelOptions::default())
            .await
            .step("cancel last consumer")?;
        expect_error(passive(&ch, &q).await, 404, &no_queue(&q))
    })
    .await
}

async fn auto_delete_channel_close(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        qdecl(
            &ch,
            &q,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .step("declare auto-delete")?;
        let ch2 = c.create_channel().await.step("channel.open")?;
        let _consumer = consume(&ch2, &q, false).await?;
        ch2.close(200, "bye".into()).await.step("channel.close")?;
        expect_error(passive(&ch, &q).await, 404, &no_queue(&q))
    })
    .await
}
