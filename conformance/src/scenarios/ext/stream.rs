//! Streams (`x-queue-type: stream`) over AMQP 0-9-1: declaring, what is refused (with
//! RabbitMQ's codes and texts), consuming from an `x-stream-offset` (first, last, next, a
//! number, a timestamp, an interval), the `x-stream-offset` header on every delivery, acks
//! as credit, filtering, many readers at once, and a stream as a routing or dead-letter
//! destination.
//!
//! Streams are durable and cannot be exclusive, so every scenario deletes its stream at the
//! end. Known differences of RabbitMQ 3.10.8 (the reference) from 3.13 are marked: 3.10
//! has no filtering, no `x-priority` check on stream consumers, other reply texts, and
//! credit per chunk rather than per message (3.13 also has per-chunk credit; the exact
//! per-message credit asserted here is 4.0's, see conformance/README.md).

use super::*;
use crate::{Ctx, Outcome, Scenario};
use futures_lite::StreamExt;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("ext.stream.declare_counts", "stream queue.declare-ok", declare_counts),
        scenario!(
            "ext.stream.declare_arguments_accepted",
            "stream queue.declare arguments",
            declare_arguments
        ),
        scenario!(
            "ext.stream.declare_invalid_max_age_406",
            "stream x-max-age",
            invalid_max_age
        ),
        scenario!(
            "ext.stream.declare_segment_size_above_max_406",
            "stream x-stream-max-segment-size-bytes",
            segment_size_above_max
        ),
        scenario!(
            "ext.stream.declare_filter_size_out_of_range_406",
            "stream x-stream-filter-size-bytes",
            filter_size_out_of_range,
            "3.10 has no x-stream-filter-size-bytes (3.13 feature)"
        ),
        scenario!(
            "ext.stream.declare_classic_argument_406",
            "stream queue.declare arguments of other types",
            classic_argument
        ),
        scenario!(
            "ext.stream.nonpersistent_messages_stored",
            "stream delivery_mode 1",
            nonpersistent_stored
        ),
        scenario!(
            "ext.stream.consume_without_prefetch_406",
            "stream basic.consume prefetch",
            without_prefetch,
            "3.10 words it `consumer prefetch count is not set for 'queue 'q' in vhost '/''`"
        ),
        scenario!(
            "ext.stream.consume_no_ack_540",
            "stream basic.consume no-ack",
            no_ack,
            "3.10 words it `automatic acknowledgement not supported by stream queues queue 'q' in vhost '/'`"
        ),
        scenario!(
            "ext.stream.consume_global_qos_540",
            "stream basic.consume global qos",
            global_qos
        ),
        scenario!("ext.stream.basic_get_540", "stream basic.get", basic_get),
        scenario!("ext.stream.purge_540", "stream queue.purge", purge),
        scenario!(
            "ext.stream.consume_x_priority_406",
            "stream basic.consume x-priority",
            x_priority,
            "3.10 accepts x-priority on a stream consumer"
        ),
        scenario!(
            "ext.stream.invalid_offset_406",
            "stream x-stream-offset",
            invalid_offset,
            "3.10's check_max_age crashes on a string without digits: 541 INTERNAL_ERROR"
        ),
        scenario!("ext.stream.offset_first", "stream x-stream-offset first", first),
        scenario!(
            "ext.stream.offset_next_is_default",
            "stream x-stream-offset next",
            next_default
        ),
        scenario!("ext.stream.offset_last", "stream x-stream-offset last", last),
        scenario!(
            "ext.stream.offset_number",
            "stream x-stream-offset number",
            number
        ),
        scenario!(
            "ext.stream.offset_timestamp",
            "stream x-stream-offset timestamp",
            timestamp
        ),
        scenario!(
            "ext.stream.offset_interval",
            "stream x-stream-offset interval",
            interval
        ),
        scenario!(
            "ext.stream.ack_nack_reject_are_credit",
            "stream acks",
            ack_is_credit,
            "3.10 refuses basic.nack and basic.reject on a stream (540) and gives credit per chunk (prefetch 2 may deliver more); RabbitMQ 4.0 counts exactly and takes any settle as credit"
        ),
        scenario!(
            "ext.stream.filter",
            "stream x-stream-filter",
            filter,
            "3.10 has no stream filtering (3.13 feature)"
        ),
        scenario!(
            "ext.stream.filter_match_unfiltered",
            "stream x-stream-match-unfiltered",
            filter_unfiltered,
            "3.10 has no stream filtering (3.13 feature)"
        ),
        scenario!(
            "ext.stream.many_consumers",
            "stream concurrent readers",
            many_consumers
        ),
        scenario!(
            "ext.stream.tail_consumer_gets_new_messages",
            "stream tail",
            tail
        ),
        scenario!(
            "ext.stream.delete_cancels_consumers",
            "stream queue.delete",
            delete_cancels
        ),
        scenario!(
            "ext.stream.exchange_bound",
            "stream as a binding destination",
            exchange_bound
        ),
        scenario!(
            "ext.stream.dead_letter_target",
            "stream as a dead-letter target",
            dead_letter_target,
            "3.10 drops a message a classic queue dead-letters into a stream (3.13's dead_letter_target test delivers it)"
        ),
    ]
}

/// `x-queue-type: stream` plus `extra`.
fn stream_args(extra: Vec<(&str, AMQPValue)>) -> FieldTable {
    typed_args("stream", extra)
}

/// Declares a durable stream.
async fn declare_stream(ch: &Channel, q: &str) -> Result<lapin::Queue, Failure> {
    declare_durable(ch, q, stream_args(vec![]))
        .await
        .step(&format!("queue.declare {q} (stream)"))
}

/// Deletes the stream on a fresh channel of `conn`.
async fn delete_stream(conn: &Connection, q: &str) -> Outcome {
    let ch = conn.create_channel().await.step("channel.open")?;
    ch.queue_delete(q.into(), QueueDeleteOptions::default())
        .await
        .step("queue.delete")?;
    Ok(())
}

/// Publishes `bodies` on a confirm channel and waits for every confirm.
async fn publish_all(conn: &Connection, q: &str, bodies: &[&str]) -> Outcome {
    let ch = conn.create_channel().await.step("channel.open")?;
    confirming(&ch).await?;
    for b in bodies {
        let c = publish_c(&ch, "", q, b, Default::default()).await?;
        check(&format!("{b:?} confirmed"), c.is_ack())?;
    }
    let _ = ch.close(200, "done".into()).await;
    Ok(())
}

/// A channel with basic.qos prefetch `n` (per consumer).
async fn qos_channel(conn: &Connection, n: u16) -> Result<Channel, Failure> {
    let ch = conn.create_channel().await.step("channel.open")?;
    ch.basic_qos(n, BasicQosOptions::default())
        .await
        .step("basic.qos")?;
    Ok(ch)
}

/// Consumes the stream with an `x-stream-offset` (and other arguments).
async fn consume_from(
    ch: &Channel,
    q: &str,
    offset: Option<AMQPValue>,
    mut extra: Vec<(&str, AMQPValue)>,
) -> Result<lapin::Consumer, Failure> {
    if let Some(o) = offset {
        extra.push(("x-stream-offset", o));
    }
    consume_args(ch, q, false, table(extra))
        .await
        .step("basic.consume (stream)")
}

/// The delivery's `x-stream-offset` header, which must be a long.
fn offset_of(d: &lapin::message::Delivery) -> Result<i64, Failure> {
    match header(&d.properties, "x-stream-offset") {
        Some(AMQPValue::LongLongInt(n)) => Ok(*n),
        other => Err(Failure::new(
            "header x-stream-offset of type long",
            format!("{other:?}"),
        )),
    }
}

/// Takes `n` deliveries, acking each, checking the offset header and redelivered=false;
/// returns (offset, body) pairs.
async fn take(cons: &mut lapin::Consumer, n: usize) -> Result<Vec<(i64, String)>, Failure> {
    let mut v = Vec::new();
    for _ in 0..n {
        let d = next_delivery(cons).await?;
        check("redelivered is false", !d.redelivered)?;
        v.push((offset_of(&d)?, body(&d)));
        d.acker
            .ack(BasicAckOptions::default())
            .await
            .step("basic.ack")?;
    }
    Ok(v)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn declare_counts(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    let ok = declare_stream(&ch, &q).await?;
    check_eq(
        "new stream counts",
        (ok.message_count(), ok.consumer_count()),
        (0, 0),
    )?;
    publish_all(&conn, &q, &["a", "b", "c"]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let _cons = consume_from(&cch, &q, Some(lstr("first")), vec![]).await?;
    // RabbitMQ reads the count from the stream leader's metrics, updated a moment later.
    wait_message_count(&ch, &q, 3).await?;
    let ok = declare_stream(&ch, &q).await?;
    // consumer_count is always 0 for a stream, even with a consumer attached.
    check_eq(
        "redeclare counts (messages, consumers)",
        (ok.message_count(), ok.consumer_count()),
        (3, 0),
    )?;
    delete_stream(&conn, &q).await
}

/// Declares a durable stream with `extra` arguments (the result, unchecked).
async fn declare_stream_with(
    ch: &Channel,
    q: &str,
    extra: Vec<(&str, AMQPValue)>,
) -> Result<lapin::Queue, lapin::Error> {
    declare_durable(ch, q, stream_args(extra)).await
}

async fn declare_arguments(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    let args = vec![
        ("x-max-length-bytes", int(20_000_000)),
        ("x-max-age", lstr("1Y")),
        ("x-stream-max-segment-size-bytes", int(1_000_000)),
        ("x-initial-cluster-size", int(1)),
    ];
    declare_stream_with(&ch, &q, args.clone())
        .await
        .step("queue.declare with stream arguments")?;
    // Redeclaring with the same arguments is fine.
    declare_stream_with(&ch, &q, args).await.step("redeclare")?;
    publish_all(&conn, &q, &["kept"]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, Some(lstr("first")), vec![]).await?;
    check_eq(
        "delivered",
        take(&mut cons, 1).await?,
        vec![(0, "kept".into())],
    )?;
    delete_stream(&conn, &q).await
}

async fn invalid_max_age(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let q = ctx.name("s");
    // ("D", no digits, crashes 3.10's check_max_age: 541; 3.13 answers the same 406.)
    for bad in ["1A", "0s"] {
        let ch = conn.create_channel().await.step("channel.open")?;
        expect_error(
            declare_stream_with(&ch, &q, vec![("x-max-age", lstr(bad))]).await,
            406,
            &invalid_arg("x-max-age", &q, "invalid_max_age"),
        )?;
    }
    expect_connection_usable(&conn).await
}

async fn segment_size_above_max(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let q = ctx.name("s");
    let ch = conn.create_channel().await.step("channel.open")?;
    expect_error(
        declare_stream_with(
            &ch,
            &q,
            vec![(
                "x-stream-max-segment-size-bytes",
                AMQPValue::LongLongInt(3_000_000_001),
            )],
        )
        .await,
        406,
        "PRECONDITION_FAILED - Exceeded max value for x-stream-max-segment-size-bytes",
    )?;
    expect_connection_usable(&conn).await
}

async fn filter_size_out_of_range(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let q = ctx.name("s");
    for bad in [15, 256] {
        let ch = conn.create_channel().await.step("channel.open")?;
        expect_error(
            declare_stream_with(&ch, &q, vec![("x-stream-filter-size-bytes", int(bad))]).await,
            406,
            "PRECONDITION_FAILED - Invalid value for x-stream-filter-size-bytes",
        )?;
    }
    expect_connection_usable(&conn).await
}

async fn classic_argument(ctx: Ctx) -> Outcome {
    let conn = connect(&ctx.uri).await?;
    let q = ctx.name("s");
    for (k, v) in [
        ("x-max-length", int(10)),
        ("x-message-ttl", int(1000)),
        ("x-overflow", lstr("reject-publish")),
    ] {
        let ch = conn.create_channel().await.step("channel.open")?;
        expect_error(
            declare_stream_with(&ch, &q, vec![(k, v)]).await,
            406,
            &format!("PRECONDITION_FAILED - invalid arg '{k}' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        )?;
    }
    expect_connection_usable(&conn).await
}

async fn nonpersistent_stored(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    confirming(&ch).await?;
    let props = lapin::BasicProperties::default().with_delivery_mode(1);
    publish_c(&ch, "", &q, "transient", props).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, Some(lstr("first")), vec![]).await?;
    check_eq(
        "delivered",
        take(&mut cons, 1).await?,
        vec![(0, "transient".into())],
    )?;
    delete_stream(&conn, &q).await
}

async fn without_prefetch(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let cch = conn.create_channel().await.step("channel.open")?;
    expect_error(
        consume_args(&cch, &q, false, FieldTable::default()).await,
        406,
        &format!("PRECONDITION_FAILED - consumer prefetch count is not set for stream queue '{q}' in vhost '/'"),
    )?;
    expect_connection_usable(&conn).await?;
    delete_stream(&conn, &q).await
}

async fn no_ack(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let other = connect(&ctx.uri).await?;
    let cch = qos_channel(&other, 10).await?;
    expect_error(
        consume_args(&cch, &q, true, FieldTable::default()).await,
        540,
        &format!("NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queue '{q}' in vhost '/'"),
    )?;
    wait_connection_closed(&other).await?;
    delete_stream(&conn, &q).await
}

async fn global_qos(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let other = connect(&ctx.uri).await?;
    let cch = qos_channel(&other, 10).await?;
    cch.basic_qos(10, BasicQosOptions { global: true })
        .await
        .step("basic.qos global")?;
    expect_error(
        consume_args(&cch, &q, false, FieldTable::default()).await,
        540,
        &format!("NOT_IMPLEMENTED - queue '{q}' in vhost '/' does not support global qos"),
    )?;
    wait_connection_closed(&other).await?;
    delete_stream(&conn, &q).await
}

async fn basic_get(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let other = connect(&ctx.uri).await?;
    let gch = other.create_channel().await.step("channel.open")?;
    expect_error(
        gch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
            .await,
        540,
        &format!(
            "NOT_IMPLEMENTED - basic.get not supported by stream queues queue '{q}' in vhost '/'"
        ),
    )?;
    wait_connection_closed(&other).await?;
    delete_stream(&conn, &q).await
}

async fn purge(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let other = connect(&ctx.uri).await?;
    let pch = other.create_channel().await.step("channel.open")?;
    expect_error(
        pch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await,
        540,
        &format!(
            "NOT_IMPLEMENTED - queue.purge not supported by stream queues queue '{q}' in vhost '/'"
        ),
    )?;
    wait_connection_closed(&other).await?;
    delete_stream(&conn, &q).await
}

async fn x_priority(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let cch = qos_channel(&conn, 10).await?;
    expect_error(
        consume_args(&cch, &q, false, table(vec![("x-priority", int(1))])).await,
        406,
        &format!("PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
    )?;
    expect_connection_usable(&conn).await?;
    delete_stream(&conn, &q).await
}

async fn invalid_offset(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let cch = qos_channel(&conn, 10).await?;
    expect_error(
        consume_args(&cch, &q, false, table(vec![("x-stream-offset", lstr("bogus"))])).await,
        406,
        &format!("PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '{q}' in vhost '/': {{invalid_stream_offset_arg,{{longstr,<<\"bogus\">>}}}}"),
    )?;
    expect_connection_usable(&conn).await?;
    delete_stream(&conn, &q).await
}

async fn first(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    publish_all(&conn, &q, &["a", "b", "c", "d", "e"]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, Some(lstr("first")), vec![]).await?;
    let got = take(&mut cons, 5).await?;
    check_eq(
        "offsets and bodies",
        got,
        vec![
            (0, "a".into()),
            (1, "b".into()),
            (2, "c".into()),
            (3, "d".into()),
            (4, "e".into()),
        ],
    )?;
    // Acks remove nothing (RabbitMQ's count comes from metrics a moment later: polled).
    wait_message_count(&ch, &q, 5).await?;
    delete_stream(&conn, &q).await
}

async fn next_default(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    publish_all(&conn, &q, &["old1", "old2"]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut dflt = consume_from(&cch, &q, None, vec![]).await?;
    let mut next = consume_from(&cch, &q, Some(lstr("next")), vec![]).await?;
    publish_all(&conn, &q, &["new"]).await?;
    check_eq(
        "default",
        take(&mut dflt, 1).await?,
        vec![(2, "new".into())],
    )?;
    check_eq("next", take(&mut next, 1).await?, vec![(2, "new".into())])?;
    delete_stream(&conn, &q).await
}

async fn last(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    publish_all(&conn, &q, &["0", "1", "2", "3", "4"]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, Some(lstr("last")), vec![]).await?;
    // The last chunk: some suffix of the stream, ending with the last message.
    let mut got = Vec::new();
    loop {
        let (o, b) = take(&mut cons, 1).await?.remove(0);
        check_eq("body matches offset", b.clone(), o.to_string())?;
        got.push(o);
        if o == 4 {
            break;
        }
    }
    let expected: Vec<i64> = (got[0]..=4).collect();
    check_eq("a contiguous suffix", got, expected)?;
    publish_all(&conn, &q, &["5"]).await?;
    check_eq(
        "then new ones",
        take(&mut cons, 1).await?,
        vec![(5, "5".into())],
    )?;
    delete_stream(&conn, &q).await
}

async fn number(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    publish_all(&conn, &q, &["a", "b", "c", "d"]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, Some(AMQPValue::LongLongInt(2)), vec![]).await?;
    check_eq(
        "from offset 2",
        take(&mut cons, 2).await?,
        vec![(2, "c".into()), (3, "d".into())],
    )?;
    // A signed 32-bit offset works too.
    let mut cons = consume_from(&cch, &q, Some(int(3)), vec![]).await?;
    check_eq(
        "from offset 3",
        take(&mut cons, 1).await?,
        vec![(3, "d".into())],
    )?;
    delete_stream(&conn, &q).await
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn timestamp(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    publish_all(&conn, &q, &["a", "b", "c"]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut past = consume_from(
        &cch,
        &q,
        Some(AMQPValue::Timestamp(now_secs() - 60)),
        vec![],
    )
    .await?;
    check_eq(
        "a minute ago: everything",
        take(&mut past, 3).await?,
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())],
    )?;
    let mut future = consume_from(
        &cch,
        &q,
        Some(AMQPValue::Timestamp(now_secs() + 3600)),
        vec![],
    )
    .await?;
    publish_all(&conn, &q, &["d"]).await?;
    check_eq(
        "in the future: only new messages",
        take(&mut future, 1).await?,
        vec![(3, "d".into())],
    )?;
    delete_stream(&conn, &q).await
}

async fn interval(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    publish_all(&conn, &q, &["a", "b"]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, Some(lstr("100s")), vec![]).await?;
    check_eq(
        "the last 100 s",
        take(&mut cons, 2).await?,
        vec![(0, "a".into()), (1, "b".into())],
    )?;
    delete_stream(&conn, &q).await
}

async fn ack_is_credit(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let bodies: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    publish_all(&conn, &q, &refs).await?;
    let cch = qos_channel(&conn, 2).await?;
    let mut cons = consume_from(&cch, &q, Some(lstr("first")), vec![]).await?;
    let d0 = next_delivery(&mut cons).await?;
    let d1 = next_delivery(&mut cons).await?;
    sync(&cch).await?;
    expect_no_delivery(&mut cons, Duration::from_millis(200)).await?;
    // Each settle, whatever kind, gives exactly one credit back; nothing is redelivered.
    d0.acker
        .ack(BasicAckOptions::default())
        .await
        .step("basic.ack")?;
    let d2 = next_delivery(&mut cons).await?;
    d1.acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .step("basic.nack requeue")?;
    let d3 = next_delivery(&mut cons).await?;
    d2.acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject")?;
    let d4 = next_delivery(&mut cons).await?;
    sync(&cch).await?;
    expect_no_delivery(&mut cons, Duration::from_millis(200)).await?;
    let got: Vec<(i64, bool)> = [&d2, &d3, &d4]
        .iter()
        .map(|d| (offset_of(d).unwrap_or(-1), d.redelivered))
        .collect();
    check_eq(
        "offsets after settles",
        got,
        vec![(2, false), (3, false), (4, false)],
    )?;
    wait_message_count(&ch, &q, 8).await?;
    delete_stream(&conn, &q).await
}

async fn publish_filtered(conn: &Connection, q: &str, msgs: &[(&str, Option<&str>)]) -> Outcome {
    let ch = conn.create_channel().await.step("channel.open")?;
    confirming(&ch).await?;
    for (b, f) in msgs {
        let mut props = lapin::BasicProperties::default();
        if let Some(f) = f {
            props = props.with_headers(table(vec![("x-stream-filter-value", lstr(f))]));
        }
        check(
            &format!("{b:?} confirmed"),
            publish_c(&ch, "", q, b, props).await?.is_ack(),
        )?;
    }
    Ok(())
}

async fn filtered_bodies(cons: &mut lapin::Consumer, marker: &str) -> Result<Vec<String>, Failure> {
    let mut v = Vec::new();
    loop {
        let (_, b) = take(cons, 1).await?.remove(0);
        if b == marker {
            return Ok(v);
        }
        v.push(b);
    }
}

async fn filter(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    publish_filtered(
        &conn,
        &q,
        &[
            ("eu1", Some("eu")),
            ("us1", Some("us")),
            ("none1", None),
            ("eu2", Some("eu")),
        ],
    )
    .await?;
    publish_filtered(&conn, &q, &[("end", Some("eu"))]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut eu = consume_from(
        &cch,
        &q,
        Some(lstr("first")),
        vec![("x-stream-filter", lstr("eu"))],
    )
    .await?;
    check_eq(
        "filter eu",
        filtered_bodies(&mut eu, "end").await?,
        s(&["eu1", "eu2"]),
    )?;
    let mut arr = lapin::types::FieldArray::default();
    arr.push(lstr("eu"));
    arr.push(lstr("us"));
    let mut both = consume_from(
        &cch,
        &q,
        Some(lstr("first")),
        vec![("x-stream-filter", AMQPValue::FieldArray(arr))],
    )
    .await?;
    check_eq(
        "filter [eu, us]",
        filtered_bodies(&mut both, "end").await?,
        s(&["eu1", "us1", "eu2"]),
    )?;
    delete_stream(&conn, &q).await
}

async fn filter_unfiltered(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    publish_filtered(
        &conn,
        &q,
        &[("eu1", Some("eu")), ("us1", Some("us")), ("none1", None)],
    )
    .await?;
    publish_filtered(&conn, &q, &[("end", Some("eu"))]).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(
        &cch,
        &q,
        Some(lstr("first")),
        vec![
            ("x-stream-filter", lstr("eu")),
            ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
        ],
    )
    .await?;
    check_eq(
        "eu and unfiltered",
        filtered_bodies(&mut cons, "end").await?,
        s(&["eu1", "none1"]),
    )?;
    // Without a filter, everything (match-unfiltered alone has no effect).
    let mut all = consume_from(
        &cch,
        &q,
        Some(lstr("first")),
        vec![("x-stream-match-unfiltered", AMQPValue::Boolean(true))],
    )
    .await?;
    check_eq(
        "no filter",
        filtered_bodies(&mut all, "end").await?,
        s(&["eu1", "us1", "none1"]),
    )?;
    delete_stream(&conn, &q).await
}

async fn many_consumers(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let bodies: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    publish_all(&conn, &q, &refs).await?;
    let cch = qos_channel(&conn, 5).await?;
    let mut a = consume_from(&cch, &q, Some(lstr("first")), vec![]).await?;
    let mut b = consume_from(&cch, &q, Some(AMQPValue::LongLongInt(25)), vec![]).await?;
    let mut c = consume_from(&cch, &q, Some(lstr("next")), vec![]).await?;
    publish_all(&conn, &q, &["tail"]).await?;
    let ga = take(&mut a, 51).await?;
    let gb = take(&mut b, 26).await?;
    let gc = take(&mut c, 1).await?;
    check_eq(
        "first reader's offsets",
        ga.iter().map(|e| e.0).collect::<Vec<_>>(),
        (0..51).collect::<Vec<_>>(),
    )?;
    check_eq(
        "second reader's offsets",
        gb.iter().map(|e| e.0).collect::<Vec<_>>(),
        (25..51).collect::<Vec<_>>(),
    )?;
    check_eq("tail reader", gc, vec![(50, "tail".into())])?;
    delete_stream(&conn, &q).await
}

async fn tail(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, None, vec![]).await?;
    for i in 0..5 {
        let b = format!("live{i}");
        publish_all(&conn, &q, &[b.as_str()]).await?;
        check_eq("live delivery", take(&mut cons, 1).await?, vec![(i, b)])?;
    }
    delete_stream(&conn, &q).await
}

async fn delete_cancels(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    declare_stream(&ch, &q).await?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, None, vec![]).await?;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .step("queue.delete")?;
    match tokio::time::timeout(WAIT, cons.next()).await {
        Ok(None) => Ok(()),
        other => Err(Failure::new(
            "consumer stream ends (basic.cancel)",
            format!("{other:?}"),
        )),
    }
}

async fn exchange_bound(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    let x = ctx.name("x");
    declare_stream(&ch, &q).await?;
    ch.exchange_declare(
        x.as_str().into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .step("exchange.declare")?;
    bind(&ch, &q, &x, "").await?;
    confirming(&ch).await?;
    check(
        "confirmed",
        publish_c(&ch, &x, "any", "routed", Default::default())
            .await?
            .is_ack(),
    )?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, Some(lstr("first")), vec![]).await?;
    let d = next_delivery(&mut cons).await?;
    check_eq(
        "exchange, routing key, body",
        (d.exchange.to_string(), d.routing_key.to_string(), body(&d)),
        (x.clone(), "any".into(), "routed".into()),
    )?;
    delete_stream(&conn, &q).await
}

async fn dead_letter_target(ctx: Ctx) -> Outcome {
    let (conn, ch) = open(&ctx.uri).await?;
    let q = ctx.name("s");
    let src = ctx.name("src");
    declare_stream(&ch, &q).await?;
    declare_x(
        &ch,
        &src,
        table(vec![
            ("x-dead-letter-exchange", lstr("")),
            ("x-dead-letter-routing-key", lstr(&q)),
        ]),
    )
    .await?;
    publish(&ch, "", &src, b"dead").await?;
    let m = get_one(&ch, &src, false).await?;
    m.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .step("basic.reject")?;
    let cch = qos_channel(&conn, 10).await?;
    let mut cons = consume_from(&cch, &q, Some(lstr("first")), vec![]).await?;
    let d = next_delivery(&mut cons).await?;
    check_eq("dead-lettered into the stream", body(&d), "dead".into())?;
    check("x-death header", header(&d.properties, "x-death").is_some())?;
    delete_stream(&conn, &q).await
}
