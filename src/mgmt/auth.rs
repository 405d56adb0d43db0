//! HTTP basic authentication with Warren's users; tags decide access as in RabbitMQ:
//! `administrator` may do everything, `monitoring` may read everything, `management`
//! (and `policymaker`) may use the API for vhosts' objects; users without one of these
//! tags are refused.
//!
//! Vhosts as RabbitMQ's `rabbit_mgmt_util`: a non-administrator reaches a vhost's objects
//! (`/api/queues/{vhost}`, …) only in vhosts it has permissions in (401 otherwise), and
//! listings show only those vhosts' objects ([`Caller::sees_objects_in`]); the vhost list
//! itself is complete for `monitoring` users ([`Caller::sees_vhost`]). Connections,
//! channels and consumers of other users are visible to monitors only
//! ([`Caller::sees_user`]).

use super::not_authorised;
use crate::auth::User;
use crate::broker::Broker;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestExt;
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

    /// RabbitMQ's `is_monitor`: administrator or monitoring.
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    /// RabbitMQ's `is_policymaker`: administrator or policymaker.
    pub fn is_policymaker(&self) -> bool {
        self.is_admin() || self.has("policymaker")
    }

    /// The user has permissions in `vhost` (may log in there).
    fn may_login(&self, b: &Broker, vhost: &str) -> bool {
        b.auth.can_access_vhost(&self.0.name, vhost)
    }

    /// Queues, exchanges, bindings and policies of `vhost` are listed for this user
    /// (RabbitMQ's `filter_vhost`: administrators see all, others their login vhosts).
    pub fn sees_objects_in(&self, b: &Broker, vhost: &str) -> bool {
        self.is_admin() || self.may_login(b, vhost)
    }

    /// `vhost` is in this user's vhost list and totals (`list_visible_vhosts`).
    pub fn sees_vhost(&self, b: &Broker, vhost: &str) -> bool {
        self.is_monitor() || self.may_login(b, vhost)
    }

    /// Connections, channels and consumers of `user` are listed for this user.
    pub fn sees_user(&self, user: &str) -> bool {
        self.is_monitor() || self.0.name == user
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
        || p.starts_with("/topic-permissions")
        || p.starts_with("/user-limits")
        || p.starts_with("/operator-policies")
        || p.starts_with("/parameters")
        || p.starts_with("/shovels")
        || p.starts_with("/quorum-queues")
        || (p.starts_with("/vhosts/") && p.ends_with("/topic-permissions"))
        || (p.starts_with("/vhosts/") && p.ends_with("/permissions"))
        // One vhost's record is the administrators' (RabbitMQ's rabbit_mgmt_wm_vhost).
        || (p.starts_with("/vhosts/") && p.matches('/').count() == 2)
}

fn not_authorised_object() -> Response {
    super::refused("User not authorised to access object").into_response()
}

/// RabbitMQ's per-vhost checks (`is_authorized_vhost` and its variants) for a request
/// naming `vhost` in its path; a vhost that does not exist passes (the handler answers
/// 404).
fn vhost_refused(
    b: &Broker,
    caller: &Caller,
    path: &str,
    vhost: &str,
    has_name: bool,
) -> Option<Response> {
    let p = path.trim_start_matches("/api");
    if caller.is_admin() || b.vhost(vhost).is_none() {
        return None;
    }
    if p.starts_with("/policies/") && has_name {
        // Reading or writing one policy needs policymaker as well.
        return (!(caller.is_policymaker() && caller.may_login(b, vhost)))
            .then(not_authorised_object);
    }
    let allowed = if p.starts_with("/consumers/") {
        true // filtered by user in the handler
    } else if p.starts_with("/vhost-limits/") {
        caller.sees_vhost(b, vhost)
    } else {
        caller.may_login(b, vhost)
    };
    (!allowed).then(|| super::refused("User not authorised to access virtual host").into_response())
}

fn forbidden() -> Response {
    super::refused("Not administrator user").into_response()
}

/// What the `Authorization` header holds, read as RabbitMQ's management plugin does
/// (`rabbit_mgmt_util:is_authorized`, cowboy's header parser).
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No header: 401 with an empty body and the Basic challenge.
    Missing,
    /// `Basic` with a user and password (scheme case-insensitive, spaces around ignored).
    Basic(String, String),
    /// `Bearer` (an OAuth 2 token, which Warren does not accept): 401 `Login failed`.
    Bearer,
    /// Not base64, no `:`, not UTF-8, an empty `Basic` or another scheme: 400, empty body.
    Malformed,
}

pub fn credentials(header: Option<&[u8]>) -> Credentials {
    let Some(raw) = header else {
        return Credentials::Missing;
    };
    let Ok(v) = std::str::from_utf8(raw) else {
        return Credentials::Malformed;
    };
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Bearer;
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Malformed;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok());
    match decoded.as_deref().and_then(|c| c.split_once(':')) {
        Some((u, p)) => Credentials::Basic(u.to_string(), p.to_string()),
        None => Credentials::Malformed,
    }
}

/// 401 with the Basic challenge and no body: RabbitMQ's answer to a request without
/// credentials.
fn challenge() -> Response {
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"RabbitMQ Management\"",
        )],
    )
        .into_response()
}

/// `POST /api/login`: RabbitMQ's OAuth 2 token login; without an OAuth backend every token
/// is refused, with or without basic credentials, as in RabbitMQ.
pub async fn login() -> Response {
    not_authorised("Login failed").into_response()
}

pub async fn require_user(State(b): State<Arc<Broker>>, mut req: Request, next: Next) -> Response {
    let creds = credentials(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    let (user, pass) = match creds {
        Credentials::Basic(u, p) => (u, p),
        Credentials::Missing => return challenge(),
        Credentials::Malformed => return axum::http::StatusCode::BAD_REQUEST.into_response(),
        Credentials::Bearer => return not_authorised("Login failed").into_response(),
    };
    let Some(u) = b.authenticate(&user, &pass) else {
        tracing::warn!(user, "management login failed");
        return not_authorised("Login failed").into_response();
    };
    let caller = Caller(u);
    if !MANAGEMENT_TAGS.iter().any(|t| caller.has(t)) {
        return super::refused("Not management user").into_response();
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
    if path.contains("/policies") && write && !caller.is_policymaker() {
        return forbidden();
    }
    if let Ok(params) = req.extract_parts::<axum::extract::RawPathParams>().await {
        let vhost = params
            .iter()
            .find(|(k, _)| *k == "vhost")
            .map(|(_, v)| v.to_string());
        let has_name = params.iter().any(|(k, _)| k == "name");
        if let Some(v) = vhost {
            if let Some(r) = vhost_refused(&b, &caller, &path, &v, has_name) {
                tracing::warn!(user = %caller.0.name, vhost = %v, "management access to vhost refused");
                return r;
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::{credentials, Credentials::*};

    #[test]
    fn authorization_header_as_rabbitmq_reads_it() {
        let basic = |u: &str, p: &str| Basic(u.into(), p.into());
        assert_eq!(credentials(None), Missing);
        assert_eq!(
            credentials(Some(b"Basic Z3Vlc3Q6Z3Vlc3Q=")),
            basic("guest", "guest")
        );
        assert_eq!(
            credentials(Some(b"basic  Z3Vlc3Q6Z3Vlc3Q= ")),
            basic("guest", "guest")
        );
        assert_eq!(credentials(Some(b"Basic Og==")), basic("", ""));
        assert_eq!(
            credentials(Some(b"Basic Z3Vlc3Q6OmE6")),
            basic("guest", ":a:")
        );
        assert_eq!(credentials(Some(b"Bearer abc")), Bearer);
        for bad in [
            &b"Basic"[..],
            b"Basic ",
            b"Basic !!!",
            b"Basic Z3Vlc3Q=",
            b"Digest x",
            b"",
            b"\xff\xfe",
            b"Basic /w==",
        ] {
            assert_eq!(credentials(Some(bad)), Malformed, "{bad:?}");
        }
    }
}
