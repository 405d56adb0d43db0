//! Transactions: tx.select / tx.commit / tx.rollback.

use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::{options::*, BasicProperties};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "tx.commit_publishes",
            "tx.select / tx.commit",
            commit_publishes
        ),
        scenario!(
            "tx.rollback_discards_publishes",
            "tx.rollback",
            rollback_publishes
        ),
        scenario!("tx.commit_applies_acks", "tx.commit", commit_acks),
        scenario!(
            "tx.rollback_keeps_messages_unacked",
            "tx.rollback",
            rollback_acks
        ),
        scenario!("tx.stays_transactional", "tx.commit", stays_transactional),
        scenario!(
            "tx.commit_without_select_406",
            "tx.commit",
            commit_without_select
        ),
        scenario!(
            "tx.rollback_without_select_406",
            "tx.rollback",
            rollback_without_select
        ),
        scenario!("tx.select_twice_ok", "tx.select", select_twice),
        scenario!(
            "tx.mandatory_return_on_commit",
            "tx.commit / basic.return",
            mandatory_in_tx
        ),
    ]
}

async fn commit_publishes(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let tx = c.create_channel().await.step("channel.open")?;
    tx.tx_select().await.step("tx.select")?;
    for b in ["1", "2", "3"] {
        publish(&tx, "", &q, b.as_bytes()).await?;
    }
    sync(&tx).await?;
    check_eq(
        "messages before commit",
        declare_exclusive(&ch, &q).await?.message_count(),
        0,
    )?;
    tx.tx_commit().await.step("tx.commit")?;
    wait_message_count(&ch, &q, 3).await?;
    check_eq(
        "order",
        drain(&ch, &q).await?,
        vec!["1".to_string(), "2".to_string(), "3".to_string()],
    )
}

async fn rollback_publishes(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    ch.tx_select().await.step("tx.select")?;
    publish(&ch, "", &q, b"discarded").await?;
    ch.tx_rollback().await.step("tx.rollback")?;
    publish(&ch, "", &q, b"kept").await?;
    ch.tx_commit().await.step("tx.commit")?;
    wait_message_count(&ch, &q, 1).await?;
    check_eq("bodies", drain(&ch, &q).await?, vec!["kept".to_string()])
}

async fn commit_acks(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    for b in ["1", "2"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    wait_message_count(&ch, &q, 2).await?;
    let tx = c.create_channel().await.step("channel.open")?;
    tx.tx_select().await.step("tx.select")?;
    let m1 = get_one(&tx, &q, false).await?;
    let _m2 = get_one(&tx, &q, false).await?;
    tx.basic_ack(m1.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .step("ack in tx")?;
    tx.tx_commit().await.step("tx.commit")?;
    tx.close(200, "bye".into()).await.step("channel.close")?;
    // Only the un-acked second message comes back.
    let m = get_one(&ch, &q, true).await?;
    check_eq("requeued", m.delivery.data.as_slice(), b"2".as_slice())?;
    check("redelivered", m.delivery.redelivered)?;
    expect_empty(&ch, &q).await
}

async fn rollback_acks(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish(&ch, "", &q, b"1").await?;
    wait_message_count(&ch, &q, 1).await?;
    let tx = c.create_channel().await.step("channel.open")?;
    tx.tx_select().await.step("tx.select")?;
    let m = get_one(&tx, &q, false).await?;
    tx.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .step("ack in tx")?;
    tx.tx_rollback().await.step("tx.rollback")?;
    // The ack was discarded: the message is still unacked (not requeued by the rollback).
    check_eq(
        "ready after rollback",
        declare_exclusive(&ch, &q).await?.message_count(),
        0,
    )?;
    tx.close(200, "bye".into()).await.step("channel.close")?;
    let m = get_one(&ch, &q, true).await?;
    check_eq("body", m.delivery.data.as_slice(), b"1".as_slice())?;
    check("redelivered", m.delivery.redelivered)
}

async fn stays_transactional(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let tx = c.create_channel().await.step("channel.open")?;
    tx.tx_select().await.step("tx.select")?;
    publish(&tx, "", &q, b"1").await?;
    tx.tx_commit().await.step("first commit")?;
    publish(&tx, "", &q, b"2").await?;
    sync(&tx).await?;
    wait_message_count(&ch, &q, 1).await?;
    tx.tx_commit().await.step("second commit")?;
    wait_message_count(&ch, &q, 2).await?;
    tx.tx_commit().await.step("empty commit")
}

async fn commit_without_select(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    expect_error(
        ch.tx_commit().await,
        406,
        "PRECONDITION_FAILED - channel is not transactional",
    )?;
    expect_connection_usable(&c).await
}

async fn rollback_without_select(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    expect_error(
        ch.tx_rollback().await,
        406,
        "PRECONDITION_FAILED - channel is not transactional",
    )?;
    expect_connection_usable(&c).await
}

async fn select_twice(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    ch.tx_select().await.step("tx.select")?;
    ch.tx_select().await.step("second tx.select")?;
    ch.tx_commit().await.step("tx.commit")
}

async fn mandatory_in_tx(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    ch.tx_select().await.step("tx.select")?;
    ch.basic_publish(
        "amq.direct".into(),
        ctx.name("nobody").as_str().into(),
        BasicPublishOptions {
            mandatory: true,
            immediate: false,
        },
        b"returned",
        BasicProperties::default(),
    )
    .await
    .step("basic.publish")?;
    ch.tx_commit().await.step("tx.commit")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = ch.wait_for_confirms().await.step("collect returns")?;
        if let Some(m) = r.first() {
            check_eq(
                "return",
                (m.reply_code, m.reply_text.as_str()),
                (312, "NO_ROUTE"),
            )?;
            return check_eq("body", m.delivery.data.as_slice(), b"returned".as_slice());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(crate::Failure::new("basic.return after commit", "none"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
