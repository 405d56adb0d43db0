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
pub use connections::*;

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

pub fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm.as_str(),
        "tags": u.tags,
        "limits": {},
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
    list(vec![node_json(&b)])
}

pub async fn node(axum::extract::State(b): B, Path(name): Path<String>) -> ApiResult {
    if name != node_name(&b) {
        return Err(not_found());
    }
    ok(node_json(&b))
}

fn exchanges_json(b: &Broker, me: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let vs = visible_vhosts(b, me);
    for v in vs.iter().filter(|v| vhost.is_none_or(|n| v.name == n)) {
        let mut xs = v.exchanges();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(xs.iter().map(|x| json::exchange(v, x)));
    }
    out
}

pub async fn exchanges(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    list(exchanges_json(&b, &me, None))
}

pub async fn exchanges_vhost(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(v): Path<String>,
) -> ApiResult {
    if b.vhost(&v).is_none() {
        return Err(not_found());
    }
    list(exchanges_json(&b, &me, Some(&v)))
}

pub async fn exchange(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    let x = vh.exchange(&name).ok_or_else(not_found)?;
    let mut j = json::exchange(&vh, &x);
    j["incoming"] = json!([]);
    j["outgoing"] = json!([]);
    ok(j)
}

pub async fn exchange_bindings_source(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    vh.exchange(&name).ok_or_else(not_found)?;
    list(
        json::bindings(&vh)
            .into_iter()
            .filter(|x| x["source"] == name.as_str())
            .collect(),
    )
}

pub async fn exchange_bindings_destination(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    vh.exchange(&name).ok_or_else(not_found)?;
    list(
        json::bindings(&vh)
            .into_iter()
            .filter(|x| x["destination"] == name.as_str() && x["destination_type"] == "exchange")
            .collect(),
    )
}

fn queues_json(b: &Broker, me: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let vs = visible_vhosts(b, me);
    for v in vs.iter().filter(|v| vhost.is_none_or(|n| v.name == n)) {
        let mut qs = v.queues();
        qs.sort_by(|a, b| a.name().cmp(b.name()));
        out.extend(qs.iter().map(|q| json::queue(b, q)));
    }
    out
}

pub async fn queues(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    list(queues_json(&b, &me, None))
}

pub async fn queues_vhost(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(v): Path<String>,
) -> ApiResult {
    if b.vhost(&v).is_none() {
        return Err(not_found());
    }
    list(queues_json(&b, &me, Some(&v)))
}

pub async fn queue(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    let q = vh.queue(&name).ok_or_else(not_found)?;
    let mut j = json::queue(&b, &q);
    let conns = sorted_conns(&b, None);
    j["consumer_details"] = Value::Array(
        q.consumers()
            .iter()
            .map(|c| {
                let owner = conns.iter().find(|cs| {
                    cs.open_channels()
                        .iter()
                        .any(|ch| Arc::ptr_eq(ch, &c.channel))
                });
                json::consumer(&b, &q, c, owner.map(|o| &**o))
            })
            .collect(),
    );
    j["incoming"] = json!([]);
    j["deliveries"] = json!([]);
    ok(j)
}

pub async fn queue_bindings(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    vh.queue(&name).ok_or_else(not_found)?;
    list(
        json::bindings(&vh)
            .into_iter()
            .filter(|x| x["destination"] == name.as_str() && x["destination_type"] == "queue")
            .collect(),
    )
}

pub async fn bindings(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    let vs = visible_vhosts(&b, &me);
    list(vs.iter().flat_map(|v| json::bindings(v)).collect())
}

pub async fn bindings_vhost(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    list(json::bindings(&vh))
}

/// `q` or `e` in binding paths.
pub fn dest_kind(k: &str) -> Option<&'static str> {
    match k {
        "q" => Some("queue"),
        "e" => Some("exchange"),
        _ => None,
    }
}

fn between(b: &Broker, v: &str, source: &str, kind: &str, dest: &str) -> ApiResult<Vec<Value>> {
    let vh = b.vhost(v).ok_or_else(not_found)?;
    let kind = dest_kind(kind).ok_or_else(not_found)?;
    vh.exchange(source).ok_or_else(not_found)?;
    let exists = if kind == "queue" {
        vh.queue(dest).is_some()
    } else {
        vh.exchange(dest).is_some()
    };
    if !exists {
        return Err(not_found());
    }
    Ok(json::bindings(&vh)
        .into_iter()
        .filter(|x| {
            x["source"] == source && x["destination"] == dest && x["destination_type"] == kind
        })
        .collect())
}

pub async fn bindings_between(
    axum::extract::State(b): B,
    Path((v, source, kind, dest)): Path<(String, String, String, String)>,
) -> ApiResult {
    list(between(&b, &v, &source, &kind, &dest)?)
}

pub async fn binding(
    axum::extract::State(b): B,
    Path((v, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    between(&b, &v, &source, &kind, &dest)?
        .into_iter()
        .find(|x| x["properties_key"] == props.as_str())
        .map(|x| Json(x).into_response())
        .ok_or_else(not_found)
}

fn vhost_json(b: &Broker, v: &crate::vhost::VHost) -> Value {
    let queues = v.queues();
    let ready: u64 = queues.iter().map(|q| q.stats().0 as u64).sum();
    let unacked: u64 = queues.iter().map(|q| q.unacked_count()).sum();
    let mut totals = crate::stats::Snap::default();
    for q in &queues {
        totals = totals.plus(&q.counters.snap());
    }
    let mut rates = [0.0; 7];
    for q in &queues {
        let r = b.stats.queue_rates(q);
        for i in 0..7 {
            rates[i] += r[i];
        }
    }
    let description = if v.name == b.config.default_vhost {
        "Default virtual host"
    } else {
        ""
    };
    json!({
        "name": v.name,
        "description": description,
        "tags": [],
        "metadata": {"description": description, "tags": []},
        "default_queue_type": "undefined",
        "tracing": false,
        "cluster_state": {node_name(b): "running"},
        "messages": ready + unacked,
        "messages_details": json::details(0.0),
        "messages_ready": ready,
        "messages_ready_details": json::details(0.0),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": json::details(0.0),
        "message_stats": json::message_stats(&totals, &rates, json::ALL_FIELDS),
    })
}

pub async fn vhosts(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    let mut vs: Vec<_> = b
        .vhosts()
        .into_iter()
        .filter(|v| me.sees_vhost(&b, &v.name))
        .collect();
    vs.sort_by(|a, b| a.name.cmp(&b.name));
    list(vs.iter().map(|v| vhost_json(&b, v)).collect())
}

pub async fn vhost(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    ok(vhost_json(&b, &vh))
}

/// Every permission, as RabbitMQ lists them (by user, then vhost).
pub fn permissions_of(b: &Broker) -> Vec<Value> {
    let mut ps = b.permissions();
    ps.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    ps.iter()
        .map(|(user, vhost, p)| {
            json!({"user": user, "vhost": vhost, "configure": p.configure.as_str(),
                   "write": p.write.as_str(), "read": p.read.as_str()})
        })
        .collect()
}

pub async fn permissions(axum::extract::State(b): B) -> ApiResult {
    list(permissions_of(&b))
}

pub async fn permission(
    axum::extract::State(b): B,
    Path((v, u)): Path<(String, String)>,
) -> ApiResult {
    permissions_of(&b)
        .into_iter()
        .find(|p| p["vhost"] == v.as_str() && p["user"] == u.as_str())
        .map(|p| Json(p).into_response())
        .ok_or_else(not_found)
}

pub async fn vhost_permissions(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    list(
        permissions_of(&b)
            .into_iter()
            .filter(|p| p["vhost"] == v.as_str())
            .collect(),
    )
}

pub async fn user_permissions(axum::extract::State(b): B, Path(u): Path<String>) -> ApiResult {
    if !users_of(&b).iter().any(|x| x.name == u) {
        return Err(not_found());
    }
    list(
        permissions_of(&b)
            .into_iter()
            .filter(|p| p["user"] == u.as_str())
            .collect(),
    )
}

pub async fn users(axum::extract::State(b): B) -> ApiResult {
    list(users_of(&b).iter().map(|u| user_json(u)).collect())
}

pub async fn user(axum::extract::State(b): B, Path(name): Path<String>) -> ApiResult {
    users_of(&b)
        .iter()
        .find(|u| u.name == name)
        .map(|u| Json(user_json(u)).into_response())
        .ok_or_else(not_found)
}

pub async fn policies(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    list(
        b.policies
            .all()
            .iter()
            .filter(|p| me.sees_objects_in(&b, &p.vhost))
            .map(|p| p.to_json())
            .collect(),
    )
}

pub async fn policies_vhost(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    list(
        b.policies
            .all()
            .iter()
            .filter(|p| p.vhost == v)
            .map(|p| p.to_json())
            .collect(),
    )
}

pub async fn policy(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let p = b.policies.get(&v, &name).ok_or_else(not_found)?;
    ok(p.to_json())
}

/// 200 `{"status":"ok"}`, or 503 listing the alarms in effect, as RabbitMQ.
pub async fn alarms(axum::extract::State(b): B) -> ApiResult {
    let active = b.alarms.active();
    if active.is_empty() {
        return ok(json!({"status": "ok"}));
    }
    let node = node_name(&b);
    let alarms: Vec<Value> = active
        .iter()
        .map(|r| json!({"node": node, "resource": r.as_str()}))
        .collect();
    Ok((
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": "resource alarm(s) in effect in the cluster", "alarms": alarms})),
    )
        .into_response())
}

/// `[{"vhost": ..., "value": {...}}]` for vhosts with limits.
pub async fn vhost_limits(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    list(
        b.limits
            .all()
            .into_iter()
            .filter(|(v, _)| me.sees_vhost(&b, v))
            .map(|(v, l)| json!({"vhost": v, "value": l.to_json()}))
            .collect(),
    )
}

pub async fn vhost_limits_of(axum::extract::State(b): B, Path(v): Path<String>) -> ApiResult {
    b.vhost(&v).ok_or_else(not_found)?;
    let l = b.limits.get(&v);
    if l.is_empty() {
        return list(vec![]);
    }
    list(vec![json!({"vhost": v, "value": l.to_json()})])
}
