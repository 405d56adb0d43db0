//! Broker configuration with RabbitMQ's defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Address the AMQP listener binds (loopback by default).
    pub bind: IpAddr,
    /// AMQP port; 0 picks a free one (tests).
    pub port: u16,
    pub data_dir: PathBuf,
    pub default_user: String,
    pub default_pass: String,
    pub default_vhost: String,
    /// Largest frame the server accepts and offers in connection.tune.
    pub frame_max: u32,
    /// Highest channel number offered in connection.tune.
    pub channel_max: u16,
    /// Heartbeat interval in seconds offered in connection.tune; 0 disables.
    pub heartbeat: u16,
    /// Largest message body accepted (RabbitMQ's max_message_size, 128 MiB).
    pub max_message_size: u64,
    /// Time a client has from TCP connect to connection.open-ok.
    pub handshake_timeout: Duration,
    /// A channel whose oldest unacknowledged delivery is older than this is closed with
    /// 406 and its messages requeued (RabbitMQ's consumer_timeout, 30 minutes).
    pub consumer_timeout: Duration,
    /// Reported in server-properties.
    pub cluster_name: String,
    /// Size at which the message log starts a new segment file (space is reclaimed by
    /// whole segments).
    pub segment_size: u64,
    /// Bytes of message bodies a (non-priority) queue keeps in memory; the rest of its
    /// backlog is paged to disk. 0 keeps everything in memory.
    pub queue_memory_budget: usize,
    /// Publishers are blocked while the data directory's file system has less free space
    /// than this (RabbitMQ's `disk_free_limit`, 50 MB).
    pub disk_free_limit: u64,
    /// How often free disk space is checked.
    pub disk_monitor_interval: Duration,
    /// Management HTTP port on the same address as AMQP; 0 picks a free one (tests),
    /// `None` disables the management server.
    pub management_port: Option<u16>,
    /// Users that may connect only from a loopback address (RabbitMQ's `loopback_users`,
    /// `["guest"]` by default; empty allows them from anywhere).
    pub loopback_users: Vec<String>,
    /// Publishers are blocked while the broker's RSS is above this (RabbitMQ's
    /// `vm_memory_high_watermark`, 0.4 of RAM).
    pub vm_memory_high_watermark: crate::alarm::Watermark,
    /// Node-wide connection limit (RabbitMQ's `connection_max`); `None` is unlimited.
    pub max_connections: Option<u64>,
    /// The amqps listener, when configured.
    pub tls: Option<crate::tls::TlsConfig>,
    /// How often the memory monitor samples RSS.
    pub memory_monitor_interval: Duration,
    /// Internal flow control ([`crate::flow`]): messages a queue with consumers may take
    /// beyond what it hands on while the broker is saturated; 0 turns it off.
    pub flow_credit: u32,
    /// Busy fraction of the runtime's workers at which the broker counts as saturated
    /// (0 = always, a test hook; above 1 = never).
    pub flow_busy_threshold: f64,
    /// `product` in connection.start's server-properties and management's `product_name`
    /// (RabbitMQ's `product.name`); "Warren" by default.
    pub server_product: String,
    /// `version` in connection.start's server-properties and management's
    /// `product_version` (RabbitMQ's `product.version`); Warren's version by default.
    pub server_version: String,
    /// Definitions imported at every start, after the saved ones (RabbitMQ's
    /// `load_definitions`): a JSON file or a directory of them.
    pub load_definitions: Option<PathBuf>,
    /// The cluster this node belongs to (`--cluster-nodes`); None runs alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 5672,
            data_dir: PathBuf::from("data"),
            default_user: "guest".into(),
            default_pass: "guest".into(),
            default_vhost: "/".into(),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            consumer_timeout: Duration::from_secs(30 * 60),
            cluster_name: "warren@localhost".into(),
            segment_size: 32 * 1024 * 1024,
            queue_memory_budget: 32 * 1024 * 1024,
            disk_free_limit: 50_000_000,
            disk_monitor_interval: Duration::from_secs(1),
            management_port: Some(15672),
            loopback_users: vec!["guest".into()],
            vm_memory_high_watermark: crate::alarm::Watermark::default(),
            memory_monitor_interval: Duration::from_millis(1000),
            flow_credit: 1000,
            flow_busy_threshold: 0.6,
            tls: None,
            max_connections: None,
            server_product: "Warren".into(),
            server_version: env!("CARGO_PKG_VERSION").into(),
            load_definitions: None,
            cluster: None,
        }
    }
}
