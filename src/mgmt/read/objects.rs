//! Exchanges, queues and bindings (`/api/exchanges`, `/api/queues`, `/api/bindings` and
//! their per-vhost and per-object forms).

use super::*;

/// An exchange's JSON; an x-delayed-message exchange also shows `messages_delayed`, as the
/// plugin's `info/1` adds it to RabbitMQ's exchange items.
fn exchange_json(b: &Broker, v: &crate::vhost::VHost, x: &crate::vhost::Exchange) -> Value {
    let mut j = json::exchange(v, x);
    if x.delayed {
        let n = b.delayed.get().map_or(0, |d| d.count(&v.name, &x.name));
        j["messages_delayed"] = json!(n);
    }
    j
}

/// The objects `each` lists for every vhost the caller may see (all of them, or the one
/// named: 404 when it does not exist).
fn per_vhost(
    b: &Broker,
    me: &Caller,
    vhost: Option<&str>,
    each: impl Fn(&crate::vhost::VHost) -> Vec<Value>,
) -> ApiResult {
    if vhost.is_some_and(|v| b.vhost(v).is_none()) {
        return Err(not_found());
    }
    let vs = visible_vhosts(b, me);
    list(
        vs.iter()
            .filter(|v| vhost.is_none_or(|n| v.name == n))
            .flat_map(|v| each(v))
            .collect(),
    )
}

fn exchanges_in(b: &Broker, v: &crate::vhost::VHost) -> Vec<Value> {
    let mut xs = v.exchanges();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    xs.iter().map(|x| exchange_json(b, v, x)).collect()
}

pub async fn exchanges(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    per_vhost(&b, &me, None, |v| exchanges_in(&b, v))
}

pub async fn exchanges_vhost(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(v): Path<String>,
) -> ApiResult {
    per_vhost(&b, &me, Some(&v), |vh| exchanges_in(&b, vh))
}

pub async fn exchange(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    let x = vh.exchange(&name).ok_or_else(not_found)?;
    let mut j = exchange_json(&b, &vh, &x);
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
    bindings_where(&vh, |x| x["source"] == name.as_str())
}

/// The vhost's bindings that `keep` selects.
fn bindings_where(vh: &crate::vhost::VHost, keep: impl Fn(&Value) -> bool) -> ApiResult {
    list(json::bindings(vh).into_iter().filter(|x| keep(x)).collect())
}

pub async fn exchange_bindings_destination(
    axum::extract::State(b): B,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult {
    let vh = b.vhost(&v).ok_or_else(not_found)?;
    vh.exchange(&name).ok_or_else(not_found)?;
    bindings_where(&vh, |x| {
        x["destination"] == name.as_str() && x["destination_type"] == "exchange"
    })
}

fn queues_in(b: &Broker, v: &crate::vhost::VHost) -> Vec<Value> {
    let mut qs = v.queues();
    qs.sort_by(|a, b| a.name().cmp(b.name()));
    qs.iter().map(|q| json::queue(b, q)).collect()
}

pub async fn queues(axum::extract::State(b): B, Extension(me): Me) -> ApiResult {
    per_vhost(&b, &me, None, |v| queues_in(&b, v))
}

pub async fn queues_vhost(
    axum::extract::State(b): B,
    Extension(me): Me,
    Path(v): Path<String>,
) -> ApiResult {
    per_vhost(&b, &me, Some(&v), |vh| queues_in(&b, vh))
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
    bindings_where(&vh, |x| {
        x["destination"] == name.as_str() && x["destination_type"] == "queue"
    })
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
