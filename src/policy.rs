//! Policies: per-vhost (pattern, apply-to, priority, definition) records, as RabbitMQ's
//! `rabbit_policy`. The highest-priority policy whose pattern matches an object's name
//! (and whose apply-to covers its kind) is the object's effective policy.
//!
//! Queues merge their policy's definition with their declare arguments
//! ([`crate::queue::args::QueueArgs::with_policy`]) and act on the result; exchanges take
//! `alternate-exchange` from theirs. A policy change is applied to every queue and exchange
//! of its vhost at once ([`crate::broker::Broker::apply_policies`]); objects declared later pick theirs up at declare.

use parking_lot::RwLock;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Policy {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    /// "queues", "exchanges" or "all".
    pub apply_to: String,
    pub priority: i64,
    pub definition: Value,
    regex: regex::Regex,
}

/// Keys a policy definition may hold (RabbitMQ 3.10's `rabbit_policies` validators and
/// the plugins' keys). `max-priority` is not one: RabbitMQ refuses it in a policy.
/// Warren acts on message-ttl, expires, max-length, max-length-bytes, overflow,
/// dead-letter-exchange, dead-letter-routing-key and alternate-exchange; the rest are
/// accepted and ignored.
const KNOWN_KEYS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "alternate-exchange",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "max-age",
    "stream-max-segment-size-bytes",
    "queue-leader-locator",
    "initial-cluster-size",
    "queue-mode",
    "queue-version",
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "federation-upstream-set",
    "federation-upstream",
    "consumer-timeout",
    "delivery-limit",
    "queue-master-locator",
];

impl Policy {
    /// Validates a policy as RabbitMQ's PUT /api/policies does; the error text is the
    /// `reason` of a 400.
    pub fn new(
        vhost: &str,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: Value,
    ) -> Result<Policy, String> {
        let regex = regex::Regex::new(pattern)
            .map_err(|e| format!("Validation failed\n\n{pattern} is not a valid regex: {e}"))?;
        if !matches!(apply_to, "queues" | "exchanges" | "all" | "classic_queues") {
            return Err(format!(
                "Validation failed\n\n\"{apply_to}\" is not a valid value for apply-to"
            ));
        }
        let Some(def) = definition.as_object() else {
            return Err("Validation failed\n\ndefinition must be a dictionary".into());
        };
        if def.is_empty() {
            return Err("Validation failed\n\nno policy definition given".into());
        }
        for (k, v) in def {
            if !KNOWN_KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "Validation failed\n\n[{{<<\"{k}\">>,{v}}}] are not recognised policy settings"
                ));
            }
            let non_neg_int = v.as_i64().is_some_and(|n| n >= 0);
            let ok = match k.as_str() {
                "message-ttl" | "max-length" | "max-length-bytes" => non_neg_int,
                "expires" => v.as_i64().is_some_and(|n| n >= 1),
                "overflow" => matches!(
                    v.as_str(),
                    Some("drop-head" | "reject-publish" | "reject-publish-dlx")
                ),
                "dead-letter-exchange" | "dead-letter-routing-key" | "alternate-exchange" => {
                    v.is_string()
                }
                _ => true,
            };
            if !ok {
                return Err(format!(
                    "Validation failed\n\n{v} is not a valid value for {k}"
                ));
            }
        }
        Ok(Policy {
            vhost: vhost.into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: apply_to.into(),
            priority,
            definition,
            regex,
        })
    }

    pub fn applies_to(&self, kind: &str) -> bool {
        self.apply_to == "all"
            || self.apply_to == kind
            || (self.apply_to == "classic_queues" && kind == "queues")
    }

    pub fn to_json(&self) -> Value {
        json!({
            "vhost": self.vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "definition": self.definition,
            "priority": self.priority,
        })
    }
}

/// Every vhost's policies. Written rarely (management), read when listing objects.
#[derive(Debug, Default)]
pub struct Policies {
    list: RwLock<Vec<Policy>>,
}

impl Policies {
    pub fn all(&self) -> Vec<Policy> {
        self.list.read().clone()
    }

    pub fn get(&self, vhost: &str, name: &str) -> Option<Policy> {
        self.list
            .read()
            .iter()
            .find(|p| p.vhost == vhost && p.name == name)
            .cloned()
    }

    /// Adds or replaces; true when it was new.
    pub fn put(&self, p: Policy) -> bool {
        let mut l = self.list.write();
        match l
            .iter_mut()
            .find(|o| o.vhost == p.vhost && o.name == p.name)
        {
            Some(o) => {
                *o = p;
                false
            }
            None => {
                l.push(p);
                true
            }
        }
    }

    pub fn delete(&self, vhost: &str, name: &str) -> bool {
        let mut l = self.list.write();
        let before = l.len();
        l.retain(|p| !(p.vhost == vhost && p.name == name));
        l.len() != before
    }

    /// Drops a deleted vhost's policies.
    pub fn delete_vhost(&self, vhost: &str) {
        self.list.write().retain(|p| p.vhost != vhost);
    }

    /// The effective policy of an object: the highest priority match (ties: first added).
    pub fn matching(&self, vhost: &str, name: &str, kind: &str) -> Option<Policy> {
        let l = self.list.read();
        let mut best: Option<&Policy> = None;
        for p in l.iter() {
            if p.vhost == vhost
                && p.applies_to(kind)
                && p.regex.is_match(name)
                && best.is_none_or(|b| p.priority > b.priority)
            {
                best = Some(p);
            }
        }
        best.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_priority_match_wins() {
        let ps = Policies::default();
        let d = json!({"max-length": 5});
        ps.put(Policy::new("/", "a", "^q", "queues", 1, d.clone()).unwrap());
        ps.put(Policy::new("/", "b", "^q\\.x", "all", 5, d.clone()).unwrap());
        ps.put(Policy::new("/", "c", ".*", "exchanges", 9, d).unwrap());
        assert_eq!(ps.matching("/", "q.x", "queues").unwrap().name, "b");
        assert_eq!(ps.matching("/", "q.y", "queues").unwrap().name, "a");
        assert!(ps.matching("other", "q.y", "queues").is_none());
    }

    #[test]
    fn invalid_definitions_are_refused() {
        assert!(Policy::new("/", "a", "(", "queues", 0, json!({"max-length": 1})).is_err());
        assert!(Policy::new("/", "a", ".*", "queues", 0, json!({"max-length": -1})).is_err());
        assert!(Policy::new("/", "a", ".*", "queues", 0, json!({"bogus": 1})).is_err());
        assert!(Policy::new("/", "a", ".*", "nope", 0, json!({"max-length": 1})).is_err());
    }
}
