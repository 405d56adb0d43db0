//! The `warren` binary: parses options (each also a `WARREN_*` environment variable),
//! starts the broker, and shuts it down cleanly on SIGINT or SIGTERM.

use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;

/// Warren: an AMQP 0-9-1 message broker compatible with RabbitMQ clients.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "WARREN_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// AMQP port.
    #[arg(long, env = "WARREN_PORT", default_value_t = 5672)]
    port: u16,
    /// Directory for durable state.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// User created at start.
    #[arg(long, env = "WARREN_DEFAULT_USER", default_value = "guest")]
    default_user: String,
    /// Password of the default user.
    #[arg(long, env = "WARREN_DEFAULT_PASS", default_value = "guest")]
    default_pass: String,
    /// Largest frame in bytes offered to clients (connection.tune).
    #[arg(long, env = "WARREN_FRAME_MAX", default_value_t = 131_072)]
    frame_max: u32,
    /// Highest channel number offered to clients.
    #[arg(long, env = "WARREN_CHANNEL_MAX", default_value_t = 2047)]
    channel_max: u16,
    /// Heartbeat interval in seconds offered to clients; 0 disables.
    #[arg(long, env = "WARREN_HEARTBEAT", default_value_t = 60)]
    heartbeat: u16,
    /// Largest message body in bytes.
    #[arg(long, env = "WARREN_MAX_MESSAGE_SIZE", default_value_t = 128 * 1024 * 1024)]
    max_message_size: u64,
    /// Seconds a client has to complete the AMQP handshake.
    #[arg(long, env = "WARREN_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    handshake_timeout: u64,
    /// Milliseconds a delivery may stay unacknowledged before its channel is closed.
    #[arg(long, env = "WARREN_CONSUMER_TIMEOUT", default_value_t = 1_800_000)]
    consumer_timeout: u64,
    /// Bytes after which the message log starts a new segment file.
    #[arg(long, env = "WARREN_SEGMENT_SIZE", default_value_t = 32 * 1024 * 1024)]
    segment_size: u64,
    /// Bytes of message bodies a queue keeps in memory before paging the rest to disk
    /// (0: never page).
    #[arg(long, env = "WARREN_QUEUE_MEMORY_BUDGET", default_value_t = 32 * 1024 * 1024)]
    queue_memory_budget: usize,
    /// Publishers are blocked while the data directory's disk has less free space (bytes).
    #[arg(long, env = "WARREN_DISK_FREE_LIMIT", default_value_t = 50_000_000)]
    disk_free_limit: u64,
    /// Management HTTP port (API, web console, /metrics); 0 disables it.
    #[arg(long, env = "WARREN_MANAGEMENT_PORT", default_value_t = 15672)]
    management_port: u16,
    /// Users that may connect only from loopback addresses (comma-separated; "" for none).
    #[arg(long, env = "WARREN_LOOPBACK_USERS", default_value = "guest")]
    loopback_users: String,
    /// Memory high watermark: a fraction of RAM (0.4) or bytes (1073741824, 512MiB).
    /// Publishers are blocked while the broker uses more.
    #[arg(long, env = "WARREN_VM_MEMORY_HIGH_WATERMARK", default_value = "0.4", value_parser = warren::alarm::Watermark::parse)]
    vm_memory_high_watermark: warren::alarm::Watermark,
    /// amqps port (used when --tls-cert-file and --tls-key-file are given).
    #[arg(long, env = "WARREN_TLS_PORT", default_value_t = 5671)]
    tls_port: u16,
    /// PEM certificate chain for amqps.
    #[arg(long, env = "WARREN_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key for amqps.
    #[arg(long, env = "WARREN_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA bundle for verifying client certificates.
    #[arg(long, env = "WARREN_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Ask for and verify client certificates (needs --tls-ca-file); enables EXTERNAL.
    #[arg(long, env = "WARREN_TLS_VERIFY_PEER")]
    tls_verify_peer: bool,
    /// Refuse TLS clients without a certificate (with --tls-verify-peer).
    #[arg(long, env = "WARREN_TLS_FAIL_IF_NO_PEER_CERT")]
    tls_fail_if_no_peer_cert: bool,
    /// Node-wide connection limit (unlimited when absent).
    #[arg(long, env = "WARREN_MAX_CONNECTIONS")]
    max_connections: Option<u64>,
    /// `product` in connection.start's server-properties (and management's product_name).
    #[arg(long, env = "WARREN_SERVER_PRODUCT", default_value = "Warren")]
    server_product: String,
    /// `version` in connection.start's server-properties (and management's
    /// product_version).
    #[arg(long, env = "WARREN_SERVER_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    server_version: String,
    /// Internal flow control (RabbitMQ's credit flow): messages a queue with consumers may
    /// take beyond what it hands on while the broker is saturated, before its publishers'
    /// connections stop being read (`state: flow`); 0 turns flow control off.
    #[arg(long, env = "WARREN_FLOW_CREDIT", default_value_t = 1000)]
    flow_credit: u32,
    /// Busy fraction of the runtime's worker threads at which the broker counts as
    /// saturated for flow control.
    #[arg(long, env = "WARREN_FLOW_BUSY_THRESHOLD", default_value_t = 0.6)]
    flow_busy_threshold: f64,
    /// Definitions file (or directory of *.json files) imported at every start, as
    /// RabbitMQ's load_definitions.
    #[arg(long, env = "WARREN_LOAD_DEFINITIONS")]
    load_definitions: Option<PathBuf>,
    /// This node's name in a cluster (`--cluster-nodes` lists it).
    #[arg(long, env = "WARREN_NODE_NAME")]
    node_name: Option<String>,
    /// Port for the other cluster nodes (Raft and forwarding).
    #[arg(long, env = "WARREN_CLUSTER_PORT", default_value_t = 25672)]
    cluster_port: u16,
    /// The cluster's nodes, this one included: `n1@127.0.0.1:25672,n2@127.0.0.1:25673`.
    /// Without it Warren runs alone.
    #[arg(long, env = "WARREN_CLUSTER_NODES")]
    cluster_nodes: Option<String>,
    /// PEM certificate chain this node presents to the other cluster nodes: every
    /// inter-node connection is TLS (with --cluster-tls-key-file).
    #[arg(
        long,
        env = "WARREN_CLUSTER_TLS_CERT_FILE",
        requires = "cluster_tls_key_file"
    )]
    cluster_tls_cert_file: Option<PathBuf>,
    /// PEM private key for the cluster's TLS.
    #[arg(
        long,
        env = "WARREN_CLUSTER_TLS_KEY_FILE",
        requires = "cluster_tls_cert_file"
    )]
    cluster_tls_key_file: Option<PathBuf>,
    /// PEM CA bundle the other nodes' certificates must chain to.
    #[arg(long, env = "WARREN_CLUSTER_TLS_CA_FILE")]
    cluster_tls_ca_file: Option<PathBuf>,
    /// Verify the other nodes' certificates, both directions (needs --cluster-tls-ca-file).
    #[arg(long, env = "WARREN_CLUSTER_TLS_VERIFY_PEER")]
    cluster_tls_verify_peer: bool,
    /// Refuse a node that connects without a certificate (with --cluster-tls-verify-peer).
    #[arg(long, env = "WARREN_CLUSTER_TLS_FAIL_IF_NO_PEER_CERT")]
    cluster_tls_fail_if_no_peer_cert: bool,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "WARREN_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cluster_tls = match (cli.cluster_tls_cert_file, cli.cluster_tls_key_file) {
        (Some(cert_file), Some(key_file)) => Some(warren::cluster::transport::TlsOptions {
            cert_file,
            key_file,
            ca_file: cli.cluster_tls_ca_file,
            verify_peer: cli.cluster_tls_verify_peer,
            fail_if_no_peer_cert: cli.cluster_tls_fail_if_no_peer_cert,
        }),
        _ if cli.cluster_tls_ca_file.is_some()
            || cli.cluster_tls_verify_peer
            || cli.cluster_tls_fail_if_no_peer_cert =>
        {
            eprintln!(
                "warren: cluster TLS needs --cluster-tls-cert-file and --cluster-tls-key-file"
            );
            std::process::exit(2);
        }
        _ => None,
    };
    let cluster = match &cli.cluster_nodes {
        None if cluster_tls.is_some() => {
            eprintln!("warren: --cluster-tls-cert-file needs --cluster-nodes");
            std::process::exit(2);
        }
        None => None,
        Some(list) => {
            let nodes = warren::cluster::ClusterConfig::parse_nodes(list).unwrap_or_else(|e| {
                eprintln!("warren: --cluster-nodes: {e}");
                std::process::exit(2);
            });
            let Some(node_name) = cli.node_name.clone() else {
                eprintln!("warren: --cluster-nodes needs --node-name");
                std::process::exit(2);
            };
            Some(warren::cluster::ClusterConfig {
                node_name,
                port: cli.cluster_port,
                nodes,
                tls: cluster_tls,
            })
        }
    };
    let config = warren::Config {
        cluster,
        bind: cli.bind,
        port: cli.port,
        data_dir: cli.data_dir,
        default_user: cli.default_user,
        default_pass: cli.default_pass,
        frame_max: cli.frame_max,
        channel_max: cli.channel_max,
        heartbeat: cli.heartbeat,
        max_message_size: cli.max_message_size,
        handshake_timeout: std::time::Duration::from_secs(cli.handshake_timeout),
        consumer_timeout: std::time::Duration::from_millis(cli.consumer_timeout),
        segment_size: cli.segment_size,
        queue_memory_budget: cli.queue_memory_budget,
        disk_free_limit: cli.disk_free_limit,
        management_port: (cli.management_port != 0).then_some(cli.management_port),
        loopback_users: warren::auth::parse_tags(&cli.loopback_users),
        vm_memory_high_watermark: cli.vm_memory_high_watermark,
        max_connections: cli.max_connections,
        server_product: cli.server_product,
        server_version: cli.server_version,
        flow_credit: cli.flow_credit,
        flow_busy_threshold: cli.flow_busy_threshold,
        load_definitions: cli.load_definitions,
        tls: match (cli.tls_cert_file, cli.tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(warren::tls::TlsConfig {
                port: cli.tls_port,
                cert_file,
                key_file,
                ca_file: cli.tls_ca_file,
                verify_peer: cli.tls_verify_peer,
                fail_if_no_peer_cert: cli.tls_fail_if_no_peer_cert,
            }),
            _ => None,
        },
        ..warren::Config::default()
    };
    let handle = match warren::start(config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("warren: cannot start: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!(addr = %handle.addr, "warren listening");
    println!("warren listening on {}", handle.addr);
    if let Some(m) = handle.mgmt_addr {
        tracing::info!(addr = %m, "management listening");
        println!("management on http://{m}/");
    }
    if let Some(a) = handle.tls_addr {
        println!("warren listening for amqps on {a}");
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
