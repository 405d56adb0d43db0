//! The node, lifecycle, message-flow and Raft series that RabbitMQ's published Grafana
//! dashboards (RabbitMQ-Overview, RabbitMQ-Quorum-Queues-Raft) query, with
//! rabbitmq_prometheus's names and labels (`tests/data/dashboard_metrics.txt` lists them).

use super::{esc, Out};
use crate::broker::Broker;
use crate::queue::quorum::RaftStats;
use crate::queue::Queue;
use crate::stats::messages::SIZE_LABELS;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// RLIMIT_NOFILE's soft limit, from /proc (0 where unavailable).
fn max_fds() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Physical memory, from /proc (0 where unavailable).
fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

pub(super) fn render(o: &mut Out, b: &Arc<Broker>, queues: &[Arc<Queue>]) {
    o.family(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
    );
    o.sample(
        "rabbitmq_build_info",
        &format!(
            "rabbitmq_version=\"{}\",prometheus_plugin_version=\"{}\",prometheus_client_version=\"none\",erlang_version=\"none\"",
            esc(&b.config.server_version),
            env!("CARGO_PKG_VERSION"),
        ),
        1,
    );
    let uptime = crate::stats::now_ms().saturating_sub(b.stats.started_at);
    o.family("rabbitmq_erlang_uptime_seconds", "gauge", "Node uptime");
    o.sample(
        "rabbitmq_erlang_uptime_seconds",
        "",
        format!("{:.3}", uptime as f64 / 1000.0),
    );
    let free = crate::store::disk::free_bytes(&b.config.data_dir).unwrap_or(0);
    o.family(
        "rabbitmq_disk_space_available_bytes",
        "gauge",
        "Disk space available in bytes",
    );
    o.sample("rabbitmq_disk_space_available_bytes", "", free);
    o.family(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
    );
    o.sample(
        "rabbitmq_disk_space_available_limit_bytes",
        "",
        b.config.disk_free_limit,
    );
    o.family(
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes",
    );
    o.sample(
        "rabbitmq_resident_memory_limit_bytes",
        "",
        b.alarms.watermark().limit(total_memory()),
    );
    o.family(
        "rabbitmq_process_max_fds",
        "gauge",
        "Open file descriptors limit",
    );
    o.sample("rabbitmq_process_max_fds", "", max_fds());

    // Publishers: connections that published; consumers: every consumer.
    let publishers = b
        .stats
        .connections
        .iter()
        .filter(|c| c.counters.publish.load(Relaxed) > 0)
        .count();
    let consumers: usize = queues.iter().map(|q| q.stats().2).sum();
    for (name, help, v) in [
        (
            "rabbitmq_global_publishers",
            "Current number of publishers",
            publishers,
        ),
        (
            "rabbitmq_global_consumers",
            "Current number of consumers",
            consumers,
        ),
    ] {
        o.family(name, "gauge", help);
        o.sample(name, "protocol=\"amqp091\"", v);
    }

    let m = b.stats.msg_totals();
    let channels_open: u64 = b
        .stats
        .connections
        .iter()
        .map(|c| c.open_channels().len() as u64)
        .sum();
    let vhosts = b.vhosts();
    let qsum = |f: fn(&crate::vhost::QueueCounts) -> u64| -> u64 {
        vhosts.iter().map(|v| f(&v.queue_counts)).sum()
    };
    let opened = b.stats.connections_opened.load(Relaxed);
    let closed = b.stats.connections_closed.load(Relaxed);
    let counters: [(&str, &str, u64); 13] = [
        ("rabbitmq_connections_opened_total", "Total number of connections opened", opened),
        ("rabbitmq_connections_closed_total", "Total number of connections closed or terminated", closed),
        ("rabbitmq_channels_opened_total", "Total number of channels opened", m.channels_opened),
        ("rabbitmq_channels_closed_total", "Total number of channels closed", m.channels_opened.saturating_sub(channels_open)),
        ("rabbitmq_queues_declared_total", "Total number of queues declared", qsum(|c| c.declared.load(Relaxed))),
        ("rabbitmq_queues_created_total", "Total number of queues created", qsum(|c| c.created.load(Relaxed))),
        ("rabbitmq_queues_deleted_total", "Total number of queues deleted", qsum(|c| c.deleted.load(Relaxed))),
        ("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams", m.routed),
        ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", m.unroutable_dropped),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", m.unroutable_returned),
        ("rabbitmq_global_messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations", m.received_confirm),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", m.confirmed),
        ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", m.get_empty),
    ];
    for (name, help, v) in counters {
        o.family(name, "counter", help);
        o.sample(name, "", v);
    }
    o.family(
        "rabbitmq_message_size_bytes",
        "histogram",
        "Size of messages received from publishers",
    );
    let mut cumulative = 0;
    for (i, le) in SIZE_LABELS.iter().enumerate() {
        cumulative += m.sizes[i];
        o.sample(
            "rabbitmq_message_size_bytes_bucket",
            &format!("protocol=\"amqp091\",le=\"{le}\""),
            cumulative,
        );
    }
    o.sample(
        "rabbitmq_message_size_bytes_sum",
        "protocol=\"amqp091\"",
        m.size_sum,
    );
    o.sample(
        "rabbitmq_message_size_bytes_count",
        "protocol=\"amqp091\"",
        m.count(),
    );

    raft(o, queues);
}

/// Quorum queues' Raft figures, one series per quorum queue (`vhost`, `queue` labels, as
/// rabbitmq_prometheus serves them per object; the Raft dashboard groups by `queue`).
/// One node: every command is written, committed and applied at once, so the indexes are
/// the same number (commands applied since the queue was opened in this run); no
/// snapshots (index 0); term 1; commit latency 0 (the fsync happens before the apply).
/// RabbitMQ 3.10's names (`rabbitmq_raft_log_*`) and later ones (`rabbitmq_raft_*`) are
/// both served: the dashboard queries both.
fn raft(o: &mut Out, queues: &[Arc<Queue>]) {
    let rows: Vec<(String, RaftStats)> = queues
        .iter()
        .filter_map(|q| {
            let r = q.raft_stats()?;
            let labels = format!(
                "vhost=\"{}\",queue=\"{}\"",
                esc(&q.config.vhost),
                esc(q.name())
            );
            Some((labels, r))
        })
        .collect();
    type Field = fn(&RaftStats) -> u64;
    let families: [(&str, &str, &str, Field); 10] = [
        (
            "rabbitmq_raft_term_total",
            "counter",
            "Current Raft term number",
            |r| r.term,
        ),
        (
            "rabbitmq_raft_log_snapshot_index",
            "gauge",
            "Raft log snapshot index",
            |_| 0,
        ),
        (
            "rabbitmq_raft_log_last_applied_index",
            "gauge",
            "Raft log last applied index",
            |r| r.index,
        ),
        (
            "rabbitmq_raft_log_commit_index",
            "gauge",
            "Raft log commit index",
            |r| r.index,
        ),
        (
            "rabbitmq_raft_log_last_written_index",
            "gauge",
            "Raft log last written index",
            |r| r.index,
        ),
        ("rabbitmq_raft_term", "gauge", "The current term", |r| {
            r.term
        }),
        (
            "rabbitmq_raft_snapshot_index",
            "gauge",
            "The last index of the log included in the snapshot",
            |_| 0,
        ),
        (
            "rabbitmq_raft_last_applied",
            "gauge",
            "The last applied index",
            |r| r.index,
        ),
        (
            "rabbitmq_raft_commit_index",
            "gauge",
            "The current commit index",
            |r| r.index,
        ),
        (
            "rabbitmq_raft_last_written_index",
            "gauge",
            "The last fully written and fsynced index of the log",
            |r| r.index,
        ),
    ];
    for (name, kind, help, f) in families {
        o.family(name, kind, help);
        for (labels, r) in &rows {
            o.sample(name, labels, f(r));
        }
    }
    for (name, help) in [
        (
            "rabbitmq_raft_entry_commit_latency_seconds",
            "Time taken for a log entry to be committed",
        ),
        (
            "rabbitmq_raft_commit_latency_seconds",
            "Approximate time taken from an entry being written to the log until it is committed",
        ),
    ] {
        o.family(name, "gauge", help);
        for (labels, _) in &rows {
            o.sample(name, labels, "0.0");
        }
    }
}
