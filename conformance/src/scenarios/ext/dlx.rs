//! Dead-lettering: `x-dead-letter-exchange` and `x-dead-letter-routing-key`. A message is
//! dead-lettered when rejected or nacked with requeue=false (reason `rejected`), when it
//! expires (`expired`) and when a length limit drops it (`maxlen`). The dead-lettered copy
//! carries the `x-death` header, which RabbitMQ 3.10 writes as an array (`A`) of tables
//! (`F`), newest first, one per (queue, reason), each with exactly these fields:
//!
//! | field | type (lapin `AMQPValue`) | value |
//! |---|---|---|
//! | `count` | `LongLongInt` (`l`) | times dead-lettered from that queue for that reason |
//! | `reason` | `LongString` | `rejected`, `expired` or `maxlen` |
//! | `queue` | `LongString` | the queue it was dead-lettered from |
//! | `time` | `Timestamp` (`T`) | seconds since the epoch |
//! | `exchange` | `LongString` | the exchange it had been published to (`""` for the default) |
//! | `routing-keys` | `FieldArray` of `LongString` | its routing keys then |
//! | `original-expiration` | `LongString` | only when it had an `expiration` property, which is removed |
//!
//! plus `x-first-death-reason`, `x-first-death-queue`, `x-first-death-exchange` (long
//! strings, set once). Without `x-dead-letter-routing-key` the original routing key is kept.
//! A message dead-lettered in a cycle back to a queue it already died in is dropped when no
//! death in the cycle was a rejection (an expiry loop ends after one round), but not when
//! it is rejected (the count then increments). A dead-letter exchange that does not exist
//! drops the message silently.

use super::*;
use crate::{Ctx, Failure, Outcome, Scenario};
use lapin::{BasicProperties, ExchangeKind};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "ext.dlx.reject_dead_lettered_x_death",
            "x-dead-letter-exchange / x-death",
            reject_dl
        ),
        scenario!(
            "ext.dlx.nack_dead_lettered",
            "x-dead-letter-exchange",
            nack_dl
        ),
        scenario!(
            "ext.dlx.requeue_not_dead_lettered",
            "x-dead-letter-exchange",
            requeue_not_dl
        ),
        scenario!(
            "ext.dlx.routing_key_override",
            "x-dead-letter-routing-key",
            rk_override
        ),
        scenario!(
            "ext.dlx.cc_in_routing_keys",
            "x-death routing-keys + CC",
            cc_kept
        ),
        scenario!(
            "ext.dlx.routing_key_override_drops_cc",
            "x-dead-letter-routing-key + CC",
            cc_dropped
        ),
        scenario!(
            "ext.dlx.expired_per_message",
            "x-dead-letter-exchange + expiration",
            expired_per_message
        ),
        scenario!(
            "ext.dlx.queue_ttl_keeps_original_expiration",
            "x-death original-expiration",
            queue_ttl_original_expiration
        ),
        scenario!(
            "ext.dlx.expired_queue_ttl",
            "x-dead-letter-exchange + x-message-ttl",
            expired_queue_ttl
        ),
        scenario!(
            "ext.dlx.maxlen_drop_head",
            "x-dead-letter-exchange + x-max-length",
            maxlen_dl
        ),
        scenario!("ext.dlx.twice_two_entries", "x-death", twice),
        scenario!(
            "ext.dlx.reject_cycle_count_increments",
            "x-death count",
            reject_cycle
        ),
        scenario!(
            "ext.dlx.expiry_cycle_dropped",
            "dead-letter cycle detection",
            expiry_cycle
        ),
        scenario!(
            "ext.dlx.missing_exchange_dropped",
            "x-dead-letter-exchange",
            missing_dlx
        ),
        scenario!(
            "ext.dlx.routing_key_without_exchange_406",
            "x-dead-letter-routing-key",
            rk_without_dlx
        ),
        scenario!(
            "ext.dlx.wrong_type_406",
            "x-dead-letter-exchange",
            dlx_wrong_type
        ),
    ]
}

/// One expected `x-death` entry.
pub(crate) struct Death<'a> {
    pub count: i64,
    pub reason: &'a str,
    pub queue: &'a str,
    pub exchange: &'a str,
    pub routing_keys: Vec<&'a str>,
    pub original_expiration: Option<&'a str>,
}

/// Checks the `x-death` header field by field, names and types included.
pub(crate) fn check_x_death(p: &BasicProperties, expected: &[Death<'_>]) -> Outcome {
    let v = header(p, "x-death")
        .ok_or_else(|| Failure::new("an x-death header", format!("{:?}", p.headers())))?;
    let AMQPValue::FieldArray(arr) = v else {
        return Err(Failure::new("x-death is a field array", format!("{v:?}")));
    };
    let arr = arr.as_slice();
    check_eq("x-death entries", arr.len(), expected.len())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (i, (got, exp)) in arr.iter().zip(expected).enumerate() {
        let AMQPValue::FieldTable(t) = got else {
            return Err(Failure::new(
                format!("x-death[{i}] is a table"),
                format!("{got:?}"),
            ));
        };
        let mut keys: Vec<&str> = t.inner().keys().map(|k| k.as_str()).collect();
        keys.sort();
        let mut want = vec![
            "count",
            "exchange",
            "queue",
            "reason",
            "routing-keys",
            "time",
        ];
        if exp.original_expiration.is_some() {
            want.push("original-expiration");
        }
        want.sort();
        check_eq(&format!("x-death[{i}] fields"), keys, want)?;
        let f = |k: &str| t.inner().get(k).cloned().unwrap_or(AMQPValue::Void);
        check_eq(
            &format!("x-death[{i}].count"),
            f("count"),
            AMQPValue::LongLongInt(exp.count),
        )?;
        check_eq(
            &format!("x-death[{i}].reason"),
            f("reason"),
            lstr(exp.reason),
        )?;
        check_eq(&format!("x-death[{i}].queue"), f("queue"), lstr(exp.queue))?;
        check_eq(
            &format!("x-death[{i}].exchange"),
            f("exchange"),
            lstr(exp.exchange),
        )?;
        let rks: Vec<AMQPValue> = exp.routing_keys.iter().map(|k| lstr(k)).collect();
        check_eq(
            &format!("x-death[{i}].routing-keys"),
            f("routing-keys"),
            AMQPValue::FieldArray(rks.into()),
        )?;
        if let Some(e) = exp.original_expiration {
            check_eq(
                &format!("x-death[{i}].original-expiration"),
                f("original-expiration"),
                lstr(e),
            )?;
        }
        match f("time") {
            AMQPValue::Timestamp(ts) if ts.abs_diff(now) <= 120 => {}
            other => {
                return Err(Failure::new(
                    format!("x-death[{i}].time a timestamp near {now}"),
                    format!("{other:?}"),
                ))
            }
        }
    }
    Ok(())
}

/// Checks the three `x-first-death-*` headers.
pub(crate) fn check_first_death(
    p: &BasicProperties,
    reason: &str,
    queue: &str,
    exchange: &str,
) -> Outcome {
    for (k, v) in [
        ("x-first-death-reason", reason),
        ("x-first-death-queue", queue),
        ("x-first-death-exchange", exchange),
    ] {
        check_eq(k, header(p, k).cloned(), Some(lstr(v)))?;
    }
    Ok(())
}

/// Declares a fanout auto-delete dead-letter exchange, an exclusive queue bound to it and
/// returns (dlx, dlq).
pub(crate) async fn dead_letter_target(
    ch: &Channel,
    ctx: &Ctx,
) -> Result<(String, String), Failure> {
    let dlx = ctx.name("dlx");
    let dlq = ctx.name("dlq");
    declare_exchange_ad(ch, &dlx, ExchangeKind::Fanout).await?;
    declare_exclusive(ch, &dlq).await?;
    bind(ch, &dlq, &dlx, "").await?;
    Ok((dlx, dlq))
}

/// Source queue args: the dead-letter exchange plus `extra`.
pub(crate) fn dl_args(dlx: &str, extra: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut v = vec![("x-dead-letter-exchange", lstr(dlx))];
    v.extend(extra);
    table(v)
}

/// Source queue bound to amq.direct with key `rk`; publishes `body` through amq.direct.
async fn source_via_direct(
    ch: &Channel,
    src: &str,
    rk: &str,
    args: FieldTable,
    body: &str,
) -> Outcome {
    declare_x(ch, src, args).await?;
    bind(ch, src, "amq.direct", rk).await?;
    publish_p(ch, "amq.direct", rk, body, Default::default()).await
}

async fn reject_dl(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    let rk = ctx.name("rk");
    source_via_direct(&ch, &src, &rk, dl_args(&dlx, vec![]), "dead").await?;
    let m = get_one(&ch, &src, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject")?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq("body", body(&d), "dead".into())?;
    check_eq(
        "exchange of the dead-lettered delivery",
        d.exchange.as_str(),
        dlx.as_str(),
    )?;
    check_eq(
        "routing key (the original)",
        d.routing_key.as_str(),
        rk.as_str(),
    )?;
    check_eq("redelivered", d.redelivered, false)?;
    let mut keys: Vec<String> = d
        .properties
        .headers()
        .as_ref()
        .map(|h| h.inner().keys().map(|k| k.as_str().to_string()).collect())
        .unwrap_or_default();
    keys.sort();
    check_eq(
        "headers",
        keys,
        vec![
            "x-death".to_string(),
            "x-first-death-exchange".into(),
            "x-first-death-queue".into(),
            "x-first-death-reason".into(),
        ],
    )?;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "rejected",
            queue: &src,
            exchange: "amq.direct",
            routing_keys: vec![&rk],
            original_expiration: None,
        }],
    )?;
    check_first_death(&d.properties, "rejected", &src, "amq.direct")?;
    check_eq("source count", counts(&ch, &src).await?.0, 0)
}

async fn nack_dl(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    declare_x(&ch, &src, dl_args(&dlx, vec![])).await?;
    let mut cons = consume(&ch, &src, false).await?;
    publish(&ch, "", &src, b"n1").await?;
    publish(&ch, "", &src, b"n2").await?;
    let _d1 = next_delivery(&mut cons).await?;
    let d2 = next_delivery(&mut cons).await?;
    d2.acker
        .nack(BasicNackOptions {
            multiple: true,
            requeue: false,
        })
        .await
        .step("basic.nack multiple requeue=false")?;
    let a = get_one(&ch, &dlq, true).await?.delivery;
    let b = get_one(&ch, &dlq, true).await?.delivery;
    check_eq(
        "dead-lettered in order",
        (body(&a), body(&b)),
        ("n1".into(), "n2".into()),
    )?;
    check_x_death(
        &b.properties,
        &[Death {
            count: 1,
            reason: "rejected",
            queue: &src,
            exchange: "",
            routing_keys: vec![&src],
            original_expiration: None,
        }],
    )
}

async fn requeue_not_dl(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    declare_x(&ch, &src, dl_args(&dlx, vec![])).await?;
    publish(&ch, "", &src, b"m").await?;
    let m = get_one(&ch, &src, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .step("basic.reject")?;
    let again = get_one(&ch, &src, true).await?.delivery;
    check_eq("redelivered", again.redelivered, true)?;
    check_eq(
        "no x-death",
        header(&again.properties, "x-death").is_some(),
        false,
    )?;
    check_eq("dead-letter queue count", counts(&ch, &dlq).await?.0, 0)
}

async fn rk_override(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let dlx = ctx.name("dlx");
    let dlq = ctx.name("dlq");
    declare_exchange_ad(&ch, &dlx, ExchangeKind::Direct).await?;
    declare_exclusive(&ch, &dlq).await?;
    bind(&ch, &dlq, &dlx, "dl-key").await?;
    let src = ctx.name("src");
    let rk = ctx.name("rk");
    let args = dl_args(&dlx, vec![("x-dead-letter-routing-key", lstr("dl-key"))]);
    source_via_direct(&ch, &src, &rk, args, "m").await?;
    let m = get_one(&ch, &src, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject")?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq("routing key", d.routing_key.as_str(), "dl-key")?;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "rejected",
            queue: &src,
            exchange: "amq.direct",
            routing_keys: vec![&rk],
            original_expiration: None,
        }],
    )
}

fn cc(keys: &[&str]) -> BasicProperties {
    let arr: Vec<AMQPValue> = keys.iter().map(|k| lstr(k)).collect();
    BasicProperties::default().with_headers(table(vec![("CC", AMQPValue::FieldArray(arr.into()))]))
}

fn header_names(p: &BasicProperties) -> Vec<String> {
    let mut keys: Vec<String> = p
        .headers()
        .as_ref()
        .map(|h| h.inner().keys().map(|k| k.as_str().to_string()).collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Without a dead-letter routing key, the CC header stays and its keys are listed in
/// `routing-keys` after the routing key (the copy is routed with all of them again).
async fn cc_kept(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    let rk = ctx.name("rk");
    let cck = ctx.name("cc");
    declare_x(&ch, &src, dl_args(&dlx, vec![])).await?;
    bind(&ch, &src, "amq.direct", &rk).await?;
    publish_p(&ch, "amq.direct", &rk, "m", cc(&[&cck])).await?;
    let m = get_one(&ch, &src, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject")?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq(
        "headers",
        header_names(&d.properties),
        vec![
            "CC".to_string(),
            "x-death".into(),
            "x-first-death-exchange".into(),
            "x-first-death-queue".into(),
            "x-first-death-reason".into(),
        ],
    )?;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "rejected",
            queue: &src,
            exchange: "amq.direct",
            routing_keys: vec![&rk, &cck],
            original_expiration: None,
        }],
    )?;
    sync(&ch).await?;
    check_eq(
        "one copy in the dead-letter queue",
        counts(&ch, &dlq).await?.0,
        0,
    )
}

/// With x-dead-letter-routing-key, the CC header is removed from the dead-lettered copy.
async fn cc_dropped(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    let rk = ctx.name("rk");
    let cck = ctx.name("cc");
    declare_x(
        &ch,
        &src,
        dl_args(&dlx, vec![("x-dead-letter-routing-key", lstr("dl-key"))]),
    )
    .await?;
    bind(&ch, &src, "amq.direct", &rk).await?;
    publish_p(&ch, "amq.direct", &rk, "m", cc(&[&cck])).await?;
    let m = get_one(&ch, &src, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject")?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq("routing key", d.routing_key.as_str(), "dl-key")?;
    check_eq(
        "headers",
        header_names(&d.properties),
        vec![
            "x-death".to_string(),
            "x-first-death-exchange".into(),
            "x-first-death-queue".into(),
            "x-first-death-reason".into(),
        ],
    )?;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "rejected",
            queue: &src,
            exchange: "amq.direct",
            routing_keys: vec![&rk, &cck],
            original_expiration: None,
        }],
    )
}

async fn expired_per_message(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    declare_x(&ch, &src, dl_args(&dlx, vec![])).await?;
    publish_p(&ch, "", &src, "m", expiring("50").with_priority(3)).await?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq(
        "expiration property removed",
        d.properties.expiration().clone(),
        None,
    )?;
    check_eq("other properties kept", *d.properties.priority(), Some(3))?;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "expired",
            queue: &src,
            exchange: "",
            routing_keys: vec![&src],
            original_expiration: Some("50"),
        }],
    )?;
    check_first_death(&d.properties, "expired", &src, "")
}

/// Expired by the queue's TTL while carrying its own longer `expiration`: the property still
/// moves to `original-expiration`.
async fn queue_ttl_original_expiration(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    declare_x(&ch, &src, dl_args(&dlx, vec![("x-message-ttl", int(50))])).await?;
    publish_p(&ch, "", &src, "m", expiring("60000")).await?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq(
        "expiration property removed",
        d.properties.expiration().clone(),
        None,
    )?;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "expired",
            queue: &src,
            exchange: "",
            routing_keys: vec![&src],
            original_expiration: Some("60000"),
        }],
    )
}

async fn expired_queue_ttl(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    declare_x(&ch, &src, dl_args(&dlx, vec![("x-message-ttl", int(50))])).await?;
    publish(&ch, "", &src, b"m").await?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "expired",
            queue: &src,
            exchange: "",
            routing_keys: vec![&src],
            original_expiration: None,
        }],
    )
}

async fn maxlen_dl(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, dlq) = dead_letter_target(&ch, &ctx).await?;
    let src = ctx.name("src");
    declare_x(&ch, &src, dl_args(&dlx, vec![("x-max-length", int(1))])).await?;
    publish(&ch, "", &src, b"first").await?;
    publish(&ch, "", &src, b"second").await?;
    let d = get_one(&ch, &dlq, true).await?.delivery;
    check_eq("dropped head", body(&d), "first".into())?;
    check_x_death(
        &d.properties,
        &[Death {
            count: 1,
            reason: "maxlen",
            queue: &src,
            exchange: "",
            routing_keys: vec![&src],
            original_expiration: None,
        }],
    )?;
    check_eq("kept", drain(&ch, &src).await?, vec!["second".to_string()])
}

async fn twice(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx2, q3) = dead_letter_target(&ch, &ctx).await?;
    let dlx1 = ctx.name("dlx1");
    let q2 = ctx.name("q2");
    declare_exchange_ad(&ch, &dlx1, ExchangeKind::Fanout).await?;
    declare_x(&ch, &q2, dl_args(&dlx2, vec![])).await?;
    bind(&ch, &q2, &dlx1, "").await?;
    let q1 = ctx.name("q1");
    let rk = ctx.name("rk");
    source_via_direct(&ch, &q1, &rk, dl_args(&dlx1, vec![]), "m").await?;
    let m = get_one(&ch, &q1, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject q1")?;
    let m = get_one(&ch, &q2, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject q2")?;
    let d = get_one(&ch, &q3, true).await?.delivery;
    check_x_death(
        &d.properties,
        &[
            Death {
                count: 1,
                reason: "rejected",
                queue: &q2,
                exchange: &dlx1,
                routing_keys: vec![&rk],
                original_expiration: None,
            },
            Death {
                count: 1,
                reason: "rejected",
                queue: &q1,
                exchange: "amq.direct",
                routing_keys: vec![&rk],
                original_expiration: None,
            },
        ],
    )?;
    check_first_death(&d.properties, "rejected", &q1, "amq.direct")
}

async fn reject_cycle(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_x(
        &ch,
        &q,
        dl_args("", vec![("x-dead-letter-routing-key", lstr(&q))]),
    )
    .await?;
    publish(&ch, "", &q, b"m").await?;
    for n in 1..=3 {
        let m = get_one(&ch, &q, false).await?;
        if n > 1 {
            check_x_death(
                &m.delivery.properties,
                &[Death {
                    count: n - 1,
                    reason: "rejected",
                    queue: &q,
                    exchange: "",
                    routing_keys: vec![&q],
                    original_expiration: None,
                }],
            )?;
            check_eq("redelivered", m.delivery.redelivered, false)?;
        }
        m.delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await
            .step("basic.reject")?;
    }
    let m = get_one(&ch, &q, true).await?;
    check_x_death(
        &m.delivery.properties,
        &[Death {
            count: 3,
            reason: "rejected",
            queue: &q,
            exchange: "",
            routing_keys: vec![&q],
            original_expiration: None,
        }],
    )
}

/// An expiry loop: the queue's dead-letter exchange routes back to it and to an observer.
/// RabbitMQ adds the new x-death entry before routing, so the copy for the queue itself is
/// already a cycle (only expiries) and is dropped; the observer gets its one copy.
async fn expiry_cycle(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let (dlx, observer) = dead_letter_target(&ch, &ctx).await?;
    let q = ctx.name("q");
    declare_x(&ch, &q, dl_args(&dlx, vec![("x-message-ttl", int(50))])).await?;
    bind(&ch, &q, &dlx, "").await?;
    publish(&ch, "", &q, b"loop").await?;
    let first = get_one(&ch, &observer, true).await?.delivery;
    check_x_death(
        &first.properties,
        &[Death {
            count: 1,
            reason: "expired",
            queue: &q,
            exchange: "",
            routing_keys: vec![&q],
            original_expiration: None,
        }],
    )?;
    // Had the queue's copy been enqueued, it would expire within 50 ms and send the observer
    // a second copy: publish a marker with the same TTL after it and wait for its copy.
    publish(&ch, "", &q, b"marker").await?;
    let next = get_one(&ch, &observer, true).await?.delivery;
    check_eq("next dead-lettered message", body(&next), "marker".into())?;
    check_eq("queue count", counts(&ch, &q).await?.0, 0)?;
    check_eq("observer count", counts(&ch, &observer).await?.0, 0)
}

async fn missing_dlx(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let src = ctx.name("src");
    declare_x(&ch, &src, dl_args(&ctx.name("no-such-exchange"), vec![])).await?;
    publish(&ch, "", &src, b"m").await?;
    let m = get_one(&ch, &src, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject")?;
    sync(&ch).await?;
    expect_empty(&ch, &src).await?;
    expect_connection_usable(&c).await
}

async fn rk_without_dlx(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-dead-letter-routing-key", lstr("k"))]),
        &invalid_arg(
            "x-dead-letter-routing-key",
            &q,
            "routing_key_but_no_dlx_defined",
        ),
    )
    .await
}

async fn dlx_wrong_type(ctx: Ctx) -> Outcome {
    let c = connect(&ctx.uri).await?;
    let q = ctx.name("q");
    expect_declare_406(
        &c,
        &q,
        table(vec![("x-dead-letter-exchange", int(1))]),
        &format!("PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
    )
    .await
}
