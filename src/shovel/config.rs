//! A dynamic shovel's definition: the JSON value of `/api/parameters/shovel/{vhost}/{name}`
//! with rabbitmq_shovel's keys (AMQP 0-9-1 on both sides), validated into [`ShovelConfig`].

use serde_json::{Map, Value};
use std::time::Duration;

/// When the shovel acknowledges a message at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// After the destination confirmed it (no loss; a reconnect may duplicate).
    OnConfirm,
    /// Once it is published to the destination.
    OnPublish,
    /// Consumed with no-ack (fastest, may lose messages in flight).
    NoAck,
}

impl AckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::OnConfirm => "on-confirm",
            AckMode::OnPublish => "on-publish",
            AckMode::NoAck => "no-ack",
        }
    }
}

/// What the shovel consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Queue(String),
    /// A server-named queue bound to this exchange with the key.
    Exchange {
        name: String,
        key: String,
    },
}

/// Where it publishes: to a queue (through the default exchange), or to an exchange with
/// a fixed routing key or the message's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Queue(String),
    Exchange { name: String, key: Option<String> },
}

/// `src-delete-after`: when the shovel stops and deletes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAfter {
    Never,
    /// After moving the messages the source queue held when the shovel started.
    QueueLength,
    /// After moving this many messages.
    Count(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShovelConfig {
    pub src_uri: String,
    pub src: Source,
    pub dest_uri: String,
    pub dest: Dest,
    pub ack_mode: AckMode,
    pub prefetch: u16,
    pub reconnect_delay: Duration,
    pub delete_after: DeleteAfter,
    pub add_forward_headers: bool,
    /// The value as given (stored and returned by the API, saved in the definitions).
    pub value: Value,
}

fn text(m: &Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{k} should be a string, actually was {other}")),
    }
}

/// `src-uri` / `dest-uri`: a string or a list of strings (the first one is used).
fn uri(m: &Map<String, Value>, k: &str) -> Result<String, String> {
    match m.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) => a
            .first()
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{k} should be a URI or a list of URIs")),
        None => Err(format!("Validation failed\n\n{k} not specified")),
        Some(other) => Err(format!("{k} should be a URI, actually was {other}")),
    }
}

impl ShovelConfig {
    /// Validates a shovel definition as rabbitmq_shovel's `rabbit_shovel_parameters` does
    /// for AMQP 0-9-1 (the error is the 400's reason).
    pub fn parse(value: &Value) -> Result<ShovelConfig, String> {
        let m = value
            .as_object()
            .ok_or("Validation failed\n\nvalue must be a JSON object")?;
        for (k, p) in [("src-protocol", "amqp091"), ("dest-protocol", "amqp091")] {
            if let Some(v) = text(m, k)? {
                if v != p {
                    return Err(format!("{k} '{v}' is not supported (only amqp091)"));
                }
            }
        }
        let src_uri = uri(m, "src-uri")?;
        let dest_uri = uri(m, "dest-uri")?;
        for u in [&src_uri, &dest_uri] {
            if !(u.starts_with("amqp://") || u.starts_with("amqps://")) {
                return Err(format!("Validation failed\n\n{u} is not a valid AMQP URI"));
            }
        }
        let src = match (text(m, "src-queue")?, text(m, "src-exchange")?) {
            (Some(q), None) => Source::Queue(q),
            (None, Some(x)) => Source::Exchange {
                name: x,
                key: text(m, "src-exchange-key")?.unwrap_or_else(|| "#".into()),
            },
            (Some(_), Some(_)) => {
                return Err("Validation failed\n\nsrc-queue and src-exchange are exclusive".into())
            }
            (None, None) => {
                return Err(
                    "Validation failed\n\nMust specify 'src-queue' or 'src-exchange'".into(),
                )
            }
        };
        let dest = match (text(m, "dest-queue")?, text(m, "dest-exchange")?) {
            (Some(q), None) => Dest::Queue(q),
            (None, Some(x)) => Dest::Exchange {
                name: x,
                key: text(m, "dest-exchange-key")?,
            },
            (Some(_), Some(_)) => {
                return Err(
                    "Validation failed\n\ndest-queue and dest-exchange are exclusive".into(),
                )
            }
            // As rabbitmq_shovel: messages keep their exchange's routing key, published to
            // the default exchange.
            (None, None) => Dest::Exchange {
                name: String::new(),
                key: None,
            },
        };
        let ack_mode = match text(m, "ack-mode")?.as_deref() {
            None | Some("on-confirm") => AckMode::OnConfirm,
            Some("on-publish") => AckMode::OnPublish,
            Some("no-ack") => AckMode::NoAck,
            Some(other) => {
                return Err(format!(
                    "Validation failed\n\nack-mode should be one of on-confirm, on-publish, no-ack, actually was {other}"
                ))
            }
        };
        let int = |k: &str| -> Result<Option<u64>, String> {
            match m.get(k) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    format!("{k} should be a non-negative number, actually was {v}")
                }),
            }
        };
        let prefetch = int("src-prefetch-count")?
            .or(int("prefetch-count")?)
            .unwrap_or(1000)
            .clamp(1, u16::MAX as u64) as u16;
        let reconnect_delay = Duration::from_secs(int("reconnect-delay")?.unwrap_or(5));
        let delete_after = match m.get("src-delete-after").or_else(|| m.get("delete-after")) {
            None => DeleteAfter::Never,
            Some(Value::String(s)) if s == "never" => DeleteAfter::Never,
            Some(Value::String(s)) if s == "queue-length" => DeleteAfter::QueueLength,
            Some(v) if v.as_u64().is_some() => DeleteAfter::Count(v.as_u64().unwrap_or(0)),
            Some(v) => {
                return Err(format!(
                    "Validation failed\n\nsrc-delete-after should be \"never\", \"queue-length\" or a number, actually was {v}"
                ))
            }
        };
        if delete_after == DeleteAfter::QueueLength && !matches!(src, Source::Queue(_)) {
            return Err(
                "Validation failed\n\nsrc-delete-after \"queue-length\" needs src-queue".into(),
            );
        }
        let add_forward_headers = m
            .get("add-forward-headers")
            .or_else(|| m.get("dest-add-forward-headers"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(ShovelConfig {
            src_uri,
            src,
            dest_uri,
            dest,
            ack_mode,
            prefetch,
            reconnect_delay,
            delete_after,
            add_forward_headers,
            value: value.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rabbitmq_keys() {
        let c = ShovelConfig::parse(&json!({
            "src-uri": "amqp://guest:guest@127.0.0.1:5682",
            "src-queue": "backlog",
            "dest-uri": ["amqp://127.0.0.1:5672"],
            "dest-exchange": "x",
            "dest-exchange-key": "k",
            "ack-mode": "on-publish",
            "src-prefetch-count": 50,
            "reconnect-delay": 1,
            "src-delete-after": "queue-length",
            "add-forward-headers": true
        }))
        .unwrap();
        assert_eq!(c.src, Source::Queue("backlog".into()));
        assert_eq!(c.dest_uri, "amqp://127.0.0.1:5672");
        assert_eq!(
            c.dest,
            Dest::Exchange {
                name: "x".into(),
                key: Some("k".into())
            }
        );
        assert_eq!(c.ack_mode, AckMode::OnPublish);
        assert_eq!(c.prefetch, 50);
        assert_eq!(c.reconnect_delay, Duration::from_secs(1));
        assert_eq!(c.delete_after, DeleteAfter::QueueLength);
        assert!(c.add_forward_headers);
        let d = ShovelConfig::parse(&json!({
            "src-uri": "amqp://", "src-exchange": "amq.topic",
            "dest-uri": "amqp://", "dest-queue": "q", "delete-after": 10
        }))
        .unwrap();
        assert_eq!(
            d.src,
            Source::Exchange {
                name: "amq.topic".into(),
                key: "#".into()
            }
        );
        assert_eq!(d.ack_mode, AckMode::OnConfirm);
        assert_eq!(d.delete_after, DeleteAfter::Count(10));
    }

    #[test]
    fn refusals() {
        let bad = [
            json!({"src-queue": "q", "dest-uri": "amqp://", "dest-queue": "d"}),
            json!({"src-uri": "http://x", "src-queue": "q", "dest-uri": "amqp://", "dest-queue": "d"}),
            json!({"src-uri": "amqp://", "dest-uri": "amqp://", "dest-queue": "d"}),
            json!({"src-uri": "amqp://", "src-queue": "q", "src-exchange": "x", "dest-uri": "amqp://"}),
            json!({"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://", "ack-mode": "sometimes"}),
            json!({"src-uri": "amqp://", "src-exchange": "x", "dest-uri": "amqp://", "src-delete-after": "queue-length"}),
            json!({"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://", "src-delete-after": -1}),
            json!("not an object"),
        ];
        for b in bad {
            assert!(ShovelConfig::parse(&b).is_err(), "{b}");
        }
    }
}
