//! Virtual hosts, users, permissions and policies (`/api/vhosts`, `/api/users`,
//! `/api/permissions`, `/api/policies`).

use super::*;

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
        "default_queue_type": v.default_queue_type().unwrap_or_else(|| "undefined".into()),
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
    list(users_of(&b).iter().map(|u| user_json(&b, u)).collect())
}

pub async fn user(axum::extract::State(b): B, Path(name): Path<String>) -> ApiResult {
    users_of(&b)
        .iter()
        .find(|u| u.name == name)
        .map(|u| Json(user_json(&b, u)).into_response())
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
