//! Broker-wide registries: virtual hosts, users, and the shutdown signal.

use crate::config::Config;
use crate::vhost::VHost;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub tags: Vec<String>,
}

#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    vhosts: DashMap<String, Arc<VHost>>,
    users: DashMap<String, User>,
    next_connection_id: AtomicU64,
    /// Flips to true when the broker shuts down; every connection watches it.
    shutdown: watch::Sender<bool>,
    /// Open connections (for shutdown accounting and, later, management).
    pub connections: DashMap<u64, ConnectionInfo>,
    /// Woken whenever definitions change; the definitions writer waits on it.
    pub definitions_changed: Arc<tokio::sync::Notify>,
    /// Management statistics: connection registry, counters of closed objects, samples.
    pub stats: crate::stats::Registry,
    /// Policies per vhost (management).
    pub policies: crate::policy::Policies,
}

#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: std::net::SocketAddr,
    pub user: String,
    pub vhost: String,
}

impl Broker {
    pub fn new(config: Config) -> Arc<Broker> {
        let (shutdown, _) = watch::channel(false);
        let b = Broker {
            vhosts: DashMap::new(),
            users: DashMap::new(),
            next_connection_id: AtomicU64::new(1),
            shutdown,
            connections: DashMap::new(),
            definitions_changed: Arc::new(tokio::sync::Notify::new()),
            stats: crate::stats::Registry::new(),
            policies: Default::default(),
            config,
        };
        b.add_vhost(&b.config.default_vhost.clone());
        b.users.insert(
            b.config.default_user.clone(),
            User {
                name: b.config.default_user.clone(),
                password: b.config.default_pass.clone(),
                tags: vec!["administrator".into()],
            },
        );
        Arc::new(b)
    }

    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let changed = self.definitions_changed.clone();
        self.vhosts
            .entry(name.to_string())
            .or_insert_with(|| VHost::new(name, changed))
            .clone()
    }

    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.iter().map(|v| v.clone()).collect()
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.get(name).map(|v| v.clone())
    }

    /// Checks a username and password.
    pub fn authenticate(&self, user: &str, pass: &str) -> Option<User> {
        let u = self.users.get(user)?;
        (u.password == pass).then(|| u.clone())
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Asks every connection to close with 320 CONNECTION_FORCED.
    pub fn begin_shutdown(&self) {
        // send_replace stores the value even while no task has subscribed yet.
        self.shutdown.send_replace(true);
    }
}
