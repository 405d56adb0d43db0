//! Policies: per-vhost (pattern, apply-to, priority, definition) records, as RabbitMQ's
//! `rabbit_policy`. The highest-priority policy whose pattern matches an object's name
//! (and whose apply-to covers its kind) is the object's effective policy.
//!
//! Queues merge their policy's definition with their declare arguments
//! ([`crate::queue::args::QueueArgs::with_policy`]) and act on the result; exchanges take
//! `alternate-exchange` from theirs. A policy change is applied to every queue and exchange
//! of its vhost at once ([`crate::broker::Broker::apply_policies`]); objects declared later pick theirs up at declare.
//!
//! Operator policies (`/api/operator-policies`, RabbitMQ's `operator_policy` component) are
//! caps an operator sets beside the users' policies: the best matching operator policy is
//! merged with the best matching user policy ([`Policies::effective`]), the lower value
//! winning for every key both set. They hold only the numeric keys of
//! [`OPERATOR_KEYS`], as RabbitMQ 3.10.

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

/// Keys an operator policy may hold (RabbitMQ 3.10's `operator_policy_validator`s).
pub const OPERATOR_KEYS: &[&str] = &[
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
];

impl Policy {
    /// Validates an operator policy: a policy whose definition holds only
    /// [`OPERATOR_KEYS`] (RabbitMQ's refusal text otherwise).
    pub fn new_operator(
        vhost: &str,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: Value,
    ) -> Result<Policy, String> {
        if let Some(def) = definition.as_object() {
            let other: Vec<String> = def
                .iter()
                .filter(|(k, _)| !OPERATOR_KEYS.contains(&k.as_str()))
                .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erl_value(v)))
                .collect();
            if !other.is_empty() {
                return Err(format!(
                    "Validation failed\n\n[{}] are not recognised policy settings\n",
                    other.join(",")
                ));
            }
        }
        Policy::new(vhost, name, pattern, apply_to, priority, definition)
    }

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

/// A JSON value as Erlang prints it in RabbitMQ's validation texts (strings as binaries).
fn erl_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        other => other.to_string(),
    }
}

/// What applies to one object: its user policy, its operator policy, and the merged
/// definition it acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub policy: Option<String>,
    pub operator_policy: Option<String>,
    /// The user policy's definition with the operator policy's merged in (lower wins).
    pub definition: Option<Value>,
}

/// RabbitMQ's `rabbit_policy:merge_policies`: every key of either; for a key in both the
/// lower number wins (all operator keys are numeric caps).
pub fn merge(user: Option<&Value>, operator: Option<&Value>) -> Option<Value> {
    let (u, o) = match (user, operator) {
        (None, None) => return None,
        (Some(u), None) => return Some(u.clone()),
        (None, Some(o)) => return Some(o.clone()),
        (Some(u), Some(o)) => (u, o),
    };
    let mut out = u.as_object().cloned().unwrap_or_default();
    for (k, ov) in o.as_object().into_iter().flatten() {
        let merged = match (out.get(k).and_then(Value::as_i64), ov.as_i64()) {
            (Some(a), Some(b)) => Value::from(a.min(b)),
            _ => ov.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Some(Value::Object(out))
}

/// One list of policies (the users' or the operators'). Written rarely (management), read
/// when listing objects and when a policy changes.
#[derive(Debug, Default)]
pub struct PolicyList {
    list: RwLock<Vec<Policy>>,
}

impl PolicyList {
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

    /// The highest priority match (ties: first added).
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

/// Every vhost's policies: the users' (`/api/policies`, reached through `Deref`) and the
/// operators' (`/api/operator-policies`, [`Policies::operator`]).
#[derive(Debug, Default)]
pub struct Policies {
    user: PolicyList,
    operator: PolicyList,
}

impl std::ops::Deref for Policies {
    type Target = PolicyList;
    fn deref(&self) -> &PolicyList {
        &self.user
    }
}

impl Policies {
    /// The operator policies.
    pub fn operator(&self) -> &PolicyList {
        &self.operator
    }

    /// The user policy, operator policy and merged definition of an object.
    pub fn effective(&self, vhost: &str, name: &str, kind: &str) -> Effective {
        let p = self.user.matching(vhost, name, kind);
        let o = self.operator.matching(vhost, name, kind);
        Effective {
            definition: merge(
                p.as_ref().map(|p| &p.definition),
                o.as_ref().map(|o| &o.definition),
            ),
            policy: p.map(|p| p.name),
            operator_policy: o.map(|o| o.name),
        }
    }

    /// Drops a deleted vhost's policies, user and operator ones.
    pub fn delete_vhost(&self, vhost: &str) {
        self.user.list.write().retain(|p| p.vhost != vhost);
        self.operator.list.write().retain(|p| p.vhost != vhost);
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
    fn operator_policies_merge_lower_wins() {
        let ps = Policies::default();
        ps.put(
            Policy::new(
                "/",
                "user",
                "^op",
                "queues",
                0,
                json!({"max-length": 3, "message-ttl": 5000, "dead-letter-exchange": "dlx"}),
            )
            .unwrap(),
        );
        ps.operator().put(
            Policy::new_operator(
                "/",
                "cap",
                "^op",
                "queues",
                0,
                json!({"max-length": 5, "message-ttl": 1000}),
            )
            .unwrap(),
        );
        // What RabbitMQ 3.10.8 reports for queue "opq" with these two policies.
        let e = ps.effective("/", "opq", "queues");
        assert_eq!(e.policy.as_deref(), Some("user"));
        assert_eq!(e.operator_policy.as_deref(), Some("cap"));
        assert_eq!(
            e.definition,
            Some(json!({"dead-letter-exchange": "dlx", "max-length": 3, "message-ttl": 1000}))
        );
        let e = ps.effective("/", "other", "queues");
        assert_eq!(e.definition, None);
        let err = Policy::new_operator(
            "/",
            "x",
            ".*",
            "all",
            0,
            json!({"overflow": "reject-publish"}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "Validation failed\n\n[{<<\"overflow\">>,<<\"reject-publish\">>}] are not recognised policy settings\n"
        );
        ps.delete_vhost("/");
        assert!(ps.operator().all().is_empty() && ps.all().is_empty());
    }

    #[test]
    fn invalid_definitions_are_refused() {
        assert!(Policy::new("/", "a", "(", "queues", 0, json!({"max-length": 1})).is_err());
        assert!(Policy::new("/", "a", ".*", "queues", 0, json!({"max-length": -1})).is_err());
        assert!(Policy::new("/", "a", ".*", "queues", 0, json!({"bogus": 1})).is_err());
        assert!(Policy::new("/", "a", ".*", "nope", 0, json!({"max-length": 1})).is_err());
    }
}
