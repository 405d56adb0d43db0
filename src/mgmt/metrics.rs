//! `/metrics`: Prometheus text format with RabbitMQ's `rabbitmq_` metric names (those of
//! the rabbitmq_prometheus plugin's aggregated and per-object endpoints).

use super::read::{fd_count, rss_bytes};
use super::B;
use crate::stats::Snap;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;

mod node;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# TYPE {name} {kind}\n# HELP {name} {help}");
    }
    fn sample(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
        }
    }
}

pub async fn render(axum::extract::State(b): B) -> impl IntoResponse {
    let mut o = Out(String::with_capacity(8192));
    let queues: Vec<_> = b.vhosts().iter().flat_map(|v| v.queues()).collect();
    let totals: Snap = b.stats.totals(&queues);
    let conns = b.stats.connections.len();
    let channels: usize = b
        .stats
        .connections
        .iter()
        .map(|c| c.open_channels().len())
        .sum();
    let consumers: usize = queues.iter().map(|q| q.stats().2).sum();

    o.family(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
    );
    o.sample("rabbitmq_connections", "", conns);
    o.family("rabbitmq_channels", "gauge", "Channels currently open");
    o.sample("rabbitmq_channels", "", channels);
    o.family(
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
    );
    o.sample("rabbitmq_consumers", "", consumers);
    o.family("rabbitmq_queues", "gauge", "Queues available");
    o.sample("rabbitmq_queues", "", queues.len());

    let ready: u64 = queues.iter().map(|q| q.stats().0 as u64).sum();
    let unacked: u64 = queues.iter().map(|q| q.unacked_count()).sum();
    o.family(
        "rabbitmq_queue_messages_ready",
        "gauge",
        "Messages ready to be delivered to consumers",
    );
    o.sample("rabbitmq_queue_messages_ready", "", ready);
    o.family(
        "rabbitmq_queue_messages_unacked",
        "gauge",
        "Messages delivered to consumers but not yet acknowledged",
    );
    o.sample("rabbitmq_queue_messages_unacked", "", unacked);
    o.family(
        "rabbitmq_queue_messages",
        "gauge",
        "Sum of ready and unacknowledged messages",
    );
    o.sample("rabbitmq_queue_messages", "", ready + unacked);

    let counters: [(&str, &str, u64); 6] = [
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", totals.publish),
        ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", totals.deliver_get()),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", totals.deliver),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", totals.deliver_no_ack),
        ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", totals.ack),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", totals.redeliver),
    ];
    for (name, help, v) in counters {
        o.family(name, "counter", help);
        o.sample(name, "", v);
    }
    o.family(
        "rabbitmq_global_messages_delivered_get_manual_ack_total",
        "counter",
        "Total number of messages fetched with basic.get in manual acknowledgement mode",
    );
    o.sample(
        "rabbitmq_global_messages_delivered_get_manual_ack_total",
        "",
        totals.get,
    );
    o.family(
        "rabbitmq_global_messages_delivered_get_auto_ack_total",
        "counter",
        "Total number of messages fetched with basic.get in automatic acknowledgement mode",
    );
    o.sample(
        "rabbitmq_global_messages_delivered_get_auto_ack_total",
        "",
        totals.get_no_ack,
    );

    let (recv, send) = b.stats.connections.iter().fold((0u64, 0u64), |(r, s), c| {
        use std::sync::atomic::Ordering::Relaxed;
        (r + c.recv_oct.load(Relaxed), s + c.send_oct.load(Relaxed))
    });
    o.family(
        "rabbitmq_connection_incoming_bytes_total",
        "counter",
        "Total number of bytes received on open connections",
    );
    o.sample("rabbitmq_connection_incoming_bytes_total", "", recv);
    o.family(
        "rabbitmq_connection_outgoing_bytes_total",
        "counter",
        "Total number of bytes sent on open connections",
    );
    o.sample("rabbitmq_connection_outgoing_bytes_total", "", send);

    // Per-queue series (rabbitmq_prometheus's /metrics/per-object names).
    let per_queue: [(&str, &str, &str); 6] = [
        (
            "rabbitmq_detailed_queue_messages_ready",
            "gauge",
            "Messages ready to be delivered to consumers",
        ),
        (
            "rabbitmq_detailed_queue_messages_unacked",
            "gauge",
            "Messages delivered to consumers but not yet acknowledged",
        ),
        (
            "rabbitmq_detailed_queue_consumers",
            "gauge",
            "Consumers on a queue",
        ),
        (
            "rabbitmq_detailed_queue_messages_published_total",
            "counter",
            "Total number of messages published to queues",
        ),
        (
            "rabbitmq_detailed_queue_messages_delivered_total",
            "counter",
            "Total number of messages delivered to consumers",
        ),
        (
            "rabbitmq_detailed_queue_messages_acked_total",
            "counter",
            "Total number of messages acknowledged by consumers on a queue",
        ),
    ];
    let rows: Vec<(String, [u64; 6])> = queues
        .iter()
        .map(|q| {
            let (r, _, c) = q.stats();
            let s = q.counters.snap();
            (
                format!(
                    "vhost=\"{}\",queue=\"{}\"",
                    esc(&q.config.vhost),
                    esc(q.name())
                ),
                [
                    r as u64,
                    q.unacked_count(),
                    c as u64,
                    s.publish,
                    s.deliver_get(),
                    s.ack,
                ],
            )
        })
        .collect();
    for (i, (name, kind, help)) in per_queue.iter().enumerate() {
        o.family(name, kind, help);
        for (labels, vals) in &rows {
            o.sample(name, labels, vals[i]);
        }
    }

    o.family(
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
    );
    o.sample("rabbitmq_process_resident_memory_bytes", "", rss_bytes());
    o.family(
        "rabbitmq_process_open_fds",
        "gauge",
        "Open file descriptors",
    );
    o.sample("rabbitmq_process_open_fds", "", fd_count());
    o.family(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
    );
    // rabbitmq_endpoint: which endpoint this is, as rabbitmq_prometheus 3.11+ labels it
    // (the dashboards select on it).
    o.sample(
        "rabbitmq_identity_info",
        &format!(
            "rabbitmq_node=\"{}\",rabbitmq_cluster=\"{}\",rabbitmq_cluster_permanent_id=\"{}\",rabbitmq_endpoint=\"metrics\"",
            esc(&super::json::node_name(&b)),
            esc(&b.config.cluster_name),
            esc(&b.config.cluster_name)
        ),
        1,
    );
    node::render(&mut o, &b, &queues);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        o.0,
    )
}
