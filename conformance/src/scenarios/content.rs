//! Message content: every basic property and every field-table value type arrive unchanged,
//! empty and large bodies, bodies at frame boundaries, user-id validation.

use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::{
    options::*,
    types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable},
    BasicProperties, Channel, Connection, ConnectionProperties,
};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("content.all_properties", "basic properties", all_properties),
        scenario!(
            "content.headers_every_field_type",
            "basic properties headers",
            headers_every_type
        ),
        scenario!("content.no_properties", "basic properties", no_properties),
        scenario!("content.empty_body", "content body", empty_body),
        scenario!("content.binary_body", "content body", binary_body),
        scenario!("content.body_1mib", "content body (multi-frame)", body_1mib),
        scenario!(
            "content.frame_boundaries",
            "content body framing",
            frame_boundaries
        ),
        scenario!(
            "content.small_frame_max",
            "content body framing",
            small_frame_max
        ),
        scenario!("content.large_header_frame", "content header", large_header),
        scenario!(
            "content.user_id_mismatch_406",
            "basic properties user-id",
            user_id_mismatch
        ),
    ]
}

fn nested_headers() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("deep".into(), AMQPValue::LongString("value".into()));
    let mut innermost = FieldTable::default();
    innermost.insert("n".into(), AMQPValue::LongInt(-5));
    inner.insert("deeper".into(), AMQPValue::FieldTable(innermost));
    let array = FieldArray::from(vec![
        AMQPValue::LongString("s".into()),
        AMQPValue::LongInt(1),
        AMQPValue::Boolean(false),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::ShortShortInt(-1)])),
        AMQPValue::FieldTable(inner.clone()),
        AMQPValue::Void,
    ]);
    let mut h = FieldTable::default();
    h.insert("bool-true".into(), AMQPValue::Boolean(true));
    h.insert("bool-false".into(), AMQPValue::Boolean(false));
    h.insert("i8".into(), AMQPValue::ShortShortInt(-128));
    h.insert("u8".into(), AMQPValue::ShortShortUInt(255));
    h.insert("i16".into(), AMQPValue::ShortInt(-32768));
    h.insert("u16".into(), AMQPValue::ShortUInt(65535));
    h.insert("i32".into(), AMQPValue::LongInt(i32::MIN));
    h.insert("u32".into(), AMQPValue::LongUInt(u32::MAX));
    h.insert("i64".into(), AMQPValue::LongLongInt(i64::MIN));
    h.insert("f32".into(), AMQPValue::Float(1.5));
    h.insert("f64".into(), AMQPValue::Double(-2.25e100));
    h.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 3,
            value: 123456,
        }),
    );
    h.insert(
        "longstr".into(),
        AMQPValue::LongString("héllo\u{0}world".into()),
    );
    h.insert("empty-str".into(), AMQPValue::LongString("".into()));
    h.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    h.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 254, 255])),
    );
    h.insert("void".into(), AMQPValue::Void);
    h.insert("array".into(), AMQPValue::FieldArray(array));
    h.insert(
        "empty-array".into(),
        AMQPValue::FieldArray(FieldArray::default()),
    );
    h.insert("table".into(), AMQPValue::FieldTable(inner));
    h.insert(
        "empty-table".into(),
        AMQPValue::FieldTable(FieldTable::default()),
    );
    h
}

fn full_properties(headers: FieldTable, user: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("reply.queue".into())
        .with_expiration("600000".into())
        .with_message_id("msg-42".into())
        .with_timestamp(1_600_000_000)
        .with_type("order.created".into())
        .with_user_id(user.into())
        .with_app_id("conformance".into())
        .with_cluster_id("cluster-x".into())
}

/// Publishes with `props` and checks what a consumer and basic.get both receive.
async fn roundtrip(ch: &Channel, q: &str, body: &[u8], props: BasicProperties) -> Outcome {
    publish_props(ch, "", q, body, props.clone()).await?;
    let m = get_one(ch, q, true).await?;
    check_eq(
        "properties (basic.get)",
        m.delivery.properties.clone(),
        props.clone(),
    )?;
    check_eq("body length (basic.get)", m.delivery.data.len(), body.len())?;
    check("body (basic.get)", m.delivery.data == body)?;
    let mut cons = consume(ch, q, true).await?;
    publish_props(ch, "", q, body, props.clone()).await?;
    let d = next_delivery(&mut cons).await?;
    check_eq("properties (basic.deliver)", d.properties, props)?;
    check_eq("body length (basic.deliver)", d.data.len(), body.len())?;
    check("body (basic.deliver)", d.data == body)?;
    ch.basic_cancel(cons.tag(), BasicCancelOptions::default())
        .await
        .step("basic.cancel")
}

async fn all_properties(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut h = FieldTable::default();
    h.insert("x-custom".into(), AMQPValue::LongString("v".into()));
    // user-id must be the authenticated user's name (guest against the reference).
    roundtrip(
        &ch,
        &q,
        b"{\"a\":1}",
        full_properties(h, &username(&ctx.uri)),
    )
    .await
}

async fn headers_every_type(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    roundtrip(
        &ch,
        &q,
        b"typed",
        BasicProperties::default().with_headers(nested_headers()),
    )
    .await
}

async fn no_properties(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    roundtrip(&ch, &q, b"plain", BasicProperties::default()).await
}

async fn empty_body(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    roundtrip(
        &ch,
        &q,
        b"",
        BasicProperties::default().with_message_id("empty".into()),
    )
    .await
}

async fn binary_body(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let body: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    roundtrip(&ch, &q, &body, BasicProperties::default()).await
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn body_1mib(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    roundtrip(
        &ch,
        &q,
        &pattern(1 << 20, 7),
        BasicProperties::default().with_content_type("application/octet-stream".into()),
    )
    .await
}

/// Bodies of exactly one full body frame (frame_max - 8 bytes), one byte less and one more,
/// and two full frames (plus one), with the frame_max the broker negotiated.
async fn frame_boundaries(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let chunk = c.configuration().frame_max() as usize - 8;
    for (i, len) in [chunk - 1, chunk, chunk + 1, 2 * chunk, 2 * chunk + 1]
        .into_iter()
        .enumerate()
    {
        roundtrip(&ch, &q, &pattern(len, i as u32), BasicProperties::default())
            .await
            .map_err(|f| {
                crate::Failure::new(format!("body of {len} bytes: {}", f.expected), f.observed)
            })?;
    }
    Ok(())
}

/// A client-chosen small frame_max (4096, the minimum) is honoured in both directions.
async fn small_frame_max(ctx: Ctx) -> Outcome {
    let conn = Connection::connect(
        &with_query(&ctx.uri, "frame_max=4096"),
        ConnectionProperties::default(),
    )
    .await
    .step("connect with frame_max=4096")?;
    check_eq(
        "negotiated frame_max",
        conn.configuration().frame_max(),
        4096,
    )?;
    let ch = conn.create_channel().await.step("channel.open")?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    for (i, len) in [4087usize, 4088, 4089, 10_000, 3 * 4088]
        .into_iter()
        .enumerate()
    {
        roundtrip(
            &ch,
            &q,
            &pattern(len, 100 + i as u32),
            BasicProperties::default().with_headers(nested_headers()),
        )
        .await
        .map_err(|f| {
            crate::Failure::new(format!("body of {len} bytes: {}", f.expected), f.observed)
        })?;
    }
    Ok(())
}

/// A content header of about 100 KB (large headers table) fits in one frame and arrives intact.
async fn large_header(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut h = FieldTable::default();
    for i in 0..100 {
        h.insert(
            format!("key-{i:03}").into(),
            AMQPValue::LongString(
                String::from_utf8(vec![b'a' + (i % 26) as u8; 1000])
                    .unwrap_or_default()
                    .into(),
            ),
        );
    }
    roundtrip(
        &ch,
        &q,
        b"big-header",
        BasicProperties::default().with_headers(h),
    )
    .await
}

async fn user_id_mismatch(ctx: Ctx) -> Outcome {
    let (c, ch) = open(&ctx.uri).await?;
    let q = ctx.name("q");
    declare_exclusive(&ch, &q).await?;
    let mut ev = events(&c);
    publish_props(
        &ch,
        "",
        &q,
        b"spoof",
        BasicProperties::default().with_user_id("not-guest".into()),
    )
    .await?;
    let user = username(&ctx.uri);
    expect_async_error(
        &mut ev,
        406,
        &format!("PRECONDITION_FAILED - user_id property set to 'not-guest' but authenticated user was '{user}'"),
    )
    .await?;
    expect_channel_unusable(&ch).await?;
    let ch2 = c.create_channel().await.step("channel.open")?;
    let ok = declare_exclusive(&ch2, &q).await?;
    check_eq(
        "the spoofed message was not enqueued",
        ok.message_count(),
        0,
    )
}
