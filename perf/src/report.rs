//! Once-a-second progress lines and the end-of-run summary (text or JSON).

use crate::args::Args;
use crate::hist::Histogram;
use crate::stats::Shared;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Prints a progress line every second until `done` fires; returns every latency seen.
pub async fn progress(
    args: Arc<Args>,
    shared: Arc<Shared>,
    mut done: oneshot::Receiver<()>,
) -> Histogram {
    let mut total = Histogram::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let started = tokio::time::Instant::now();
    let (mut last_sent, mut last_conf, mut last_recv) = (0, 0, 0);
    let mut last_t = started;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut done => break,
        }
        let now = tokio::time::Instant::now();
        let dt = (now - last_t).as_secs_f64();
        last_t = now;
        let sent = shared.sent.load(Relaxed);
        let conf = shared.confirmed.load(Relaxed);
        let recv = shared.received.load(Relaxed);
        let interval = shared.take_latency();
        if let Some(rss) = args.broker_pid.and_then(crate::broker::rss_kb) {
            shared.broker_rss_max_kb.fetch_max(rss, Relaxed);
        }
        total.add(&interval);
        let mut line = format!(
            "time {:6.1} s, sent {:>9.0} msg/s",
            (now - started).as_secs_f64(),
            (sent - last_sent) as f64 / dt
        );
        if args.confirm.is_some() {
            line += &format!(", confirmed {:>9.0} msg/s", (conf - last_conf) as f64 / dt);
        }
        line += &format!(", received {:>9.0} msg/s", (recv - last_recv) as f64 / dt);
        if args.latency || interval.count() > 0 {
            line += &format!(
                ", latency p50/p99/max {}/{}/{} µs",
                interval.quantile(0.5) / 1000,
                interval.quantile(0.99) / 1000,
                interval.max() / 1000
            );
        }
        eprintln!("{line}");
        (last_sent, last_conf, last_recv) = (sent, conf, recv);
    }
    total.add(&shared.take_latency());
    total
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

pub fn latency_json(h: &Histogram) -> Value {
    json!({
        "count": h.count(),
        "p50": us(h.quantile(0.50)),
        "p75": us(h.quantile(0.75)),
        "p95": us(h.quantile(0.95)),
        "p99": us(h.quantile(0.99)),
        "p999": us(h.quantile(0.999)),
        "max": us(h.max()),
    })
}

/// Prints the summary: JSON on stdout with `--json`, else readable text.
pub fn summary(args: &Args, s: &Value) {
    if args.json {
        println!("{s}");
        return;
    }
    let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
    println!("--- summary ---");
    println!(
        "sent {} ({:.0} msg/s), confirmed {}, nacked {}, returned {}, received {} ({:.0} msg/s)",
        s["sent"],
        f("send_rate"),
        s["confirmed"],
        s["nacked"],
        s["returned"],
        s["received"],
        f("receive_rate")
    );
    let l = &s["latency_us"];
    println!(
        "latency µs: p50 {} p75 {} p95 {} p99 {} p99.9 {} max {}",
        l["p50"], l["p75"], l["p95"], l["p99"], l["p999"], l["max"]
    );
    println!(
        "lost {} (checked: {}), left in queues {}, duplicates {}",
        s["lost"], s["loss_checked"], s["undrained"], s["duplicates"]
    );
    println!(
        "client CPU {:.2} s = {:.2} µs per published message, {:.2} cores",
        f("client_cpu_s"),
        f("client_cpu_us_per_msg"),
        f("client_cpu_cores")
    );
    if !s["broker_cpu_us_per_msg"].is_null() {
        println!(
            "broker CPU {:.2} s = {:.2} µs per published message, RSS max {} KiB, end {} KiB",
            f("broker_cpu_s"),
            f("broker_cpu_us_per_msg"),
            s["broker_rss_max_kb"],
            s["broker_rss_end_kb"]
        );
    }
    if let Some(errors) = s["errors"].as_array().filter(|e| !e.is_empty()) {
        println!("errors: {}", errors.len());
        for e in errors.iter().take(10) {
            println!("  {e}");
        }
    }
}
