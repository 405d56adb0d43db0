//! HTTP basic authentication with Warren's users; tags decide access as in RabbitMQ:
//! `administrator` may do everything, `monitoring` may read everything, `management`
//! (and `policymaker`) may use the API for vhosts' objects; users without one of these
//! tags are refused.

use super::{not_authorised, ApiError};
use crate::auth::User;
use crate::broker::Broker;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::sync::Arc;

/// The authenticated user of a request (a request extension).
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<User>);

impl Caller {
    pub fn has(&self, tag: &str) -> bool {
        self.0.has_tag(tag)
    }

    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }
}

const MANAGEMENT_TAGS: &[&str] = &["administrator", "monitoring", "policymaker", "management"];

/// Paths that change users, vhosts, permissions or global definitions: administrators only.
fn admin_only(method: &Method, path: &str) -> bool {
    let write = method != Method::GET && method != Method::HEAD;
    let p = path.trim_start_matches("/api");
    (write
        && (p.starts_with("/users")
            || p.starts_with("/vhosts")
            || p.starts_with("/permissions")
            || p.starts_with("/vhost-limits")
            || p.starts_with("/definitions")))
        || p.starts_with("/users")
        || p.starts_with("/permissions")
        || p.starts_with("/definitions")
}

fn forbidden() -> Response {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        error: "not_authorized",
        reason: "Not administrator user".into(),
    }
    .into_response()
}

pub async fn require_user(State(b): State<Arc<Broker>>, mut req: Request, next: Next) -> Response {
    let creds = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .and_then(|v| String::from_utf8(v).ok());
    let Some((user, pass)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return not_authorised("Login failed").into_response();
    };
    let Some(u) = b.authenticate(user, pass) else {
        tracing::warn!(user, "management login failed");
        return not_authorised("Login failed").into_response();
    };
    let caller = Caller(u);
    if !MANAGEMENT_TAGS.iter().any(|t| caller.has(t)) {
        return not_authorised("Not management user").into_response();
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if admin_only(&method, &path) && !caller.is_admin() {
        // A user may read itself through whoami; everything else here is admin's.
        return forbidden();
    }
    let write = method != Method::GET && method != Method::HEAD;
    if write && caller.has("monitoring") && !caller.is_admin() && !caller.has("management") {
        return forbidden();
    }
    if path.contains("/policies") && write && !(caller.is_admin() || caller.has("policymaker")) {
        return forbidden();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}
