//! The exchange types of two plugins Debian's RabbitMQ ships: `x-consistent-hash`
//! (rabbitmq_consistent_hash_exchange: binding key = weight; the routing key, a header
//! (`hash-header`) or a property (`hash-property`) is hashed to pick one queue) and
//! `x-random` (rabbitmq_random_exchange: one bound queue at random).
//!
//! The reference node needs both plugins enabled (tests/run.sh does it). Placement of a
//! given key differs between Warren and RabbitMQ (different hash functions), so the
//! scenarios assert what a client can rely on: one value always reaches one queue, every
//! message reaches exactly one queue, and shares follow the weights within bounds.

use super::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::ExchangeKind;
use std::collections::HashMap;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.chash.same_key_same_queue",
            "x-consistent-hash",
            same_key_same_queue
        ),
        scenario!(
            "ext.chash.weights_respected",
            "x-consistent-hash binding weights",
            weights
        ),
        scenario!(
            "ext.chash.binding_key_not_integer_406",
            "x-consistent-hash binding key",
            key_not_integer
        ),
        scenario!(
            "ext.chash.binding_key_zero_406",
            "x-consistent-hash binding key",
            key_zero
        ),
        scenario!(
            "ext.chash.hash_header",
            "x-consistent-hash hash-header",
            hash_header
        ),
        scenario!(
            "ext.chash.hash_property_message_id",
            "x-consistent-hash hash-property",
            hash_property
        ),
        scenario!(
            "ext.chash.unsupported_property_406",
            "x-consistent-hash hash-property",
            unsupported_property
        ),
        scenario!(
            "ext.chash.header_and_property_406",
            "x-consistent-hash hash-header + hash-property",
            header_and_property
        ),
        scenario!(
            "ext.chash.unbind_moves_keys",
            "x-consistent-hash unbind",
            unbind
        ),
        scenario!("ext.random.one_queue_each", "x-random", random_one_queue),
        scenario!(
            "ext.random.no_binding_returned",
            "x-random + mandatory",
            random_unroutable
        ),
    ]
}

const CHASH: &str = "x-consistent-hash";

async fn declare_x(ch: &Channel, name: &str, kind: &str, args: FieldTable) -> Result<(), Failure> {
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Custom(kind.into()),
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        args,
    )
    .await
    .step(&format!("exchange.declare {name} type {kind}"))
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

/// Declares `n` exclusive queues bound to `x` with the given binding keys.
async fn queues(ctx: &Ctx, ch: &Channel, x: &str, keys: &[&str]) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let q = ctx.name(&format!("q{i}"));
        declare_exclusive(ch, &q).await?;
        bind(ch, &q, x, k).await?;
        out.push(q);
    }
    Ok(out)
}

/// Publishes each (routing key, properties, body) with confirms on a confirm channel.
async fn publish_all(
    ch: &Channel,
    x: &str,
    msgs: Vec<(String, BasicProperties, String)>,
) -> Result<(), Failure> {
    let mut confirms = Vec::with_capacity(msgs.len());
    for (rk, props, body) in msgs {
        confirms.push(
            ch.basic_publish(
                x.into(),
                rk.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .step("basic.publish")?,
        );
    }
    for c in confirms {
        match tokio::time::timeout(WAIT, c).await {
            Ok(r) => {
                r.step("publisher confirm")?;
            }
            Err(_) => return Err(Failure::new("a confirm", "none within the wait")),
        }
    }
    Ok(())
}

/// Drains every queue: body → index of the queue it was in (each body at most once).
async fn placement(ch: &Channel, qs: &[String]) -> Result<HashMap<String, usize>, Failure> {
    let mut at = HashMap::new();
    for (i, q) in qs.iter().enumerate() {
        for b in drain(ch, q).await? {
            if at.insert(b.clone(), i).is_some() {
                return Err(Failure::new(
                    "each message in one queue",
                    format!("{b} twice"),
                ));
            }
        }
    }
    Ok(at)
}

/// Checks that every group of bodies (keyed by the hashed value) sits in one queue.
fn one_queue_per_value(
    at: &HashMap<String, usize>,
    value_of: impl Fn(&str) -> String,
) -> Result<usize, Failure> {
    let mut by_value: HashMap<String, usize> = HashMap::new();
    for (body, q) in at {
        let v = value_of(body);
        if let Some(prev) = by_value.insert(v.clone(), *q) {
            if prev != *q {
                return Err(Failure::new(
                    format!("every message hashed on {v:?} in one queue"),
                    format!("queues {prev} and {q}"),
                ));
            }
        }
    }
    Ok(by_value.len())
}

async fn confirm_channel(ctx: &Ctx) -> Result<(Connection, Channel), Failure> {
    let (c, ch) = open(&ctx.uri).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .step("confirm.select")?;
    Ok((c, ch))
}

/// 30 routing keys, 10 messages each, three queues of weight 1: every key's messages in
/// one queue, all 300 delivered once.
async fn same_key_same_queue(ctx: Ctx) -> Outcome {
    let (_c, ch) = confirm_channel(&ctx).await?;
    let x = ctx.name("chash");
    declare_x(&ch, &x, CHASH, FieldTable::default()).await?;
    let qs = queues(&ctx, &ch, &x, &["1", "1", "1"]).await?;
    let mut msgs = Vec::new();
    for round in 0..10 {
        for k in 0..30 {
            msgs.push((
                format!("key-{k}"),
                BasicProperties::default(),
                format!("key-{k}/{round}"),
            ));
        }
    }
    publish_all(&ch, &x, msgs).await?;
    let at = placement(&ch, &qs).await?;
    check_eq("messages delivered", at.len(), 300)?;
    let values = one_queue_per_value(&at, |b| b.split('/').next().unwrap_or("").to_string())?;
    check_eq("distinct keys", values, 30)?;
    let used: std::collections::HashSet<usize> = at.values().copied().collect();
    check("keys spread over more than one queue", used.len() > 1)
}

/// Weights 1 and 3: the second queue gets about three quarters of 2000 distinct keys.
async fn weights(ctx: Ctx) -> Outcome {
    let (_c, ch) = confirm_channel(&ctx).await?;
    let x = ctx.name("chash");
    declare_x(&ch, &x, CHASH, FieldTable::default()).await?;
    let qs = queues(&ctx, &ch, &x, &["1", "3"]).await?;
    let msgs = (0..2000)
        .map(|i| (format!("k{i}"), BasicProperties::default(), format!("{i}")))
        .collect();
    publish_all(&ch, &x, msgs).await?;
    let at = placement(&ch, &qs).await?;
    check_eq("messages delivered", at.len(), 2000)?;
    let heavy = at.values().filter(|q| **q == 1).count();
    if !(1300..=1700).contains(&heavy) {
        return Err(Failure::new(
            "1300..=1700 of 2000 to the weight-3 queue (expected 1500)",
            format!("{heavy}"),
        ));
    }
    Ok(())
}

async fn bad_key(ctx: Ctx, key: &str, text: &str) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let x = ctx.name("chash");
    declare_x(&ch, &x, CHASH, FieldTable::default()).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let r = ch
        .queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_error(r, 406, text)?;
    // The channel is closed; the auto-delete exchange had no binding: delete it.
    let (_c2, ch2) = open(&ctx.uri).await?;
    let _ = ch2
        .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    Ok(())
}

async fn key_not_integer(ctx: Ctx) -> Outcome {
    bad_key(
        ctx,
        "heavy",
        "PRECONDITION_FAILED - The binding key must be an integer: <<\"heavy\">>",
    )
    .await
}

async fn key_zero(ctx: Ctx) -> Outcome {
    bad_key(
        ctx,
        "0",
        "PRECONDITION_FAILED - The binding key must be greater than 0",
    )
    .await
}

/// `hash-header`: messages with one header value and different routing keys reach one
/// queue.
async fn hash_header(ctx: Ctx) -> Outcome {
    let (_c, ch) = confirm_channel(&ctx).await?;
    let x = ctx.name("chash");
    declare_x(&ch, &x, CHASH, table(vec![("hash-header", s("tenant"))])).await?;
    let qs = queues(&ctx, &ch, &x, &["1", "1", "1"]).await?;
    let mut msgs = Vec::new();
    for i in 0..200 {
        let tenant = format!("t{}", i % 20);
        let h = table(vec![("tenant", s(&tenant))]);
        msgs.push((
            format!("rk-{i}"),
            BasicProperties::default().with_headers(h),
            format!("{tenant}/{i}"),
        ));
    }
    publish_all(&ch, &x, msgs).await?;
    let at = placement(&ch, &qs).await?;
    check_eq("messages delivered", at.len(), 200)?;
    let values = one_queue_per_value(&at, |b| b.split('/').next().unwrap_or("").to_string())?;
    check_eq("distinct tenants", values, 20)
}

/// `hash-property: message_id`: routing keys are ignored, the message id decides.
async fn hash_property(ctx: Ctx) -> Outcome {
    let (_c, ch) = confirm_channel(&ctx).await?;
    let x = ctx.name("chash");
    declare_x(
        &ch,
        &x,
        CHASH,
        table(vec![("hash-property", s("message_id"))]),
    )
    .await?;
    let qs = queues(&ctx, &ch, &x, &["1", "1", "1"]).await?;
    let mut msgs = Vec::new();
    for i in 0..200 {
        let id = format!("m{}", i % 25);
        msgs.push((
            format!("rk-{i}"),
            BasicProperties::default().with_message_id(id.as_str().into()),
            format!("{id}/{i}"),
        ));
    }
    publish_all(&ch, &x, msgs).await?;
    let at = placement(&ch, &qs).await?;
    check_eq("messages delivered", at.len(), 200)?;
    let values = one_queue_per_value(&at, |b| b.split('/').next().unwrap_or("").to_string())?;
    check_eq("distinct message ids", values, 25)
}

async fn bad_args(ctx: Ctx, args: FieldTable, text: &str) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let x = ctx.name("chash");
    let r = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Custom(CHASH.into()),
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            args,
        )
        .await;
    expect_error(r, 406, text)
}

async fn unsupported_property(ctx: Ctx) -> Outcome {
    bad_args(
        ctx,
        table(vec![("hash-property", s("app_id"))]),
        "PRECONDITION_FAILED - Unsupported property: app_id",
    )
    .await
}

async fn header_and_property(ctx: Ctx) -> Outcome {
    bad_args(
        ctx,
        table(vec![
            ("hash-header", s("h")),
            ("hash-property", s("message_id")),
        ]),
        "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive",
    )
    .await
}

/// After one of two queues is unbound, every key reaches the other.
async fn unbind(ctx: Ctx) -> Outcome {
    let (_c, ch) = confirm_channel(&ctx).await?;
    let x = ctx.name("chash");
    declare_x(&ch, &x, CHASH, FieldTable::default()).await?;
    let qs = queues(&ctx, &ch, &x, &["1", "1"]).await?;
    ch.queue_unbind(
        qs[0].as_str().into(),
        x.as_str().into(),
        "1".into(),
        FieldTable::default(),
    )
    .await
    .step("queue.unbind")?;
    let msgs = (0..50)
        .map(|i| (format!("k{i}"), BasicProperties::default(), format!("{i}")))
        .collect();
    publish_all(&ch, &x, msgs).await?;
    let at = placement(&ch, &qs).await?;
    check_eq("messages delivered", at.len(), 50)?;
    check("all in the queue still bound", at.values().all(|q| *q == 1))
}

/// x-random: each of 300 messages reaches exactly one of three queues, and each queue
/// gets a fair share (expected 100; at least 50).
async fn random_one_queue(ctx: Ctx) -> Outcome {
    let (_c, ch) = confirm_channel(&ctx).await?;
    let x = ctx.name("random");
    declare_x(&ch, &x, "x-random", FieldTable::default()).await?;
    let qs = queues(&ctx, &ch, &x, &["", "", ""]).await?;
    let msgs = (0..300)
        .map(|i| {
            (
                "same".to_string(),
                BasicProperties::default(),
                format!("{i}"),
            )
        })
        .collect();
    publish_all(&ch, &x, msgs).await?;
    let at = placement(&ch, &qs).await?;
    check_eq("messages delivered", at.len(), 300)?;
    for i in 0..3 {
        let n = at.values().filter(|q| **q == i).count();
        if n < 50 {
            return Err(Failure::new(
                format!("at least 50 of 300 in queue {i}"),
                format!("{n}"),
            ));
        }
    }
    Ok(())
}

/// x-random without bindings routes nowhere: a mandatory message comes back.
async fn random_unroutable(ctx: Ctx) -> Outcome {
    let (_c, ch) = confirm_channel(&ctx).await?;
    let x = ctx.name("random");
    // Not auto-delete: it never gets a binding; deleted at the end.
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Custom("x-random".into()),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .step("exchange.declare x-random")?;
    let conf = publish_confirmed(&ch, &x, "any", b"lost", true).await?;
    let _ = ch
        .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let returned = conf
        .take_message()
        .map(|m| (m.reply_code, m.reply_text.to_string()));
    check_eq(
        "basic.return",
        returned,
        Some((312, "NO_ROUTE".to_string())),
    )
}
