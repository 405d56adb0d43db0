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
    /// Management HTTP port on the same address as AMQP; 0 picks a free one (tests),
    /// `None` disables the management server.
    pub management_port: Option<u16>,
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
            management_port: Some(15672),
        }
    }
}
