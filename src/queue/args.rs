//! Validation of queue.declare arguments, with RabbitMQ's error texts.

use amq_protocol::types::{AMQPValue, FieldTable};

pub(crate) use crate::routing::erl_term::type_name;

/// The integer value of an integer-typed field.
pub fn int_value(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(i) => *i as i64,
        AMQPValue::ShortShortUInt(i) => *i as i64,
        AMQPValue::ShortInt(i) => *i as i64,
        AMQPValue::ShortUInt(i) => *i as i64,
        AMQPValue::LongInt(i) => *i as i64,
        AMQPValue::LongUInt(i) => *i as i64,
        AMQPValue::LongLongInt(i) => *i,
        _ => return None,
    })
}

/// Arguments that must be integers.
const INTEGER_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
];

/// Checks argument types; on error returns (argument, RabbitMQ's description).
pub fn validate(args: &FieldTable) -> Result<(), (String, String)> {
    for (k, v) in args.inner() {
        if INTEGER_ARGS.contains(&k.as_str()) && int_value(v).is_none() {
            return Err((
                k.to_string(),
                format!("\"expected integer, got {}\"", type_name(v)),
            ));
        }
    }
    Ok(())
}
