//! Consumer cancel notification: when a consumed queue is deleted, a client that advertised
//! the consumer_cancel_notify capability receives basic.cancel. lapin advertises it and ends
//! the consumer's stream (`None`) when the broker's basic.cancel arrives.

use crate::raw::{parse_uri, RawConn};
use crate::support::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use futures_lite::StreamExt;
use lapin::options::*;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "cancel.queue_deleted_ends_consumer",
            "basic.cancel (server)",
            queue_deleted
        ),
        scenario!(
            "cancel.queue_deleted_by_other_connection",
            "basic.cancel (server)",
            deleted_elsewhere
        ),
        scenario!(
            "cancel.raw_basic_cancel_frame",
            "basic.cancel (server)",
            raw_cancel_frame
        ),
        scenario!(
            "cancel.raw_without_capability_no_frame",
            "basic.cancel (server)",
            raw_without_capability
        ),
    ]
}

/// Waits for the consumer stream to end (the broker's basic.cancel) after any deliveries.
async fn expect_stream_end(consumer: &mut lapin::Consumer) -> Outcome {
    for _ in 0..1000 {
        match tokio::time::timeout(WAIT, consumer.next()).await {
            Ok(None) => return Ok(()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => {
                return Err(Failure::new("consumer stream ends", format!("error {e:?}")))
            }
            Err(_) => {
                return Err(Failure::new(
                    "consumer stream ends (basic.cancel from the broker)",
                    format!("nothing within {WAIT:?}"),
                ))
            }
        }
    }
    Err(Failure::new("consumer stream ends", "endless deliveries"))
}

async fn queue_deleted(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    let mut cons = consume(&cch, &q, false).await?;
    publish(&ch, "", &q, b"before").await?;
    let d = next_delivery(&mut cons).await?;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .step("queue.delete")?;
    expect_stream_end(&mut cons).await?;
    // The consumer's channel stays open; the delivery from the deleted queue can still be acked.
    d.acker
        .ack(BasicAckOptions::default())
        .await
        .step("ack after the queue was deleted")?;
    sync(&cch).await?;
    check("channel still open", cch.status().connected())
}

async fn deleted_elsewhere(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_queue(&ch, &q).await?;
        let mut a = consume(&ch, &q, true).await?;
        let mut b = consume(&ch, &q, true).await?;
        let (_c2, ch2) = open(&ctx.uri).await?;
        ch2.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .step("queue.delete from another connection")?;
        expect_stream_end(&mut a).await?;
        expect_stream_end(&mut b).await?;
        sync(&ch).await
    })
    .await
}

/// The broker sends basic.cancel with the consumer tag (RabbitMQ: nowait=true, so no
/// cancel-ok is expected from the client).
async fn raw_cancel_frame(ctx: Ctx) -> Outcome {
    let (mut c, _) = RawConn::open(&ctx.uri, 0).await?;
    c.open_channel(1).await?;
    let q = ctx.name("q");
    declare_raw(&mut c, &q).await?;
    consume_raw(&mut c, &q, "raw-tag").await?;
    let (_c2, ch2) = open(&ctx.uri).await?;
    ch2.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .step("queue.delete")?;
    match c.recv_frame().await? {
        AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Cancel(m))) => {
            check_eq("consumer tag", m.consumer_tag.as_str(), "raw-tag")?;
            check_eq("nowait", m.nowait, true)?;
        }
        other => return Err(Failure::new("basic.cancel", format!("{other:?}"))),
    }
    c.close().await
}

/// Without the capability, the broker does not send basic.cancel: the consumer silently goes.
async fn raw_without_capability(ctx: Ctx) -> Outcome {
    let u = parse_uri(&ctx.uri)?;
    let mut c = RawConn::tcp(&ctx.uri).await?;
    c.start().await?;
    c.send_start_ok_with(
        &u.authority.userinfo.username,
        &u.authority.userinfo.password,
        FieldTable::default(),
    )
    .await?;
    let t = match c.recv_frame().await? {
        AMQPFrame::Method(
            0,
            AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::Tune(t)),
        ) => t,
        other => return Err(Failure::new("connection.tune", format!("{other:?}"))),
    };
    c.tune_ok_open(
        amq_protocol::protocol::connection::TuneOk {
            channel_max: t.channel_max,
            frame_max: t.frame_max,
            heartbeat: 0,
        },
        &u.vhost,
    )
    .await?;
    c.open_channel(1).await?;
    let q = ctx.name("q");
    declare_raw(&mut c, &q).await?;
    consume_raw(&mut c, &q, "raw-tag").await?;
    let (_c2, ch2) = open(&ctx.uri).await?;
    ch2.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .step("queue.delete")?;
    // A round trip on the raw channel: the next frame must be its answer, not a basic.cancel.
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 0,
            global: false,
        })),
    )
    .await?;
    match c.recv_frame().await? {
        AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))) => {}
        other => {
            return Err(Failure::new(
                "basic.qos-ok and no basic.cancel",
                format!("{other:?}"),
            ))
        }
    }
    c.close().await
}

/// Declares a non-exclusive auto-delete queue on raw channel 1 (the test deletes it from
/// another connection).
async fn declare_raw(c: &mut RawConn, q: &str) -> Outcome {
    c.send_method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: q.into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: true,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    match c.recv_frame().await? {
        AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => Ok(()),
        other => Err(Failure::new("queue.declare-ok", format!("{other:?}"))),
    }
}

async fn consume_raw(c: &mut RawConn, q: &str, tag: &str) -> Outcome {
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: q.into(),
            consumer_tag: tag.into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    match c.recv_frame().await? {
        AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok))) => {
            check_eq("consume-ok tag", ok.consumer_tag.as_str(), tag)
        }
        other => Err(Failure::new("basic.consume-ok", format!("{other:?}"))),
    }
}
