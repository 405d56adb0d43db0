//! Warren's routes for quorum queue membership in a cluster (RabbitMQ 3.10 has these in
//! `rabbitmq-queues` only): `warren-ctl add_member`, `delete_member`, `grow`, `shrink`,
//! `rebalance` call them. Administrators only.

use super::{bad_request, ApiError, ApiResult, B};
use crate::cluster::qmembers;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

fn unavailable(reason: String) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: "cluster_unavailable",
        reason,
    }
}

fn field<'a>(body: &'a Value, key: &str) -> ApiResult<&'a str> {
    body.get(key)
        .and_then(|n| n.as_str())
        .ok_or_else(|| bad_request(format!("{key} not given")))
}

/// A refusal (not found, not a member) is 400; a cluster that cannot commit, 503.
fn failed(e: String) -> ApiError {
    if e.contains("not found") || e.contains("member") || e.contains("without --cluster") {
        bad_request(e)
    } else {
        unavailable(e)
    }
}

/// `POST /api/quorum-queues/{vhost}/{name}/members` `{"node": "n4"}`.
pub async fn add_member(
    State(b): B,
    Path((vhost, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult {
    let node = field(&body, "node")?;
    qmembers::add_member(&b, &vhost, &name, node)
        .await
        .map_err(failed)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/quorum-queues/{vhost}/{name}/members/{node}`.
pub async fn delete_member(
    State(b): B,
    Path((vhost, name, node)): Path<(String, String, String)>,
) -> ApiResult {
    qmembers::delete_member(&b, &vhost, &name, &node)
        .await
        .map_err(failed)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn outcome(o: qmembers::Outcome) -> Value {
    Value::Array(
        o.into_iter()
            .map(|(vhost, name, error)| {
                json!({"vhost": vhost, "name": name, "result": error.unwrap_or_else(|| "ok".into())})
            })
            .collect(),
    )
}

/// `POST /api/quorum-queues/grow` `{"node": "n4", "strategy": "all"|"even", "vhost"?}`.
pub async fn grow(State(b): B, Json(body): Json<Value>) -> ApiResult {
    let node = field(&body, "node")?;
    let even = match body
        .get("strategy")
        .and_then(|s| s.as_str())
        .unwrap_or("all")
    {
        "all" => false,
        "even" => true,
        other => return Err(bad_request(format!("strategy '{other}': all or even"))),
    };
    let vhost = body.get("vhost").and_then(|v| v.as_str());
    Ok(Json(outcome(qmembers::grow(&b, node, even, vhost).await)).into_response())
}

/// `POST /api/quorum-queues/shrink` `{"node": "n3", "vhost"?}`.
pub async fn shrink(State(b): B, Json(body): Json<Value>) -> ApiResult {
    let node = field(&body, "node")?;
    let vhost = body.get("vhost").and_then(|v| v.as_str());
    Ok(Json(outcome(qmembers::shrink(&b, node, vhost).await)).into_response())
}

/// `POST /api/quorum-queues/rebalance` `{"vhost"?}`: leaders moved.
pub async fn rebalance(State(b): B, Json(body): Json<Value>) -> ApiResult {
    let vhost = body.get("vhost").and_then(|v| v.as_str());
    let moved = qmembers::rebalance(&b, vhost).await.map_err(failed)?;
    Ok(Json(json!({ "leaders_moved": moved })).into_response())
}
