//! Users, password hashes, tags and per-vhost permissions, with RabbitMQ's semantics.
//!
//! [`Auth`] is the registry the broker consults on every login and on every operation that
//! names a resource ([`Auth::check`]). It is read far more often than written, so it sits
//! behind `parking_lot::RwLock`s held only for a map lookup (never across `.await`).
//!
//! - [`password`]: RabbitMQ's salted SHA-256/512 hashes, so definitions exports import
//!   unchanged.
//! - [`user`]: [`User`] and its tags.
//! - [`permission`]: [`Permission`] (configure / write / read patterns, unanchored like
//!   RabbitMQ's `re:run`) and [`Access`].
//! - [`access`]: the access-control table (which permission each AMQP method needs) and
//!   RabbitMQ's refusal texts.
//! - [`topic`]: topic permissions (write / read patterns on routing keys of topic
//!   exchanges).

pub mod access;
pub mod password;
pub mod permission;
pub mod topic;
pub mod user;

pub use password::HashingAlgorithm;
pub use permission::{Access, Pattern, Permission};
pub use user::{parse_tags, User};

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a user or permission change was refused. The texts are what RabbitMQ's management
/// API and rabbitmqctl say in the same situations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("user '{0}' already exists")]
    UserExists(String),
    #[error("user '{0}' does not exist")]
    NoSuchUser(String),
    #[error("vhost '{0}' does not exist")]
    NoSuchVHost(String),
    #[error("invalid regular expression '{pattern}': {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("unknown password hashing algorithm '{0}'")]
    UnknownHashingAlgorithm(String),
    #[error("invalid vhost name '{0}'")]
    InvalidVHostName(String),
}

/// The user and permission registry.
#[derive(Debug, Default)]
pub struct Auth {
    /// name → user. Lock held for one lookup or insert.
    users: RwLock<BTreeMap<String, Arc<User>>>,
    /// user → vhost → permission (nested so a lookup by `&str` allocates nothing: it runs
    /// on every publish). Lock held for one lookup or insert.
    permissions: RwLock<BTreeMap<String, BTreeMap<String, Arc<Permission>>>>,
    /// Bumped on every change to `permissions` (taken through `perms_mut`), so a channel
    /// can cache "this user may publish to this exchange" until something changes.
    generation: std::sync::atomic::AtomicU64,
    /// Topic permissions ([`topic`]): user → vhost → exchange. Lock held for one lookup
    /// (a publish to a topic exchange, a binding) or one change.
    topic: RwLock<topic::TopicTable>,
}

impl Auth {
    pub fn new() -> Auth {
        Auth::default()
    }

    /// The permission table for writing; every writer goes through here so the generation
    /// moves on.
    fn perms_mut(
        &self,
    ) -> parking_lot::RwLockWriteGuard<'_, BTreeMap<String, BTreeMap<String, Arc<Permission>>>>
    {
        let guard = self.permissions.write();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        guard
    }

    /// Changes whenever any permission changes (see `perms_mut`).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    // ---------- users ----------

    /// Adds a user; refuses an existing name (`rabbitmqctl add_user` semantics).
    pub fn add_user(&self, user: User) -> Result<(), AuthError> {
        let mut users = self.users.write();
        if users.contains_key(&user.name) {
            return Err(AuthError::UserExists(user.name));
        }
        users.insert(user.name.clone(), Arc::new(user));
        Ok(())
    }

    /// Creates or replaces a user (management API `PUT /api/users/{name}`, definitions
    /// import). Returns true when the user is new.
    pub fn put_user(&self, user: User) -> bool {
        self.users
            .write()
            .insert(user.name.clone(), Arc::new(user))
            .is_none()
    }

    /// Deletes a user and every permission it had.
    pub fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        if self.users.write().remove(name).is_none() {
            return Err(AuthError::NoSuchUser(name.to_string()));
        }
        self.perms_mut().remove(name);
        self.forget_topic(Some(name), None);
        Ok(())
    }

    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.users.read().values().cloned().collect()
    }

    /// Removes every user and permission (restoring a saved user set at start).
    pub fn clear(&self) {
        self.users.write().clear();
        self.perms_mut().clear();
        self.topic.write().clear();
    }

    /// The user, if `password` is theirs.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<Arc<User>> {
        let u = self.user(name)?;
        u.check_password(password).then_some(u)
    }

    // ---------- permissions ----------

    /// Sets a user's permissions in a vhost. The caller checks that the vhost exists.
    pub fn set_permission(&self, user: &str, vhost: &str, p: Permission) -> Result<(), AuthError> {
        if self.user(user).is_none() {
            return Err(AuthError::NoSuchUser(user.to_string()));
        }
        self.perms_mut()
            .entry(user.to_string())
            .or_default()
            .insert(vhost.to_string(), Arc::new(p));
        Ok(())
    }

    /// Removes a user's permissions in a vhost; true when there were some.
    pub fn clear_permission(&self, user: &str, vhost: &str) -> bool {
        let mut perms = self.perms_mut();
        let Some(per_vhost) = perms.get_mut(user) else {
            return false;
        };
        let removed = per_vhost.remove(vhost).is_some();
        if per_vhost.is_empty() {
            perms.remove(user);
        }
        removed
    }

    /// Removes every permission in a vhost (the vhost is being deleted).
    pub fn clear_vhost(&self, vhost: &str) {
        let mut perms = self.perms_mut();
        for per_vhost in perms.values_mut() {
            per_vhost.remove(vhost);
        }
        perms.retain(|_, v| !v.is_empty());
        drop(perms);
        self.forget_topic(None, Some(vhost));
    }

    pub fn permission(&self, user: &str, vhost: &str) -> Option<Arc<Permission>> {
        self.permissions.read().get(user)?.get(vhost).cloned()
    }

    /// Every permission as (user, vhost, permission), sorted by user then vhost.
    pub fn permissions(&self) -> Vec<(String, String, Arc<Permission>)> {
        self.permissions
            .read()
            .iter()
            .flat_map(|(u, per_vhost)| {
                per_vhost
                    .iter()
                    .map(move |(v, p)| (u.clone(), v.clone(), p.clone()))
            })
            .collect()
    }

    /// True when `user` may use `vhost` at all (has any permission entry there), which is
    /// RabbitMQ's vhost-access rule for the internal backend.
    pub fn can_access_vhost(&self, user: &str, vhost: &str) -> bool {
        self.permission(user, vhost).is_some()
    }
}

/// RabbitMQ's `loopback_users`: true when `user` may not log in from `peer` (it is listed
/// and the address is not a loopback one). A refusal looks like a failed login.
pub fn loopback_refused(loopback_users: &[String], user: &str, peer: std::net::IpAddr) -> bool {
    let loopback = match peer {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    };
    !loopback && loopback_users.iter().any(|l| l == user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_users() {
        let only_guest = vec!["guest".to_string()];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(!loopback_refused(&only_guest, "guest", ip("127.0.0.1")));
        assert!(!loopback_refused(&only_guest, "guest", ip("::1")));
        assert!(!loopback_refused(
            &only_guest,
            "guest",
            ip("::ffff:127.0.0.1")
        ));
        assert!(loopback_refused(&only_guest, "guest", ip("192.0.2.7")));
        assert!(!loopback_refused(&only_guest, "alice", ip("192.0.2.7")));
        assert!(!loopback_refused(&[], "guest", ip("192.0.2.7")));
    }

    #[test]
    fn users_and_permissions() {
        let a = Auth::new();
        a.add_user(User::with_password("u", "p", vec![])).unwrap();
        assert_eq!(
            a.add_user(User::with_password("u", "p", vec![])),
            Err(AuthError::UserExists("u".into()))
        );
        assert!(a.authenticate("u", "p").is_some());
        assert!(a.authenticate("u", "x").is_none());
        assert!(a.authenticate("nobody", "p").is_none());
        assert!(!a.can_access_vhost("u", "/"));
        a.set_permission("u", "/", Permission::full()).unwrap();
        assert!(a.can_access_vhost("u", "/"));
        assert!(a.set_permission("nobody", "/", Permission::full()).is_err());
        a.delete_user("u").unwrap();
        assert!(a.permissions().is_empty());
        assert_eq!(a.delete_user("u"), Err(AuthError::NoSuchUser("u".into())));
    }
}
