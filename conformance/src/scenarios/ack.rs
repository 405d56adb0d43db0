//! basic.ack / basic.nack / basic.reject / basic.recover, requeue order and redelivery,
//! and unacked messages returning when a channel or connection closes.

use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::{options::*, Channel, Connection};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("ack.single", "basic.ack", ack_single),
        scenario!("ack.multiple", "basic.ack multiple", ack_multiple),
        scenario!(
            "ack.multiple_zero_acks_all",
            "basic.ack multiple",
            ack_multiple_zero
        ),
        scenario!("ack.unknown_tag_406", "basic.ack", ack_unknown),
        scenario!("ack.double_ack_406", "basic.ack", ack_double),
        scenario!("ack.no_ack_delivery_406", "basic.ack", ack_no_ack_delivery),
        scenario!("ack.other_channel_tag_406", "basic.ack", ack_other_channel),
        scenario!("ack.nack_unknown_tag_406", "basic.nack", nack_unknown),
        scenario!("ack.reject_unknown_tag_406", "basic.reject", reject_unknown),
        scenario!(
            "ack.reject_requeue_head",
            "basic.reject requeue",
            reject_requeue_head
        ),
        scenario!("ack.reject_discard", "basic.reject", reject_discard),
        scenario!("ack.nack_requeue", "basic.nack requeue", nack_requeue),
        scenario!("ack.nack_discard", "basic.nack", nack_discard),
        scenario!(
            "ack.nack_multiple_requeue_order",
            "basic.nack multiple",
            nack_multiple_order
        ),
        scenario!(
            "ack.requeue_to_other_consumer",
            "basic.reject requeue",
            requeue_other_consumer
        ),
        scenario!(
            "ack.channel_close_requeues",
            "channel.close / unacked",
            channel_close_requeues
        ),
        scenario!(
            "ack.connection_close_requeues",
            "connection.close / unacked",
            connection_close_requeues
        ),
        scenario!("ack.recover_requeue", "basic.recover", recover_requeue),
        scenario!(
            "ack.recover_no_requeue_540",
            "basic.recover",
            recover_no_requeue
        ),
    ]
}

fn unknown(tag: u64) -> String {
    format!("PRECONDITION_FAILED - unknown delivery tag {tag}")
}

/// Declares an exclusive queue and publishes `bodies` to it.
async fn fill(ch: &Channel, q: &str, bodies: &[&str]) -> Outcome {
    declare_exclusive(ch, q).await?;
    for b in bodies {
        publish(ch, "", q, b.as_bytes()).await?;
    }
    wait_message_count(ch, q, bodies.len() as u32).await
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Asserts that an ack-class method on `ch` closes the channel with 406 unknown tag.
async fn expect_unknown_tag(conn: &Connection, ch: &Channel, ev: &mut Events, tag: u64) -> Outcome {
    expect_async_error(ev, 406, &unknown(tag)).await?;
    expect_channel_unusable(ch).await?;
    expect_connection_usable(conn).await
}

async fn ack_single(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["a", "b"]).await?;
    let m = get_one(&ch, &q, false).await?;
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .step("ack")?;
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq("message_count", ok.message_count(), 1)
}

async fn ack_multiple(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2", "3", "4"]).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    let mut cons = consume(&cch, &q, false).await?;
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(next_delivery(&mut cons).await?.delivery_tag);
    }
    check_eq("tags", tags.clone(), vec![1, 2, 3, 4])?;
    cch.basic_ack(3, BasicAckOptions { multiple: true })
        .await
        .step("ack 3 multiple")?;
    cch.basic_cancel(cons.tag(), BasicCancelOptions::default())
        .await
        .step("cancel")?;
    cch.close(200, "bye".into()).await.step("channel.close")?;
    // Only the fourth message was still unacked.
    check_eq("requeued", drain(&ch, &q).await?, strings(&["4"]))
}

async fn ack_multiple_zero(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2", "3"]).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    for _ in 0..3 {
        get_one(&cch, &q, false).await?;
    }
    cch.basic_ack(0, BasicAckOptions { multiple: true })
        .await
        .step("ack 0 multiple")?;
    cch.close(200, "bye".into()).await.step("channel.close")?;
    expect_empty(&ch, &q).await
}

async fn ack_unknown(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let mut ev = events(&c);
    ch.basic_ack(99, BasicAckOptions::default())
        .await
        .step("basic.ack")?;
    expect_unknown_tag(&c, &ch, &mut ev, 99).await
}

async fn ack_double(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1"]).await?;
    let m = get_one(&ch, &q, false).await?;
    let mut ev = events(&c);
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .step("first ack")?;
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .step("second ack sent")?;
    expect_unknown_tag(&c, &ch, &mut ev, m.delivery.delivery_tag).await
}

async fn ack_no_ack_delivery(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1"]).await?;
    let m = get_one(&ch, &q, true).await?;
    check_eq("tag", m.delivery.delivery_tag, 1)?;
    let mut ev = events(&c);
    ch.basic_ack(1, BasicAckOptions::default())
        .await
        .step("ack of a no-ack delivery")?;
    expect_unknown_tag(&c, &ch, &mut ev, 1).await
}

/// Delivery tags are per channel: a tag from channel A means nothing on channel B.
async fn ack_other_channel(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1"]).await?;
    let m = get_one(&ch, &q, false).await?;
    let other = c.create_channel().await.step("channel.open")?;
    let mut ev = events(&c);
    other
        .basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .step("ack on the other channel")?;
    expect_unknown_tag(&c, &other, &mut ev, m.delivery.delivery_tag).await?;
    // The original channel is unaffected and can still ack.
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .step("ack on the right channel")?;
    sync(&ch).await
}

async fn nack_unknown(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let mut ev = events(&c);
    ch.basic_nack(
        7,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
    .step("basic.nack")?;
    expect_unknown_tag(&c, &ch, &mut ev, 7).await
}

async fn reject_unknown(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let mut ev = events(&c);
    ch.basic_reject(5, BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject")?;
    expect_unknown_tag(&c, &ch, &mut ev, 5).await
}

/// A rejected-with-requeue message goes back to the head of the queue, flagged redelivered.
async fn reject_requeue_head(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2", "3"]).await?;
    let m = get_one(&ch, &q, false).await?;
    check_eq("first", m.delivery.data.as_slice(), b"1".as_slice())?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .step("reject requeue")?;
    let again = get_one(&ch, &q, true).await?;
    check_eq(
        "requeued message first again",
        again.delivery.data.as_slice(),
        b"1".as_slice(),
    )?;
    check("redelivered", again.delivery.redelivered)?;
    let next = get_one(&ch, &q, true).await?;
    check_eq(
        "then the next",
        next.delivery.data.as_slice(),
        b"2".as_slice(),
    )?;
    check_eq("not redelivered", next.delivery.redelivered, false)
}

async fn reject_discard(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2"]).await?;
    let m = get_one(&ch, &q, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("reject")?;
    check_eq("left", drain(&ch, &q).await?, strings(&["2"]))
}

async fn nack_requeue(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2"]).await?;
    let mut cons = consume(&ch, &q, false).await?;
    let d = next_delivery(&mut cons).await?;
    check_eq("redelivered", d.redelivered, false)?;
    let d2 = next_delivery(&mut cons).await?;
    d2.acker
        .ack(BasicAckOptions::default())
        .await
        .step("ack second")?;
    d.acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .step("nack requeue")?;
    let again = next_delivery(&mut cons).await?;
    check_eq("body", again.data.as_slice(), b"1".as_slice())?;
    check("redelivered", again.redelivered)?;
    check_eq("new delivery tag", again.delivery_tag, 3)
}

async fn nack_discard(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2", "3"]).await?;
    let _a = get_one(&ch, &q, false).await?;
    let _b = get_one(&ch, &q, false).await?;
    ch.basic_nack(
        2,
        BasicNackOptions {
            multiple: true,
            requeue: false,
        },
    )
    .await
    .step("nack multiple discard")?;
    check_eq("left", drain(&ch, &q).await?, strings(&["3"]))
}

/// Requeued messages keep their original order, ahead of messages never delivered.
async fn nack_multiple_order(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2", "3", "4", "5", "6"]).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    cch.basic_qos(4, BasicQosOptions::default())
        .await
        .step("basic.qos 4")?;
    let mut cons = consume(&cch, &q, false).await?;
    let got = bodies(&mut cons, 4).await?;
    check_eq("first four", got, strings(&["1", "2", "3", "4"]))?;
    cch.basic_cancel(cons.tag(), BasicCancelOptions::default())
        .await
        .step("cancel")?;
    cch.basic_nack(
        4,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .step("nack multiple requeue")?;
    sync(&cch).await?;
    let mut out = Vec::new();
    for _ in 0..6 {
        let m = get_one(&ch, &q, true).await?;
        out.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            m.delivery.redelivered,
        ));
    }
    check_eq(
        "order after requeue",
        out,
        vec![
            ("1".to_string(), true),
            ("2".to_string(), true),
            ("3".to_string(), true),
            ("4".to_string(), true),
            ("5".to_string(), false),
            ("6".to_string(), false),
        ],
    )
}

async fn requeue_other_consumer(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let ch1 = c.create_channel().await.step("channel.open")?;
    let mut c1 = consume(&ch1, &q, false).await?;
    publish(&ch, "", &q, b"m").await?;
    let d = next_delivery(&mut c1).await?;
    ch1.basic_cancel(c1.tag(), BasicCancelOptions::default())
        .await
        .step("cancel")?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let mut c2 = consume(&ch2, &q, false).await?;
    d.acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .step("reject requeue")?;
    let d2 = next_delivery(&mut c2).await?;
    check_eq("body", d2.data.as_slice(), b"m".as_slice())?;
    check("redelivered", d2.redelivered)?;
    check_eq("delivery tag on the other channel", d2.delivery_tag, 1)
}

async fn channel_close_requeues(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2", "3"]).await?;
    let cch = c.create_channel().await.step("channel.open")?;
    let mut cons = consume(&cch, &q, false).await?;
    let d1 = next_delivery(&mut cons).await?;
    let _d2 = next_delivery(&mut cons).await?;
    let _d3 = next_delivery(&mut cons).await?;
    d1.acker
        .ack(BasicAckOptions::default())
        .await
        .step("ack first")?;
    cch.close(200, "bye".into()).await.step("channel.close")?;
    let mut out = Vec::new();
    for _ in 0..2 {
        let m = get_one(&ch, &q, true).await?;
        out.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            m.delivery.redelivered,
        ));
    }
    check_eq(
        "requeued",
        out,
        vec![("2".to_string(), true), ("3".to_string(), true)],
    )?;
    expect_empty(&ch, &q).await
}

async fn connection_close_requeues(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_queue(&ch, &q).await?;
        for b in ["1", "2"] {
            publish(&ch, "", &q, b.as_bytes()).await?;
        }
        wait_message_count(&ch, &q, 2).await?;
        {
            let (c2, ch2) = open(&ctx.uri).await?;
            let mut cons = consume(&ch2, &q, false).await?;
            check_eq(
                "delivered",
                bodies(&mut cons, 2).await?,
                strings(&["1", "2"]),
            )?;
            c2.close(200, "bye".into()).await.step("connection.close")?;
        }
        let (_c3, ch3) = open(&ctx.uri).await?;
        let mut out = Vec::new();
        for _ in 0..2 {
            let m = get_one(&ch3, &q, true).await?;
            out.push((
                String::from_utf8_lossy(&m.delivery.data).into_owned(),
                m.delivery.redelivered,
            ));
        }
        check_eq(
            "requeued after connection close",
            out,
            vec![("1".to_string(), true), ("2".to_string(), true)],
        )
    })
    .await
}

async fn recover_requeue(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    fill(&ch, &q, &["1", "2"]).await?;
    let mut cons = consume(&ch, &q, false).await?;
    check_eq(
        "first round",
        bodies(&mut cons, 2).await?,
        strings(&["1", "2"]),
    )?;
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .step("basic.recover requeue")?;
    let a = next_delivery(&mut cons).await?;
    let b = next_delivery(&mut cons).await?;
    check_eq(
        "redelivered round",
        vec![
            (String::from_utf8_lossy(&a.data).into_owned(), a.redelivered),
            (String::from_utf8_lossy(&b.data).into_owned(), b.redelivered),
        ],
        vec![("1".to_string(), true), ("2".to_string(), true)],
    )?;
    check_eq(
        "fresh delivery tags",
        (a.delivery_tag, b.delivery_tag),
        (3, 4),
    )
}

async fn recover_no_requeue(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let r = ch
        .basic_recover(BasicRecoverOptions { requeue: false })
        .await;
    // RabbitMQ does not implement redelivery to the original consumer: a connection error.
    expect_error(r, 540, "NOT_IMPLEMENTED - requeue=false")?;
    wait_connection_closed(&c).await
}
