//! Durable definitions in RabbitMQ's definitions format (`users`, `vhosts`, `permissions`,
//! `parameters`, `policies`, `exchanges`, `queues`, `bindings`), so an export from
//! RabbitMQ reads the same way.
//!
//! The file is rewritten whole, atomically (temporary file, fsync, rename, fsync of the
//! directory), by one background task: changes only mark the definitions dirty and wake it,
//! so declares are never slowed by disk writes and a burst of declares costs one write.
//! The price: a definition declared in the last few milliseconds before a crash can be lost.

use crate::broker::Broker;
use crate::routing::ExchangeKind;
use crate::vhost::{Dest, ExchangeDeclare, QueueDeclare};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Definitions {
    #[serde(default)]
    pub users: Vec<UserDef>,
    #[serde(default)]
    pub vhosts: Vec<VHostDef>,
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    /// Runtime parameters; Warren reads and writes the `vhost-limits` component.
    #[serde(default)]
    pub parameters: Vec<ParameterDef>,
    #[serde(default)]
    pub policies: Vec<PolicyDef>,
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct VHostDef {
    pub name: String,
}

/// A user as RabbitMQ exports it. `tags` is a list since 3.9 and a comma-separated string
/// before; both are read, a list is written.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct UserDef {
    pub name: String,
    #[serde(default)]
    pub password_hash: String,
    #[serde(default = "default_hashing_algorithm")]
    pub hashing_algorithm: String,
    #[serde(default, deserialize_with = "tags_from_list_or_string")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub limits: Map<String, Value>,
}

fn default_hashing_algorithm() -> String {
    crate::auth::HashingAlgorithm::Sha256.as_str().to_string()
}

fn tags_from_list_or_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Tags::deserialize(d)? {
        Tags::List(l) => l,
        Tags::Text(t) => crate::auth::parse_tags(&t),
    })
}

/// A runtime parameter as RabbitMQ exports it (`vhost-limits` is the one Warren uses).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ParameterDef {
    pub component: String,
    pub name: String,
    pub vhost: String,
    pub value: Value,
}

/// A policy as RabbitMQ exports it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyDef {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    #[serde(rename = "apply-to", default = "default_apply_to")]
    pub apply_to: String,
    pub definition: Value,
    #[serde(default)]
    pub priority: i64,
}

fn default_apply_to() -> String {
    "all".into()
}

impl PolicyDef {
    /// The validated policy, or RabbitMQ's reason why not.
    pub fn to_policy(&self) -> Result<crate::policy::Policy, String> {
        crate::policy::Policy::new(
            &self.vhost,
            &self.name,
            &self.pattern,
            &self.apply_to,
            self.priority,
            self.definition.clone(),
        )
    }
}

/// A user's permissions in one vhost, as RabbitMQ exports them.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ExchangeDef {
    pub name: String,
    pub vhost: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// RabbitMQ 3.10's export leaves it out.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct QueueDef {
    pub name: String,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BindingDef {
    pub source: String,
    pub vhost: String,
    pub destination: String,
    pub destination_type: String,
    pub routing_key: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

/// A field value as JSON (RabbitMQ's export: numbers, strings, booleans, arrays, objects).
pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => (*i).into(),
        AMQPValue::ShortShortUInt(i) => (*i).into(),
        AMQPValue::ShortInt(i) => (*i).into(),
        AMQPValue::ShortUInt(i) => (*i).into(),
        AMQPValue::LongInt(i) => (*i).into(),
        AMQPValue::LongUInt(i) => (*i).into(),
        AMQPValue::LongLongInt(i) => (*i).into(),
        AMQPValue::Timestamp(t) => (*t).into(),
        AMQPValue::Float(f) => Number::from_f64(*f as f64)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        AMQPValue::Double(f) => Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        AMQPValue::DecimalValue(d) => Number::from_f64(d.value as f64 / 10f64.powi(d.scale as i32))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::Void => Value::Null,
    }
}

pub fn table_to_json(t: &FieldTable) -> Map<String, Value> {
    t.inner()
        .iter()
        .map(|(k, v)| (k.to_string(), value_to_json(v)))
        .collect()
}

/// JSON back to a field value, with the types RabbitMQ's import gives (long integers,
/// long strings, doubles).
pub fn json_to_value(v: &Value) -> AMQPValue {
    match v {
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(json_to_value).collect::<Vec<_>>(),
        )),
        Value::Object(o) => AMQPValue::FieldTable(json_to_table(o)),
        Value::Null => AMQPValue::Void,
    }
}

pub fn json_to_table(o: &Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in o {
        if k.len() <= 255 {
            t.insert(k.as_str().into(), json_to_value(v));
        }
    }
    t
}

/// The durable definitions of a running broker.
pub fn snapshot(broker: &Broker) -> Definitions {
    let mut d = Definitions::default();
    snapshot_users(broker, &mut d);
    for vhost in broker.vhosts() {
        d.vhosts.push(VHostDef {
            name: vhost.name.clone(),
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
                kind: x.kind.as_str().to_string(),
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
            limits: Map::new(),
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
        broker.add_vhost(&v.name);
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
        if ExchangeKind::parse(&x.kind).is_none() {
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
        let r = vhost.declare_queue(
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
        );
        if let Err(e) = r {
            tracing::warn!(queue = %q.name, error = %e, "could not restore queue");
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

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("definitions.json")
}

/// Loads the definitions file, if there is one.
pub fn load(data_dir: &Path) -> std::io::Result<Option<Definitions>> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", p.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the definitions now (at shutdown).
pub fn save_now(broker: &Broker) -> std::io::Result<()> {
    // Two writers (this task and the message log's thread) must not interleave, and a
    // snapshot must not be written after a newer one: snapshot and write under one lock.
    static WRITING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _g = WRITING.lock();
    let bytes = serde_json::to_vec_pretty(&snapshot(broker)).map_err(std::io::Error::other)?;
    write_atomically(&path(&broker.config.data_dir), &bytes)
}

/// The writer task: waits for a change, snapshots, writes; repeats. Ends with the broker.
pub async fn writer(broker: Weak<Broker>, notify: Arc<tokio::sync::Notify>) {
    loop {
        notify.notified().await;
        let Some(b) = broker.upgrade() else { return };
        match tokio::task::spawn_blocking(move || save_now(&b)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write definitions"),
            Err(e) => tracing::error!(error = %e, "definitions writer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_tables_round_trip_through_json() {
        let mut t = FieldTable::default();
        t.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
        t.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("dlx".into()),
        );
        t.insert("flag".into(), AMQPValue::Boolean(true));
        let j = table_to_json(&t);
        assert_eq!(j["x-message-ttl"], Value::from(1000));
        let back = json_to_table(&j);
        assert_eq!(
            back.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(1000))
        );
        assert_eq!(back.inner().get("flag"), Some(&AMQPValue::Boolean(true)));
    }

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

    #[test]
    fn tags_as_string_are_read() {
        let u: UserDef = serde_json::from_str(
            r#"{"name":"x","password_hash":"","hashing_algorithm":"rabbit_password_hashing_sha256","tags":"administrator,monitoring"}"#,
        )
        .unwrap();
        assert_eq!(u.tags, vec!["administrator", "monitoring"]);
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = std::env::temp_dir().join(format!("warren-defs-{}", std::process::id()));
        let p = dir.join("definitions.json");
        write_atomically(&p, b"{}").unwrap();
        write_atomically(&p, b"{\"vhosts\":[]}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"vhosts\":[]}");
        assert!(load(&dir).unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
