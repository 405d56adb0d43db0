//! queue.declare arguments: validation with RabbitMQ's error texts, and the typed settings
//! the queue acts on.

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

fn str_value(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// What happens when a length limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

/// The settings a queue's arguments ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// x-message-ttl, milliseconds.
    pub message_ttl: Option<u64>,
    /// x-expires, milliseconds.
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// `x-overflow` was given (a policy's `overflow` applies only when it was not).
    pub overflow_declared: bool,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    /// x-max-priority: number of priority levels above 0.
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
}

/// An argument RabbitMQ would refuse: (argument, description as RabbitMQ prints it), or a
/// whole message when RabbitMQ words it differently (`Whole`).
type ArgError = (String, String);

/// Marks an [`ArgError`] whose second part is the complete text; `{what}` stands for
/// "queue 'Q' in vhost 'V'".
const WHOLE: &str = "";

fn non_neg(k: &str, v: &AMQPValue) -> Result<u64, ArgError> {
    let i = int_value(v).ok_or_else(|| {
        (
            k.to_string(),
            format!("\"expected integer, got {}\"", type_name(v)),
        )
    })?;
    if i < 0 {
        return Err((k.to_string(), format!("{{value_negative,{i}}}")));
    }
    Ok(i as u64)
}

fn longstr(k: &str, v: &AMQPValue) -> Result<String, ArgError> {
    str_value(v).ok_or_else(|| {
        (
            WHOLE.to_string(),
            format!("invalid type '{}' for arg '{k}' in {{what}}", type_name(v)),
        )
    })
}

impl QueueArgs {
    /// Parses and validates declare arguments of the queue `what` ("queue 'Q' in vhost
    /// 'V'"); on error, RabbitMQ's text after `PRECONDITION_FAILED - `.
    pub fn parse(
        args: &FieldTable,
        what: &str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
    ) -> Result<QueueArgs, String> {
        Self::parse_inner(args, durable, exclusive, auto_delete).map_err(|(k, why)| {
            if k == WHOLE {
                why.replace("{what}", what)
            } else {
                format!("invalid arg '{k}' for {what}: {why}")
            }
        })
    }

    fn parse_inner(
        args: &FieldTable,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
    ) -> Result<QueueArgs, ArgError> {
        let mut q = QueueArgs::default();
        for (k, v) in args.inner() {
            let key = k.as_str();
            match key {
                "x-message-ttl" => q.message_ttl = Some(non_neg(key, v)?),
                "x-expires" => {
                    let n = non_neg(key, v)?;
                    if n == 0 {
                        return Err((key.to_string(), "{value_zero,0}".to_string()));
                    }
                    q.expires = Some(n);
                }
                "x-max-length" => q.max_length = Some(non_neg(key, v)?),
                "x-max-length-bytes" => q.max_length_bytes = Some(non_neg(key, v)?),
                "x-max-priority" => {
                    let n = non_neg(key, v)?;
                    if n > 255 {
                        return Err((key.to_string(), format!("{{max_value_exceeded,{n}}}")));
                    }
                    q.max_priority = Some(n as u8);
                }
                "x-overflow" => {
                    let s = str_value(v).ok_or_else(|| {
                        (
                            key.to_string(),
                            format!("{{unacceptable_type,{}}}", type_name(v)),
                        )
                    })?;
                    q.overflow_declared = true;
                    q.overflow = match s.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        _ => return Err((key.to_string(), "invalid_overflow".to_string())),
                    };
                }
                "x-dead-letter-exchange" => q.dead_letter_exchange = Some(longstr(key, v)?),
                "x-dead-letter-routing-key" => q.dead_letter_routing_key = Some(longstr(key, v)?),
                "x-single-active-consumer" => match v {
                    AMQPValue::Boolean(b) => q.single_active_consumer = *b,
                    other => {
                        return Err((
                            key.to_string(),
                            format!("{{unacceptable_type,{}}}", type_name(other)),
                        ))
                    }
                },
                "x-queue-type" => {
                    let s = str_value(v).unwrap_or_default();
                    match s.as_str() {
                        "classic" => {}
                        // Quorum queues and streams are not implemented: refuse rather than
                        // silently give a classic queue. RabbitMQ's own checks come first.
                        "quorum" | "stream" => {
                            let why = if exclusive {
                                "invalid property 'exclusive-owner' for {what}".to_string()
                            } else if !durable {
                                "invalid property 'non-durable' for {what}".to_string()
                            } else if auto_delete {
                                "invalid property 'auto-delete' for {what}".to_string()
                            } else {
                                format!("invalid arg '{key}' for {{what}}: \"queue type '{s}' is not supported by this broker\"")
                            };
                            return Err((WHOLE.to_string(), why));
                        }
                        other => {
                            return Err((
                                key.to_string(),
                                format!("\"unsupported queue type '{other}'\""),
                            ))
                        }
                    }
                }
                "x-queue-mode" => {
                    let s = str_value(v).unwrap_or_default();
                    if s != "default" && s != "lazy" {
                        return Err((key.to_string(), format!("\"unsupported queue mode '{s}'\"")));
                    }
                }
                _ => {}
            }
        }
        if q.dead_letter_routing_key.is_some() && q.dead_letter_exchange.is_none() {
            return Err((
                "x-dead-letter-routing-key".to_string(),
                "routing_key_but_no_dlx_defined".to_string(),
            ));
        }
        Ok(q)
    }
}

impl QueueArgs {
    /// The settings the queue acts on: these (declared) arguments merged with a policy
    /// definition, as RabbitMQ's `rabbit_amqqueue_process:process_args_policy` does. For
    /// `message-ttl`, `expires`, `max-length` and `max-length-bytes` the lower of the two
    /// values applies; for `overflow`, `dead-letter-exchange` and `dead-letter-routing-key`
    /// the queue's argument wins. Other keys (`max-priority`, single active consumer) are
    /// not settable by policy. Definitions were validated when the policy was stored.
    pub fn with_policy(&self, definition: Option<&serde_json::Value>) -> QueueArgs {
        let mut q = self.clone();
        let Some(def) = definition.and_then(|d| d.as_object()) else {
            return q;
        };
        let num = |k: &str| def.get(k).and_then(|v| v.as_u64());
        let text = |k: &str| def.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let min = |arg: Option<u64>, pol: Option<u64>| match (arg, pol) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        };
        q.message_ttl = min(self.message_ttl, num("message-ttl"));
        q.expires = min(self.expires, num("expires").filter(|n| *n > 0));
        q.max_length = min(self.max_length, num("max-length"));
        q.max_length_bytes = min(self.max_length_bytes, num("max-length-bytes"));
        if !self.overflow_declared {
            q.overflow = match def.get("overflow").and_then(|v| v.as_str()) {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            };
        }
        q.dead_letter_exchange = self
            .dead_letter_exchange
            .clone()
            .or_else(|| text("dead-letter-exchange"));
        q.dead_letter_routing_key = self
            .dead_letter_routing_key
            .clone()
            .or_else(|| text("dead-letter-routing-key"));
        q
    }
}

#[cfg(test)]
mod tests {
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
}
