//! Stream throughput: publish N messages with publisher confirms, then replay them all from
//! `first`, and report msg/s (and the broker's RSS when `BROKER_PID` is set).
//!
//! `AMQP_URL=amqp://127.0.0.1:5672 BROKER_PID=$(pgrep -x warren) cargo run --release
//! --example stream_bench -- [N=1000000] [BODY_BYTES=100] [CONFIRM_WINDOW=1000]`
//!
//! The stream `bench.stream` is deleted first and at the end.

use futures_lite::StreamExt;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Connection, ConnectionProperties,
};
use std::collections::VecDeque;
use std::time::Instant;

const STREAM: &str = "bench.stream";

fn rss_mib() -> Option<f64> {
    let pid = std::env::var("BROKER_PID").ok()?;
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn rss() -> String {
    rss_mib().map_or_else(|| "n/a".into(), |m| format!("{m:.0} MiB"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut a = std::env::args().skip(1);
    let n: usize = a.next().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let size: usize = a.next().and_then(|v| v.parse().ok()).unwrap_or(100);
    let window: usize = a.next().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672".into());
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_delete(STREAM.into(), QueueDeleteOptions::default())
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch.queue_declare(
        STREAM.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = vec![b'x'; size];
    println!("rss before: {}", rss());
    let t = Instant::now();
    let mut pending = VecDeque::new();
    for _ in 0..n {
        if pending.len() >= window {
            if let Some(c) = pending.pop_front() {
                c.await?;
            }
        }
        pending.push_back(
            ch.basic_publish(
                "".into(),
                STREAM.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?,
        );
    }
    for c in pending {
        c.await?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "publish with confirms: {n} x {size} B in {secs:.2} s = {:.0} msg/s; rss {}",
        n as f64 / secs,
        rss()
    );

    let cch = conn.create_channel().await?;
    cch.basic_qos(2000, BasicQosOptions::default()).await?;
    let mut cargs = FieldTable::default();
    cargs.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let mut cons = cch
        .basic_consume(
            STREAM.into(),
            "".into(),
            BasicConsumeOptions::default(),
            cargs,
        )
        .await?;
    let t = Instant::now();
    let mut seen = 0usize;
    let mut peak = 0f64;
    while seen < n {
        let Some(d) = cons.next().await else { break };
        let d = d?;
        seen += 1;
        if seen.is_multiple_of(500) || seen == n {
            d.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        if seen.is_multiple_of(100_000) {
            peak = peak.max(rss_mib().unwrap_or(0.0));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "replay from first: {seen} in {secs:.2} s = {:.0} msg/s; rss {} (peak sampled {peak:.0} MiB)",
        seen as f64 / secs,
        rss()
    );
    ch.queue_delete(STREAM.into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}
