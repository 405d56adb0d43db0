//! Topic permissions: per (user, vhost, exchange) a write and a read regular expression on
//! routing keys, checked only for topic exchanges, as RabbitMQ's internal backend
//! (`rabbit_auth_backend_internal:check_topic_access`).
//!
//! - basic.publish to a topic exchange: the routing key must match `write` (CC/BCC keys are
//!   not checked, as in RabbitMQ).
//! - queue.bind / queue.unbind / exchange.bind / exchange.unbind with a topic exchange as
//!   the source: the binding key must match `read`.
//! - A user without a topic permission for that exchange may use every routing key.
//! - `{username}` and `{vhost}` in a pattern are replaced by the user's name and the vhost
//!   before matching (not escaped, as RabbitMQ). `{client_id}` is MQTT's: an AMQP 0-9-1
//!   connection has none, so it stays as written (RabbitMQ 3.10.8 does the same).
//! - Patterns are unanchored like the other permissions; the empty pattern means `^$`.
//!
//! Refusals are 403 `ACCESS_REFUSED - access to topic 'rk' in exchange 'x' in vhost 'v'
//! refused for user 'u'`.

use super::{Access, Auth, AuthError, Pattern};
use crate::error::{AmqpError, AmqpResult};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One user's topic permission on one exchange of one vhost.
#[derive(Debug, Clone)]
pub struct TopicPermission {
    pub exchange: String,
    /// As given (exported as is).
    pub write: String,
    pub read: String,
    /// Compiled after `{username}` / `{vhost}` expansion; None when the expansion is not a
    /// valid regex (then nothing matches).
    write_re: Option<Pattern>,
    read_re: Option<Pattern>,
}

/// Replaces RabbitMQ's topic-permission variables known for an AMQP 0-9-1 connection.
pub fn expand(pattern: &str, user: &str, vhost: &str) -> String {
    pattern
        .replace("{username}", user)
        .replace("{vhost}", vhost)
}

/// PCRE (RabbitMQ's `re`) reads a `{` that does not start a `{n}`, `{n,}` or `{n,m}`
/// quantifier as a literal; Rust's regex refuses it. Escapes such braces (and their `}`).
pub fn pcre_braces(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < b.len() {
        let c = pattern[i..].chars().next().unwrap_or('\0');
        match c {
            '\\' => {
                let next = pattern[i + 1..].chars().next();
                out.push('\\');
                if let Some(n) = next {
                    out.push(n);
                    i += n.len_utf8();
                }
                i += 1;
                continue;
            }
            '{' => {
                let rest = &pattern[i + 1..];
                let close = rest.find('}');
                let quantifier = close.is_some_and(|end| {
                    let inner = &rest[..end];
                    let (lo, hi) = inner.split_once(',').unwrap_or((inner, "0"));
                    !lo.is_empty()
                        && lo.bytes().all(|d| d.is_ascii_digit())
                        && hi.bytes().all(|d| d.is_ascii_digit())
                });
                match (quantifier, close) {
                    (true, Some(end)) => {
                        out.push_str(&pattern[i..i + end + 2]);
                        i += end + 2;
                        continue;
                    }
                    _ => out.push_str("\\{"),
                }
            }
            '}' => out.push_str("\\}"),
            other => out.push(other),
        }
        i += c.len_utf8();
    }
    out
}

fn compile(pattern: &str) -> Result<Pattern, regex::Error> {
    Pattern::new(&pcre_braces(pattern))
}

impl TopicPermission {
    /// Validates the patterns as written (RabbitMQ refuses an invalid regex with
    /// `invalid_regexp`) and compiles them for `user` in `vhost`.
    pub fn new(
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<TopicPermission, AuthError> {
        for p in [write, read] {
            if let Err(e) = compile(p) {
                return Err(AuthError::InvalidPattern {
                    pattern: p.to_string(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(TopicPermission {
            exchange: exchange.to_string(),
            write: write.to_string(),
            read: read.to_string(),
            write_re: compile(&expand(write, user, vhost)).ok(),
            read_re: compile(&expand(read, user, vhost)).ok(),
        })
    }

    /// True when `routing_key` may be used with `access` (Write or Read).
    pub fn allows(&self, access: Access, routing_key: &str) -> bool {
        let re = match access {
            Access::Write => &self.write_re,
            _ => &self.read_re,
        };
        re.as_ref().is_some_and(|p| p.matches(routing_key))
    }
}

/// user → vhost → exchange → permission.
pub(super) type TopicTable =
    BTreeMap<String, BTreeMap<String, BTreeMap<String, Arc<TopicPermission>>>>;

impl Auth {
    /// Sets a user's topic permission on an exchange of a vhost; true when it is new.
    pub fn set_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        p: TopicPermission,
    ) -> Result<bool, AuthError> {
        if self.user(user).is_none() {
            return Err(AuthError::NoSuchUser(user.to_string()));
        }
        Ok(self
            .topic
            .write()
            .entry(user.to_string())
            .or_default()
            .entry(vhost.to_string())
            .or_default()
            .insert(p.exchange.clone(), Arc::new(p))
            .is_none())
    }

    /// Removes a user's topic permissions in a vhost (all, or one exchange's); true when
    /// something was removed.
    pub fn clear_topic_permissions(&self, user: &str, vhost: &str, exchange: Option<&str>) -> bool {
        let mut t = self.topic.write();
        let Some(per_vhost) = t.get_mut(user) else {
            return false;
        };
        let removed = match exchange {
            None => per_vhost.remove(vhost).is_some(),
            Some(x) => per_vhost
                .get_mut(vhost)
                .is_some_and(|per_x| per_x.remove(x).is_some()),
        };
        per_vhost.retain(|_, m| !m.is_empty());
        if per_vhost.is_empty() {
            t.remove(user);
        }
        removed
    }

    /// Drops every topic permission of a user or in a vhost (deleted).
    pub(super) fn forget_topic(&self, user: Option<&str>, vhost: Option<&str>) {
        let mut t = self.topic.write();
        if let Some(u) = user {
            t.remove(u);
        }
        if let Some(v) = vhost {
            for per_vhost in t.values_mut() {
                per_vhost.remove(v);
            }
            t.retain(|_, m| !m.is_empty());
        }
    }

    /// Every topic permission as (user, vhost, permission), by user, vhost, exchange.
    pub fn topic_permissions(&self) -> Vec<(String, String, Arc<TopicPermission>)> {
        let t = self.topic.read();
        let mut out = Vec::new();
        for (u, per_vhost) in t.iter() {
            for (v, per_x) in per_vhost {
                for p in per_x.values() {
                    out.push((u.clone(), v.clone(), p.clone()));
                }
            }
        }
        out
    }

    /// basic.publish (Write) or a binding (Read) on the topic exchange `exchange`: the
    /// routing key must match the user's topic permission there, if there is one.
    pub fn check_topic(
        &self,
        user: &str,
        vhost: &str,
        access: Access,
        exchange: &str,
        routing_key: &str,
    ) -> AmqpResult<()> {
        let t = self.topic.read();
        let Some(p) = t
            .get(user)
            .and_then(|m| m.get(vhost))
            .and_then(|m| m.get(exchange))
        else {
            return Ok(());
        };
        if p.allows(access, routing_key) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format_args!(
            "access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;

    #[test]
    fn variables_and_texts() {
        let a = Auth::new();
        a.add_user(User::with_password("tu", "p", vec![])).unwrap();
        let p = TopicPermission::new("tu", "/", "amq.topic", "^{username}\\.", "").unwrap();
        assert!(a.set_topic_permission("tu", "/", p.clone()).unwrap());
        assert!(!a.set_topic_permission("tu", "/", p).unwrap());
        assert!(a
            .check_topic("tu", "/", Access::Write, "amq.topic", "tu.x")
            .is_ok());
        let e = a
            .check_topic("tu", "/", Access::Write, "amq.topic", "other.x")
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.text,
            "ACCESS_REFUSED - access to topic 'other.x' in exchange 'amq.topic' in vhost '/' refused for user 'tu'"
        );
        // Empty read pattern: only the empty key.
        assert!(a
            .check_topic("tu", "/", Access::Read, "amq.topic", "")
            .is_ok());
        assert!(a
            .check_topic("tu", "/", Access::Read, "amq.topic", "a")
            .is_err());
        // Other exchanges, vhosts and users are not restricted.
        assert!(a.check_topic("tu", "/", Access::Write, "t2", "x").is_ok());
        assert!(a
            .check_topic("tu", "v", Access::Write, "amq.topic", "x")
            .is_ok());
        assert!(a
            .check_topic("u2", "/", Access::Write, "amq.topic", "x")
            .is_ok());
        // {vhost} expands; {client_id} stays literal on AMQP 0-9-1.
        let p = TopicPermission::new("tu", "v1", "t", "^{vhost}\\.{client_id}$", ".*").unwrap();
        a.set_topic_permission("tu", "v1", p).unwrap();
        assert!(a
            .check_topic("tu", "v1", Access::Write, "t", "v1.{client_id}")
            .is_ok());
        assert!(a
            .check_topic("tu", "v1", Access::Write, "t", "v1.c")
            .is_err());
        assert_eq!(a.topic_permissions().len(), 2);
        assert!(a.clear_topic_permissions("tu", "v1", Some("t")));
        assert!(!a.clear_topic_permissions("tu", "v1", None));
        assert!(TopicPermission::new("tu", "/", "x", "(", "").is_err());
        assert_eq!(
            pcre_braces("^{username}\\.a{2}b{1,}c{2,3}"),
            "^\\{username\\}\\.a{2}b{1,}c{2,3}"
        );
        assert_eq!(pcre_braces("x{,2}"), "x\\{,2\\}");
        assert!(a
            .set_topic_permission(
                "nobody",
                "/",
                TopicPermission::new("nobody", "/", "x", "", "").unwrap()
            )
            .is_err());
    }
}
