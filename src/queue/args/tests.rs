use super::*;

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

fn parse(t: FieldTable) -> Result<QueueArgs, String> {
    QueueArgs::parse(&t, "queue 'q' in vhost '/'", false, false, false)
}

#[test]
fn parses_known_arguments() {
    let a = parse(table(vec![
        ("x-message-ttl", AMQPValue::LongInt(100)),
        ("x-max-length", AMQPValue::ShortShortUInt(3)),
        ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString("dlx".into()),
        ),
        ("x-max-priority", AMQPValue::LongInt(10)),
    ]))
    .unwrap();
    assert_eq!(a.message_ttl, Some(100));
    assert_eq!(a.max_length, Some(3));
    assert_eq!(a.overflow, Overflow::RejectPublish);
    assert_eq!(a.dead_letter_exchange.as_deref(), Some("dlx"));
    assert_eq!(a.max_priority, Some(10));
}

#[test]
fn policy_merge_takes_lower_limits_and_declared_strings() {
    let declared = parse(table(vec![
        ("x-max-length", AMQPValue::LongInt(10)),
        ("x-message-ttl", AMQPValue::LongInt(50)),
        ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString("arg".into()),
        ),
    ]))
    .unwrap();
    let p = serde_json::json!({
        "max-length": 3, "message-ttl": 500, "expires": 1000, "overflow": "drop-head",
        "dead-letter-exchange": "pol", "dead-letter-routing-key": "rk", "max-length-bytes": 7,
    });
    let e = declared.with_policy(Some(&p));
    assert_eq!(e.max_length, Some(3));
    assert_eq!(e.message_ttl, Some(50));
    assert_eq!(e.expires, Some(1000));
    assert_eq!(e.max_length_bytes, Some(7));
    assert_eq!(e.overflow, Overflow::RejectPublish);
    assert_eq!(e.dead_letter_exchange.as_deref(), Some("arg"));
    assert_eq!(e.dead_letter_routing_key.as_deref(), Some("rk"));
    assert_eq!(declared.with_policy(None), declared);
    let plain = QueueArgs::default().with_policy(Some(&p));
    assert_eq!(plain.overflow, Overflow::DropHead);
    assert_eq!(plain.dead_letter_exchange.as_deref(), Some("pol"));
    let reject = serde_json::json!({"overflow": "reject-publish-dlx"});
    assert_eq!(
        QueueArgs::default().with_policy(Some(&reject)).overflow,
        Overflow::RejectPublishDlx
    );
}

#[test]
fn refuses_wrong_types_and_values() {
    let e = parse(table(vec![(
        "x-max-length",
        AMQPValue::LongString("ten".into()),
    )]))
    .unwrap_err();
    assert_eq!(
        e,
        "invalid arg 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got longstr\""
    );
    assert!(parse(table(vec![("x-expires", AMQPValue::LongInt(0))])).is_err());
    assert_eq!(
        parse(table(vec![(
            "x-queue-type",
            AMQPValue::LongString("stream".into())
        )]))
        .unwrap_err(),
        "invalid property 'non-durable' for queue 'q' in vhost '/'"
    );
    assert_eq!(
        parse(table(vec![(
            "x-dead-letter-exchange",
            AMQPValue::LongInt(1)
        )]))
        .unwrap_err(),
        "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
    );
    assert!(parse(table(vec![(
        "x-queue-type",
        AMQPValue::LongString("classic".into())
    )]))
    .is_ok());
}

fn parse_as(t: FieldTable, durable: bool) -> Result<QueueArgs, String> {
    QueueArgs::parse(&t, "queue 'q' in vhost '/'", durable, false, false)
}

#[test]
fn each_type_refuses_the_arguments_other_types_own() {
    let qq = |k: &str, v: AMQPValue| {
        parse_as(
            table(vec![
                ("x-queue-type", AMQPValue::LongString("quorum".into())),
                (k, v),
            ]),
            true,
        )
    };
    assert_eq!(
        qq("x-max-priority", AMQPValue::LongInt(5)).unwrap_err(),
        "invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"
    );
    let a = qq("x-delivery-limit", AMQPValue::LongInt(3)).unwrap();
    assert_eq!(
        (a.queue_type, a.delivery_limit),
        (QueueType::Quorum, Some(3))
    );
    assert_eq!(
        qq("x-delivery-limit", AMQPValue::LongInt(-1))
            .unwrap()
            .delivery_limit,
        None
    );
    // Unknown x- arguments are kept and ignored, whatever the type.
    assert!(qq("x-custom", AMQPValue::LongInt(1)).is_ok());
    let classic = parse_as(
        table(vec![("x-delivery-limit", AMQPValue::LongInt(3))]),
        true,
    );
    assert_eq!(
        classic.unwrap_err(),
        "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/' of queue type rabbit_classic_queue"
    );
    let stream = parse_as(
        table(vec![
            ("x-queue-type", AMQPValue::LongString("stream".into())),
            ("x-overflow", AMQPValue::LongString("drop-head".into())),
        ]),
        true,
    );
    assert_eq!(
        stream.unwrap_err(),
        "invalid arg 'x-overflow' for queue 'q' in vhost '/' of queue type rabbit_stream_queue"
    );
}

#[test]
fn property_checks_come_in_rabbitmqs_order() {
    let t = || {
        table(vec![(
            "x-queue-type",
            AMQPValue::LongString("quorum".into()),
        )])
    };
    let w = "queue 'q' in vhost '/'";
    assert_eq!(
        QueueArgs::parse(&t(), w, false, true, true).unwrap_err(),
        "invalid property 'auto-delete' for queue 'q' in vhost '/'"
    );
    assert_eq!(
        QueueArgs::parse(&t(), w, false, true, false).unwrap_err(),
        "invalid property 'exclusive-owner' for queue 'q' in vhost '/'"
    );
    assert_eq!(
        QueueArgs::parse(&t(), w, false, false, false).unwrap_err(),
        "invalid property 'non-durable' for queue 'q' in vhost '/'"
    );
    assert!(QueueArgs::parse(&t(), w, true, false, false).is_ok());
}

#[test]
fn stream_arguments_are_checked() {
    let s = |k: &str, v: AMQPValue| {
        parse_as(
            table(vec![
                ("x-queue-type", AMQPValue::LongString("stream".into())),
                (k, v),
            ]),
            true,
        )
    };
    assert_eq!(
        s("x-max-age", AMQPValue::LongString("7D".into()))
            .unwrap()
            .max_age,
        Some(7 * 86_400)
    );
    assert_eq!(
        s("x-max-age", AMQPValue::LongString("1A".into())).unwrap_err(),
        "invalid arg 'x-max-age' for queue 'q' in vhost '/': invalid_max_age"
    );
    assert_eq!(
        s(
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongLongInt(3_000_000_001)
        )
        .unwrap_err(),
        "Exceeded max value for x-stream-max-segment-size-bytes"
    );
    assert_eq!(
        s("x-stream-filter-size-bytes", AMQPValue::LongInt(256)).unwrap_err(),
        "Invalid value for x-stream-filter-size-bytes"
    );
    assert_eq!(
        s("x-stream-filter-size-bytes", AMQPValue::LongInt(32))
            .unwrap()
            .stream_filter_size_bytes,
        Some(32)
    );
}

#[test]
fn max_age_grammar() {
    assert_eq!(parse_max_age("1Y"), Some(365 * 86_400));
    assert_eq!(parse_max_age("2M"), Some(60 * 86_400));
    assert_eq!(parse_max_age("30m"), Some(1800));
    assert_eq!(parse_max_age("10s"), Some(10));
    assert_eq!(parse_max_age("0s"), None);
    assert_eq!(parse_max_age("D"), None);
    assert_eq!(parse_max_age("1d"), None);
    assert_eq!(parse_max_age("-1h"), None);
    assert_eq!(parse_max_age(""), None);
}

#[test]
fn consume_arguments_follow_the_queue_type() {
    let w = "queue 'q' in vhost '/'";
    let t = table(vec![(
        "x-stream-offset",
        AMQPValue::LongString("first".into()),
    )]);
    assert_eq!(
        QueueType::Quorum.check_consume_args(&t, w).unwrap_err(),
        "invalid arg 'x-stream-offset' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"
    );
    assert!(QueueType::Stream.check_consume_args(&t, w).is_ok());
    let p = table(vec![("x-priority", AMQPValue::LongInt(1))]);
    assert!(QueueType::Quorum.check_consume_args(&p, w).is_ok());
    assert_eq!(
        QueueType::Stream.check_consume_args(&p, w).unwrap_err(),
        "invalid arg 'x-priority' for queue 'q' in vhost '/' of queue type rabbit_stream_queue"
    );
}

#[test]
fn quorum_policy_merge() {
    let declared = parse_as(
        table(vec![
            ("x-queue-type", AMQPValue::LongString("quorum".into())),
            ("x-delivery-limit", AMQPValue::LongInt(10)),
            ("x-overflow", AMQPValue::LongString("drop-head".into())),
        ]),
        true,
    )
    .unwrap();
    let p = serde_json::json!({"delivery-limit": 3, "overflow": "reject-publish"});
    let e = declared.with_policy(Some(&p));
    assert_eq!(e.delivery_limit, Some(3));
    assert_eq!(e.overflow, Overflow::RejectPublish);
}
