//! Connections, channels and consumers (`/api/connections`, `/api/channels`,
//! `/api/consumers` and their per-vhost and per-connection forms).

use super::*;

pub async fn connections(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    list(
        sorted_conns(&b, Some(&me))
            .iter()
            .map(|c| json::connection(&b, c))
            .collect(),
    )
}

pub async fn vhost_connections(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(v): Path<String>,
) -> ApiResult {
    if b.vhost(&v).is_none() {
        return Err(not_found());
    }
    list(
        sorted_conns(&b, Some(&me))
            .iter()
            .filter(|c| c.vhost == v)
            .map(|c| json::connection(&b, c))
            .collect(),
    )
}

/// 401 unless the caller may see `user`'s connections and channels.
fn own(me: &Caller, user: &str) -> ApiResult<()> {
    if me.sees_user(user) {
        Ok(())
    } else {
        Err(crate::mgmt::refused("User not authorised to access object"))
    }
}

pub async fn connection(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(name): Path<String>,
) -> ApiResult {
    let c = b.stats.connection_by_name(&name).ok_or_else(not_found)?;
    own(&me, &c.user)?;
    ok(json::connection(&b, &c))
}

/// Channels of the given connections, with their consumer counts.
fn channels_of(b: &Broker, conns: &[Arc<ConnShared>]) -> Vec<Value> {
    let consumers = json::consumers_of(b);
    let mut out = Vec::new();
    for c in conns {
        for ch in c.open_channels() {
            let mine: Vec<_> = consumers
                .iter()
                .filter(|(_, k)| Arc::ptr_eq(&k.channel, &ch))
                .collect();
            let prefetch = mine.iter().map(|(_, k)| k.prefetch).max().unwrap_or(0);
            out.push(json::channel(b, c, &ch, mine.len(), prefetch));
        }
    }
    out
}

pub async fn channels(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    list(channels_of(&b, &sorted_conns(&b, Some(&me))))
}

pub async fn connection_channels(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(name): Path<String>,
) -> ApiResult {
    let c = b.stats.connection_by_name(&name).ok_or_else(not_found)?;
    own(&me, &c.user)?;
    list(channels_of(&b, &[c]))
}

pub async fn channel(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(name): Path<String>,
) -> ApiResult {
    channels_of(&b, &sorted_conns(&b, Some(&me)))
        .into_iter()
        .find(|c| c["name"] == name)
        .map(|c| Json(c).into_response())
        .ok_or_else(not_found)
}

/// Consumers on the caller's own connections unless it is a monitor.
fn consumers_json(b: &Broker, me: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let conns = sorted_conns(b, Some(me));
    json::consumers_of(b)
        .iter()
        .filter(|(q, _)| vhost.is_none_or(|v| q.config.vhost == v))
        .filter_map(|(q, c)| {
            let owner = conns.iter().find(|cs| {
                cs.open_channels()
                    .iter()
                    .any(|ch| Arc::ptr_eq(ch, &c.channel))
            });
            if owner.is_none() && !me.is_monitor() {
                return None;
            }
            Some(json::consumer(b, q, c, owner.map(|o| &**o)))
        })
        .collect()
}

pub async fn consumers(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    list(consumers_json(&b, &me, None))
}

pub async fn consumers_vhost(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(v): Path<String>,
) -> ApiResult {
    if b.vhost(&v).is_none() {
        return Err(not_found());
    }
    list(consumers_json(&b, &me, Some(&v)))
}
