//! The management HTTP server: RabbitMQ's management API (same paths, JSON shapes and
//! status codes), the web console at `/`, and Prometheus metrics at `/metrics`.
//!
//! Handlers read snapshots (queue counts under each queue's short lock, the connection
//! registry in [`crate::stats`]) and call the same vhost operations AMQP methods call, so
//! an object declared over HTTP behaves exactly like one declared by a client.

mod access;
mod auth;
mod cluster;
mod console;
mod defs;
mod idle;
pub mod json;
mod metrics;
mod query;
mod quorum;
mod read;
mod shovels;
mod write;

use crate::broker::Broker;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

type B = axum::extract::State<Arc<Broker>>;

/// Binds the management listener and serves it until broker shutdown.
pub async fn start(broker: Arc<Broker>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut shutdown = broker.shutdown_signal();
    let app = router(broker);
    tokio::spawn(async move {
        let r = axum::serve(idle::IdleListener(listener), app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|down| *down).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "management server failed");
        }
    });
    Ok(local)
}

/// The whole HTTP service (also driven without a socket by [`crate::fuzzing::mgmt`]).
pub(crate) fn router(broker: Arc<Broker>) -> Router {
    let api = api_routes()
        // A write made here is replicated through the metadata group (see [`cluster`]).
        .route_layer(axum::middleware::from_fn_with_state(
            broker.clone(),
            cluster::replicate,
        ))
        // Only matched routes and methods authenticate, as in RabbitMQ: an unknown path
        // is 404 and a wrong method 405 before any credentials are looked at.
        .route_layer(axum::middleware::from_fn_with_state(
            broker.clone(),
            auth::require_user,
        ))
        .route("/login", post(auth::login))
        .fallback(|| async { not_found() });
    Router::new()
        .nest("/api", api)
        .route("/metrics", get(metrics::render))
        .merge(console::routes())
        .with_state(broker)
}

/// Applies a management write replicated from another node (see [`cluster`]): the same
/// handler, without authentication (the origin checked it) and without replicating again.
pub async fn apply(
    broker: Arc<Broker>,
    method: &str,
    path: &str,
    body: String,
) -> Result<(), String> {
    cluster::apply(api_routes().with_state(broker), method, path, body).await
}

/// The API's routes, relative to `/api`.
fn api_routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/overview", get(read::overview))
        .route("/cluster-name", get(read::cluster_name))
        .route("/whoami", get(read::whoami))
        .route("/extensions", get(read::extensions))
        .route("/nodes", get(read::nodes))
        .route("/cluster-status", get(cluster::status))
        .route("/cluster/join", post(cluster::join))
        .route(
            "/cluster/nodes/{name}",
            axum::routing::delete(cluster::forget),
        )
        .route(
            "/quorum-queues/{vhost}/{name}/members",
            post(quorum::add_member),
        )
        .route(
            "/quorum-queues/{vhost}/{name}/members/{node}",
            axum::routing::delete(quorum::delete_member),
        )
        .route("/quorum-queues/grow", post(quorum::grow))
        .route("/quorum-queues/shrink", post(quorum::shrink))
        .route("/quorum-queues/rebalance", post(quorum::rebalance))
        .route("/nodes/{node}", get(read::node))
        .route("/connections", get(read::connections))
        .route(
            "/connections/{name}",
            get(read::connection).delete(write::close_connection),
        )
        .route(
            "/connections/{name}/channels",
            get(read::connection_channels),
        )
        .route("/vhosts/{vhost}/connections", get(read::vhost_connections))
        .route("/channels", get(read::channels))
        .route("/channels/{name}", get(read::channel))
        .route("/consumers", get(read::consumers))
        .route("/consumers/{vhost}", get(read::consumers_vhost))
        .route("/exchanges", get(read::exchanges))
        .route("/exchanges/{vhost}", get(read::exchanges_vhost))
        .route(
            "/exchanges/{vhost}/{name}",
            get(read::exchange)
                .put(write::declare_exchange)
                .delete(write::delete_exchange),
        )
        .route("/exchanges/{vhost}/{name}/publish", post(write::publish))
        .route(
            "/exchanges/{vhost}/{name}/bindings/source",
            get(read::exchange_bindings_source),
        )
        .route(
            "/exchanges/{vhost}/{name}/bindings/destination",
            get(read::exchange_bindings_destination),
        )
        .route("/queues", get(read::queues))
        .route("/queues/{vhost}", get(read::queues_vhost))
        .route(
            "/queues/{vhost}/{name}",
            get(read::queue)
                .put(write::declare_queue)
                .delete(write::delete_queue),
        )
        .route(
            "/queues/{vhost}/{name}/contents",
            axum::routing::delete(write::purge_queue),
        )
        .route("/queues/{vhost}/{name}/get", post(write::get_messages))
        .route("/queues/{vhost}/{name}/bindings", get(read::queue_bindings))
        .route("/bindings", get(read::bindings))
        .route("/bindings/{vhost}", get(read::bindings_vhost))
        .route(
            "/bindings/{vhost}/e/{source}/{kind}/{dest}",
            get(read::bindings_between).post(write::bind),
        )
        .route(
            "/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}",
            get(read::binding).delete(write::unbind),
        )
        .route("/vhosts", get(read::vhosts))
        .route(
            "/vhosts/{vhost}",
            get(read::vhost)
                .put(write::put_vhost)
                .delete(write::delete_vhost),
        )
        .route("/vhosts/{vhost}/permissions", get(read::vhost_permissions))
        .route("/users", get(read::users))
        .route(
            "/users/{name}",
            get(read::user)
                .put(write::put_user)
                .delete(write::delete_user),
        )
        .route("/users/{name}/permissions", get(read::user_permissions))
        .route("/permissions", get(read::permissions))
        .route(
            "/permissions/{vhost}/{user}",
            get(read::permission)
                .put(write::put_permission)
                .delete(write::delete_permission),
        )
        .route("/vhost-limits", get(read::vhost_limits))
        .route("/vhost-limits/{vhost}", get(read::vhost_limits_of))
        .route(
            "/vhost-limits/{vhost}/{name}",
            axum::routing::put(write::put_vhost_limit).delete(write::delete_vhost_limit),
        )
        .route("/definitions", get(defs::export).post(defs::import_all))
        .route(
            "/definitions/{vhost}",
            get(defs::export_vhost).post(defs::import_vhost),
        )
        .route("/policies", get(read::policies))
        .route("/policies/{vhost}", get(read::policies_vhost))
        .route(
            "/policies/{vhost}/{name}",
            get(read::policy)
                .put(write::put_policy)
                .delete(write::delete_policy),
        )
        .route("/topic-permissions", get(access::topic_permissions))
        .route(
            "/topic-permissions/{vhost}/{user}",
            get(access::topic_permissions_of)
                .put(access::put_topic_permission)
                .delete(access::delete_topic_permissions),
        )
        .route(
            "/topic-permissions/{vhost}/{user}/{exchange}",
            axum::routing::delete(access::delete_topic_permission),
        )
        .route(
            "/users/{name}/topic-permissions",
            get(access::user_topic_permissions),
        )
        .route(
            "/vhosts/{vhost}/topic-permissions",
            get(access::vhost_topic_permissions),
        )
        .route("/user-limits", get(access::user_limits))
        .route("/user-limits/{user}", get(access::user_limits_of))
        .route(
            "/user-limits/{user}/{name}",
            axum::routing::put(access::put_user_limit).delete(access::delete_user_limit),
        )
        .route("/operator-policies", get(access::operator_policies))
        .route(
            "/operator-policies/{vhost}",
            get(access::operator_policies_vhost),
        )
        .route(
            "/operator-policies/{vhost}/{name}",
            get(access::operator_policy)
                .put(access::put_operator_policy)
                .delete(access::delete_operator_policy),
        )
        .route("/parameters", get(shovels::parameters))
        .route(
            "/parameters/{component}",
            get(shovels::parameters_component),
        )
        .route(
            "/parameters/{component}/{vhost}",
            get(shovels::parameters_vhost),
        )
        .route(
            "/parameters/{component}/{vhost}/{name}",
            get(shovels::parameter)
                .put(shovels::put_parameter)
                .delete(shovels::delete_parameter),
        )
        .route("/shovels", get(shovels::shovels))
        .route("/shovels/{vhost}", get(shovels::shovels_vhost))
        .route("/health/checks/alarms", get(read::alarms))
        .route("/health/checks/local-alarms", get(read::alarms))
        .route("/aliveness-test/{vhost}", get(write::aliveness))
        // columns, sort, pagination and name filters on what the handlers answer.
        .route_layer(axum::middleware::from_fn(query::shape))
}

/// An API error in RabbitMQ's shape: `{"error": ..., "reason": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.error, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED && self.error == "not_authorized" {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        r
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

pub fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: "Object Not Found",
        reason: "Not Found".into(),
    }
}

pub fn bad_request(reason: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        error: "bad_request",
        reason: reason.into(),
    }
}

pub fn not_authorised(reason: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        error: "not_authorized",
        reason: reason.into(),
    }
}

/// 401 for an authenticated user without the right (RabbitMQ's `not_authorised`, spelt so,
/// without a `www-authenticate` challenge).
pub fn refused(reason: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        error: "not_authorised",
        reason: reason.into(),
    }
}

/// An AMQP error from a vhost operation, as the API reports it (RabbitMQ: 400 for
/// precondition/inequivalence, 404 for not_found, 403 for access refused).
pub fn amqp_error(e: crate::error::AmqpError) -> ApiError {
    let text = e.text.to_string();
    let reason = text
        .split_once(" - ")
        .map(|(_, r)| r.to_string())
        .unwrap_or(text);
    match e.code {
        404 => not_found(),
        403 => ApiError {
            status: StatusCode::FORBIDDEN,
            error: "access_refused",
            reason,
        },
        _ => bad_request(reason),
    }
}

/// 201 Created (new object) or 204 No Content (updated), as RabbitMQ answers PUTs.
pub fn created_or_updated(created: bool) -> Response {
    if created {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}
