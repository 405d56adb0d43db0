//! GET handlers of the management API.

use super::auth::Caller;
use super::json::{self, node_name};
use super::{not_found, ApiResult, B};
use crate::auth::User;
use crate::broker::Broker;
use crate::stats::ConnShared;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::sync::Arc;

mod connections;
mod objects;
mod registries;
pub use connections::*;
pub use objects::*;
pub use registries::*;

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

fn list(v: Vec<Value>) -> ApiResult {
    ok(Value::Array(v))
}

pub const VERSION: &str = "3.10.8";

/// The users Warren knows, by name.
pub fn users_of(b: &Broker) -> Vec<Arc<User>> {
    let mut v = b.users();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub fn user_json(b: &Broker, u: &User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm.as_str(),
        "tags": u.tags,
        "limits": b.limits.user(&u.name).to_json(),
    })
}

type Me = Extension<Caller>;

/// The connections the caller may see (its own unless it is a monitor; all for `None`),
/// by name.
fn sorted_conns(b: &Broker, c: Option<&Caller>) -> Vec<Arc<ConnShared>> {
    let mut v: Vec<_> = b
        .stats
        .connections
        .iter()
        .filter(|x| c.is_none_or(|c| c.sees_user(&x.user)))
        .map(|x| x.clone())
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn exchange_types() -> Value {
    let t = |n: &str, d: &str| json!({"name": n, "description": d, "enabled": true});
    json!([
        t(
            "direct",
            "AMQP direct exchange, as per the AMQP specification"
        ),
        t(
            "fanout",
            "AMQP fanout exchange, as per the AMQP specification"
        ),
        t(
            "headers",
            "AMQP headers exchange, as per the AMQP specification"
        ),
        t(
            "topic",
            "AMQP topic exchange, as per the AMQP specification"
        ),
        t("x-consistent-hash", "Consistent Hashing Exchange"),
        t(
            "x-random",
            "Randomly picks a binding (queue) to route via (to)."
        ),
        t("x-delayed-message", "Delayed Message Exchange."),
    ])
}

/// The vhosts whose objects the caller sees, by name.
fn visible_vhosts(b: &Broker, c: &Caller) -> Vec<Arc<crate::vhost::VHost>> {
    let mut vs: Vec<_> = b
        .vhosts()
        .into_iter()
        .filter(|v| c.sees_objects_in(b, &v.name))
        .collect();
    vs.sort_by(|a, b| a.name.cmp(&b.name));
    vs
}

/// Totals over what the caller may see; node, listeners and contexts for monitors only
/// (RabbitMQ's `rabbit_mgmt_db:get_overview(User, …)` for other users).
pub async fn overview(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    let vhosts: Vec<_> = b
        .vhosts()
        .into_iter()
        .filter(|v| me.sees_vhost(&b, &v.name))
        .collect();
    let queues: Vec<_> = vhosts.iter().flat_map(|v| v.queues()).collect();
    let conns = sorted_conns(&b, Some(&me));
    let (rates, last) = b.stats.overview();
    let totals = b.stats.totals(&queues);
    let ready: u64 = queues.iter().map(|q| q.stats().0 as u64).sum();
    let unacked: u64 = queues.iter().map(|q| q.unacked_count()).sum();
    let consumers: usize = queues.iter().map(|q| q.stats().2).sum();
    let channels: usize = conns.iter().map(|c| c.open_channels().len()).sum();
    let exchanges: usize = vhosts.iter().map(|v| v.exchanges().len()).sum();
    let _ = last;
    let node = node_name(&b);
    let mgmt_port = b.config.management_port.unwrap_or(0);
    let mut o = json!({
        "management_version": VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]},
        "exchange_types": exchange_types(),
        "product_version": b.config.server_version,
        "product_name": b.config.server_product,
        "rabbitmq_version": VERSION,
        "cluster_name": b.config.cluster_name,
        "erlang_version": "none",
        "erlang_full_version": "Warren (Rust)",
        "release_series_support_status": "supported",
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": json::message_stats(&totals, &rates, json::ALL_FIELDS),
        "churn_rates": churn(&b),
        "queue_totals": {
            "messages": ready + unacked,
            "messages_details": json::details(0.0),
            "messages_ready": ready,
            "messages_ready_details": json::details(0.0),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": json::details(0.0),
        },
        "object_totals": {
            "channels": channels,
            "connections": conns.len(),
            "consumers": consumers,
            "exchanges": exchanges,
            "queues": queues.len(),
        },
        "statistics_db_event_queue": 0,
        "node": node,
        "listeners": [
            {"node": node, "protocol": "amqp", "ip_address": b.config.bind.to_string(), "port": b.config.port, "socket_opts": {}},
            {"node": node, "protocol": "http", "ip_address": b.config.bind.to_string(), "port": mgmt_port, "socket_opts": {}},
        ],
        "contexts": [{"node": node, "description": "RabbitMQ Management", "path": "/", "port": mgmt_port.to_string()}],
    });
    if !me.is_monitor() {
        if let Some(m) = o.as_object_mut() {
            for k in ["node", "listeners", "contexts"] {
                m.remove(k);
            }
        }
    }
    ok(o)
}

/// Object churn; Warren does not count it yet (zeros, in RabbitMQ's shape).
fn churn(_b: &Broker) -> Value {
    let mut m = serde_json::Map::new();
    for k in [
        "channel_closed",
        "channel_created",
        "connection_closed",
        "connection_created",
        "queue_created",
        "queue_declared",
        "queue_deleted",
    ] {
        m.insert(k.into(), json!(0));
        m.insert(format!("{k}_details"), json::details(0.0));
    }
    Value::Object(m)
}

pub async fn cluster_name(axum::extract::State(b): B) -> ApiResult {
    ok(json!({"name": b.config.cluster_name}))
}

pub async fn whoami(Extension(c): Extension<Caller>) -> ApiResult {
    ok(json!({"name": c.0.name, "tags": c.0.tags}))
}

pub async fn extensions() -> ApiResult {
    list(vec![])
}

fn node_json(b: &Broker) -> Value {
    let uptime = crate::stats::now_ms().saturating_sub(b.stats.started_at);
    json!({
        "name": node_name(b),
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "uptime": uptime,
        "processors": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "run_queue": 0,
        "mem_used": rss_bytes(),
        "mem_used_details": json::details(0.0),
        "mem_limit": 0,
        "mem_alarm": b.alarms.active().iter().any(|r| r.as_str() == "memory"),
        "disk_free": 0,
        "disk_free_details": json::details(0.0),
        "disk_free_limit": 50_000_000,
        "disk_free_alarm": b.alarms.active().iter().any(|r| r.as_str() == "disk"),
        "fd_used": fd_count(),
        "fd_used_details": json::details(0.0),
        "fd_total": 1_048_576,
        "sockets_used": b.stats.connections.len(),
        "sockets_used_details": json::details(0.0),
        "sockets_total": 943_626,
        "proc_used": 0,
        "proc_total": 1_048_576,
        "partitions": [],
        "applications": [],
        "contexts": [],
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
        ],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
        "net_ticktime": 60,
        "rates_mode": "basic",
    })
}

/// Resident memory from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

pub fn fd_count() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

pub async fn nodes(axum::extract::State(b): B) -> ApiResult {
    let me = node_json(&b);
    match super::cluster::nodes(&b, me.clone()) {
        Some(all) => list(all),
        None => list(vec![me]),
    }
}

pub async fn node(axum::extract::State(b): B, Path(name): Path<String>) -> ApiResult {
    if name != node_name(&b) {
        return Err(not_found());
    }
    ok(node_json(&b))
}
