//! basic.consume / cancel / publish (mandatory, immediate) / get, round-robin and ordering.
//! basic.qos is in `qos`.

use crate::support::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use lapin::{options::*, types::FieldTable, BasicProperties, Channel};
use std::time::Duration;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("basic.consume.server_tag", "basic.consume", server_tag),
        scenario!(
            "basic.consume.client_tag_and_fields",
            "basic.consume / basic.deliver",
            client_tag
        ),
        scenario!(
            "basic.consume.duplicate_tag_530",
            "basic.consume",
            duplicate_tag
        ),
        scenario!(
            "basic.consume.same_tag_other_channel",
            "basic.consume",
            same_tag_other_channel
        ),
        scenario!(
            "basic.consume.exclusive_then_other_403",
            "basic.consume exclusive",
            exclusive_then_other
        ),
        scenario!(
            "basic.consume.exclusive_with_existing_403",
            "basic.consume exclusive",
            exclusive_with_existing
        ),
        scenario!(
            "basic.consume.missing_queue_404",
            "basic.consume",
            consume_missing
        ),
        scenario!("basic.consume.no_ack", "basic.consume no-ack", no_ack),
        scenario!("basic.consume.round_robin", "basic.consume", round_robin),
        scenario!(
            "basic.consume.order_and_tags",
            "basic.deliver",
            order_and_tags
        ),
        scenario!(
            "basic.consume.existing_messages_delivered",
            "basic.consume",
            existing_messages
        ),
        scenario!("basic.cancel.stops_delivery", "basic.cancel", cancel_stops),
        scenario!(
            "basic.cancel.unknown_tag_ok",
            "basic.cancel",
            cancel_unknown
        ),
        scenario!(
            "basic.cancel.ack_after_cancel",
            "basic.cancel",
            ack_after_cancel
        ),
        scenario!(
            "basic.publish.mandatory_unroutable_return",
            "basic.publish mandatory / basic.return",
            mandatory_return
        ),
        scenario!(
            "basic.publish.mandatory_return_without_confirms",
            "basic.return",
            mandatory_return_no_confirm
        ),
        scenario!(
            "basic.publish.mandatory_routable_no_return",
            "basic.publish mandatory",
            mandatory_routable
        ),
        scenario!(
            "basic.publish.unroutable_dropped",
            "basic.publish",
            unroutable_dropped
        ),
        scenario!(
            "basic.publish.immediate_540",
            "basic.publish immediate",
            immediate
        ),
        scenario!("basic.get.ok_count_and_empty", "basic.get", get_count),
        scenario!("basic.get.unacked_until_ack", "basic.get", get_unacked),
        scenario!(
            "basic.get.tags_shared_with_consume",
            "basic.get / basic.deliver",
            get_tags_shared
        ),
    ]
}

async fn server_tag(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let a = consume(&ch, &q, false).await?;
    let b = consume(&ch, &q, false).await?;
    for t in [a.tag(), b.tag()] {
        let t = t.as_str();
        check(
            &format!("{t:?} starts with amq.ctag-"),
            t.starts_with("amq.ctag-"),
        )?;
        check_eq(&format!("length of {t:?}"), t.len(), 31)?;
        check(
            &format!("{t:?} suffix is URL-safe base64"),
            t["amq.ctag-".len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        )?;
    }
    check("two server-generated tags differ", a.tag() != b.tag())
}

async fn client_tag(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "my-tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .step("basic.consume")?;
    check_eq("consumer tag", c.tag().as_str(), "my-tag")?;
    bind(&ch, &q, "amq.direct", &q).await?;
    publish(&ch, "amq.direct", &q, b"hello").await?;
    let d = next_delivery(&mut c).await?;
    check_eq("exchange", d.exchange.as_str(), "amq.direct")?;
    check_eq("routing key", d.routing_key.as_str(), q.as_str())?;
    check_eq("redelivered", d.redelivered, false)?;
    check_eq("delivery tag", d.delivery_tag, 1)?;
    check_eq("body", d.data.as_slice(), b"hello".as_slice())
}

async fn duplicate_tag(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let _a = ch
        .basic_consume(
            q.as_str().into(),
            "dup".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .step("first basic.consume")?;
    let r = ch
        .basic_consume(
            q.as_str().into(),
            "dup".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    // A connection error in RabbitMQ.
    expect_error(r, 530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'")?;
    wait_connection_closed(&c).await
}

async fn same_tag_other_channel(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let _a = ch
        .basic_consume(
            q.as_str().into(),
            "same".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .step("consume on channel 1")?;
    let _b = ch2
        .basic_consume(
            q.as_str().into(),
            "same".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .step("consume with the same tag on channel 2")?;
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq("consumer_count", ok.consumer_count(), 2)
}

fn exclusive_use(q: &str) -> String {
    format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
}

async fn exclusive_then_other(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let q = cl.queue(ctx.name("q"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        declare_queue(&ch, &q).await?;
        let _ex = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .step("exclusive basic.consume")?;
        let ch2 = c.create_channel().await.step("channel.open")?;
        expect_error(
            ch2.basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await,
            403,
            &exclusive_use(&q),
        )?;
        // Also from another connection.
        let (_c2, ch3) = open(&ctx.uri).await?;
        expect_error(
            ch3.basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await,
            403,
            &exclusive_use(&q),
        )?;
        expect_connection_usable(&c).await
    })
    .await
}

async fn exclusive_with_existing(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let _plain = consume(&ch, &q, false).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let r = ch2
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    expect_error(r, 403, &exclusive_use(&q))
}

async fn consume_missing(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("missing");
    let r = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_error(r, 404, &format!("NOT_FOUND - no queue '{q}' in vhost '/'"))?;
    expect_connection_usable(&c).await
}

async fn no_ack(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let mut cons = consume(&ch2, &q, true).await?;
    publish(&ch, "", &q, b"1").await?;
    publish(&ch, "", &q, b"2").await?;
    check_eq(
        "bodies",
        bodies(&mut cons, 2).await?,
        vec!["1".to_string(), "2".to_string()],
    )?;
    // Nothing to requeue when the consumer's channel closes: no-ack deliveries are settled.
    ch2.close(200, "bye".into()).await.step("channel.close")?;
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq(
        "message_count after the no-ack consumer's channel closed",
        ok.message_count(),
        0,
    )
}

async fn round_robin(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let cha = c.create_channel().await.step("channel.open")?;
    let chb = c.create_channel().await.step("channel.open")?;
    let mut a = consume(&cha, &q, true).await?;
    let mut b = consume(&chb, &q, true).await?;
    for i in 0..6 {
        publish(&ch, "", &q, i.to_string().as_bytes()).await?;
    }
    let got_a = bodies(&mut a, 3).await?;
    let got_b = bodies(&mut b, 3).await?;
    let mut firsts = [got_a[0].clone(), got_b[0].clone()];
    firsts.sort();
    check_eq("first messages", firsts, ["0".to_string(), "1".to_string()])?;
    // Each consumer gets every other message.
    let parity = |v: &[String]| {
        v.iter()
            .map(|s| s.parse::<u32>().unwrap_or(99) % 2)
            .collect::<Vec<_>>()
    };
    let pa = parity(&got_a);
    check(
        "consumer A gets alternate messages",
        pa.iter().all(|p| *p == pa[0]),
    )?;
    let pb = parity(&got_b);
    check("consumer B gets the others", pb.iter().all(|p| *p != pa[0]))
}

async fn order_and_tags(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut cons = consume(&ch, &q, false).await?;
    for i in 0..100 {
        publish(&ch, "", &q, i.to_string().as_bytes()).await?;
    }
    for i in 0..100u64 {
        let d = next_delivery(&mut cons).await?;
        check_eq(
            "body",
            String::from_utf8_lossy(&d.data).into_owned(),
            i.to_string(),
        )?;
        check_eq("delivery tag", d.delivery_tag, i + 1)?;
        check_eq("redelivered", d.redelivered, false)?;
    }
    Ok(())
}

async fn existing_messages(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    for b in ["a", "b", "c"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    wait_message_count(&ch, &q, 3).await?;
    let mut cons = consume(&ch, &q, true).await?;
    check_eq(
        "bodies",
        bodies(&mut cons, 3).await?,
        vec!["a".to_string(), "b".to_string(), "c".to_string()],
    )
}

async fn cancel_stops(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut cons = consume(&ch, &q, true).await?;
    publish(&ch, "", &q, b"before").await?;
    check_eq(
        "body",
        bodies(&mut cons, 1).await?,
        vec!["before".to_string()],
    )?;
    ch.basic_cancel(cons.tag(), BasicCancelOptions::default())
        .await
        .step("basic.cancel")?;
    publish(&ch, "", &q, b"after").await?;
    wait_message_count(&ch, &q, 1).await?;
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq("consumer_count", ok.consumer_count(), 0)?;
    // lapin ends the stream on cancel-ok.
    match tokio::time::timeout(WAIT, futures_lite::StreamExt::next(&mut cons)).await {
        Ok(None) => Ok(()),
        other => Err(Failure::new(
            "consumer stream ends after cancel",
            format!("{other:?}"),
        )),
    }
}

async fn cancel_unknown(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    ch.basic_cancel("no-such-consumer".into(), BasicCancelOptions::default())
        .await
        .step("basic.cancel of an unknown tag")?;
    sync(&ch).await?;
    expect_connection_usable(&c).await
}

/// Messages delivered before a cancel stay unacked and can still be acked afterwards.
async fn ack_after_cancel(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut cons = consume(&ch, &q, false).await?;
    publish(&ch, "", &q, b"1").await?;
    publish(&ch, "", &q, b"2").await?;
    let d1 = next_delivery(&mut cons).await?;
    let d2 = next_delivery(&mut cons).await?;
    ch.basic_cancel(cons.tag(), BasicCancelOptions::default())
        .await
        .step("basic.cancel")?;
    ch.basic_ack(d1.delivery_tag, BasicAckOptions::default())
        .await
        .step("basic.ack after cancel")?;
    ch.basic_reject(d2.delivery_tag, BasicRejectOptions { requeue: true })
        .await
        .step("basic.reject after cancel")?;
    sync(&ch).await?;
    let m = get_one(&ch, &q, true).await?;
    check_eq("requeued body", m.delivery.data.as_slice(), b"2".as_slice())?;
    check("redelivered", m.delivery.redelivered)?;
    expect_empty(&ch, &q).await
}

async fn mandatory_return(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    let rk = ctx.name("nobody");
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_message_id("m-1".into());
    let conf = ch
        .basic_publish(
            "amq.direct".into(),
            rk.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            b"bounce",
            props.clone(),
        )
        .await
        .step("basic.publish")?;
    let conf = tokio::time::timeout(WAIT, conf)
        .await
        .map_err(|_| Failure::new("a confirm", "none"))?
        .step("confirm")?;
    check("publisher confirm is an ack", conf.is_ack())?;
    let ret = conf
        .take_message()
        .ok_or_else(|| Failure::new("basic.return before the ack", "no returned message"))?;
    check_eq("reply code", ret.reply_code, 312)?;
    check_eq("reply text", ret.reply_text.as_str(), "NO_ROUTE")?;
    check_eq("exchange", ret.delivery.exchange.as_str(), "amq.direct")?;
    check_eq(
        "routing key",
        ret.delivery.routing_key.as_str(),
        rk.as_str(),
    )?;
    check_eq("body", ret.delivery.data.as_slice(), b"bounce".as_slice())?;
    check_eq("properties", ret.delivery.properties.clone(), props)
}

async fn mandatory_return_no_confirm(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (_c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &x, lapin::ExchangeKind::Fanout).await?;
        ch.basic_publish(
            x.as_str().into(),
            "rk".into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            b"b1",
            BasicProperties::default(),
        )
        .await
        .step("basic.publish")?;
        let returned = wait_returns(&ch, 1).await?;
        check_eq(
            "reply",
            (returned[0].reply_code, returned[0].reply_text.as_str()),
            (312, "NO_ROUTE"),
        )?;
        check_eq(
            "exchange",
            returned[0].delivery.exchange.as_str(),
            x.as_str(),
        )?;
        check_eq(
            "body",
            returned[0].delivery.data.as_slice(),
            b"b1".as_slice(),
        )
    })
    .await
}

/// Polls lapin's returned-message buffer until `n` returns arrived (deadline [`WAIT`]).
async fn wait_returns(
    ch: &Channel,
    n: usize,
) -> Result<Vec<lapin::message::BasicReturnMessage>, Failure> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        got.extend(
            ch.wait_for_confirms()
                .await
                .step("collect returned messages")?,
        );
        if got.len() >= n {
            return Ok(got);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                format!("{n} basic.return"),
                format!("{}", got.len()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn mandatory_routable(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    let conf = publish_confirmed(&ch, "", &q, b"routed", true).await?;
    check("ack", conf.is_ack())?;
    check("no basic.return", conf.take_message().is_none())?;
    get_one(&ch, &q, true).await.map(|_| ())
}

async fn unroutable_dropped(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    let conf = publish_confirmed(&ch, "amq.direct", &ctx.name("nobody"), b"dropped", false).await?;
    check("ack for an unroutable non-mandatory message", conf.is_ack())?;
    check("no basic.return", conf.take_message().is_none())
}

async fn immediate(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut ev = events(&c);
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions {
            mandatory: false,
            immediate: true,
        },
        b"now",
        BasicProperties::default(),
    )
    .await
    .step("basic.publish immediate")?;
    expect_async_error(&mut ev, 540, "NOT_IMPLEMENTED - immediate=true").await?;
    wait_connection_closed(&c).await
}

async fn get_count(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    expect_empty(&ch, &q).await?;
    for b in ["1", "2", "3"] {
        publish(&ch, "", &q, b.as_bytes()).await?;
    }
    wait_message_count(&ch, &q, 3).await?;
    for (body, left) in [("1", 2), ("2", 1), ("3", 0)] {
        let m = get_one(&ch, &q, true).await?;
        check_eq(
            "body",
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            body.to_string(),
        )?;
        check_eq("get-ok message_count", m.message_count, left)?;
        check_eq("exchange", m.delivery.exchange.as_str(), "")?;
        check_eq("routing key", m.delivery.routing_key.as_str(), q.as_str())?;
        check_eq("redelivered", m.delivery.redelivered, false)?;
    }
    expect_empty(&ch, &q).await
}

async fn get_unacked(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    publish(&ch, "", &q, b"held").await?;
    let gch = c.create_channel().await.step("channel.open")?;
    let m = get_one(&gch, &q, false).await?;
    check_eq("redelivered", m.delivery.redelivered, false)?;
    let ok = declare_exclusive(&ch, &q).await?;
    check_eq("ready while unacked", ok.message_count(), 0)?;
    gch.close(200, "bye".into()).await.step("channel.close")?;
    let m = get_one(&ch, &q, false).await?;
    check_eq("body", m.delivery.data.as_slice(), b"held".as_slice())?;
    check(
        "redelivered after the channel closed",
        m.delivery.redelivered,
    )?;
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .step("ack")?;
    sync(&ch).await?;
    expect_empty(&ch, &q).await
}

async fn get_tags_shared(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q1 = ctx.name("q1");
    let q2 = ctx.name("q2");
    declare_exclusive(&ch, &q1).await?;
    declare_exclusive(&ch, &q2).await?;
    publish(&ch, "", &q1, b"g1").await?;
    let g = get_one(&ch, &q1, false).await?;
    check_eq("first tag", g.delivery.delivery_tag, 1)?;
    let mut cons = consume(&ch, &q2, false).await?;
    publish(&ch, "", &q2, b"d").await?;
    let d = next_delivery(&mut cons).await?;
    check_eq("second tag (consume after get)", d.delivery_tag, 2)?;
    publish(&ch, "", &q1, b"g2").await?;
    let g2 = get_one(&ch, &q1, false).await?;
    check_eq("third tag", g2.delivery.delivery_tag, 3)?;
    ch.basic_ack(3, BasicAckOptions { multiple: true })
        .await
        .step("ack multiple")?;
    sync(&ch).await
}
