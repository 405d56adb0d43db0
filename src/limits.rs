//! Resource limits with RabbitMQ's texts: the node-wide connection limit
//! (`--max-connections`, RabbitMQ's `connection_max`) and per-vhost limits
//! (`max-connections`, `max-queues`, as `rabbitmqctl set_vhost_limits`) and per-user limits
//! (`max-connections`, `max-channels`, as `rabbitmqctl set_user_limits`).
//!
//! Limits are checked where RabbitMQ checks them: connections at `connection.open`
//! (530 NOT_ALLOWED), queues when a *new* queue is declared (406 PRECONDITION_FAILED).
//! Channel count, frame size, message size and the handshake timeout are enforced by the
//! connection itself (`channel_max`, `frame_max`, `max_message_size`,
//! `handshake_timeout` in [`crate::Config`]).

use crate::error::{AmqpError, AmqpResult};
use parking_lot::RwLock;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One vhost's limits; `None` is unlimited (RabbitMQ: absent or negative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VHostLimits {
    pub max_connections: Option<u64>,
    pub max_queues: Option<u64>,
}

impl VHostLimits {
    /// Reads RabbitMQ's JSON shape `{"max-connections": 10, "max-queues": -1}`.
    pub fn from_json(v: &Map<String, Value>) -> Result<VHostLimits, String> {
        let get = |k: &str| -> Result<Option<u64>, String> {
            match v.get(k) {
                None => Ok(None),
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(i) if i < 0 => Ok(None),
                    Some(i) => Ok(Some(i as u64)),
                    None => Err(format!("{k}: not an integer")),
                },
                Some(other) => Err(format!("{k}: not an integer: {other}")),
            }
        };
        for k in v.keys() {
            if k != "max-connections" && k != "max-queues" {
                return Err(format!("unknown limit '{k}'"));
            }
        }
        Ok(VHostLimits {
            max_connections: get("max-connections")?,
            max_queues: get("max-queues")?,
        })
    }

    /// RabbitMQ's JSON shape; unlimited entries are left out.
    pub fn to_json(self) -> Map<String, Value> {
        limits_json(&[
            ("max-connections", self.max_connections),
            ("max-queues", self.max_queues),
        ])
    }

    pub fn is_empty(self) -> bool {
        self.max_connections.is_none() && self.max_queues.is_none()
    }
}

/// One user's limits (RabbitMQ keeps them on the user record); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Connections of the user across the node.
    pub max_connections: Option<u64>,
    /// Channels of the user across all its connections.
    pub max_channels: Option<u64>,
}

impl UserLimits {
    /// Reads RabbitMQ's JSON shape `{"max-connections": 10, "max-channels": -1}`, with
    /// RabbitMQ's refusal texts.
    pub fn from_json(v: &Map<String, Value>) -> Result<UserLimits, String> {
        let unknown: Vec<String> = v
            .iter()
            .filter(|(k, _)| *k != "max-connections" && *k != "max-channels")
            .map(|(k, v)| format!("{{<<\"{k}\">>,{v}}}"))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "Unrecognised terms [{}] in user-limits",
                unknown.join(",")
            ));
        }
        let get = |k: &str| -> Result<Option<u64>, String> {
            match v.get(k) {
                None => Ok(None),
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(i) if i < 0 => Ok(None),
                    Some(i) => Ok(Some(i as u64)),
                    None => Err(format!("{k} should be a number, actually was {n}")),
                },
                Some(other) => Err(format!("{k} should be a number, actually was {other}")),
            }
        };
        Ok(UserLimits {
            max_connections: get("max-connections")?,
            max_channels: get("max-channels")?,
        })
    }

    /// RabbitMQ's JSON shape; unlimited entries are left out.
    pub fn to_json(self) -> Map<String, Value> {
        limits_json(&[
            ("max-channels", self.max_channels),
            ("max-connections", self.max_connections),
        ])
    }

    pub fn is_empty(self) -> bool {
        self.max_connections.is_none() && self.max_channels.is_none()
    }
}

/// Per-vhost and per-user limits. Read at connection.open, channel.open (users with a
/// channel limit) and queue creation only, never per message.
#[derive(Debug, Default)]
pub struct Limits {
    per_vhost: RwLock<BTreeMap<String, VHostLimits>>,
    per_user: RwLock<BTreeMap<String, UserLimits>>,
}

impl Limits {
    pub fn get(&self, vhost: &str) -> VHostLimits {
        self.per_vhost
            .read()
            .get(vhost)
            .copied()
            .unwrap_or_default()
    }

    /// Sets a vhost's limits (replacing the previous ones, as `set_vhost_limits`).
    pub fn set(&self, vhost: &str, l: VHostLimits) {
        let mut m = self.per_vhost.write();
        if l.is_empty() {
            m.remove(vhost);
        } else {
            m.insert(vhost.to_string(), l);
        }
    }

    pub fn clear(&self, vhost: &str) {
        self.per_vhost.write().remove(vhost);
    }

    pub fn user(&self, user: &str) -> UserLimits {
        self.per_user.read().get(user).copied().unwrap_or_default()
    }

    /// Sets a user's limits (replacing the previous ones, as `set_user_limits`).
    pub fn set_user(&self, user: &str, l: UserLimits) {
        let mut m = self.per_user.write();
        if l.is_empty() {
            m.remove(user);
        } else {
            m.insert(user.to_string(), l);
        }
    }

    /// Every user with limits.
    pub fn users(&self) -> Vec<(String, UserLimits)> {
        self.per_user
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Every vhost with limits.
    pub fn all(&self) -> Vec<(String, VHostLimits)> {
        self.per_vhost
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// connection.open: the node-wide limit (`node_max`, against the `open` connections of the
/// node), the vhost's (against `open_in_vhost`) and the user's (against `open_of_user`),
/// each counted only when there is a limit.
pub fn check_connection(
    limits: &Limits,
    node_max: Option<u64>,
    open: usize,
    open_in_vhost: impl FnOnce() -> usize,
    open_of_user: impl FnOnce() -> usize,
    user: &str,
    vhost: &str,
) -> AmqpResult<()> {
    if let Some(max) = node_max {
        if open as u64 >= max {
            return Err(AmqpError::not_allowed(format_args!(
                "connection refused: node connection limit ({max}) is reached"
            )));
        }
    }
    if let Some(max) = limits.get(vhost).max_connections {
        if open_in_vhost() as u64 >= max {
            return Err(AmqpError::not_allowed(format_args!(
                "access to vhost '{vhost}' refused for user '{user}': connection limit ({max}) is reached"
            )));
        }
    }
    if let Some(max) = limits.user(user).max_connections {
        if open_of_user() as u64 >= max {
            return Err(AmqpError::not_allowed(format_args!(
                "connection refused for user '{user}': user connection limit ({max}) is reached"
            )));
        }
    }
    Ok(())
}

/// channel.open: the user's channel limit, against `open_of_user` (its channels on every
/// connection, counted only when it has a limit). A refusal closes the connection (530),
/// as RabbitMQ's reader does.
pub fn check_new_channel(
    limits: &Limits,
    user: &str,
    open_of_user: impl FnOnce() -> usize,
) -> AmqpResult<()> {
    let Some(max) = limits.user(user).max_channels else {
        return Ok(());
    };
    if open_of_user() as u64 >= max {
        return Err(AmqpError::not_allowed(format_args!(
            "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({max})"
        )));
    }
    Ok(())
}

/// queue.declare of a new queue `name` in `vhost`: the vhost's queue limit, against its
/// `queues` (counted only when the vhost has a limit).
pub fn check_new_queue(
    limits: &Limits,
    vhost: &str,
    queues: impl FnOnce() -> usize,
    name: &str,
) -> AmqpResult<()> {
    let Some(max) = limits.get(vhost).max_queues else {
        return Ok(());
    };
    if queues() as u64 >= max {
        return Err(AmqpError::precondition_failed(format_args!(
            "cannot declare queue '{name}': queue limit in vhost '{vhost}' ({max}) is reached"
        )));
    }
    Ok(())
}

/// RabbitMQ's JSON shape of a set of limits, in the order given; unlimited ones left out.
fn limits_json(limits: &[(&str, Option<u64>)]) -> Map<String, Value> {
    limits
        .iter()
        .filter_map(|(k, n)| n.map(|n| (k.to_string(), Value::from(n))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let v: Map<String, Value> =
            serde_json::from_str(r#"{"max-connections": 7, "max-queues": -1}"#).unwrap();
        let l = VHostLimits::from_json(&v).unwrap();
        assert_eq!(l.max_connections, Some(7));
        assert_eq!(l.max_queues, None);
        assert_eq!(
            Value::Object(l.to_json()),
            serde_json::json!({"max-connections": 7})
        );
        let bad: Map<String, Value> = serde_json::from_str(r#"{"max-x": 1}"#).unwrap();
        assert!(VHostLimits::from_json(&bad).is_err());
    }

    #[test]
    fn user_limits() {
        let v: Map<String, Value> =
            serde_json::from_str(r#"{"max-connections": 1, "max-channels": 2}"#).unwrap();
        let l = UserLimits::from_json(&v).unwrap();
        let limits = Limits::default();
        limits.set_user("tu", l);
        assert!(check_connection(&limits, None, 0, || 0, || 0, "tu", "/").is_ok());
        let e = check_connection(&limits, None, 1, || 1, || 1, "tu", "/").unwrap_err();
        assert_eq!(e.code, 530);
        assert_eq!(
            e.text,
            "NOT_ALLOWED - connection refused for user 'tu': user connection limit (1) is reached"
        );
        assert!(check_connection(&limits, None, 1, || 1, || 1, "other", "/").is_ok());
        assert!(check_new_channel(&limits, "tu", || 1).is_ok());
        let e = check_new_channel(&limits, "tu", || 2).unwrap_err();
        assert_eq!(
            e.text,
            "NOT_ALLOWED - number of channels opened for user 'tu' has reached the maximum allowed user limit of (2)"
        );
        let bad: Map<String, Value> = serde_json::from_str(r#"{"max-foo": 2}"#).unwrap();
        assert_eq!(
            UserLimits::from_json(&bad).unwrap_err(),
            "Unrecognised terms [{<<\"max-foo\">>,2}] in user-limits"
        );
        limits.set_user("tu", UserLimits::default());
        assert!(limits.users().is_empty());
    }
}
