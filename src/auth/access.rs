//! The access-control table: which permission each operation needs, and RabbitMQ's
//! refusal texts.
//!
//! | method | needs |
//! |---|---|
//! | exchange.declare (not passive) | configure on the exchange; with `alternate-exchange`: read on it and write on the AE |
//! | exchange.delete | configure on the exchange |
//! | queue.declare (not passive, server-named too) | configure on the queue; with `x-dead-letter-exchange`: read on the queue and write on the DLX |
//! | queue.delete | configure on the queue |
//! | queue.purge | read on the queue |
//! | queue.bind / queue.unbind | write on the queue, read on the exchange |
//! | exchange.bind / exchange.unbind | write on the destination, read on the source |
//! | basic.publish | write on the exchange (the default exchange is `amq.default`) |
//! | basic.consume / basic.get | read on the queue |
//! | connection.open | any permission entry in the vhost |
//!
//! Passive declares, basic.ack/nack/reject/recover/qos/cancel, confirm.select and tx.* need
//! nothing. Denials close the channel with 403 ACCESS_REFUSED; a refused vhost closes the
//! connection with 530 NOT_ALLOWED.

use super::{Access, Auth};
use crate::error::{AmqpError, AmqpResult};

/// The kind of resource a permission is checked on, named as in RabbitMQ's texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Exchange,
    Queue,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Exchange => "exchange",
            Resource::Queue => "queue",
        }
    }
}

/// The name permissions see: the default exchange is `amq.default` (RabbitMQ's
/// `rabbit_access_control` substitutes it before matching and in the error text).
pub fn checked_name(kind: Resource, name: &str) -> &str {
    if kind == Resource::Exchange && name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

impl Auth {
    /// Checks that `user` has `access` on the resource in `vhost`; otherwise the 403 that
    /// RabbitMQ sends: `ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'`.
    pub fn check(
        &self,
        user: &str,
        vhost: &str,
        access: Access,
        kind: Resource,
        name: &str,
    ) -> AmqpResult<()> {
        let name = checked_name(kind, name);
        let allowed = self
            .permissions
            .read()
            .get(user)
            .and_then(|per_vhost| per_vhost.get(vhost))
            .is_some_and(|p| p.allows(access, name));
        if allowed {
            Ok(())
        } else {
            Err(refused(user, vhost, kind, name))
        }
    }

    /// connection.open: 530 when the user has no permissions in the vhost.
    pub fn check_vhost(&self, user: &str, vhost: &str) -> AmqpResult<()> {
        if self.can_access_vhost(user, vhost) {
            Ok(())
        } else {
            Err(AmqpError::not_allowed(format_args!(
                "access to vhost '{vhost}' refused for user '{user}'"
            )))
        }
    }
}

/// RabbitMQ's resource-refusal text.
pub fn refused(user: &str, vhost: &str, kind: Resource, name: &str) -> AmqpError {
    AmqpError::access_refused(format_args!(
        "access to {} '{name}' in vhost '{vhost}' refused for user '{user}'",
        kind.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Permission, User};

    #[test]
    fn check_texts() {
        let a = Auth::new();
        a.add_user(User::with_password("u", "p", vec![])).unwrap();
        a.set_permission("u", "/", Permission::new("^c", "^w", "^r").unwrap())
            .unwrap();
        assert!(a
            .check("u", "/", Access::Configure, Resource::Queue, "cq")
            .is_ok());
        let e = a
            .check("u", "/", Access::Write, Resource::Exchange, "")
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.text,
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'u'"
        );
        assert!(a
            .check("u", "other", Access::Read, Resource::Queue, "r")
            .is_err());
        let e = a.check_vhost("u", "other").unwrap_err();
        assert_eq!(
            e.text,
            "NOT_ALLOWED - access to vhost 'other' refused for user 'u'"
        );
    }
}
