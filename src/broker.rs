//! Broker-wide registries: virtual hosts, users and permissions ([`crate::auth`]), and the
//! shutdown signal.

pub mod definitions;

use crate::auth::{Auth, AuthError, Permission, User};
use crate::config::Config;
use crate::vhost::VHost;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    vhosts: DashMap<String, Arc<VHost>>,
    /// Users and permissions; see [`crate::auth`] and the user/vhost methods below.
    pub auth: Auth,
    next_connection_id: AtomicU64,
    /// Flips to true when the broker shuts down; every connection watches it.
    shutdown: watch::Sender<bool>,
    /// Open connections (for shutdown accounting and, later, management).
    pub connections: DashMap<u64, ConnectionInfo>,
    /// Per-vhost limits (max-connections, max-queues).
    pub limits: crate::limits::Limits,
    /// Resource alarms (memory, disk): set/clear/active; connections watch it. Shared with
    /// the memory and disk monitors, which hold it weakly and end with the broker.
    pub alarms: Arc<crate::alarm::Alarms>,
    /// Woken whenever definitions change; the definitions writer waits on it.
    pub definitions_changed: Arc<tokio::sync::Notify>,
    /// The message log, once open (after the definitions are restored).
    pub store: crate::queue::StoreCell,
    /// The delay store of x-delayed-message exchanges, once open (after the message log).
    pub delayed: std::sync::OnceLock<Arc<crate::delayed::Delayed>>,
    /// Queue paging (None when the budget is 0: everything stays in memory).
    paging: Option<Arc<crate::queue::pager::Paging>>,
    /// Internal flow control: its settings and whether the runtime is saturated (set by
    /// the [`crate::flow::monitor`] task; queues and connections read it).
    pub flow: Arc<crate::flow::Load>,
    /// Management statistics: connection registry, counters of closed objects, samples.
    pub stats: crate::stats::Registry,
    /// Policies per vhost (management); each vhost holds the same handle, to apply them
    /// to the queues and exchanges it declares.
    pub policies: Arc<crate::policy::Policies>,
    /// Dynamic shovels (`/api/parameters/shovel`), each a task with its own AMQP clients.
    pub shovels: crate::shovel::Shovels,
    /// The metadata group, when this node is in a cluster (set once at start).
    pub meta: std::sync::OnceLock<crate::cluster::handle::MetaHandle>,
    /// The cluster link to queues homed on other nodes (set once at start, in a cluster).
    pub remote: crate::queue::remote::RemoteCell,
    /// Replicated streams, in a cluster (set once at start, before the metadata group).
    pub streams: std::sync::OnceLock<Arc<crate::cluster::stream_repl::StreamRepl>>,
}

#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: std::net::SocketAddr,
    pub user: String,
    pub vhost: String,
    /// Reaches the connection's task (force-close when its vhost is deleted).
    pub control: crate::connection::outbound::ConnSender,
}

impl Broker {
    pub fn new(config: Config) -> Arc<Broker> {
        let (shutdown, _) = watch::channel(false);
        let definitions_changed = Arc::new(tokio::sync::Notify::new());
        let b = Broker {
            shovels: crate::shovel::Shovels::new(definitions_changed.clone()),
            vhosts: DashMap::new(),
            auth: Auth::new(),
            limits: Default::default(),
            alarms: Arc::new(crate::alarm::Alarms::new(config.vm_memory_high_watermark)),
            next_connection_id: AtomicU64::new(1),
            shutdown,
            connections: DashMap::new(),
            definitions_changed,
            store: Default::default(),
            delayed: Default::default(),
            paging: (config.queue_memory_budget > 0).then(|| {
                crate::queue::pager::Paging::new(
                    config.data_dir.join("pages"),
                    config.queue_memory_budget,
                )
            }),
            stats: crate::stats::Registry::new(),
            policies: Default::default(),
            flow: crate::flow::Load::new(config.flow_credit, config.flow_busy_threshold),
            meta: Default::default(),
            remote: Default::default(),
            streams: Default::default(),
            config,
        };
        b.add_vhost(&b.config.default_vhost.clone());
        b.add_default_user();
        Arc::new(b)
    }

    /// The default user (`guest`), tagged administrator, with full permissions on the
    /// default vhost, as RabbitMQ creates on first boot.
    pub fn add_default_user(&self) {
        let c = &self.config;
        self.auth.put_user(User::with_password(
            &c.default_user,
            &c.default_pass,
            vec!["administrator".into()],
        ));
        let _ = self
            .auth
            .set_permission(&c.default_user, &c.default_vhost, Permission::full());
    }

    /// Creates a vhost (or returns the existing one): idempotent, as `PUT /api/vhosts/{name}`.
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let changed = self.definitions_changed.clone();
        let store = self.store.clone();
        let paging = self.paging.clone();
        let policies = self.policies.clone();
        let flow = self.flow.clone();
        let streams = Some(self.config.data_dir.join("streams"));
        let mut created = false;
        let v = self
            .vhosts
            .entry(name.to_string())
            .or_insert_with(|| {
                created = true;
                VHost::new(
                    name,
                    changed,
                    store,
                    paging,
                    streams,
                    policies,
                    flow,
                    self.remote.clone(),
                )
            })
            .clone();
        if created {
            self.definitions_changed.notify_one();
        }
        v
    }

    /// Deletes a vhost: its connections are closed with 320 CONNECTION_FORCED, its queues
    /// deleted (consumers elsewhere are cancelled), its permissions removed.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AuthError> {
        let Some((_, vhost)) = self.vhosts.remove(name) else {
            return Err(AuthError::NoSuchVHost(name.to_string()));
        };
        let reason =
            crate::error::AmqpError::connection_forced(format_args!("vhost '{name}' is deleted"));
        let victims: Vec<_> = self
            .connections
            .iter()
            .filter(|c| c.vhost == name)
            .map(|c| c.control.clone())
            .collect();
        for control in victims {
            let _ = control.send(crate::connection::outbound::Outbound::ForceClose(
                reason.clone(),
            ));
        }
        for q in vhost.queues() {
            vhost.remove_queue(&q);
        }
        self.auth.clear_vhost(name);
        self.limits.clear(name);
        self.shovels.delete_vhost(name);
        self.definitions_changed.notify_one();
        Ok(())
    }

    /// Sets a vhost's limits (`rabbitmqctl set_vhost_limits`); the vhost must exist.
    pub fn set_vhost_limits(
        &self,
        vhost: &str,
        limits: crate::limits::VHostLimits,
    ) -> Result<(), AuthError> {
        if self.vhost(vhost).is_none() {
            return Err(AuthError::NoSuchVHost(vhost.to_string()));
        }
        self.limits.set(vhost, limits);
        self.definitions_changed.notify_one();
        Ok(())
    }

    /// connection.open: the node-wide `--max-connections` and the vhost's connection limit,
    /// against the connections open now.
    pub fn check_connection_limits(&self, user: &str, vhost: &str) -> crate::error::AmqpResult<()> {
        crate::limits::check_connection(
            &self.limits,
            self.config.max_connections,
            self.connections.len(),
            || self.connections.iter().filter(|c| c.vhost == vhost).count(),
            || self.connections.iter().filter(|c| c.user == user).count(),
            user,
            vhost,
        )
    }

    /// channel.open: the user's channel limit, against its channels on every connection.
    pub fn check_channel_limit(&self, user: &str) -> crate::error::AmqpResult<()> {
        crate::limits::check_new_channel(&self.limits, user, || {
            self.stats
                .connections
                .iter()
                .filter(|c| c.user == user)
                .map(|c| c.open_channels().len())
                .sum()
        })
    }

    /// Sets a user's limits (`rabbitmqctl set_user_limits`); the user must exist.
    pub fn set_user_limits(
        &self,
        user: &str,
        limits: crate::limits::UserLimits,
    ) -> Result<(), AuthError> {
        if self.user(user).is_none() {
            return Err(AuthError::NoSuchUser(user.to_string()));
        }
        self.limits.set_user(user, limits);
        self.definitions_changed.notify_one();
        Ok(())
    }

    /// Sets a user's topic permission on an exchange (`rabbitmqctl set_topic_permissions`);
    /// the user and the vhost must exist. True when it is new.
    pub fn set_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<bool, AuthError> {
        if self.vhost(vhost).is_none() {
            return Err(AuthError::NoSuchVHost(vhost.to_string()));
        }
        let p = crate::auth::topic::TopicPermission::new(user, vhost, exchange, write, read)?;
        let new = self.auth.set_topic_permission(user, vhost, p)?;
        self.definitions_changed.notify_one();
        Ok(new)
    }

    /// Removes a user's topic permissions in a vhost (one exchange's, or all).
    pub fn clear_topic_permissions(&self, user: &str, vhost: &str, exchange: Option<&str>) -> bool {
        let removed = self.auth.clear_topic_permissions(user, vhost, exchange);
        self.definitions_changed.notify_one();
        removed
    }

    /// Re-evaluates the effective policy of every queue and exchange in `vhost` after a
    /// policy change, and has the definitions file rewritten (policies are saved there).
    pub fn apply_policies(&self, vhost: &str) {
        if let Some(v) = self.vhost(vhost) {
            v.apply_policies();
        }
        self.definitions_changed.notify_one();
    }

    // ---------- users and permissions ----------

    /// Adds a user with a password hashed in RabbitMQ's default scheme; refuses an
    /// existing name.
    pub fn add_user(&self, name: &str, password: &str, tags: Vec<String>) -> Result<(), AuthError> {
        self.auth
            .add_user(User::with_password(name, password, tags))?;
        self.definitions_changed.notify_one();
        Ok(())
    }

    /// Creates or replaces a user (hash already computed); true when new.
    pub fn put_user(&self, user: User) -> bool {
        let new = self.auth.put_user(user);
        self.definitions_changed.notify_one();
        new
    }

    /// Deletes a user and its permissions. Open connections of the user stay open, as in
    /// RabbitMQ.
    pub fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        self.auth.delete_user(name)?;
        self.limits
            .set_user(name, crate::limits::UserLimits::default());
        self.definitions_changed.notify_one();
        Ok(())
    }

    pub fn users(&self) -> Vec<Arc<User>> {
        self.auth.users()
    }

    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.auth.user(name)
    }

    /// Sets a user's configure/write/read patterns in a vhost (RabbitMQ's
    /// `set_permissions`); the user and the vhost must exist and the patterns compile.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AuthError> {
        if self.vhost(vhost).is_none() {
            return Err(AuthError::NoSuchVHost(vhost.to_string()));
        }
        let p = Permission::new(configure, write, read).map_err(|e| {
            let pattern = [configure, write, read]
                .into_iter()
                .find(|p| regex::Regex::new(p).is_err())
                .unwrap_or(configure);
            AuthError::InvalidPattern {
                pattern: pattern.to_string(),
                reason: e.to_string(),
            }
        })?;
        self.auth.set_permission(user, vhost, p)?;
        self.definitions_changed.notify_one();
        Ok(())
    }

    /// Removes a user's permissions in a vhost; true when there were some.
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> bool {
        let removed = self.auth.clear_permission(user, vhost);
        self.definitions_changed.notify_one();
        removed
    }

    /// Every permission as (user, vhost, permission).
    pub fn permissions(&self) -> Vec<(String, String, Arc<Permission>)> {
        self.auth.permissions()
    }

    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.iter().map(|v| v.clone()).collect()
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.get(name).map(|v| v.clone())
    }

    /// Checks a username and password.
    pub fn authenticate(&self, user: &str, pass: &str) -> Option<Arc<User>> {
        self.auth.authenticate(user, pass)
    }

    /// Closes one connection with `reason` (320 CONNECTION_FORCED and a text); false when
    /// there is no such connection.
    pub fn close_connection(&self, id: u64, reason: crate::error::AmqpError) -> bool {
        let Some(control) = self.connections.get(&id).map(|c| c.control.clone()) else {
            return false;
        };
        control
            .send(crate::connection::outbound::Outbound::ForceClose(reason))
            .is_ok()
    }

    /// The message log (None only before start-up finished recovering it).
    pub fn message_log(&self) -> Option<&Arc<crate::store::log::MessageLog>> {
        self.store.get()
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
        self.shovels.stop_all();
    }
}

impl crate::stats::Sampled for Broker {
    fn registry(&self) -> &crate::stats::Registry {
        &self.stats
    }

    fn queues(&self) -> Vec<Arc<crate::queue::Queue>> {
        self.vhosts().iter().flat_map(|v| v.queues()).collect()
    }
}
