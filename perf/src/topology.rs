//! Declares (and afterwards deletes) the exchange, queues and bindings, on a setup
//! connection that stays open for the whole run.

use crate::args::{Args, ExchangeType};
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use std::time::Instant;

#[derive(Debug)]
pub struct Topology {
    pub conn: Connection,
    pub ch: Channel,
    pub exchange: String,
    pub routing_key: String,
    pub queues: Vec<String>,
    dummy: Option<String>,
}

pub async fn declare(args: &Args) -> lapin::Result<Topology> {
    let conn = Connection::connect(&args.uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let exchange = args.exchange_name();
    let queues = args.queue_names();
    let routing_key = if exchange.is_empty() {
        queues[0].clone()
    } else {
        args.routing_key()
    };
    if !exchange.is_empty() {
        let kind = match args.exchange_type {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Topic => ExchangeKind::Topic,
        };
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(exchange.as_str().into(), kind, opts, FieldTable::default())
            .await?;
    }
    let typed = args.queue_type != "classic";
    let qopts = QueueDeclareOptions {
        durable: args.persistent() || typed,
        ..Default::default()
    };
    let mut qargs = FieldTable::default();
    if typed {
        qargs.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString(args.queue_type.as_str().into()),
        );
    }
    for q in &queues {
        ch.queue_declare(q.as_str().into(), qopts, qargs.clone())
            .await?;
        if args.queue_type != "stream" {
            // Streams refuse queue.purge (540).
            ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                .await?;
        }
        if !exchange.is_empty() {
            ch.queue_bind(
                q.as_str().into(),
                exchange.as_str().into(),
                routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
    }
    let mut dummy = None;
    if args.bindings > 0 && !exchange.is_empty() {
        let name = format!("perf-dummy-{}", std::process::id());
        let opts = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        ch.queue_declare(name.as_str().into(), opts, FieldTable::default())
            .await?;
        let started = Instant::now();
        bind_many(&ch, &name, &exchange, args.bindings, args.exchange_type).await?;
        eprintln!(
            "declared {} extra bindings in {:.1} s",
            args.bindings,
            started.elapsed().as_secs_f64()
        );
        dummy = Some(name);
    }
    Ok(Topology {
        conn,
        ch,
        exchange,
        routing_key,
        queues,
        dummy,
    })
}

/// Binding keys that never match the producers' routing key (`perf.<pid>`):
/// topic keys carry wildcards so that a broker cannot shortcut them as exact matches.
fn dummy_key(i: usize, kind: ExchangeType) -> String {
    match kind {
        ExchangeType::Topic => format!("dummy.{i}.*"),
        _ => format!("dummy.{i}"),
    }
}

/// Issues the binds pipelined, up to 1000 outstanding.
async fn bind_many(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    n: usize,
    kind: ExchangeType,
) -> lapin::Result<()> {
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        if inflight.len() >= 1000 {
            if let Some(r) = inflight.next().await {
                r?;
            }
        }
        let key = dummy_key(i, kind);
        inflight.push(ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ));
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(())
}

impl Topology {
    /// Messages still ready in queue `q` (passive declare), 0 if unknown.
    pub async fn remaining(&self, q: usize) -> u64 {
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match self
            .ch
            .queue_declare(self.queues[q].as_str().into(), opts, FieldTable::default())
            .await
        {
            Ok(queue) => u64::from(queue.message_count()),
            Err(_) => 0,
        }
    }

    /// Deletes the queues `declare` created (with them go their bindings). The
    /// exchange is left: the default-named ones ("direct", "topic", …) are shared
    /// between runs, like PerfTest's.
    pub async fn delete(&self) {
        for q in self.queues.iter().chain(self.dummy.iter()) {
            let _ = self
                .ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "bye".into()).await;
    }
}
