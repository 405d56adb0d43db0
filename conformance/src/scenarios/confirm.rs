//! Publisher confirms (confirm.select, basic.ack from the broker) and their interplay with
//! transactions.

use crate::raw::{encode, method, raw_frame, RawConn};
use crate::support::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, confirm, AMQPClass};
use lapin::{options::*, BasicProperties};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "confirm.select_and_ack_routed",
            "confirm.select / basic.ack",
            ack_routed
        ),
        scenario!(
            "confirm.ack_unroutable",
            "confirm.select / basic.ack",
            ack_unroutable
        ),
        scenario!(
            "confirm.return_before_ack",
            "confirm.select / basic.return",
            return_before_ack
        ),
        scenario!("confirm.select_twice_ok", "confirm.select", select_twice),
        scenario!("confirm.many_in_flight", "confirm.select / basic.ack", many),
        scenario!(
            "confirm.raw_tags_and_multiple",
            "basic.ack (confirms) multiple",
            raw_tags
        ),
        scenario!(
            "confirm.raw_select_nowait",
            "confirm.select nowait",
            raw_nowait
        ),
        scenario!("confirm.on_tx_channel_406", "confirm.select", on_tx_channel),
        scenario!(
            "confirm.tx_on_confirm_channel_406",
            "tx.select",
            tx_on_confirm_channel
        ),
    ]
}

async fn ack_routed(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    let conf = publish_confirmed(&ch, "", &q, b"confirmed", false).await?;
    check("ack", conf.is_ack())?;
    // Once confirmed, the message is in the queue.
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq("message_count after the confirm", ok.message_count(), 1)
}

async fn ack_unroutable(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    let conf = publish_confirmed(&ch, "amq.topic", &ctx.name("nobody"), b"x", false).await?;
    check("unroutable messages are acked, not nacked", conf.is_ack())
}

async fn return_before_ack(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    let conf = publish_confirmed(&ch, "amq.topic", &ctx.name("nobody"), b"x", true).await?;
    check("ack", conf.is_ack())?;
    // lapin attaches a basic.return that arrived before the ack to the confirmation.
    let ret = conf
        .take_message()
        .ok_or_else(|| Failure::new("basic.return before basic.ack", "none"))?;
    check_eq(
        "return",
        (ret.reply_code, ret.reply_text.as_str()),
        (312, "NO_ROUTE"),
    )
}

async fn select_twice(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("second confirm.select")?;
    let conf = publish_confirmed(&ch, "amq.direct", "x", b"x", false).await?;
    check("ack", conf.is_ack())
}

async fn many(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    let mut confirms = Vec::new();
    for i in 0..500 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .step("basic.publish")?,
        );
    }
    for (i, c) in confirms.into_iter().enumerate() {
        let r = tokio::time::timeout(WAIT, c)
            .await
            .map_err(|_| Failure::new(format!("confirm #{i}"), "none"))?;
        check(
            &format!("confirm #{i} is an ack"),
            r.step("confirm")?.is_ack(),
        )?;
    }
    wait_message_count(&ch, &q, 500).await
}

fn raw_publish(ch: u16, rk: &str, body: &[u8]) -> Vec<u8> {
    let mut v = method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: rk.into(),
            mandatory: false,
            immediate: false,
        })),
    );
    v.extend(encode(&AMQPFrame::Header(
        ch,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: Default::default(),
        },
    )));
    v.extend(raw_frame(3, ch, body, 0xCE));
    v
}

/// Reads the broker's confirms for `n` publishes: every sequence number 1..=n is covered
/// exactly once, in increasing order, by basic.ack (single or multiple), and no nack.
async fn collect_confirms(c: &mut RawConn, n: u64) -> Outcome {
    let mut confirmed = 0u64;
    for _ in 0..10_000 {
        if confirmed == n {
            return Ok(());
        }
        match c.recv_frame().await? {
            AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                if a.delivery_tag <= confirmed || a.delivery_tag > n {
                    return Err(Failure::new(
                        format!("an ack tag in {}..={n}", confirmed + 1),
                        format!("{a:?}"),
                    ));
                }
                if !a.multiple && a.delivery_tag != confirmed + 1 {
                    return Err(Failure::new(
                        format!("ack {} (single) or a multiple ack", confirmed + 1),
                        format!("{a:?}"),
                    ));
                }
                confirmed = a.delivery_tag;
            }
            other => return Err(Failure::new("basic.ack", format!("{other:?}"))),
        }
    }
    Err(Failure::new("all confirms", format!("{confirmed} of {n}")))
}

/// Publisher sequence numbers start at 1 and count every publish on the channel.
async fn raw_tags(ctx: Ctx) -> Outcome {
    let (mut c, _) = RawConn::open(&ctx.uri, 0).await?;
    c.open_channel(1).await?;
    c.send_method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await?;
    match c.recv_frame().await? {
        AMQPFrame::Method(1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))) => {}
        other => return Err(Failure::new("confirm.select-ok", format!("{other:?}"))),
    }
    let rk = ctx.name("nobody");
    let mut bytes = Vec::new();
    for i in 0..100 {
        bytes.extend(raw_publish(1, &rk, format!("m{i}").as_bytes()));
    }
    c.send_bytes(&bytes).await?;
    collect_confirms(&mut c, 100).await?;
    c.close().await
}

async fn raw_nowait(ctx: Ctx) -> Outcome {
    let (mut c, _) = RawConn::open(&ctx.uri, 0).await?;
    c.open_channel(1).await?;
    c.send_method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: true,
        })),
    )
    .await?;
    c.send_bytes(&raw_publish(1, &ctx.name("nobody"), b"x"))
        .await?;
    // No select-ok: the first frame is the ack of message 1.
    collect_confirms(&mut c, 1).await?;
    c.close().await
}

async fn on_tx_channel(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    ch.tx_select().await.step("tx.select")?;
    let r = ch.confirm_select(ConfirmSelectOptions::default()).await;
    expect_error(
        r,
        406,
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
    )?;
    expect_connection_usable(&c).await
}

async fn tx_on_confirm_channel(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    expect_error(
        ch.tx_select().await,
        406,
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
    )?;
    expect_connection_usable(&c).await
}
