//! Durable definitions in RabbitMQ's definitions format (`users`, `vhosts`, `permissions`,
//! `parameters`, `policies`, `exchanges`, `queues`, `bindings`), so an export from
//! RabbitMQ reads the same way.
//!
//! The file is rewritten whole, atomically (temporary file, fsync, rename, fsync of the
//! directory), by one background task: changes only mark the definitions dirty and wake it,
//! so declares are never slowed by disk writes and a burst of declares costs one write.
//! The price: a definition declared in the last few milliseconds before a crash can be lost.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Definitions {
    #[serde(default)]
    pub users: Vec<UserDef>,
    #[serde(default)]
    pub vhosts: Vec<VHostDef>,
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    #[serde(default)]
    pub topic_permissions: Vec<TopicPermissionDef>,
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

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct VHostDef {
    pub name: String,
    /// `classic`, `quorum` or `stream` (RabbitMQ 3.11+ exports it, 3.10.8 leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_queue_type: Option<String>,
    /// RabbitMQ 3.11+: `{"default_queue_type": …, "description": …, "tags": […]}`.
    #[serde(default, skip_serializing)]
    pub metadata: Option<Value>,
}

impl VHostDef {
    /// The default queue type, from the field or from `metadata`.
    pub fn queue_type(&self) -> Option<&str> {
        self.default_queue_type
            .as_deref()
            .or_else(|| self.metadata.as_ref()?.get("default_queue_type")?.as_str())
            .filter(|t| *t != "undefined")
    }
}

/// A user's topic permission on one exchange, as RabbitMQ exports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicPermissionDef {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    #[serde(default)]
    pub write: String,
    #[serde(default)]
    pub read: String,
}

/// A user as RabbitMQ exports it. `tags` is a list since 3.9 and a comma-separated string
/// before; both are read, a list is written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParameterDef {
    pub component: String,
    pub name: String,
    pub vhost: String,
    pub value: Value,
}

/// A policy as RabbitMQ exports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueDef {
    pub name: String,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// In a cluster, the home node of a durable classic queue (Warren's; RabbitMQ's
    /// export has no such field, so it is left out when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A quorum queue's Raft group in a cluster (Warren's; absent elsewhere).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "x-warren-quorum"
    )]
    pub quorum: Option<QuorumPlacement>,
}

/// Where a cluster's quorum queue lives: its Raft group's id and member nodes (the
/// declaring node first, as the client-local leader locator asks).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumPlacement {
    pub group: u64,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        super::fault::write_all("definitions::write", &mut f, bytes)?;
        super::fault::sync_all("definitions::sync", &f)?;
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

/// Reads a definitions file given by the operator (`--load-definitions`): one JSON file,
/// or a directory whose `*.json` files are read in name order (as RabbitMQ's
/// `load_definitions`). A file that cannot be read or parsed is an error naming it.
pub fn read_operator_file(path: &Path) -> std::io::Result<Vec<Definitions>> {
    let files = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
        out.push(serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", f.display()),
            )
        })?);
    }
    Ok(out)
}

/// What the definitions writer needs of a running broker: a snapshot of its durable
/// definitions, and the data directory to write it to. The broker implements it
/// (`crate::broker::definitions`); this module knows the format and the file, not the broker.
pub trait DefinitionsSource: Send + Sync + 'static {
    /// The durable definitions as they are now.
    fn definitions(&self) -> Definitions;
    fn data_dir(&self) -> &Path;
}

/// Writes the definitions now (at shutdown).
pub fn save_now(source: &dyn DefinitionsSource) -> std::io::Result<()> {
    // Two writers (this task and the message log's thread) must not interleave, and a
    // snapshot must not be written after a newer one: snapshot and write under one lock.
    static WRITING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _g = WRITING.lock();
    let bytes = serde_json::to_vec_pretty(&source.definitions()).map_err(std::io::Error::other)?;
    write_atomically(&path(source.data_dir()), &bytes)
}

/// The writer task: waits for a change, snapshots, writes; repeats. Ends with the source
/// (the broker).
pub async fn writer<S: DefinitionsSource>(source: Weak<S>, notify: Arc<tokio::sync::Notify>) {
    loop {
        notify.notified().await;
        let Some(b) = source.upgrade() else { return };
        match tokio::task::spawn_blocking(move || save_now(&*b)).await {
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
