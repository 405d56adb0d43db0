//! Warren: an AMQP 0-9-1 message broker that speaks RabbitMQ's dialect.
//!
//! # The major components
//!
//! - [`server`]: the listener; one task per accepted connection.
//! - [`connection`]: the per-connection task. It owns the socket, the handshake, heartbeats
//!   and every [`channel::Channel`] of the connection (channels are plain state, not tasks).
//! - [`protocol`]: the wire format: frame decoding with zero-copy bodies, encoding with
//!   hand-written fast paths for per-message frames, raw content properties.
//! - [`vhost`]: a virtual host's exchanges, queues and bindings, shared by its
//!   connections through short synchronous locks; declare/delete/bind rules with RabbitMQ's
//!   reply codes and texts; routing (exchange-to-exchange, alternate exchanges).
//! - [`routing`]: pure binding indexes per exchange type (direct map, fanout, topic trie,
//!   headers matcher).
//! - [`queue`]: a queue's messages and consumers behind one lock per queue; dispatch sends
//!   deliveries to the consumer's connection task as [`connection::outbound::Outbound`].
//!   Behind the one `Queue` interface that channels and vhosts call (publish, consume,
//!   get, settle, purge, delete, stats) are three types: the classic engine, quorum
//!   queues ([`queue::quorum`]: a pure command-driven state machine,
//!   [`queue::quorum::fifo`], after RabbitMQ's `rabbit_fifo`, ready to be replicated), and
//!   streams ([`queue::stream`]: an append-only segment log read by a task per consumer).
//! - [`auth`]: users (RabbitMQ's password hashes, tags) and per-vhost permissions; the
//!   access-control table every channel handler consults through `ConnCtx::permit`.
//! - [`alarm`]: memory/disk alarms and the per-connection throttle that blocks publishers.
//! - [`flow`]: internal flow control (RabbitMQ's credit flow): while the broker's runtime is
//!   saturated, a queue with consumers that takes messages faster than it hands them on
//!   stops its publishers' connections from reading (`state: flow`).
//! - [`limits`]: node and vhost connection limits, vhost queue limits.
//! - [`tls`]: the amqps listener's rustls configuration and the socket halves shared by
//!   plain and TLS connections.
//! - [`ctl`]: the `warren-ctl` management client (RabbitMQ's management API paths).
//! - [`stats`]: relaxed counters on queues and connections, the registry of open
//!   connections, and the sampler task that turns counters into rates.
//! - [`mgmt`]: the management HTTP server (RabbitMQ's API, web console, `/metrics`); it
//!   only reads snapshots and calls the same vhost operations as AMQP methods.
//! - [`shovel`]: dynamic shovels, each a task moving messages between two AMQP 0-9-1
//!   brokers with lapin clients (rabbitmq_shovel's JSON keys, saved with the definitions).
//! - [`cluster`]: nodes on openraft; the metadata group replicates definition changes to
//!   every node (channels and management reach it through [`cluster::handle::Metadata`]).
//! - [`policy`]: policies per vhost, matched against queue and exchange names; a queue acts
//!   on its declare arguments merged with its policy, re-applied whenever a policy changes.
//! - [`delayed`]: the delay store of `x-delayed-message` exchanges: held messages in their
//!   own segment files (written in the message log's group commit), a 32-byte entry each in
//!   a due-time schedule, and the timer task that routes them when due.
//!
//! # Layers
//!
//! Imports go top-down; no module below [`broker`] names it:
//!
//! ```text
//! server, connection, mgmt, ctl       the listeners, per-connection tasks, HTTP API
//!   shovel                            shovel tasks (AMQP clients; never name the broker)
//!   └─ broker                         registries: vhosts, users, limits, alarms, policies,
//!        │                            open connections, stats, the store cell, shutdown
//!        └─ channel, vhost, delayed   a connection's channels; a vhost's objects; held
//!             │                       delayed messages (reaches vhosts through a lookup)
//!             └─ queue, routing       queues, consumers, binding indexes
//!                  └─ store, alarm, limits, stats, policy, auth, protocol, message
//! ```
//!
//! The lower layers get narrow handles instead of the whole [`broker::Broker`]:
//! [`alarm::memory_monitor`] and [`store::disk::monitor`] a weak [`alarm::Alarms`] (and a
//! [`store::disk::DiskWatch`]); the definitions writer a
//! [`store::definitions::DefinitionsSource`] (the broker's snapshot and import live in
//! [`broker::definitions`]); the stats sampler a [`stats::Sampled`]; [`limits`] the counts
//! it checks; channel handlers a [`channel::BrokerCtx`] (permissions, limits,
//! `max_message_size`, the metadata group's [`cluster::handle::MetaHandle`]); the Raft
//! storage, transport and state machine ([`cluster`]) an [`cluster::state_machine::Apply`]
//! implemented by `cluster::apply`, the one cluster module that names the broker. Policy
//! changes are applied by [`broker::Broker::apply_policies`].
//! [`connection::outbound`] is the connections' mailbox: queues, vhosts and the broker send
//! to it without depending on the connection task. The test
//! `lower_layers_do_not_name_the_broker` below keeps the broker and the top layers out of
//! the lower ones.
//!
//! Still looping below the broker: `queue` ⇄ `vhost`, `queue` ⇄ `stats` (the sampler reads
//! queues), `queue` ⇄ `store` (the message log holds `queue::stream` chunks), `queue` ⇄
//! `connection::outbound` (deliveries), and `vhost` → `channel` (`generated_name`).
//!
//! # Who owns what
//!
//! A publish is routed in the publisher's connection task and appended to each queue under
//! that queue's lock; the queue hands the message to a consumer with credit by sending it to
//! the consumer's connection task, which assigns the delivery tag, keeps the unacked entry
//! and writes the frames. Acks return credit; the queue dispatches again when a consumer it
//! skipped has room. No lock is global and none is held across `.await`.

#![deny(unsafe_code)]
#![recursion_limit = "256"]

pub mod alarm;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod ctl;
pub mod delayed;
pub mod error;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod message;
pub mod mgmt;
pub mod policy;
pub mod protocol;
pub mod queue;
pub mod routing;
pub mod server;
pub mod shovel;
pub mod stats;
pub mod store;
pub mod tls;
pub mod vhost;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A running broker: its address, and the way to stop it.
#[derive(Debug)]
pub struct BrokerHandle {
    pub addr: SocketAddr,
    /// Where the management HTTP API listens (None when disabled).
    pub mgmt_addr: Option<SocketAddr>,
    /// The amqps listener's address, when TLS is configured.
    pub tls_addr: Option<SocketAddr>,
    pub broker: Arc<broker::Broker>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerHandle {
    /// amqp:// URI for the default user and vhost.
    pub fn uri(&self) -> String {
        let c = &self.broker.config;
        format!(
            "amqp://{}:{}@{}/%2f",
            c.default_user, c.default_pass, self.addr
        )
    }

    /// Closes every connection with 320 CONNECTION_FORCED and waits for the listener.
    pub async fn shutdown(self) {
        self.broker.begin_shutdown();
        let _ = self.task.await;
        if let Err(e) = store::definitions::save_now(&*self.broker) {
            tracing::error!(error = %e, "cannot write definitions at shutdown");
        }
        if let Some(log) = self.broker.message_log() {
            log.close();
        }
    }
}

/// Restores durable definitions from the data directory, binds the listener and starts
/// serving in the background.
pub async fn start(config: Config) -> std::io::Result<BrokerHandle> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("data directory {}: {e}", config.data_dir.display()),
        )
    })?;
    let saved = store::definitions::load(&config.data_dir)?;
    // Before anything listens: a cluster TLS file that cannot be read stops the start.
    let transport =
        cluster::transport::Transport::new(config.cluster.as_ref().and_then(|c| c.tls.as_ref()))?;
    let listener = TcpListener::bind((config.bind, config.port)).await?;
    let addr = listener.local_addr()?;
    let tls = match &config.tls {
        Some(t) => {
            let acceptor = tls::acceptor(t)?;
            let l = TcpListener::bind((config.bind, t.port)).await?;
            Some((l.local_addr()?, l, acceptor))
        }
        None => None,
    };
    let tls_addr = tls.as_ref().map(|t| t.0);
    let broker = broker::Broker::new(config);
    let forwarder = broker.config.cluster.as_ref().map(|c| {
        let members: Vec<(String, String)> = c
            .nodes
            .iter()
            .map(|m| (m.name.clone(), m.addr.clone()))
            .collect();
        cluster::forward::Forwarder::new(&c.node_name, &members, transport.clone())
    });
    if let Some(f) = &forwarder {
        // Before the definitions are restored: queues homed elsewhere are proxies.
        let _ = broker
            .remote
            .set(f.clone() as Arc<dyn queue::remote::Remote>);
    }
    if let Some(d) = &saved {
        broker::definitions::restore(&broker, d);
        tracing::info!(
            exchanges = d.exchanges.len(),
            queues = d.queues.len(),
            bindings = d.bindings.len(),
            "restored durable definitions"
        );
    }
    if let Some(path) = &broker.config.load_definitions {
        load_definitions(&broker, path, saved.is_none())?;
    }
    open_message_log(&broker)?;
    if let Some(c) = broker.config.cluster.clone() {
        let streams =
            cluster::stream_repl::StreamRepl::new(c.node_name.clone(), &c.nodes, transport.clone());
        let _ = broker.streams.set(streams.clone());
        // Streams replicated before this start: their saved placements, until the
        // metadata group says more.
        for vhost in broker.vhosts() {
            for q in vhost.queues() {
                if let Some(p) = q.stream().and_then(|s| s.saved_placement()) {
                    streams.place(q, p);
                }
            }
        }
        let node = cluster::node::Node::start(
            c,
            transport,
            broker.config.bind,
            broker.config.data_dir.join("cluster"),
            Arc::new(cluster::apply::BrokerApply(Arc::downgrade(&broker))),
            broker.shutdown_signal(),
        )
        .await?;
        if let Some(f) = &forwarder {
            let weak = Arc::downgrade(&broker);
            let vhosts: cluster::forward::Vhosts =
                Arc::new(move |name: &str| weak.upgrade().and_then(|b| b.vhost(name)));
            node.set_forward(Box::new(move |sock| {
                tokio::spawn(cluster::forward::home::serve(sock, vhosts.clone()));
            }));
            f.start(broker.shutdown_signal());
        }
        let links = streams.clone();
        let _ = node.links.set(Arc::new(move |sock| {
            tokio::spawn(links.clone().serve_link(sock));
        }));
        let meta: cluster::handle::MetaHandle = Arc::new(cluster::node::Handle(node));
        streams.start(meta.clone(), broker.shutdown_signal());
        let _ = broker.meta.set(meta);
        cluster::apply::start_all_groups(&broker).await;
    }
    open_delay_store(&broker)?;
    tokio::spawn(store::definitions::writer(
        Arc::downgrade(&broker),
        broker.definitions_changed.clone(),
    ));
    tokio::spawn(store::disk::monitor(
        Arc::downgrade(&broker.alarms),
        store::disk::DiskWatch {
            data_dir: broker.config.data_dir.clone(),
            free_limit: broker.config.disk_free_limit,
            log: Arc::downgrade(&broker.store),
            interval: broker.config.disk_monitor_interval,
        },
    ));
    tokio::spawn(stats::sampler(Arc::downgrade(&broker)));
    let mgmt_addr = match broker.config.management_port {
        Some(port) => Some(mgmt::start(broker.clone(), (broker.config.bind, port).into()).await?),
        None => None,
    };
    tokio::spawn(flow::monitor(Arc::downgrade(&broker.flow)));
    tokio::spawn(alarm::memory_monitor(
        Arc::downgrade(&broker.alarms),
        broker.config.memory_monitor_interval,
    ));
    let plain = server::run(broker.clone(), listener, None);
    let task = match tls {
        Some((_, l, acceptor)) => {
            let secure = server::run(broker.clone(), l, Some(acceptor));
            tokio::spawn(async move {
                tokio::join!(plain, secure);
            })
        }
        None => tokio::spawn(plain),
    };
    broker.shovels.set_local(shovel::Local {
        addr,
        user: broker.config.default_user.clone(),
        pass: broker.config.default_pass.clone(),
    });
    Ok(BrokerHandle {
        addr,
        tls_addr,
        mgmt_addr,
        broker,
        task,
    })
}

/// `--load-definitions`: imports the operator's definitions file(s) at start, merging into
/// what was restored. On a first start (nothing saved) a file that lists users replaces
/// the default user, as RabbitMQ does not create it when definitions are configured. An
/// unreadable or unparsable file stops the start; entries that cannot be imported are
/// logged.
fn load_definitions(
    broker: &broker::Broker,
    path: &std::path::Path,
    first_start: bool,
) -> std::io::Result<()> {
    for d in store::definitions::read_operator_file(path)? {
        if first_start && !d.users.is_empty() {
            broker.auth.clear();
        }
        for e in broker::definitions::import(broker, &d) {
            tracing::warn!(file = %path.display(), error = %e, "could not load a definition");
        }
        tracing::info!(
            file = %path.display(),
            users = d.users.len(),
            queues = d.queues.len(),
            "loaded definitions"
        );
    }
    Ok(())
}

/// Opens the delay store of x-delayed-message exchanges (after the message log, which
/// writes its records) and starts its timer, which finds exchanges through a weak
/// lookup of the vhosts.
fn open_delay_store(broker: &Arc<broker::Broker>) -> std::io::Result<()> {
    let Some(log) = broker.message_log() else {
        return Ok(());
    };
    let c = &broker.config;
    let d = delayed::Delayed::open(&c.data_dir, c.segment_size, log.clone())?;
    let r = d.recovery();
    if r.segments > 0 {
        tracing::info!(
            pending = r.pending,
            segments = r.segments,
            damaged = r.damaged,
            "recovered delayed messages"
        );
    }
    let weak = Arc::downgrade(broker);
    let lookup: delayed::Lookup = Box::new(move |vhost, exchange| {
        let v = weak.upgrade()?.vhost(vhost)?;
        let x = v.exchange(exchange)?;
        Some((v, x))
    });
    tokio::spawn(d.clone().run(lookup, broker.shutdown_signal()));
    let _ = broker.delayed.set(d);
    Ok(())
}

/// Opens the message log and gives every durable queue its stored messages back.
fn open_message_log(broker: &Arc<broker::Broker>) -> std::io::Result<()> {
    let c = &broker.config;
    let weak = Arc::downgrade(broker);
    let flush: store::log::DefinitionsFlush = Box::new(move || match weak.upgrade() {
        Some(b) => store::definitions::save_now(&*b),
        None => Ok(()),
    });
    let log = store::log::MessageLog::open(&c.data_dir, c.segment_size, flush, |key, r| {
        let Some((vhost, name)) = key.split_once('\0') else {
            return false;
        };
        match broker.vhost(vhost).and_then(|v| v.queue(name)) {
            Some(q) if q.is_stored() => {
                q.restore(r);
                true
            }
            _ => false,
        }
    })?;
    let r = log.recovery_report();
    if r.segments > 0 {
        tracing::info!(
            messages = r.messages,
            orphaned = r.orphaned,
            segments = r.segments,
            after_crash = r.after_crash,
            damaged = r.damage.len(),
            ms = r.elapsed.as_millis() as u64,
            "recovered stored messages"
        );
    }
    let _ = broker.store.set(log);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file under `path` (or `path` itself), with its text.
    fn sources(path: &Path, out: &mut Vec<(String, String)>) {
        if path.is_dir() {
            for e in std::fs::read_dir(path).unwrap() {
                sources(&e.unwrap().path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }

    /// The layering of the crate docs: modules below the broker never name it, nor the
    /// top layers (server, management, ctl); they get narrow handles instead.
    #[test]
    fn lower_layers_do_not_name_the_broker() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lower = [
            "alarm.rs",
            "auth",
            "channel",
            "cluster/handle.rs",
            "cluster/log_store.rs",
            "cluster/network.rs",
            "cluster/state_machine.rs",
            "cluster/wal.rs",
            "config.rs",
            "delayed",
            "error.rs",
            "flow.rs",
            "limits.rs",
            "message.rs",
            "policy.rs",
            "protocol",
            "queue",
            "routing",
            "shovel",
            "stats.rs",
            "store",
            "tls.rs",
            "vhost",
        ];
        let mut files = Vec::new();
        for l in lower {
            sources(&src.join(l), &mut files);
        }
        assert!(files.len() > 20);
        let mut offenders = Vec::new();
        for (path, text) in &files {
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for top in [
                    "crate::broker",
                    "crate::server",
                    "crate::mgmt",
                    "crate::ctl",
                ] {
                    if code.contains(top) {
                        offenders.push(format!("{path}:{}: {top}", n + 1));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}
