//! Declares COUNT durable queues one after the other (each waits for its declare-ok) and
//! prints the latency per declare; then deletes them. Against a cluster node, each
//! declare is committed by the metadata group before its declare-ok.
//!
//! `AMQP_ADDR=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --release --example declare_bench -- [COUNT]`

use lapin::{options::*, types::FieldTable, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let conn = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let prefix = format!("declare-bench-{}", std::process::id());
    let mut lat: Vec<Duration> = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        ch.queue_declare(
            format!("{prefix}-{i}").into(),
            durable,
            FieldTable::default(),
        )
        .await?;
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    for i in 0..count {
        ch.queue_delete(
            format!("{prefix}-{i}").into(),
            QueueDeleteOptions::default(),
        )
        .await?;
    }
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{count} declares: {:.0} declares/s, median {:.0} us, p99 {:.0} us",
        count as f64 / total.as_secs_f64(),
        us(lat[count / 2]),
        us(lat[(count * 99 / 100).min(count - 1)])
    );
    Ok(())
}
