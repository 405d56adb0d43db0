//! warren-perf: a PerfTest-like load generator for AMQP 0-9-1 brokers.
//!
//! The pieces: `topology` declares exchange, queues and bindings on a setup
//! connection; each `consumer` and each `producer` has its own connection; they
//! share only counters and latency histograms (`stats`). Every body carries a
//! send timestamp, producer id and sequence (`body`), from which consumers compute
//! latency and record arrivals (`tracker`); at the end, what was confirmed (or
//! written, without confirms) but never reached a consumed queue is `lost`.

mod args;
mod body;
mod broker;
mod consumer;
mod cpu;
mod hist;
mod idle;
mod producer;
mod report;
mod stats;
mod topology;
mod tracker;
mod wire;

use args::Args;
use clap::Parser;
use serde_json::json;
use stats::Shared;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracker::{Bitset, Received};

#[tokio::main]
async fn main() {
    std::process::exit(run().await);
}

async fn run() -> i32 {
    let mut args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        return 2;
    }
    let args = Arc::new(args);
    if let Some(n) = args.idle_connections {
        return idle::run(&args, n).await;
    }
    let topo = match topology::declare(&args).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: declaring topology: {e}");
            return 2;
        }
    };
    let nq = topo.queues.len();
    if args.consumers > 0 && args.consumers < nq {
        eprintln!("warning: {nq} queues but {} consumers: queues without a consumer are not checked for loss", args.consumers);
    }
    let shared = Arc::new(Shared::new(nq, args.consumers));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let q = i % nq;
        let tag = format!("perf-{}-{i}", std::process::id());
        match consumer::connect(&args, &topo.queues[q], tag).await {
            Ok(ready) => consumers.push(tokio::spawn(consumer::run(
                args.clone(),
                shared.clone(),
                i,
                q,
                ready,
                stop_rx.clone(),
            ))),
            Err(e) => {
                eprintln!("error: starting consumer {i}: {e}");
                return 2;
            }
        }
    }

    let broker_cpu0 = args.broker_pid.and_then(broker::cpu);
    let broker_rss_start = args.broker_pid.and_then(broker::rss_kb);
    let cpu0 = cpu::process_cpu();
    let wall0 = Instant::now();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reporter = tokio::spawn(report::progress(args.clone(), shared.clone(), done_rx));
    let producers: Vec<_> = (0..args.producers)
        .map(|id| {
            tokio::spawn(producer::run(
                args.clone(),
                shared.clone(),
                id,
                topo.exchange.clone(),
                topo.routing_key.clone(),
            ))
        })
        .collect();
    {
        let shared = shared.clone();
        let time = args.time;
        tokio::spawn(async move {
            let limit = async {
                match time {
                    Some(t) => tokio::time::sleep(Duration::from_secs_f64(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = limit => {}
                _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping"),
            }
            shared.stop.store(true, Relaxed);
        });
    }

    if args.producers == 0 {
        // Consumers only (e.g. a stream replayed from `first`): run until the time limit
        // or Ctrl-C, or until they have received -C messages in all.
        let target = args.pmessages.unwrap_or(u64::MAX);
        while !shared.stopping() && shared.received.load(Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut sent = 0;
    let mut expected: Vec<Bitset> = Vec::new();
    let mut produce_time = Duration::ZERO;
    // A producer whose broker stops reading its socket (flow control that never lifts)
    // would wait in a write forever; past the run time plus the drain it is given up.
    let give_up = args
        .time
        .map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t + args.drain + 10.0));
    for (id, p) in producers.into_iter().enumerate() {
        let abort = p.abort_handle();
        let r = match give_up {
            Some(at) => match tokio::time::timeout_at(at, p).await {
                Ok(r) => r.unwrap_or_default(),
                Err(_) => {
                    abort.abort();
                    shared.error(
                        &format!("producer {id}"),
                        "stuck writing: the broker stopped reading",
                    );
                    Default::default()
                }
            },
            None => p.await.unwrap_or_default(),
        };
        sent += r.sent;
        produce_time = produce_time.max(r.elapsed);
        expected.push(r.expected);
    }
    let expected_total: u64 = expected.iter().map(Bitset::count).sum();

    // Drain: until every consumed queue has seen as many deliveries as expected.
    let consumed: Vec<bool> = (0..nq).map(|q| q < args.consumers).collect();
    if args.consumers > 0 {
        let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
        while Instant::now() < deadline {
            let complete = (0..nq)
                .filter(|&q| consumed[q])
                .all(|q| shared.per_queue[q].load(Relaxed) >= expected_total);
            if complete {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else if expected_total > 0 {
        // No consumers: wait until the broker has enqueued everything (it may still be
        // reading the socket), so the memory sampled below holds the whole backlog.
        let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
        while Instant::now() < deadline {
            let mut queued = u64::MAX;
            for q in 0..nq {
                queued = queued.min(topo.remaining(q).await);
            }
            if queued >= expected_total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = stop_tx.send(true);
    let mut per_queue: Vec<Received> = vec![Received::default(); nq];
    for c in consumers {
        if let Ok(r) = c.await {
            per_queue[r.queue].merge(&r.received);
        }
    }
    let cpu = cpu::process_cpu().saturating_sub(cpu0);
    let broker_cpu = match (broker_cpu0, args.broker_pid.and_then(broker::cpu)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let broker_rss_end = args.broker_pid.and_then(broker::rss_kb);
    if let Some(rss) = broker_rss_end {
        shared.broker_rss_max_kb.fetch_max(rss, Relaxed);
    }
    let wall = wall0.elapsed();
    let _ = done_tx.send(());
    let latency = reporter.await.unwrap_or_default();

    let loss_checked = args.consumers > 0;
    // Messages still in a queue after the drain are late, not lost.
    let mut lost = 0;
    let mut undrained = 0;
    for q in (0..nq).filter(|&q| consumed[q]) {
        let missing = per_queue[q].lost(&expected);
        if missing > 0 {
            let left = topo.remaining(q).await;
            undrained += left;
            lost += missing.saturating_sub(left);
        }
    }
    let duplicates: u64 = per_queue.iter().map(|r| r.duplicates).sum();
    let foreign: u64 = per_queue.iter().map(|r| r.foreign).sum();
    let distinct: u64 = per_queue.iter().map(Received::distinct).sum();
    let received = shared.received.load(Relaxed);
    let last_recv = Duration::from_nanos(shared.last_receive_ns.load(Relaxed));
    let recv_time = last_recv.saturating_sub(wall0.duration_since(shared.epoch));
    let rate = |n: u64, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    let errors = shared.errors.lock().unwrap().clone();
    let cpu_us = cpu.as_secs_f64() * 1e6;
    let summary = json!({
        "label": args.label,
        "uri": args.uri,
        "producers": args.producers,
        "consumers": args.consumers,
        "queues": nq,
        "exchange_type": args.exchange_type.name(),
        "bindings": args.bindings,
        "size": args.size,
        "confirm": args.confirm,
        "persistent": args.persistent(),
        "auto_ack": args.auto_ack,
        "qos": args.qos,
        "multi_ack": args.multi_ack,
        "rate_limit": args.rate,
        "duration_s": (produce_time.as_secs_f64() * 1000.0).round() / 1000.0,
        "sent": sent,
        "confirmed": shared.confirmed.load(Relaxed),
        "nacked": shared.nacked.load(Relaxed),
        "returned": shared.returned.load(Relaxed),
        "expected_per_queue": expected_total,
        "received": received,
        "received_distinct": distinct,
        "send_rate": rate(sent, produce_time).round(),
        "receive_rate": rate(received, recv_time).round(),
        "latency_us": report::latency_json(&latency),
        "lost": if loss_checked { json!(lost) } else { json!(null) },
        "loss_checked": loss_checked,
        "undrained": undrained,
        "duplicates": duplicates,
        "foreign": foreign,
        "client_cpu_s": (cpu.as_secs_f64() * 1000.0).round() / 1000.0,
        "client_cpu_us_per_msg": if sent > 0 { (cpu_us / sent as f64 * 100.0).round() / 100.0 } else { 0.0 },
        "client_cpu_cores": (cpu.as_secs_f64() / wall.as_secs_f64() * 100.0).round() / 100.0,
        "broker_pid": args.broker_pid,
        "broker_cpu_s": broker_cpu.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
        "broker_cpu_us_per_msg": broker_cpu.filter(|_| sent > 0).map(|d| (d.as_secs_f64() * 1e6 / sent as f64 * 100.0).round() / 100.0),
        "broker_rss_start_kb": broker_rss_start,
        "broker_rss_max_kb": args.broker_pid.map(|_| shared.broker_rss_max_kb.load(Relaxed)),
        "broker_rss_end_kb": broker_rss_end,
        "errors": errors,
    });
    report::summary(&args, &summary);
    if !args.keep {
        topo.delete().await;
    }
    if lost > 0 {
        3
    } else if !errors.is_empty() {
        1
    } else {
        0
    }
}
