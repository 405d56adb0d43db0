//! Stream throughput: publish N messages with publisher confirms, then replay them all from
//! `first`, and report msg/s, the CPU time per message of this client and (when
//! `BROKER_PID` is set) of the broker, and the broker's RSS.
//!
//! `AMQP_URL=amqp://127.0.0.1:5672 BROKER_PID=$(pgrep -x warren) cargo run --release
//! --example stream_bench -- [N=1000000] [BODY_BYTES=100] [CONFIRM_WINDOW=1000]`
//!
//! By default publishes are issued one after the other, each awaited until lapin has
//! written it (the usual `basic_publish(..).await?` loop), with up to CONFIRM_WINDOW
//! confirms outstanding. lapin hands every publish to its I/O thread and waits for the
//! write, so this loop is bound by that hand-off (tens of µs per message), whatever the
//! broker. `CONCURRENT=1` keeps up to CONFIRM_WINDOW publishes in flight at once (one task
//! each), so lapin can write many per wake-up.
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

/// utime + stime of a process in seconds, from /proc (USER_HZ is 100 on Linux).
fn cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds of (this client, the broker) so far.
fn cpu_now() -> (f64, Option<f64>) {
    let broker = std::env::var("BROKER_PID").ok().and_then(|p| cpu_s(&p));
    (cpu_s("self").unwrap_or(0.0), broker)
}

/// "client X µs/msg, broker Y µs/msg" since `from`.
fn cpu_per_msg(from: (f64, Option<f64>), n: usize) -> String {
    let now = cpu_now();
    let per = |s: f64| s * 1e6 / n.max(1) as f64;
    let broker = match (from.1, now.1) {
        (Some(a), Some(b)) => format!("{:.1} µs/msg", per(b - a)),
        _ => "n/a".into(),
    };
    format!(
        "client CPU {:.1} µs/msg, broker CPU {broker}",
        per(now.0 - from.0)
    )
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
    let concurrent = std::env::var("CONCURRENT").is_ok_and(|v| v == "1");
    println!("rss before: {}", rss());
    let cpu0 = cpu_now();
    let t = Instant::now();
    if concurrent {
        let body = std::sync::Arc::new(body);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            if tasks.len() >= window {
                tasks.join_next().await.expect("a task")??;
            }
            let (ch, body) = (ch.clone(), body.clone());
            tasks.spawn(async move {
                ch.basic_publish(
                    "".into(),
                    STREAM.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await
                .map(|_| ())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
    } else {
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
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "publish with confirms ({}): {n} x {size} B in {secs:.2} s = {:.0} msg/s; {}; rss {}",
        if concurrent { "concurrent" } else { "serial" },
        n as f64 / secs,
        cpu_per_msg(cpu0, n),
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
    let cpu0 = cpu_now();
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
        "replay from first: {seen} in {secs:.2} s = {:.0} msg/s; {}; rss {} (peak sampled {peak:.0} MiB)",
        seen as f64 / secs,
        cpu_per_msg(cpu0, seen),
        rss()
    );
    ch.queue_delete(STREAM.into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}
