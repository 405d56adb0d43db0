//! Redeclare equivalence: RabbitMQ's `assert_args_equivalence` over the arguments a queue
//! type (or an exchange) compares, with its texts.

use super::tf;
use crate::error::{AmqpError, AmqpResult};
use amq_protocol::types::{AMQPValue, FieldTable};

/// The arguments without `x-queue-type: classic`: RabbitMQ treats that the same as no
/// `x-queue-type` when comparing a redeclare.
pub(super) fn classic_unmarked(args: &FieldTable) -> std::borrow::Cow<'_, FieldTable> {
    let classic = args
        .inner()
        .get("x-queue-type")
        .is_some_and(|v| value_text(v) == "classic");
    if !classic {
        return std::borrow::Cow::Borrowed(args);
    }
    let mut t = FieldTable::default();
    for (k, v) in args.inner() {
        if k.as_str() != "x-queue-type" {
            t.insert(k.clone(), v.clone());
        }
    }
    std::borrow::Cow::Owned(t)
}

/// Both argument tables without `x-queue-type: classic` when both declare a classic queue
/// (marked or not); otherwise as they are, so a classic redeclare of a quorum queue reads
/// "received 'classic' but current is 'quorum'", as RabbitMQ 3.10.8 says.
pub(super) fn unmark_classic<'a>(
    received: &'a FieldTable,
    current: &'a FieldTable,
) -> (
    std::borrow::Cow<'a, FieldTable>,
    std::borrow::Cow<'a, FieldTable>,
) {
    let classic = |t: &FieldTable| {
        t.inner()
            .get("x-queue-type")
            .is_none_or(|v| value_text(v) == "classic")
    };
    if classic(received) && classic(current) {
        (classic_unmarked(received), classic_unmarked(current))
    } else {
        (
            std::borrow::Cow::Borrowed(received),
            std::borrow::Cow::Borrowed(current),
        )
    }
}

pub(super) fn inequivalent(arg: &str, what: &str, received: &str, current: &str) -> AmqpError {
    AmqpError::precondition_failed(format_args!(
        "inequivalent arg '{arg}' for {what}: received '{received}' but current is '{current}'"
    ))
}

fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => tf(*b).to_string(),
        AMQPValue::ShortShortInt(i) => i.to_string(),
        AMQPValue::ShortShortUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::Timestamp(t) => t.to_string(),
        other => format!("{other:?}"),
    }
}

/// Integer-valued arguments compare by value whatever their width, as RabbitMQ does.
fn args_value_eq(a: &AMQPValue, b: &AMQPValue) -> bool {
    fn string(v: &AMQPValue) -> Option<&[u8]> {
        match v {
            AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
            AMQPValue::LongString(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    use crate::queue::args::int_value;
    match (int_value(a), int_value(b)) {
        (Some(x), Some(y)) => return x == y,
        (None, None) => {}
        _ => return false,
    }
    match (string(a), string(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

pub(super) fn assert_args_equivalent(
    what: &str,
    received: &FieldTable,
    current: &FieldTable,
    keys: &[&str],
) -> AmqpResult<()> {
    for key in keys {
        let r = received.inner().get(*key);
        let c = current.inner().get(*key);
        let same = match (r, c) {
            (None, None) => true,
            (Some(a), Some(b)) => args_value_eq(a, b),
            _ => false,
        };
        if !same {
            // RabbitMQ quotes plain values when both sides have one, and spells out the
            // type when one side is missing.
            let (rt, ct) = match (r, c) {
                (Some(r), Some(c)) => (
                    format!("'{}'", value_text(r)),
                    format!("'{}'", value_text(c)),
                ),
                _ => {
                    let fmt = |v: Option<&AMQPValue>| match v {
                        None => "none".to_string(),
                        Some(v) => format!(
                            "the value '{}' of type '{}'",
                            value_text(v),
                            crate::queue::args::type_name(v)
                        ),
                    };
                    (fmt(r), fmt(c))
                }
            };
            return Err(AmqpError::precondition_failed(format_args!(
                "inequivalent arg '{key}' for {what}: received {rt} but current is {ct}"
            )));
        }
    }
    Ok(())
}
