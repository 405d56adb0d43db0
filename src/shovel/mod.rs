//! Dynamic shovels, as rabbitmq_shovel's: a shovel is a runtime parameter (component
//! `shovel`, `/api/parameters/shovel/{vhost}/{name}`) whose value names a source and a
//! destination on any AMQP 0-9-1 brokers (Warren or RabbitMQ); a task per shovel
//! ([`worker`]) moves messages between them with an AMQP client (lapin), reconnecting when
//! either side fails. Shovels are saved with the definitions and restarted at start;
//! `/api/shovels` reports their state.
//!
//! [`Shovels`] owns the registry: the definitions, each one's status and its task. It knows
//! nothing of the broker: the broker gives it the definitions-changed signal and, for the
//! local URI `amqp://` (no host, RabbitMQ's direct connection to the node), the AMQP
//! address and the default user's credentials.
//!
//! - [`config`]: the JSON keys (`src-uri`, `src-queue` / `src-exchange` +
//!   `src-exchange-key`, `dest-uri`, `dest-queue` / `dest-exchange` + `dest-exchange-key`,
//!   `ack-mode`, `src-prefetch-count`, `reconnect-delay`, `src-delete-after`,
//!   `add-forward-headers`).
//! - [`worker`]: the task.

pub mod config;
pub mod worker;

use config::ShovelConfig;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

/// A shovel's state, as `/api/shovels` reports it.
#[derive(Debug, Clone)]
pub struct Status {
    /// `starting`, `running` or `terminated` (RabbitMQ's states).
    pub state: &'static str,
    /// Why it terminated (it retries after `reconnect-delay`).
    pub reason: Option<String>,
    /// When the state last changed (ms since the Unix epoch).
    pub since_ms: u64,
    /// Messages moved since the shovel was created.
    pub forwarded: u64,
}

impl Status {
    fn new() -> Status {
        Status {
            state: "starting",
            reason: None,
            since_ms: now_ms(),
            forwarded: 0,
        }
    }

    pub(crate) fn set(&mut self, state: &'static str, reason: Option<String>) {
        self.state = state;
        self.reason = reason;
        self.since_ms = now_ms();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug)]
struct Entry {
    config: Arc<ShovelConfig>,
    status: Arc<Mutex<Status>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Where `amqp://` without a host leads: the broker's own listener, as its default user.
#[derive(Debug, Clone)]
pub struct Local {
    pub addr: SocketAddr,
    pub user: String,
    pub pass: String,
}

#[derive(Debug, Default)]
struct Inner {
    /// (vhost, name) → shovel. Lock held for a lookup or an insert, never across `.await`.
    map: Mutex<BTreeMap<(String, String), Entry>>,
    local: Mutex<Option<Local>>,
    /// Woken when the set of shovels changes (the definitions writer).
    changed: Arc<tokio::sync::Notify>,
    /// No new tasks once the broker shuts down.
    stopped: std::sync::atomic::AtomicBool,
}

/// The shovel registry (see the module docs).
#[derive(Debug, Default)]
pub struct Shovels {
    inner: Arc<Inner>,
}

/// One shovel as listed: vhost, name, its definition and status.
#[derive(Debug, Clone)]
pub struct ShovelInfo {
    pub vhost: String,
    pub name: String,
    pub config: Arc<ShovelConfig>,
    pub status: Status,
}

impl Shovels {
    pub fn new(changed: Arc<tokio::sync::Notify>) -> Shovels {
        Shovels {
            inner: Arc::new(Inner {
                changed,
                ..Default::default()
            }),
        }
    }

    /// Sets the target of local `amqp://` URIs (at start, once the listener is bound).
    /// Shovels defined before (restored definitions) are started now.
    pub fn set_local(&self, local: Local) {
        *self.inner.local.lock() = Some(local);
        let pending: Vec<(String, String)> = self
            .inner
            .map
            .lock()
            .iter()
            .filter(|(_, e)| e.task.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for (vhost, name) in pending {
            let value = self
                .inner
                .map
                .lock()
                .get(&(vhost.clone(), name.clone()))
                .map(|e| e.config.value.clone());
            if let Some(v) = value {
                let _ = self.put(&vhost, &name, &v);
            }
        }
    }

    /// Creates or replaces a shovel and starts it; true when it is new. The error is the
    /// validation failure (a 400's reason).
    pub fn put(&self, vhost: &str, name: &str, value: &Value) -> Result<bool, String> {
        let config = Arc::new(ShovelConfig::parse(value)?);
        let status = Arc::new(Mutex::new(Status::new()));
        let task = self.spawn(vhost, name, &config, &status);
        let new = self
            .inner
            .map
            .lock()
            .insert(
                (vhost.to_string(), name.to_string()),
                Entry {
                    config,
                    status,
                    task,
                },
            )
            .is_none();
        self.inner.changed.notify_one();
        Ok(new)
    }

    /// The task, when a runtime and the local address are there (otherwise it starts at
    /// [`Shovels::set_local`]).
    fn spawn(
        &self,
        vhost: &str,
        name: &str,
        config: &Arc<ShovelConfig>,
        status: &Arc<Mutex<Status>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let local = self.inner.local.lock().clone()?;
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let key = (vhost.to_string(), name.to_string());
        let mine = status.clone();
        let on_done = Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                let mut map = inner.map.lock();
                // Only if the entry is still this shovel (not replaced meanwhile).
                if map.get(&key).is_some_and(|e| Arc::ptr_eq(&e.status, &mine)) {
                    if let Some(mut e) = map.remove(&key) {
                        // The task is ending by itself: do not abort it.
                        e.task = None;
                    }
                }
                drop(map);
                inner.changed.notify_one();
            }
        });
        let job = worker::Job {
            vhost: vhost.to_string(),
            name: name.to_string(),
            src_uri: resolve(&config.src_uri, vhost, &local),
            dest_uri: resolve(&config.dest_uri, vhost, &local),
            config: config.clone(),
            status: status.clone(),
            on_done,
        };
        Some(rt.spawn(worker::run(job)))
    }

    /// Stops and removes a shovel; false when there is none.
    pub fn delete(&self, vhost: &str, name: &str) -> bool {
        let removed = self
            .inner
            .map
            .lock()
            .remove(&(vhost.to_string(), name.to_string()))
            .is_some();
        if removed {
            self.inner.changed.notify_one();
        }
        removed
    }

    /// Removes every shovel of a deleted vhost.
    pub fn delete_vhost(&self, vhost: &str) {
        self.inner.map.lock().retain(|(v, _), _| v != vhost);
        self.inner.changed.notify_one();
    }

    /// Stops every task (broker shutdown); the definitions stay.
    pub fn stop_all(&self) {
        self.inner
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for e in self.inner.map.lock().values_mut() {
            if let Some(t) = e.task.take() {
                t.abort();
            }
        }
    }

    /// Every shovel, by vhost and name.
    pub fn list(&self) -> Vec<ShovelInfo> {
        self.inner
            .map
            .lock()
            .iter()
            .map(|((vhost, name), e)| ShovelInfo {
                vhost: vhost.clone(),
                name: name.clone(),
                config: e.config.clone(),
                status: e.status.lock().clone(),
            })
            .collect()
    }
}

/// `amqp://` or `amqp:///vhost` (no host: RabbitMQ's local node) → the broker's listener as
/// the default user, in the given vhost (the shovel's own when the URI names none).
fn resolve(uri: &str, shovel_vhost: &str, local: &Local) -> String {
    let Some(rest) = uri.strip_prefix("amqp://") else {
        return uri.to_string();
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return uri.to_string();
    }
    let path = match rest.strip_prefix('/') {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => shovel_vhost.replace('%', "%25").replace('/', "%2f"),
    };
    format!(
        "amqp://{}:{}@{}/{}",
        local.user, local.pass, local.addr, path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris() {
        let l = Local {
            addr: "127.0.0.1:5672".parse().unwrap(),
            user: "guest".into(),
            pass: "guest".into(),
        };
        assert_eq!(
            resolve("amqp://", "/", &l),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            resolve("amqp:///v2", "/", &l),
            "amqp://guest:guest@127.0.0.1:5672/v2"
        );
        assert_eq!(resolve("amqp://h:1/x", "/", &l), "amqp://h:1/x");
    }
}
