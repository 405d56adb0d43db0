//! Routing through direct, fanout, topic and headers exchanges (and amq.match).
//!
//! Each case declares a fresh exchange and exclusive queue(s), binds, publishes a list of
//! messages and then a marker through the default exchange, and compares what the queue holds
//! (in order) with what should have matched.

use crate::support::*;
use crate::{Ctx, Outcome, Scenario};
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, ExchangeKind,
};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("routing.direct.exact_key", "direct exchange", direct_exact),
        scenario!(
            "routing.direct.several_queues_same_key",
            "direct exchange",
            direct_several_queues
        ),
        scenario!("routing.direct.amq_direct", "amq.direct", amq_direct),
        scenario!("routing.fanout.ignores_key", "fanout exchange", fanout),
        scenario!("routing.topic.exact_words", "topic exchange", topic_exact),
        scenario!(
            "routing.topic.star_one_word",
            "topic exchange *",
            topic_star
        ),
        scenario!(
            "routing.topic.hash_zero_or_more",
            "topic exchange #",
            topic_hash_suffix
        ),
        scenario!(
            "routing.topic.hash_alone",
            "topic exchange #",
            topic_hash_alone
        ),
        scenario!(
            "routing.topic.hash_in_middle",
            "topic exchange #",
            topic_hash_middle
        ),
        scenario!(
            "routing.topic.hash_prefix",
            "topic exchange #",
            topic_hash_prefix
        ),
        scenario!(
            "routing.topic.star_and_hash",
            "topic exchange * #",
            topic_star_hash
        ),
        scenario!(
            "routing.topic.empty_words",
            "topic exchange empty words",
            topic_empty_words
        ),
        scenario!(
            "routing.topic.empty_routing_key",
            "topic exchange empty key",
            topic_empty_key
        ),
        scenario!(
            "routing.topic.overlapping_bindings_one_copy",
            "topic exchange",
            topic_overlap
        ),
        scenario!(
            "routing.headers.all",
            "headers exchange x-match all",
            headers_all
        ),
        scenario!(
            "routing.headers.any",
            "headers exchange x-match any",
            headers_any
        ),
        scenario!(
            "routing.headers.default_is_all",
            "headers exchange x-match",
            headers_default_all
        ),
        scenario!(
            "routing.headers.x_keys_ignored",
            "headers exchange x-match",
            headers_x_ignored
        ),
        scenario!(
            "routing.headers.all_with_x",
            "headers exchange all-with-x",
            headers_all_with_x
        ),
        scenario!(
            "routing.headers.any_with_x",
            "headers exchange any-with-x",
            headers_any_with_x
        ),
        scenario!(
            "routing.headers.void_means_presence",
            "headers exchange void value",
            headers_void
        ),
        scenario!(
            "routing.headers.type_comparisons",
            "headers exchange value types",
            headers_types
        ),
        scenario!(
            "routing.headers.empty_binding",
            "headers exchange",
            headers_empty_binding
        ),
        scenario!(
            "routing.headers.invalid_x_match_406",
            "headers exchange x-match",
            headers_invalid_x_match
        ),
        scenario!("routing.headers.amq_match", "amq.match", amq_match),
    ]
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

/// Declares an auto-delete exchange of `kind` (or uses `existing`), an exclusive queue bound
/// with each of `bindings`, publishes `(routing key, headers)` messages whose body is their
/// index, and checks that the queue holds exactly the messages whose indices are `expected`.
async fn case(
    ctx: &Ctx,
    kind: ExchangeKind,
    existing: Option<&str>,
    bindings: Vec<(&str, FieldTable)>,
    messages: Vec<(&str, Option<FieldTable>)>,
    expected: Vec<usize>,
) -> Outcome {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (_c, ch) = open(&ctx.uri).await?;
    let x = match existing {
        Some(x) => x.to_string(),
        None => {
            let x = ctx.name(&format!("x{n}"));
            declare_exchange_ad(&ch, &x, kind).await?;
            x
        }
    };
    let q = ctx.name(&format!("q{n}"));
    declare_exclusive(&ch, &q).await?;
    for (rk, args) in bindings {
        bind_args(&ch, &q, &x, rk, args).await?;
    }
    for (i, (rk, headers)) in messages.iter().enumerate() {
        let mut props = BasicProperties::default();
        if let Some(h) = headers {
            props = props.with_headers(h.clone());
        }
        publish_props(&ch, &x, rk, i.to_string().as_bytes(), props).await?;
    }
    publish(&ch, "", &q, b"marker").await?;
    let want: Vec<String> = expected.iter().map(|i| i.to_string()).collect();
    let got = until_marker(&ch, &q, "marker").await?;
    let describe = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|b| match b.parse::<usize>() {
                Ok(i) => {
                    format!("{:?}", messages[i].0)
                        + &messages[i]
                            .1
                            .as_ref()
                            .map(|h| format!(" {h:?}"))
                            .unwrap_or_default()
                }
                Err(_) => b.clone(),
            })
            .collect()
    };
    if got != want {
        return Err(Failure::new(
            format!("routed: {:?}", describe(&want)),
            format!("routed: {:?}", describe(&got)),
        ));
    }
    Ok(())
}

use crate::Failure;

/// Topic case: one binding pattern, keys that must match and keys that must not.
async fn topic(ctx: &Ctx, pattern: &str, matching: &[&str], not_matching: &[&str]) -> Outcome {
    let mut messages = Vec::new();
    let mut expected = Vec::new();
    for (i, k) in matching.iter().chain(not_matching.iter()).enumerate() {
        messages.push((*k, None));
        if i < matching.len() {
            expected.push(i);
        }
    }
    case(
        ctx,
        ExchangeKind::Topic,
        None,
        vec![(pattern, FieldTable::default())],
        messages,
        expected,
    )
    .await
    .map_err(|f| Failure::new(format!("pattern {pattern:?}: {}", f.expected), f.observed))
}

async fn direct_exact(ctx: Ctx) -> Outcome {
    case(
        &ctx,
        ExchangeKind::Direct,
        None,
        vec![
            ("key", FieldTable::default()),
            ("other.key", FieldTable::default()),
        ],
        vec![
            ("key", None),
            ("Key", None),
            ("key.", None),
            ("other.key", None),
            ("", None),
            ("other", None),
        ],
        vec![0, 3],
    )
    .await
}

async fn direct_several_queues(ctx: Ctx) -> Outcome {
    let (_c, ch) = open(&ctx.uri).await?;
    let x = ctx.name("x");
    declare_exchange_ad(&ch, &x, ExchangeKind::Direct).await?;
    let qs = [ctx.name("q1"), ctx.name("q2"), ctx.name("q3")];
    for q in &qs {
        declare_exclusive(&ch, q).await?;
    }
    bind(&ch, &qs[0], &x, "k").await?;
    bind(&ch, &qs[1], &x, "k").await?;
    bind(&ch, &qs[2], &x, "other").await?;
    publish(&ch, &x, "k", b"a").await?;
    publish(&ch, &x, "k", b"b").await?;
    for q in &qs[..2] {
        wait_message_count(&ch, q, 2).await?;
        check_eq(
            &format!("{q} bodies"),
            drain(&ch, q).await?,
            vec!["a".to_string(), "b".to_string()],
        )?;
    }
    expect_empty(&ch, &qs[2]).await
}

async fn amq_direct(ctx: Ctx) -> Outcome {
    let rk = ctx.name("rk");
    case(
        &ctx,
        ExchangeKind::Direct,
        Some("amq.direct"),
        vec![(rk.as_str(), FieldTable::default())],
        vec![(rk.as_str(), None), ("unrelated-key-for-conformance", None)],
        vec![0],
    )
    .await
}

async fn fanout(ctx: Ctx) -> Outcome {
    case(
        &ctx,
        ExchangeKind::Fanout,
        None,
        vec![("bound-with-this", FieldTable::default())],
        vec![
            ("anything", None),
            ("", None),
            ("bound-with-this", None),
            ("a.b.c", None),
        ],
        vec![0, 1, 2, 3],
    )
    .await
}

async fn topic_exact(ctx: Ctx) -> Outcome {
    topic(
        &ctx,
        "a.b",
        &["a.b"],
        &["a", "a.b.c", "a.bc", "b.a", "x.a.b", ""],
    )
    .await
}

async fn topic_star(ctx: Ctx) -> Outcome {
    topic(
        &ctx,
        "a.*",
        &["a.b", "a.xyz"],
        &["a", "a.b.c", "b.a", "ab", ""],
    )
    .await?;
    topic(
        &ctx,
        "*.b.*",
        &["a.b.c", "x.b.y"],
        &["b", "a.b", "a.b.c.d", "b.b"],
    )
    .await
}

async fn topic_hash_suffix(ctx: Ctx) -> Outcome {
    topic(
        &ctx,
        "a.#",
        &["a", "a.b", "a.b.c.d"],
        &["b", "ab", "b.a", ""],
    )
    .await
}

async fn topic_hash_alone(ctx: Ctx) -> Outcome {
    topic(&ctx, "#", &["", "a", "a.b.c", "..", "#", "*"], &[]).await
}

async fn topic_hash_middle(ctx: Ctx) -> Outcome {
    topic(
        &ctx,
        "a.#.b",
        &["a.b", "a.x.b", "a.x.y.b", "a.b.b"],
        &["a", "b", "a.b.c", "x.a.b", "a.bb"],
    )
    .await
}

async fn topic_hash_prefix(ctx: Ctx) -> Outcome {
    topic(
        &ctx,
        "#.z",
        &["z", "a.z", "a.b.z"],
        &["z.a", "az", "a.zz", ""],
    )
    .await
}

async fn topic_star_hash(ctx: Ctx) -> Outcome {
    // "*.#" needs at least one word; "#.#" is the same as "#".
    topic(&ctx, "*.#", &["a", "a.b", "a.b.c"], &[""]).await?;
    topic(&ctx, "#.#", &["", "a", "a.b"], &[]).await?;
    topic(&ctx, "#.*.#", &["a", "a.b"], &[""]).await
}

/// Words may be empty: "a..b" has three words, the middle one empty.
async fn topic_empty_words(ctx: Ctx) -> Outcome {
    topic(&ctx, "a.*.b", &["a..b", "a.x.b"], &["a.b", "a...b"]).await?;
    topic(&ctx, "a.*", &["a.", "a.b"], &["a", "a.."]).await?;
    topic(&ctx, "*.*", &[".", "a.b", "a."], &["", "a", "a.b.c"]).await
}

/// The empty routing key has no words: only "" and "#"-only patterns match it.
async fn topic_empty_key(ctx: Ctx) -> Outcome {
    topic(&ctx, "", &[""], &["a", "."]).await?;
    topic(&ctx, "*", &["a", "bcd"], &["", "a.b"]).await
}

async fn topic_overlap(ctx: Ctx) -> Outcome {
    case(
        &ctx,
        ExchangeKind::Topic,
        None,
        vec![
            ("a.*", FieldTable::default()),
            ("#", FieldTable::default()),
            ("a.b", FieldTable::default()),
        ],
        vec![("a.b", None), ("c", None)],
        vec![0, 1],
    )
    .await
}

fn hdr(pairs: &[(&str, AMQPValue)]) -> Option<FieldTable> {
    Some(table(pairs))
}

async fn headers_all(ctx: Ctx) -> Outcome {
    let binding = table(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", binding)],
        vec![
            ("", hdr(&[("a", s("1")), ("b", s("2"))])),
            ("", hdr(&[("a", s("1")), ("b", s("2")), ("c", s("3"))])),
            ("", hdr(&[("a", s("1"))])),
            ("", hdr(&[("a", s("1")), ("b", s("3"))])),
            ("", None),
        ],
        vec![0, 1],
    )
    .await
}

async fn headers_any(ctx: Ctx) -> Outcome {
    let binding = table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", binding)],
        vec![
            ("", hdr(&[("a", s("1"))])),
            ("", hdr(&[("b", s("2")), ("z", s("9"))])),
            ("", hdr(&[("a", s("2")), ("b", s("1"))])),
            ("", hdr(&[("c", s("1"))])),
            ("", None),
        ],
        vec![0, 1],
    )
    .await
}

async fn headers_default_all(ctx: Ctx) -> Outcome {
    let binding = table(&[("a", s("1")), ("b", s("2"))]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", binding)],
        vec![
            ("", hdr(&[("a", s("1"))])),
            ("", hdr(&[("a", s("1")), ("b", s("2"))])),
        ],
        vec![1],
    )
    .await
}

/// With x-match all/any, binding keys starting with "x-" are not compared.
async fn headers_x_ignored(ctx: Ctx) -> Outcome {
    let all = table(&[("x-match", s("all")), ("x-tag", s("t")), ("a", s("1"))]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", all)],
        vec![
            ("", hdr(&[("a", s("1"))])),
            ("", hdr(&[("a", s("1")), ("x-tag", s("other"))])),
            ("", hdr(&[("x-tag", s("t"))])),
        ],
        vec![0, 1],
    )
    .await?;
    let any = table(&[("x-match", s("any")), ("x-tag", s("t"))]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", any)],
        vec![("", hdr(&[("x-tag", s("t"))]))],
        vec![],
    )
    .await
}

async fn headers_all_with_x(ctx: Ctx) -> Outcome {
    let binding = table(&[
        ("x-match", s("all-with-x")),
        ("x-tag", s("t")),
        ("a", s("1")),
    ]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", binding)],
        vec![
            ("", hdr(&[("a", s("1"))])),
            ("", hdr(&[("a", s("1")), ("x-tag", s("t"))])),
            ("", hdr(&[("a", s("1")), ("x-tag", s("u"))])),
        ],
        vec![1],
    )
    .await
}

async fn headers_any_with_x(ctx: Ctx) -> Outcome {
    let binding = table(&[
        ("x-match", s("any-with-x")),
        ("x-tag", s("t")),
        ("a", s("1")),
    ]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", binding)],
        vec![
            ("", hdr(&[("x-tag", s("t"))])),
            ("", hdr(&[("a", s("1"))])),
            ("", hdr(&[("x-tag", s("u"))])),
            ("", None),
        ],
        vec![0, 1],
    )
    .await
}

/// A void binding value matches the header's presence, whatever its value and type.
async fn headers_void(ctx: Ctx) -> Outcome {
    let binding = table(&[("x-match", s("all")), ("flag", AMQPValue::Void)]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", binding)],
        vec![
            ("", hdr(&[("flag", s("anything"))])),
            ("", hdr(&[("flag", AMQPValue::LongInt(7))])),
            ("", hdr(&[("flag", AMQPValue::Void)])),
            ("", hdr(&[("other", s("x"))])),
            ("", None),
        ],
        vec![0, 1, 2],
    )
    .await
}

/// RabbitMQ 3.10 compares header values by (Erlang) value equality, whatever the AMQP type:
/// a signed 32-bit 1 in the binding matches an 8-bit, 64-bit or unsigned 16-bit 1, a double
/// or float 1.0 and a timestamp 1 in the message; a string "1", a boolean, a decimal 1
/// (scale 0) or 1.5 never match. A byte array "x" matches a long string "x" (both binaries).
async fn headers_types(ctx: Ctx) -> Outcome {
    let binding = table(&[("x-match", s("all")), ("n", AMQPValue::LongInt(1))]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", binding)],
        vec![
            ("", hdr(&[("n", AMQPValue::LongInt(1))])),
            ("", hdr(&[("n", AMQPValue::ShortShortInt(1))])),
            ("", hdr(&[("n", AMQPValue::LongLongInt(1))])),
            ("", hdr(&[("n", AMQPValue::ShortUInt(1))])),
            ("", hdr(&[("n", AMQPValue::Double(1.0))])),
            ("", hdr(&[("n", AMQPValue::Float(1.0))])),
            ("", hdr(&[("n", AMQPValue::Timestamp(1))])),
            ("", hdr(&[("n", s("1"))])),
            ("", hdr(&[("n", AMQPValue::Boolean(true))])),
            ("", hdr(&[("n", AMQPValue::LongInt(2))])),
            ("", hdr(&[("n", AMQPValue::Double(1.5))])),
            (
                "",
                hdr(&[(
                    "n",
                    AMQPValue::DecimalValue(lapin::types::DecimalValue { scale: 0, value: 1 }),
                )]),
            ),
        ],
        vec![0, 1, 2, 3, 4, 5, 6],
    )
    .await?;
    let binding = table(&[
        ("x-match", s("any")),
        ("b", AMQPValue::Boolean(true)),
        ("t", s("x")),
    ]);
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", binding)],
        vec![
            ("", hdr(&[("b", AMQPValue::Boolean(true))])),
            ("", hdr(&[("b", AMQPValue::Boolean(false))])),
            ("", hdr(&[("t", AMQPValue::LongString("x".into()))])),
            (
                "",
                hdr(&[("t", AMQPValue::ByteArray(b"x".to_vec().into()))]),
            ),
            (
                "",
                hdr(&[("t", AMQPValue::ByteArray(b"y".to_vec().into()))]),
            ),
        ],
        vec![0, 2, 3],
    )
    .await
}

/// x-match all with no other keys matches every message; any with none matches nothing.
async fn headers_empty_binding(ctx: Ctx) -> Outcome {
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", table(&[("x-match", s("all"))]))],
        vec![("", None), ("", hdr(&[("a", s("1"))]))],
        vec![0, 1],
    )
    .await?;
    case(
        &ctx,
        ExchangeKind::Headers,
        None,
        vec![("", table(&[("x-match", s("any"))]))],
        vec![("", None), ("", hdr(&[("a", s("1"))]))],
        vec![],
    )
    .await
}

async fn headers_invalid_x_match(ctx: Ctx) -> Outcome {
    let cl = Cleanup::new(&ctx);
    let x = cl.exchange(ctx.name("x"));
    cl.finish(async {
        let (c, ch) = open(&ctx.uri).await?;
        declare_exchange(&ch, &x, ExchangeKind::Headers).await?;
        let q = ctx.name("q");
        declare_exclusive(&ch, &q).await?;
        let r = ch
            .queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                table(&[("x-match", s("some"))]),
            )
            .await;
        expect_error(
            r,
            406,
            "PRECONDITION_FAILED - Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x",
        )?;
        expect_connection_usable(&c).await
    })
    .await
}

async fn amq_match(ctx: Ctx) -> Outcome {
    let tag = ctx.name("tag");
    let binding = table(&[("x-match", s("any")), ("conformance-tag", s(&tag))]);
    case(
        &ctx,
        ExchangeKind::Headers,
        Some("amq.match"),
        vec![("", binding)],
        vec![
            ("ignored", hdr(&[("conformance-tag", s(&tag))])),
            ("", hdr(&[("conformance-tag", s("other"))])),
        ],
        vec![0],
    )
    .await
}
