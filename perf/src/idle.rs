//! `--idle-connections N`: what an idle connection costs the broker in memory.
//!
//! Opens N connections with one channel each (the raw client's handshake: PLAIN,
//! heartbeats off), lets the broker settle, and reports the growth of its resident set
//! divided by N. The connections are closed afterwards.

use crate::args::Args;
use crate::broker;
use crate::wire::Conn;
use serde_json::json;
use std::time::Duration;

pub async fn run(args: &Args, n: usize) -> i32 {
    let pid = args.broker_pid;
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    settle().await;
    let before = pid.and_then(broker::rss_kb);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match Conn::open(&args.uri).await {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!("error: connection {i}: {e}");
                return 1;
            }
        }
    }
    // Idle means idle for a while: brokers may give per-connection buffers back after a
    // quiet period (Warren does after 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = pid.and_then(broker::rss_kb);
    let per_conn = match (before, after) {
        (Some(b), Some(a)) => Some(((a.saturating_sub(b)) as f64 * 1024.0 / n as f64).round()),
        _ => None,
    };
    let summary = json!({
        "label": args.label,
        "uri": args.uri,
        "idle_connections": n,
        "broker_pid": pid,
        "broker_rss_before_kb": before,
        "broker_rss_after_kb": after,
        "broker_bytes_per_connection": per_conn,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    }
    for mut c in conns {
        c.tx.out.connection_close();
        let _ = c.tx.flush().await;
    }
    0
}
