//! The broker's side of durable definitions: snapshotting the registries (users,
//! permissions, limits, policies, vhosts and their durable exchanges, queues and bindings)
//! into [`Definitions`], and importing or restoring a [`Definitions`] document into them.
//! The format and the file itself (load, atomic writes, the writer task) are
//! [`crate::store::definitions`]'s, which reaches the broker only through
//! [`DefinitionsSource`].

use super::Broker;
use crate::routing::ExchangeKind;
use crate::store::definitions::{
    json_to_table, table_to_json, BindingDef, Definitions, DefinitionsSource, ExchangeDef,
    ParameterDef, PermissionDef, PolicyDef, QueueDef, TopicPermissionDef, UserDef, VHostDef,
};
use crate::vhost::{Dest, ExchangeDeclare, QueueDeclare};
use serde_json::Value;
use std::path::Path;

impl DefinitionsSource for Broker {
    fn definitions(&self) -> Definitions {
        snapshot(self)
    }

    fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

/// The durable definitions of a running broker.
pub fn snapshot(broker: &Broker) -> Definitions {
    let mut d = Definitions::default();
    snapshot_users(broker, &mut d);
    for vhost in broker.vhosts() {
        d.vhosts.push(VHostDef {
            name: vhost.name.clone(),
            default_queue_type: vhost.default_queue_type(),
            metadata: None,
        });
        let mut durable_exchanges = std::collections::HashSet::new();
        for x in vhost.exchanges() {
            if !x.durable {
                continue;
            }
            durable_exchanges.insert(x.name.to_string());
            if x.name.is_empty() || x.name.starts_with("amq.") {
                continue;
            }
            d.exchanges.push(ExchangeDef {
                name: x.name.to_string(),
                vhost: vhost.name.clone(),
                kind: x.type_name().to_string(),
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: table_to_json(&x.arguments),
            });
        }
        for q in vhost.queues() {
            if q.config.durable && q.config.exclusive_owner.is_none() {
                d.queues.push(QueueDef {
                    name: q.name().to_string(),
                    vhost: vhost.name.clone(),
                    durable: true,
                    auto_delete: q.config.auto_delete,
                    arguments: table_to_json(&q.config.arguments),
                    node: q.config.home.clone(),
                    quorum: q.placement(),
                });
            }
        }
        for x in vhost.exchanges() {
            if !durable_exchanges.contains(&*x.name) {
                continue;
            }
            for (rk, args, dest) in x.bindings.read().bindings() {
                let durable_dest = match &dest {
                    Dest::Queue(q) => q.config.durable && q.config.exclusive_owner.is_none(),
                    Dest::Exchange(n) => durable_exchanges.contains(&**n),
                };
                if durable_dest {
                    d.bindings.push(BindingDef {
                        source: x.name.to_string(),
                        vhost: vhost.name.clone(),
                        destination: dest.name().to_string(),
                        destination_type: dest.kind().to_string(),
                        routing_key: rk,
                        arguments: table_to_json(&args),
                    });
                }
            }
        }
    }
    d
}

/// Users and permissions, in RabbitMQ's export shape.
fn snapshot_users(broker: &Broker, d: &mut Definitions) {
    for u in broker.users() {
        d.users.push(UserDef {
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            hashing_algorithm: u.hashing_algorithm.as_str().to_string(),
            tags: u.tags.clone(),
            limits: broker.limits.user(&u.name).to_json(),
        });
    }
    for (user, vhost, p) in broker.permissions() {
        d.permissions.push(PermissionDef {
            user,
            vhost,
            configure: p.configure.as_str().to_string(),
            write: p.write.as_str().to_string(),
            read: p.read.as_str().to_string(),
        });
    }
    for (user, vhost, p) in broker.auth.topic_permissions() {
        d.topic_permissions.push(TopicPermissionDef {
            user,
            vhost,
            exchange: p.exchange.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        });
    }
    for sh in broker.shovels.list() {
        d.parameters.push(ParameterDef {
            component: "shovel".into(),
            name: sh.name,
            vhost: sh.vhost,
            value: sh.config.value.clone(),
        });
    }
    for p in broker.policies.operator().all() {
        d.parameters.push(ParameterDef {
            component: "operator_policy".into(),
            name: p.name.clone(),
            vhost: p.vhost.clone(),
            value: serde_json::json!({
                "pattern": p.pattern,
                "definition": p.definition,
                "priority": p.priority,
                "apply-to": p.apply_to,
            }),
        });
    }
    for (vhost, l) in broker.limits.all() {
        d.parameters.push(ParameterDef {
            component: "vhost-limits".into(),
            name: "limits".into(),
            vhost,
            value: Value::Object(l.to_json()),
        });
    }
    for p in broker.policies.all() {
        d.policies.push(PolicyDef {
            vhost: p.vhost,
            name: p.name,
            pattern: p.pattern,
            apply_to: p.apply_to,
            definition: p.definition,
            priority: p.priority,
        });
    }
}

/// Imports users, vhosts and permissions (merging, as RabbitMQ's definitions import:
/// existing users are replaced, nothing is deleted). Entries that cannot be imported (an
/// unknown hashing algorithm, an invalid pattern, a permission for a missing user) are
/// skipped and listed in the returned errors.
pub fn import_users(broker: &Broker, d: &Definitions) -> Vec<String> {
    let mut errors = Vec::new();
    for v in &d.vhosts {
        let vh = broker.add_vhost(&v.name);
        match v.queue_type() {
            None => {}
            Some(t @ ("classic" | "quorum" | "stream")) => {
                vh.set_default_queue_type(Some(t.to_string()))
            }
            Some(t) => errors.push(format!("vhost '{}': unknown queue type '{t}'", v.name)),
        }
    }
    for u in &d.users {
        let Some(alg) = crate::auth::HashingAlgorithm::parse(&u.hashing_algorithm) else {
            errors.push(
                crate::auth::AuthError::UnknownHashingAlgorithm(u.hashing_algorithm.clone())
                    .to_string(),
            );
            continue;
        };
        broker.put_user(crate::auth::User::with_hash(
            &u.name,
            &u.password_hash,
            alg,
            u.tags.clone(),
        ));
    }
    for p in &d.permissions {
        if let Err(e) = broker.set_permissions(&p.user, &p.vhost, &p.configure, &p.write, &p.read) {
            errors.push(e.to_string());
        }
    }
    for p in d.parameters.iter().filter(|p| p.component == "shovel") {
        broker.add_vhost(&p.vhost);
        if let Err(e) = broker.shovels.put(&p.vhost, &p.name, &p.value) {
            errors.push(format!("shovel '{}': {e}", p.name));
        }
    }
    for u in d.users.iter().filter(|u| !u.limits.is_empty()) {
        match crate::limits::UserLimits::from_json(&u.limits) {
            Ok(l) => {
                if let Err(e) = broker.set_user_limits(&u.name, l) {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(e),
        }
    }
    for p in &d.topic_permissions {
        if let Err(e) =
            broker.set_topic_permission(&p.user, &p.vhost, &p.exchange, &p.write, &p.read)
        {
            errors.push(e.to_string());
        }
    }
    for p in d
        .parameters
        .iter()
        .filter(|p| p.component == "vhost-limits")
    {
        let r = match &p.value {
            Value::Object(m) => crate::limits::VHostLimits::from_json(m),
            other => Err(format!("vhost-limits: not an object: {other}")),
        };
        match r.map(|l| broker.set_vhost_limits(&p.vhost, l)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(e),
        }
    }
    errors
}

/// Imports a whole definitions document into a running broker (`POST /api/definitions`,
/// `warren ctl import`): users, vhosts, permissions, policies, then exchanges, queues,
/// bindings.
pub fn import(broker: &Broker, d: &Definitions) -> Vec<String> {
    let mut errors = import_users(broker, d);
    errors.extend(import_policies(broker, d));
    restore_objects(broker, d);
    errors
}

/// Adds (or replaces) the policies, before the objects they apply to are declared, and
/// applies them to what already exists.
fn import_policies(broker: &Broker, d: &Definitions) -> Vec<String> {
    let mut errors = Vec::new();
    let mut vhosts = std::collections::BTreeSet::new();
    for p in &d.policies {
        match p.to_policy() {
            Ok(p) => {
                broker.add_vhost(&p.vhost);
                vhosts.insert(p.vhost.clone());
                broker.policies.put(p);
            }
            Err(e) => errors.push(e),
        }
    }
    for p in d
        .parameters
        .iter()
        .filter(|p| p.component == "operator_policy")
    {
        let v = &p.value;
        let r = crate::policy::Policy::new_operator(
            &p.vhost,
            &p.name,
            v["pattern"].as_str().unwrap_or(""),
            v["apply-to"].as_str().unwrap_or("all"),
            v["priority"].as_i64().unwrap_or(0),
            v["definition"].clone(),
        );
        match r {
            Ok(op) => {
                broker.add_vhost(&op.vhost);
                vhosts.insert(op.vhost.clone());
                broker.policies.operator().put(op);
            }
            Err(e) => errors.push(e),
        }
    }
    for v in vhosts {
        broker.apply_policies(&v);
    }
    errors
}

/// Recreates saved definitions in a fresh broker. A file that lists users replaces the
/// default user set (the default user is only created on a first start, as RabbitMQ).
pub fn restore(broker: &Broker, d: &Definitions) {
    if !d.users.is_empty() {
        broker.auth.clear();
    }
    for e in import_users(broker, d) {
        tracing::warn!(error = %e, "could not restore a user or permission");
    }
    for e in import_policies(broker, d) {
        tracing::warn!(error = %e, "could not restore a policy");
    }
    restore_objects(broker, d);
}

/// Vhosts, exchanges, queues and bindings.
fn restore_objects(broker: &Broker, d: &Definitions) {
    for x in &d.exchanges {
        let Some(vhost) = broker
            .vhost(&x.vhost)
            .or_else(|| Some(broker.add_vhost(&x.vhost)))
        else {
            continue;
        };
        if !ExchangeKind::is_declarable(&x.kind) {
            tracing::warn!(exchange = %x.name, kind = %x.kind, "skipping exchange of unknown type");
            continue;
        }
        let r = vhost.declare_exchange(&ExchangeDeclare {
            name: x.name.clone(),
            kind: x.kind.clone(),
            passive: false,
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: json_to_table(&x.arguments),
        });
        if let Err(e) = r {
            tracing::warn!(exchange = %x.name, error = %e, "could not restore exchange");
        }
    }
    for q in &d.queues {
        let Some(vhost) = broker
            .vhost(&q.vhost)
            .or_else(|| Some(broker.add_vhost(&q.vhost)))
        else {
            continue;
        };
        let r = vhost.declare_queue_at(
            &QueueDeclare {
                name: q.name.clone(),
                server_named: true,
                passive: false,
                durable: q.durable,
                exclusive: false,
                auto_delete: q.auto_delete,
                arguments: json_to_table(&q.arguments),
            },
            0,
            q.node.as_deref(),
        );
        match r {
            Ok((queue, _)) => {
                if let Some(p) = &q.quorum {
                    queue.set_placement(p.clone());
                }
            }
            Err(e) => tracing::warn!(queue = %q.name, error = %e, "could not restore queue"),
        }
    }
    for b in &d.bindings {
        let Some(vhost) = broker.vhost(&b.vhost) else {
            continue;
        };
        let args = json_to_table(&b.arguments);
        let r = if b.destination_type == "exchange" {
            vhost.bind_exchange(&b.destination, &b.source, &b.routing_key, &args)
        } else {
            vhost.bind_queue(&b.destination, &b.source, &b.routing_key, &args, 0)
        };
        if let Err(e) = r {
            tracing::warn!(source = %b.source, destination = %b.destination, error = %e, "could not restore binding");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RabbitMQ 3.10.8 `export_definitions` file imports unchanged: users log in with
    /// their passwords, tags and permissions (including the empty read pattern) survive,
    /// and exporting again gives the same users and permissions.
    #[test]
    fn rabbitmq_export_imports_unchanged() {
        let text = include_str!("../../tests/data/rabbitmq_3_10_8_definitions.json");
        let d: Definitions = serde_json::from_str(text).unwrap();
        let broker = Broker::new(crate::Config::default());
        assert!(import(&broker, &d).is_empty());
        let alice = broker
            .authenticate("alice", "s3cret")
            .expect("alice logs in");
        assert_eq!(alice.tags, vec!["monitoring", "management"]);
        assert!(broker.authenticate("guest", "guest").is_some());
        assert!(broker.vhost("v2").is_some());
        let p = broker.auth.permission("alice", "v2").unwrap();
        assert!(p.allows(crate::auth::Access::Configure, "abc"));
        assert!(!p.allows(crate::auth::Access::Read, "abc"));
        let again = snapshot(&broker);
        let names: Vec<_> = again.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "guest"]);
        let mut expected: Vec<_> = d.permissions.iter().collect();
        expected.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(again.permissions.iter().collect::<Vec<_>>(), expected);
        let q = broker
            .vhost("/")
            .unwrap()
            .queue("q1")
            .expect("queue imported");
        assert!(q.config.durable);
    }
}
