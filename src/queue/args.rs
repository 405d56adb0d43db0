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

/// The three kinds of queue RabbitMQ offers, chosen by `x-queue-type` at declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    /// Replicated (here: single-node, fsynced) FIFO with poison-message handling.
    Quorum,
    /// Append-only, replayable log; consumers read at their own offsets.
    Stream,
}

/// Dead-lettering strategy of a quorum queue (`x-dead-letter-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadLetterStrategy {
    #[default]
    AtMostOnce,
    AtLeastOnce,
}

/// Each type's `queue_arguments` (RabbitMQ 3.13's `capabilities/0`).
const CLASSIC_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
    "x-queue-leader-locator",
];
const QUORUM_ARGS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-message-ttl",
    "x-queue-leader-locator",
];
const STREAM_ARGS: &[&str] = &[
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-stream-filter-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// Each type's consumer (`basic.consume`) arguments, as RabbitMQ 3.13 lists them.
const CLASSIC_CONSUMER_ARGS: &[&str] = &["x-priority", "x-cancel-on-ha-failover"];
const QUORUM_CONSUMER_ARGS: &[&str] = &["x-priority", "x-credit"];
const STREAM_CONSUMER_ARGS: &[&str] = &["x-stream-offset", "x-credit"];

impl QueueType {
    /// The type an `x-queue-type` argument names; `None` for an unknown name. No argument
    /// means classic (RabbitMQ 3.13 with no default queue type set on the vhost).
    pub fn from_args(args: &FieldTable) -> Option<QueueType> {
        match args.inner().get("x-queue-type") {
            None => Some(QueueType::Classic),
            Some(v) => match str_value(v).as_deref() {
                Some("classic") => Some(QueueType::Classic),
                Some("quorum") => Some(QueueType::Quorum),
                Some("stream") => Some(QueueType::Stream),
                _ => None,
            },
        }
    }

    /// The name management and `x-queue-type` use.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// RabbitMQ's module name, which its error texts quote.
    pub fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
            QueueType::Stream => "rabbit_stream_queue",
        }
    }

    /// The declare arguments this type knows (and compares on redeclare).
    pub fn arguments(self) -> &'static [&'static str] {
        match self {
            QueueType::Classic => CLASSIC_ARGS,
            QueueType::Quorum => QUORUM_ARGS,
            QueueType::Stream => STREAM_ARGS,
        }
    }

    fn consumer_arguments(self) -> &'static [&'static str] {
        match self {
            QueueType::Classic => CLASSIC_CONSUMER_ARGS,
            QueueType::Quorum => QUORUM_CONSUMER_ARGS,
            QueueType::Stream => STREAM_CONSUMER_ARGS,
        }
    }

    /// An argument some other type knows but this one does not: RabbitMQ refuses it.
    fn refuses(self, key: &str, other_lists: fn(QueueType) -> &'static [&'static str]) -> bool {
        let known = |t: QueueType| other_lists(t).contains(&key);
        !known(self)
            && [QueueType::Classic, QueueType::Quorum, QueueType::Stream]
                .into_iter()
                .any(known)
    }

    /// Checks basic.consume arguments against this type (`what` is "queue 'Q' in vhost
    /// 'V'"): an argument another type knows is refused, as is a non-integer x-priority.
    /// On error, the text after `PRECONDITION_FAILED - `.
    pub fn check_consume_args(self, args: &FieldTable, what: &str) -> Result<(), String> {
        for (k, v) in args.inner() {
            let key = k.as_str();
            if self.refuses(key, QueueType::consumer_arguments) {
                return Err(format!(
                    "invalid arg '{key}' for {what} of queue type {}",
                    self.module()
                ));
            }
            if key == "x-priority" && int_value(v).is_none() {
                return Err(format!(
                    "invalid arg 'x-priority' for {what}: \"expected integer, got {}\"",
                    type_name(v)
                ));
            }
        }
        Ok(())
    }

    /// Quorum queues and streams need a name (406 for a server-named declare).
    pub fn allows_server_named(self) -> bool {
        self == QueueType::Classic
    }
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
    pub queue_type: QueueType,
    /// x-delivery-limit (quorum): a message returned more often than this is dropped or
    /// dead-lettered with reason `delivery_limit`.
    pub delivery_limit: Option<u64>,
    pub dead_letter_strategy: DeadLetterStrategy,
    /// x-max-age (stream), seconds.
    pub max_age: Option<u64>,
    pub stream_max_segment_size_bytes: Option<u64>,
    pub stream_filter_size_bytes: Option<u64>,
    pub initial_cluster_size: Option<u64>,
}

/// RabbitMQ's largest stream segment (`?MAX_STREAM_MAX_SEGMENT_SIZE`).
pub const MAX_STREAM_SEGMENT_SIZE: u64 = 3_000_000_000;

/// Parses RabbitMQ's `x-max-age` grammar (`^[0-9]+[YMDhms]$`, value > 0) into seconds;
/// Y is 365 days and M 30 days.
pub fn parse_max_age(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        'Y' => 365 * 86_400,
        'M' => 30 * 86_400,
        'D' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    (n > 0).then(|| n.saturating_mul(mult))
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
        let queue_type = match args.inner().get("x-queue-type") {
            None => QueueType::Classic,
            Some(v) => QueueType::from_args(args).ok_or_else(|| {
                (
                    "x-queue-type".to_string(),
                    format!(
                        "\"unsupported queue type '{}'\"",
                        str_value(v).unwrap_or_else(|| type_name(v).to_string())
                    ),
                )
            })?,
        };
        let mut q = QueueArgs {
            queue_type,
            ..QueueArgs::default()
        };
        let own = queue_type.arguments();
        // Values first (only of the arguments this type knows), then the arguments another
        // type knows, as RabbitMQ's check_declare_arguments.
        for (k, v) in args.inner() {
            let key = k.as_str();
            if own.contains(&key) {
                q.parse_one(key, v)?;
            }
        }
        for k in args.inner().keys() {
            if queue_type.refuses(k.as_str(), QueueType::arguments) {
                return Err((
                    WHOLE.to_string(),
                    format!(
                        "invalid arg '{}' for {{what}} of queue type {}",
                        k.as_str(),
                        queue_type.module()
                    ),
                ));
            }
        }
        if q.dead_letter_routing_key.is_some() && q.dead_letter_exchange.is_none() {
            return Err((
                "x-dead-letter-routing-key".to_string(),
                "routing_key_but_no_dlx_defined".to_string(),
            ));
        }
        if queue_type != QueueType::Classic {
            // The type's own declare: rabbit_queue_type_util's property checks, in order.
            let why = if auto_delete {
                Some("invalid property 'auto-delete' for {what}")
            } else if exclusive {
                Some("invalid property 'exclusive-owner' for {what}")
            } else if !durable {
                Some("invalid property 'non-durable' for {what}")
            } else {
                None
            };
            if let Some(why) = why {
                return Err((WHOLE.to_string(), why.to_string()));
            }
        }
        if queue_type == QueueType::Quorum && q.overflow == Overflow::RejectPublishDlx {
            // Accepted, but quorum queues do not support it: RabbitMQ falls back to drop-head.
            q.overflow = Overflow::DropHead;
        }
        if queue_type == QueueType::Stream {
            if q.stream_max_segment_size_bytes
                .is_some_and(|n| n > MAX_STREAM_SEGMENT_SIZE)
            {
                return Err((
                    WHOLE.to_string(),
                    "Exceeded max value for x-stream-max-segment-size-bytes".to_string(),
                ));
            }
            if let Some(v) = args.inner().get("x-stream-filter-size-bytes") {
                match int_value(v) {
                    Some(n @ 16..=255) => q.stream_filter_size_bytes = Some(n as u64),
                    Some(_) => {
                        return Err((
                            WHOLE.to_string(),
                            "Invalid value for x-stream-filter-size-bytes".to_string(),
                        ))
                    }
                    None => {
                        return Err((
                            WHOLE.to_string(),
                            "Invalid type for x-stream-filter-size-bytes".to_string(),
                        ))
                    }
                }
            }
        }
        Ok(q)
    }

    /// Validates one argument the queue's type knows and records its setting.
    fn parse_one(&mut self, key: &str, v: &AMQPValue) -> Result<(), ArgError> {
        let unacceptable = |v: &AMQPValue| {
            (
                key.to_string(),
                format!("{{unacceptable_type,{}}}", type_name(v)),
            )
        };
        let positive = |v: &AMQPValue| {
            let n = non_neg(key, v)?;
            if n == 0 {
                return Err((key.to_string(), "{value_zero,0}".to_string()));
            }
            Ok(n)
        };
        let q = self;
        match key {
            "x-message-ttl" => q.message_ttl = Some(non_neg(key, v)?),
            "x-expires" => q.expires = Some(positive(v)?),
            "x-max-length" => q.max_length = Some(non_neg(key, v)?),
            "x-max-length-bytes" => q.max_length_bytes = Some(non_neg(key, v)?),
            "x-max-in-memory-length" | "x-max-in-memory-bytes" => {
                // Accepted; without effect, as in RabbitMQ since 3.10.
                non_neg(key, v)?;
            }
            "x-delivery-limit" => {
                // Any integer; a negative one means no limit (as RabbitMQ 4 spells it).
                let n = int_value(v).ok_or_else(|| {
                    (
                        key.to_string(),
                        format!("\"expected integer, got {}\"", type_name(v)),
                    )
                })?;
                q.delivery_limit = u64::try_from(n).ok();
            }
            "x-quorum-initial-group-size" | "x-initial-cluster-size" => {
                q.initial_cluster_size = Some(positive(v)?)
            }
            "x-stream-max-segment-size-bytes" => {
                q.stream_max_segment_size_bytes = Some(non_neg(key, v)?)
            }
            "x-max-age" => {
                let s = str_value(v).ok_or_else(|| unacceptable(v))?;
                q.max_age = Some(
                    parse_max_age(&s).ok_or((key.to_string(), "invalid_max_age".to_string()))?,
                );
            }
            "x-max-priority" => {
                let n = non_neg(key, v)?;
                if n > 255 {
                    return Err((key.to_string(), format!("{{max_value_exceeded,{n}}}")));
                }
                q.max_priority = Some(n as u8);
            }
            "x-overflow" => {
                let s = str_value(v).ok_or_else(|| unacceptable(v))?;
                q.overflow_declared = true;
                q.overflow = match s.as_str() {
                    "drop-head" => Overflow::DropHead,
                    "reject-publish" => Overflow::RejectPublish,
                    "reject-publish-dlx" => Overflow::RejectPublishDlx,
                    _ => return Err((key.to_string(), "invalid_overflow".to_string())),
                };
            }
            "x-dead-letter-strategy" => {
                let s = str_value(v).ok_or_else(|| unacceptable(v))?;
                q.dead_letter_strategy = match s.as_str() {
                    "at-most-once" => DeadLetterStrategy::AtMostOnce,
                    "at-least-once" => DeadLetterStrategy::AtLeastOnce,
                    _ => return Err((key.to_string(), "invalid_dlx_strategy".to_string())),
                };
            }
            "x-dead-letter-exchange" => q.dead_letter_exchange = Some(longstr(key, v)?),
            "x-dead-letter-routing-key" => q.dead_letter_routing_key = Some(longstr(key, v)?),
            "x-single-active-consumer" => match v {
                AMQPValue::Boolean(b) => q.single_active_consumer = *b,
                other => return Err(unacceptable(other)),
            },
            "x-queue-leader-locator" | "x-queue-master-locator" => {
                let s = str_value(v).ok_or_else(|| unacceptable(v))?;
                let known: &[&str] = if key == "x-queue-leader-locator" {
                    &["client-local", "balanced", "random", "least-leaders"]
                } else {
                    &["client-local", "min-masters", "random"]
                };
                if !known.contains(&s.as_str()) {
                    return Err((key.to_string(), "invalid_queue_locator_arg".to_string()));
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
        Ok(())
    }

    /// RabbitMQ's at-least-once dead-lettering applies only with `reject-publish` and a
    /// dead-letter exchange; otherwise a quorum queue falls back to at-most-once.
    pub fn at_least_once(&self) -> bool {
        self.queue_type == QueueType::Quorum
            && self.dead_letter_strategy == DeadLetterStrategy::AtLeastOnce
            && self.overflow == Overflow::RejectPublish
            && self.dead_letter_exchange.is_some()
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
        if self.queue_type == QueueType::Stream {
            // Streams take only retention from a policy, and the policy wins
            // (rabbit_stream_queue's policy_precedence); other keys do not apply.
            q.max_length_bytes = num("max-length-bytes").or(self.max_length_bytes);
            q.max_age = text("max-age")
                .and_then(|s| parse_max_age(&s))
                .or(self.max_age);
            return q;
        }
        if self.queue_type == QueueType::Quorum {
            q.delivery_limit = min(self.delivery_limit, num("delivery-limit"));
        }
        q.message_ttl = min(self.message_ttl, num("message-ttl"));
        q.expires = min(self.expires, num("expires").filter(|n| *n > 0));
        q.max_length = min(self.max_length, num("max-length"));
        q.max_length_bytes = min(self.max_length_bytes, num("max-length-bytes"));
        let policy_overflow = def.get("overflow").and_then(|v| v.as_str());
        if self.queue_type == QueueType::Quorum {
            // For quorum queues the policy's overflow wins over the argument
            // (rabbit_quorum_queue's gather_policy_config); reject-publish-dlx is drop-head.
            if policy_overflow == Some("reject-publish") {
                q.overflow = Overflow::RejectPublish;
            } else if policy_overflow.is_some() {
                q.overflow = Overflow::DropHead;
            }
        } else if !self.overflow_declared {
            q.overflow = match policy_overflow {
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
mod tests;
