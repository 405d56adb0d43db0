//! Command-line options, named after RabbitMQ PerfTest's where one exists.

use clap::{Parser, ValueEnum};

/// Smallest body: 6 bytes of timestamp, 2 of producer id, 4 of sequence (see `body.rs`).
pub const MIN_BODY: usize = crate::body::HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
}

impl ExchangeType {
    pub fn name(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "warren-perf",
    version,
    about = "AMQP 0-9-1 load generator (PerfTest-like)"
)]
pub struct Args {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,

    /// Number of producers (one connection each).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: u16,

    /// Number of consumers (one connection each), spread round-robin over the queues.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,

    /// Message body size in bytes (at least 12: timestamp, producer id and sequence).
    #[arg(short = 's', long, default_value_t = 12)]
    pub size: usize,

    /// Publishing rate limit per producer in msg/s; 0 = unlimited.
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,

    /// Publisher confirms with at most WINDOW unconfirmed messages per producer.
    #[arg(short = 'c', long = "confirm", value_name = "WINDOW")]
    pub confirm: Option<usize>,

    /// Message flags (PerfTest style): `persistent` or `mandatory`; repeatable.
    #[arg(short = 'f', long = "flag", value_name = "FLAG")]
    pub flags: Vec<String>,

    /// Shorthand for `-f persistent`: delivery-mode 2 and durable queues.
    #[arg(long)]
    pub persistent: bool,

    /// Consume with no-ack (auto-ack).
    #[arg(short = 'a', long)]
    pub auto_ack: bool,

    /// Consumer prefetch (basic.qos); 0 = unlimited.
    #[arg(short = 'q', long, default_value_t = 0)]
    pub qos: u16,

    /// Acknowledge every N deliveries with multiple=true (manual ack only).
    #[arg(long, default_value_t = 1)]
    pub multi_ack: u64,

    /// Queue name; repeat for several queues (each is bound to the exchange).
    #[arg(short = 'u', long = "queue", value_name = "NAME")]
    pub queue: Vec<String>,

    /// Number of queues named after --queue-pattern (ignored when --queue is given).
    #[arg(long)]
    pub queues: Option<usize>,

    /// Pattern for --queues; `%d` is replaced by 1..=N.
    #[arg(long, default_value = "perf-queue-%d")]
    pub queue_pattern: String,

    /// Exchange type.
    #[arg(short = 't', long, value_enum, default_value = "direct")]
    pub exchange_type: ExchangeType,

    /// Exchange name (default: the exchange type's name, like PerfTest). "" = default exchange.
    #[arg(short = 'e', long)]
    pub exchange: Option<String>,

    /// Routing key used by producers and for the queue bindings (default: perf.<pid>).
    #[arg(short = 'k', long)]
    pub routing_key: Option<String>,

    /// Extra non-matching bindings on the exchange (to a dummy queue), to measure
    /// routing cost with many bindings.
    #[arg(long, default_value_t = 0)]
    pub bindings: usize,

    /// Queue type to declare (`x-queue-type`): classic, quorum or stream. Quorum queues and
    /// streams are always durable.
    #[arg(long, default_value = "classic")]
    pub queue_type: String,

    /// Where stream consumers start (`x-stream-offset`): first, last, next (the broker's
    /// default), an offset number, or an interval such as 30m.
    #[arg(long, value_name = "OFFSET")]
    pub stream_offset: Option<String>,

    /// Run time in seconds.
    #[arg(short = 'z', long)]
    pub time: Option<f64>,

    /// Messages to publish per producer (with no producers: messages to receive in all).
    #[arg(short = 'C', long)]
    pub pmessages: Option<u64>,

    /// Seconds to wait, after producers stop, for consumers to receive everything.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,

    /// Writes in flight per producer when confirms are off (pipelining depth).
    #[arg(long, default_value_t = 256)]
    pub pipeline: usize,

    /// Write every publish (method, header and body frames) with its own write syscall,
    /// as one-message-at-a-time clients (pika, amqplib, lapin) do; overrides --pipeline
    /// and the batching of a confirm window.
    #[arg(long)]
    pub unbatched: bool,

    /// Keep queues and exchange after the run (they are deleted by default).
    #[arg(long)]
    pub keep: bool,

    /// Print the summary as one JSON object on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// Print latency percentiles every second too (they are always in the summary).
    #[arg(long)]
    pub latency: bool,

    /// PID of the broker (same machine): report its CPU time per message and RSS,
    /// sampled from /proc during the run.
    #[arg(long)]
    pub broker_pid: Option<u32>,

    /// Instead of a load run: open N idle connections (each with a channel), and with
    /// --broker-pid report the broker's resident memory per connection.
    #[arg(long, value_name = "N")]
    pub idle_connections: Option<usize>,

    /// Free-form label copied into the JSON summary (for bench scripts).
    #[arg(long, default_value = "")]
    pub label: String,
}

impl Args {
    pub fn persistent(&self) -> bool {
        self.persistent || self.flags.iter().any(|f| f == "persistent")
    }

    pub fn mandatory(&self) -> bool {
        self.flags.iter().any(|f| f == "mandatory")
    }

    pub fn exchange_name(&self) -> String {
        self.exchange
            .clone()
            .unwrap_or_else(|| self.exchange_type.name().to_string())
    }

    pub fn routing_key(&self) -> String {
        self.routing_key
            .clone()
            .unwrap_or_else(|| format!("perf.{}", std::process::id()))
    }

    /// Queue names, in the order consumers are assigned to them.
    pub fn queue_names(&self) -> Vec<String> {
        if !self.queue.is_empty() {
            return self.queue.clone();
        }
        match self.queues {
            Some(n) => (1..=n)
                .map(|i| self.queue_pattern.replace("%d", &i.to_string()))
                .collect(),
            None => vec![format!("perf-{}", std::process::id())],
        }
    }

    /// Checks the combinations that cannot work; returns a message for the user.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.size < MIN_BODY {
            return Err(format!("--size must be at least {MIN_BODY} bytes"));
        }
        if let Some(f) = self
            .flags
            .iter()
            .find(|f| *f != "persistent" && *f != "mandatory")
        {
            return Err(format!("unknown flag {f:?} (persistent, mandatory)"));
        }
        if self.confirm == Some(0) {
            return Err("--confirm WINDOW must be at least 1".into());
        }
        if self.multi_ack == 0 {
            self.multi_ack = 1;
        }
        if !self.auto_ack && self.qos > 0 && self.multi_ack > u64::from(self.qos) {
            eprintln!(
                "warning: --multi-ack {} > --qos {}: acking every {} instead",
                self.multi_ack, self.qos, self.qos
            );
            self.multi_ack = u64::from(self.qos);
        }
        if self.exchange.as_deref() == Some("") && self.queue_names().len() > 1 {
            return Err("the default exchange routes to one queue only; use -e".into());
        }
        if self.pipeline == 0 || self.unbatched {
            self.pipeline = 1;
        }
        Ok(())
    }
}
