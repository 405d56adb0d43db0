//! RabbitMQ's JSON shapes for queues, exchanges, bindings, connections, channels and
//! consumers, built from snapshots of broker state.

use crate::broker::Broker;
use crate::queue::consumer::ChannelShared;
use crate::queue::Queue;
use crate::stats::{ConnShared, Snap, FIELDS};
use crate::store::definitions::table_to_json;
use crate::vhost::{Dest, Exchange, VHost};
use amq_protocol::types::FieldTable;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The node name reported everywhere (RabbitMQ's `node`).
pub fn node_name(b: &Broker) -> String {
    if let Some(c) = &b.config.cluster {
        c.node_name.clone()
    } else if b.config.cluster_name.contains('@') {
        b.config.cluster_name.clone()
    } else {
        format!("warren@{}", b.config.cluster_name)
    }
}

/// A field table (client properties, arguments) as JSON.
pub fn field_table(t: &FieldTable) -> Value {
    Value::Object(table_to_json(t))
}

/// `{"rate": r}`
pub fn details(rate: f64) -> Value {
    json!({ "rate": round(rate) })
}

fn round(r: f64) -> f64 {
    (r * 10.0).round() / 10.0
}

/// Counters Warren does not keep yet; reported as 0 so the shapes match.
const ZERO_FIELDS: &[&str] = &[
    "get_empty",
    "confirm",
    "return_unroutable",
    "drop_unroutable",
];

/// Broker- and vhost-wide `message_stats` fields.
pub const ALL_FIELDS: &[&str] = &[
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "ack",
    "redeliver",
    "deliver_get",
    "get_empty",
    "confirm",
    "return_unroutable",
    "drop_unroutable",
];

/// `message_stats` with `<field>` and `<field>_details` for each counter, plus
/// `deliver_get`; `only` limits the fields (RabbitMQ omits those an object never has).
pub fn message_stats(s: &Snap, rates: &[f64; 7], only: &[&str]) -> Value {
    let mut m = Map::new();
    let vals = s.values();
    for (i, f) in FIELDS.iter().enumerate() {
        if !only.is_empty() && !only.contains(f) {
            continue;
        }
        m.insert((*f).to_string(), json!(vals[i]));
        m.insert(format!("{f}_details"), details(rates[i]));
    }
    for f in ZERO_FIELDS {
        if only.contains(f) || (only.is_empty() && *f == "get_empty") {
            m.insert((*f).to_string(), json!(0));
            m.insert(format!("{f}_details"), details(0.0));
        }
    }
    if only.is_empty() || only.contains(&"deliver_get") {
        let dg_rate = rates[1] + rates[2] + rates[3] + rates[4];
        m.insert("deliver_get".into(), json!(s.deliver_get()));
        m.insert("deliver_get_details".into(), details(dg_rate));
    }
    Value::Object(m)
}

pub fn queue(b: &Broker, q: &Arc<Queue>) -> Value {
    let (ready, ready_bytes, consumers) = q.stats();
    let unacked = q.unacked_count();
    let snap = q.counters.snap();
    let rates = b.stats.queue_rates(q);
    let policy = b.policies.effective(&q.config.vhost, q.name(), "queues");
    let effective = policy.definition.clone().unwrap_or_else(|| json!({}));
    let mut v = json!({
        "name": q.name(),
        "vhost": q.config.vhost,
        "durable": q.config.durable,
        "auto_delete": q.config.auto_delete,
        "exclusive": q.config.exclusive_owner.is_some(),
        "arguments": field_table(&q.config.arguments),
        // In a cluster a durable classic queue lives on its home node (RabbitMQ's
        // `node`: where the queue process runs); "down" while that node is unreachable.
        "node": q.home().map(str::to_string).unwrap_or_else(|| node_name(b)),
        "type": q.queue_type().as_str(),
        "state": if q.home_down().is_some() { "down" } else { "running" },
        "policy": policy.policy,
        "operator_policy": policy.operator_policy,
        "effective_policy_definition": effective,
        "exclusive_consumer_tag": null,
        "single_active_consumer_tag": null,
        "consumers": consumers,
        "consumer_capacity": if consumers > 0 { 1.0 } else { 0.0 },
        "consumer_utilisation": if consumers > 0 { 1.0 } else { 0.0 },
        "messages": ready as u64 + unacked,
        "messages_details": details(0.0),
        "messages_ready": ready,
        "messages_ready_details": details(0.0),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": details(0.0),
        "messages_ram": ready as u64 + unacked,
        "messages_ready_ram": ready,
        "messages_unacknowledged_ram": unacked,
        "messages_persistent": 0,
        "messages_paged_out": 0,
        "message_bytes": ready_bytes,
        "message_bytes_ready": ready_bytes,
        "message_bytes_unacknowledged": 0,
        "message_bytes_ram": ready_bytes,
        "message_bytes_persistent": 0,
        "message_bytes_paged_out": 0,
        "head_message_timestamp": null,
        "memory": 0,
        "garbage_collection": {},
        "reductions": 0,
        "reductions_details": details(0.0),
        "recoverable_slaves": null,
        "backing_queue_status": {"mode": "default", "len": ready, "version": 1},
        "message_stats": message_stats(&snap, &rates, &[]),
    });
    if q.queue_type() != crate::queue::args::QueueType::Classic {
        // A replicated type's members, as RabbitMQ reports them (one node here).
        let node = node_name(b);
        if let Some(m) = v.as_object_mut() {
            m.insert("leader".into(), json!(node));
            m.insert("members".into(), json!([node]));
            m.insert("online".into(), json!([node]));
            if let Some(members) = q.quorum_members() {
                // A cluster's quorum queue: its Raft group's members; the queue's `node`
                // is its leader (as RabbitMQ reports it).
                let leader = q.quorum_leader();
                let online = q.quorum_online().unwrap_or_default();
                m.insert("leader".into(), json!(leader));
                m.insert("node".into(), json!(leader));
                m.insert("members".into(), json!(members));
                m.insert("online".into(), json!(online));
            }
            if q.is_quorum() {
                m.insert(
                    "delivery_limit".into(),
                    json!(q.effective_args().delivery_limit),
                );
            }
        }
    }
    if let (Some(st), Some(m)) = (q.stream(), v.as_object_mut()) {
        stream_fields(st, m);
        if let Some(r) = st.replica() {
            // Replicated: RabbitMQ reports the leader as `node`, every member, and the
            // members that are running.
            let p = r.placement();
            let running: Vec<String> = b
                .meta
                .get()
                .map(|meta| {
                    meta.status()
                        .members
                        .into_iter()
                        .filter(|n| n.running)
                        .map(|n| n.name)
                        .collect()
                })
                .unwrap_or_default();
            let online: Vec<&String> = p.members.iter().filter(|n| running.contains(n)).collect();
            m.insert("node".into(), json!(p.leader));
            m.insert("leader".into(), json!(p.leader));
            m.insert("members".into(), json!(p.members));
            m.insert("online".into(), json!(online));
            m.insert("epoch".into(), json!(p.epoch));
        }
    }
    v
}

/// What RabbitMQ's stream info keys add (`segments`, the offsets, the first timestamp).
fn stream_fields(s: &crate::queue::stream::Stream, m: &mut serde_json::Map<String, Value>) {
    let (segments, bytes, first_ts) = s.info();
    m.insert("segments".into(), json!(segments));
    m.insert("first_offset".into(), json!(s.first_offset()));
    m.insert(
        "committed_offset".into(),
        json!(s.committed().checked_sub(1)),
    );
    m.insert("first_timestamp".into(), json!(first_ts));
    m.insert("message_bytes".into(), json!(bytes));
    m.insert("messages_persistent".into(), json!(s.message_count()));
}

pub fn exchange(vhost: &VHost, x: &Exchange) -> Value {
    json!({
        "name": &*x.name,
        "vhost": vhost.name,
        "type": x.type_name(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": field_table(&x.arguments),
        "user_who_performed_action": "rmq-internal",
        "policy": null,
    })
}

/// RabbitMQ's `properties_key`: "~" for an empty key without arguments, the routing key
/// otherwise (with a hash of the arguments when there are any).
pub fn properties_key(rk: &str, args: &FieldTable) -> String {
    let base = if rk.is_empty() {
        "~".to_string()
    } else {
        percent_encode(rk)
    };
    if args.inner().is_empty() {
        base
    } else {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&field_table(args))
            .unwrap_or_default()
            .hash(&mut h);
        format!("{base}~{:x}", h.finish() & 0xffff_ffff)
    }
}

pub fn percent_encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

pub fn binding(vhost: &str, source: &str, rk: &str, args: &FieldTable, dest: &Dest) -> Value {
    binding_raw(vhost, source, dest.name(), dest.kind(), rk, args)
}

pub fn binding_raw(
    vhost: &str,
    source: &str,
    dest: &str,
    kind: &str,
    rk: &str,
    args: &FieldTable,
) -> Value {
    json!({
        "source": source,
        "vhost": vhost,
        "destination": dest,
        "destination_type": kind,
        "routing_key": rk,
        "arguments": field_table(args),
        "properties_key": properties_key(rk, args),
    })
}

/// Every binding of a vhost: the default exchange's implicit ones first, as RabbitMQ lists.
pub fn bindings(vhost: &VHost) -> Vec<Value> {
    let mut out = Vec::new();
    let mut queues = vhost.queues();
    queues.sort_by(|a, b| a.name().cmp(b.name()));
    for q in &queues {
        out.push(binding_raw(
            &vhost.name,
            "",
            q.name(),
            "queue",
            q.name(),
            &FieldTable::default(),
        ));
    }
    let mut xs = vhost.exchanges();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for x in xs {
        if x.name.is_empty() {
            continue;
        }
        let mut bs = x.bindings.read().bindings();
        bs.sort_by(|a, b| (a.2.name(), &a.0).cmp(&(b.2.name(), &b.0)));
        for (rk, args, dest) in bs {
            out.push(binding(&vhost.name, &x.name, &rk, &args, &dest));
        }
    }
    out
}

pub fn connection(b: &Broker, c: &ConnShared) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let (recv_rate, send_rate) = b.stats.connection_rates(c.id);
    json!({
        "name": c.name,
        "node": node_name(b),
        "type": "network",
        "state": c.state(),
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": "PLAIN",
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "host": c.local.ip().to_string(),
        "port": if c.tls { b.config.tls.as_ref().map_or(0, |t| t.port) } else { c.local.port() },
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "ssl": c.tls,
        "ssl_protocol": null,
        "ssl_key_exchange": null,
        "ssl_cipher": null,
        "ssl_hash": null,
        "peer_cert_subject": null,
        "peer_cert_issuer": null,
        "peer_cert_validity": null,
        "timeout": c.heartbeat,
        "frame_max": c.frame_max,
        "channel_max": c.channel_max,
        "channels": c.open_channels().len(),
        "connected_at": c.connected_at,
        "client_properties": c.client_properties,
        "recv_oct": c.recv_oct.load(Relaxed),
        "recv_oct_details": details(recv_rate),
        "send_oct": c.send_oct.load(Relaxed),
        "send_oct_details": details(send_rate),
        "recv_cnt": c.recv_cnt.load(Relaxed),
        "send_cnt": c.send_cnt.load(Relaxed),
        "send_pend": 0,
        "reductions": 0,
        "reductions_details": details(0.0),
        "garbage_collection": {},
    })
}

/// Consumers per channel, from the queues (consumers live there).
pub fn consumers_of(b: &Broker) -> Vec<(Arc<Queue>, Arc<crate::queue::consumer::Consumer>)> {
    let mut out = Vec::new();
    for v in b.vhosts() {
        for q in v.queues() {
            for c in q.consumers() {
                out.push((q.clone(), c));
            }
        }
    }
    out
}

pub fn channel_name(c: &ConnShared, id: u16) -> String {
    format!("{} ({id})", c.name)
}

/// A channel; `consumers` and `prefetch` come from the queues' consumer lists.
pub fn channel(
    b: &Broker,
    c: &ConnShared,
    ch: &ChannelShared,
    consumers: usize,
    prefetch: u32,
) -> Value {
    use std::sync::atomic::Ordering::SeqCst;
    let snap = Snap::default();
    json!({
        "name": channel_name(c, ch.id),
        "node": node_name(b),
        "number": ch.id,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "state": "running",
        "connection_details": {"name": c.name, "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()},
        "consumer_count": consumers,
        "messages_unacknowledged": ch.unacked.load(SeqCst),
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "prefetch_count": prefetch,
        "global_prefetch_count": ch.global_prefetch.load(SeqCst),
        "confirm": false,
        "transactional": false,
        "pending_raft_commands": 0,
        "idle_since": null,
        "garbage_collection": {},
        "reductions": 0,
        "reductions_details": details(0.0),
        // TODO: per-channel counters; channels report zeros, connections and queues are real.
        "message_stats": message_stats(&snap, &[0.0; 7], &["publish", "confirm", "return_unroutable", "drop_unroutable"]),
    })
}

pub fn consumer(
    b: &Broker,
    q: &Queue,
    c: &crate::queue::consumer::Consumer,
    conn: Option<&ConnShared>,
) -> Value {
    let (conn_name, peer_host, peer_port, ch_name) = match conn {
        Some(cs) => (
            cs.name.clone(),
            cs.peer.ip().to_string(),
            cs.peer.port(),
            channel_name(cs, c.channel.id),
        ),
        None => (String::new(), String::new(), 0, String::new()),
    };
    json!({
        "arguments": field_table(&c.arguments),
        "ack_required": !c.no_ack,
        "active": true,
        "activity_status": "up",
        "channel_details": {
            "connection_name": conn_name,
            "name": ch_name,
            "node": node_name(b),
            "number": c.channel.id,
            "peer_host": peer_host,
            "peer_port": peer_port,
            "user": conn.map(|c| c.user.clone()).unwrap_or_default(),
        },
        "consumer_tag": c.tag.as_str(),
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch,
        "queue": {"name": q.name(), "vhost": q.config.vhost},
    })
}
