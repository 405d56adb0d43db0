//! A vhost's queues: declare (RabbitMQ's pipeline: an existing queue is compared, a new
//! one validated by its type), delete, and the exclusive-owner rules.

use super::equivalence::{assert_args_equivalent, inequivalent, unmark_classic};
use super::*;

impl VHost {
    /// Declares (or checks) a queue. Returns the queue and whether it was created.
    pub fn declare_queue(&self, d: &QueueDeclare, conn: u64) -> AmqpResult<(Arc<Queue>, bool)> {
        self.declare_queue_at(d, conn, None)
    }

    /// [`declare_queue`](Self::declare_queue) of a queue homed on `home` (a replicated
    /// definition; None: this node, in a cluster, for a durable classic queue).
    pub fn declare_queue_at(
        &self,
        d: &QueueDeclare,
        conn: u64,
        home: Option<&str>,
    ) -> AmqpResult<(Arc<Queue>, bool)> {
        if d.passive {
            if d.name == REPLY_TO {
                // RabbitMQ answers declare-ok for the pseudo-queue.
                let config = QueueConfig {
                    name: REPLY_TO.to_string(),
                    vhost: self.name.clone(),
                    durable: false,
                    auto_delete: false,
                    exclusive_owner: None,
                    arguments: FieldTable::default(),
                    home: None,
                };
                return Ok((
                    Queue::new(config, Default::default(), std::sync::Weak::new()),
                    false,
                ));
            }
            if d.name.starts_with(REPLY_TO) {
                if let Some(q) = self.reply_queues.get(&d.name) {
                    return Ok((q.clone(), false));
                }
            }
            let q = self.usable_queue(&d.name, conn)?;
            q.touch();
            return Ok((q, false));
        }
        // The vhost's default queue type, as RabbitMQ 3.10.8 applies it: added to the
        // arguments of a durable, non-exclusive, non-auto-delete declare without one, so
        // later declares with or without `x-queue-type` are equivalent.
        let typed;
        let d = match self.with_default_queue_type(d) {
            Some(t) => {
                typed = t;
                &typed
            }
            None => d,
        };
        if d.name.starts_with("amq.") && !d.server_named {
            return Err(AmqpError::access_refused(format_args!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        // As RabbitMQ: an existing queue is only compared with the declare; the arguments
        // are validated for a new one.
        if let Some(q) = self.queue(&d.name) {
            let q = self.usable_queue(&d.name, conn).map(|_| q)?;
            self.assert_queue_equivalent(&q, d, conn)?;
            q.touch();
            return Ok((q, false));
        }
        let what = format!("queue '{}' in vhost '{}'", d.name, self.name);
        let args = QueueArgs::parse(&d.arguments, &what, d.durable, d.exclusive, d.auto_delete)
            .map_err(|text| AmqpError::precondition_failed(format_args!("{text}")))?;
        let config = QueueConfig {
            name: d.name.clone(),
            vhost: self.name.clone(),
            durable: d.durable,
            auto_delete: d.auto_delete,
            exclusive_owner: d.exclusive.then_some(conn),
            arguments: d.arguments.clone(),
            home: self.home_of(d, &args, home),
        };
        let mut created = false;
        let q = self
            .queues
            .entry(d.name.clone())
            .or_insert_with(|| {
                created = true;
                Queue::new(config, args, self.me.clone())
            })
            .clone();
        if created {
            // After the insert: a policy added meanwhile is either seen here or applied
            // to this queue by `Broker::apply_policies`.
            q.apply_policy(&self.policies);
            self.changed.notify_one();
            // A stream's messages are confirmed by the same writer: its definition must
            // be on disk first too.
            if q.is_stored() || q.is_stream() {
                if let Some(log) = self.store.get() {
                    log.definitions_changed();
                }
            }
        } else {
            self.check_exclusive(&q, conn)?;
            self.assert_queue_equivalent(&q, d, conn)?;
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.queue_counts.declared.fetch_add(1, Relaxed);
        if created {
            self.queue_counts.created.fetch_add(1, Relaxed);
        }
        Ok((q, created))
    }

    /// A durable, non-exclusive, non-auto-delete classic queue has a home node in a
    /// cluster: `home` when the definition names one, else this node.
    fn home_of(&self, d: &QueueDeclare, args: &QueueArgs, home: Option<&str>) -> Option<String> {
        let homed = d.durable
            && !d.exclusive
            && !d.auto_delete
            && args.queue_type == crate::queue::args::QueueType::Classic;
        let here = self.remote.get()?.node();
        homed.then(|| home.unwrap_or(here).to_string())
    }

    fn assert_queue_equivalent(&self, q: &Queue, d: &QueueDeclare, conn: u64) -> AmqpResult<()> {
        let what = format!("queue '{}' in vhost '{}'", q.name(), self.name);
        let c = &q.config;
        if c.durable != d.durable {
            return Err(inequivalent("durable", &what, tf(d.durable), tf(c.durable)));
        }
        if c.auto_delete != d.auto_delete {
            return Err(inequivalent(
                "auto_delete",
                &what,
                tf(d.auto_delete),
                tf(c.auto_delete),
            ));
        }
        let exclusive_now = c.exclusive_owner.is_some();
        if exclusive_now != d.exclusive {
            // RabbitMQ reports an exclusivity mismatch as a lock, not an inequivalence.
            let _ = conn;
            return Err(AmqpError::resource_locked(format_args!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                q.name(),
                self.name
            )));
        }
        let (received, current) = unmark_classic(&d.arguments, &c.arguments);
        assert_args_equivalent(&what, &received, &current, q.args.queue_type.arguments())
    }

    /// Deletes a queue by name; returns the number of ready messages it held.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: u64,
    ) -> AmqpResult<u32> {
        let Some(q) = self.queue(name) else {
            // RabbitMQ answers delete-ok with 0 for a missing queue.
            return Ok(0);
        };
        self.check_exclusive(&q, conn)?;
        if q.is_quorum() && (if_unused || if_empty) {
            // As RabbitMQ 3.10 (`rabbit_quorum_queue:delete/4`).
            let flag = if if_unused { "if-unused" } else { "if-empty" };
            return Err(AmqpError::not_implemented(format_args!(
                "cannot delete queue '{name}' in vhost '{}'. queue.delete operations with {flag} flag set are not supported by quorum queues",
                self.name
            )));
        }
        if q.is_remote() {
            return self.delete_remote(&q, if_unused, if_empty);
        }
        let (ready, _, consumers) = q.stats();
        if if_unused && consumers > 0 {
            return Err(AmqpError::precondition_failed(format_args!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && ready > 0 {
            return Err(AmqpError::precondition_failed(format_args!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        Ok(self.remove_queue(&q))
    }

    /// Deletes a queue on its home node, then the proxy here.
    fn delete_remote(&self, q: &Arc<Queue>, if_unused: bool, if_empty: bool) -> AmqpResult<u32> {
        use crate::queue::remote::{Call, Reply};
        let r = q
            .remote()
            .ok_or_else(|| AmqpError::not_found(format_args!("no cluster link")))?;
        let n = match r.call(
            q,
            Call::Delete {
                if_unused,
                if_empty,
            },
        ) {
            Ok(Reply::Count(n)) => n,
            Ok(Reply::Refused(_, text)) => {
                return Err(AmqpError::precondition_failed(format_args!("{text}")))
            }
            Ok(_) => 0,
            Err(text) => return Err(AmqpError::not_found(format_args!("{text}"))),
        };
        self.remove_queue(q);
        Ok(n)
    }

    /// Removes a queue: unbinds it, tells its consumers, drops its messages.
    pub fn remove_queue(&self, q: &Arc<Queue>) -> u32 {
        if self
            .queues
            .remove_if(q.name(), |_, v| Arc::ptr_eq(v, q))
            .is_none()
        {
            return 0;
        }
        self.changed.notify_one();
        self.queue_counts
            .deleted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (n, consumers) = q.delete();
        self.remove_destination(&Dest::Queue(q.clone()));
        for c in consumers {
            let _ = c
                .conn
                .send(crate::connection::outbound::Outbound::ServerCancel {
                    consumer: c.clone(),
                });
        }
        n
    }

    /// Deletes the exclusive queues of a closing connection.
    pub fn remove_exclusive_queues(&self, conn: u64) {
        let owned: Vec<Arc<Queue>> = self
            .queues
            .iter()
            .filter(|q| q.config.exclusive_owner == Some(conn))
            .map(|q| q.clone())
            .collect();
        for q in owned {
            self.remove_queue(&q);
        }
    }
}
