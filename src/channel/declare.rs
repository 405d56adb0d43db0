//! exchange.* and queue.* handlers: thin translations to [`crate::vhost::VHost`] calls.

use super::basic::generated_name;
use super::{replicate, Channel, ConnCtx};
use crate::auth::{access::Resource, Access};
use crate::cluster::handle::MetaCmd;
use crate::error::{AmqpError, AmqpResult};
use crate::protocol::codec::Method;
use crate::routing::ExchangeKind;
use crate::vhost::{ExchangeDeclare, QueueDeclare};
use amq_protocol::protocol::{exchange as x, queue as q, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};

/// A string-valued argument naming an exchange (`alternate-exchange`,
/// `x-dead-letter-exchange`), for the permission checks RabbitMQ makes on it.
fn exchange_arg<'a>(args: &'a FieldTable, key: &str) -> Option<&'a str> {
    match args.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

impl Channel {
    pub(super) fn handle_exchange(
        &mut self,
        m: x::AMQPMethod,
        cx: &mut ConnCtx<'_>,
    ) -> AmqpResult<()> {
        match m {
            x::AMQPMethod::Declare(d) => {
                let nowait = d.nowait;
                let name = d.exchange.as_str();
                // After the type and default-exchange checks, as RabbitMQ; the
                // alternate exchange is checked only when the exchange is new.
                if !d.passive && !name.is_empty() && ExchangeKind::is_declarable(d.kind.as_str()) {
                    cx.permit(Access::Configure, Resource::Exchange, name)?;
                    if cx.vhost.exchange(name).is_none() {
                        if let Some(ae) = exchange_arg(&d.arguments, "alternate-exchange") {
                            cx.permit(Access::Read, Resource::Exchange, name)?;
                            cx.permit(Access::Write, Resource::Exchange, ae)?;
                        }
                    }
                }
                let existed = cx.vhost.exchange(name).is_some();
                if d.passive
                    && self.barrier_first(cx, !existed, || {
                        Method::Other(Box::new(AMQPClass::Exchange(x::AMQPMethod::Declare(
                            d.clone(),
                        ))))
                    })
                {
                    return Ok(());
                }
                let replicate = (cx.broker.meta.is_some()
                    && !d.passive
                    && !existed
                    && d.durable
                    && !d.auto_delete)
                    .then(|| {
                        replicate::exchange(replicate::exchange_def(
                            &cx.vhost.name,
                            name,
                            d.kind.as_str(),
                            d.auto_delete,
                            d.internal,
                            &d.arguments,
                        ))
                    });
                cx.vhost.declare_exchange(&ExchangeDeclare {
                    name: d.exchange.to_string(),
                    kind: d.kind.to_string(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                })?;
                let reply = (!nowait).then_some(AMQPClass::Exchange(x::AMQPMethod::DeclareOk(
                    x::DeclareOk {},
                )));
                self.reply_after(cx, replicate, reply);
            }
            x::AMQPMethod::Delete(d) => {
                let name = d.exchange.as_str();
                if !name.is_empty() && !name.starts_with("amq.") {
                    cx.permit(Access::Configure, Resource::Exchange, name)?;
                }
                let replicate =
                    cx.broker.meta.is_some() && cx.vhost.exchange(name).is_some_and(|x| x.durable);
                cx.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                let cmd = replicate.then(|| MetaCmd::DeleteExchange {
                    vhost: cx.vhost.name.clone(),
                    name: name.to_string(),
                });
                let reply = (!d.nowait)
                    .then_some(AMQPClass::Exchange(x::AMQPMethod::DeleteOk(x::DeleteOk {})));
                self.reply_after(cx, cmd, reply);
            }
            x::AMQPMethod::Bind(bd) => {
                permit_binding(
                    cx,
                    Resource::Exchange,
                    bd.destination.as_str(),
                    bd.source.as_str(),
                    bd.routing_key.as_str(),
                )?;
                cx.vhost.bind_exchange(
                    bd.destination.as_str(),
                    bd.source.as_str(),
                    bd.routing_key.as_str(),
                    &bd.arguments,
                )?;
                let cmd = replicated_exchanges(cx, bd.source.as_str(), bd.destination.as_str())
                    .then(|| {
                        replicate::bind(replicate::binding(
                            &cx.vhost.name,
                            bd.source.as_str(),
                            bd.destination.as_str(),
                            "exchange",
                            bd.routing_key.as_str(),
                            &bd.arguments,
                        ))
                    });
                let reply = (!bd.nowait)
                    .then_some(AMQPClass::Exchange(x::AMQPMethod::BindOk(x::BindOk {})));
                self.reply_after(cx, cmd, reply);
            }
            x::AMQPMethod::Unbind(u) => {
                permit_binding(
                    cx,
                    Resource::Exchange,
                    u.destination.as_str(),
                    u.source.as_str(),
                    u.routing_key.as_str(),
                )?;
                let replicate = replicated_exchanges(cx, u.source.as_str(), u.destination.as_str());
                cx.vhost.unbind_exchange(
                    u.destination.as_str(),
                    u.source.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                )?;
                let cmd = replicate.then(|| {
                    MetaCmd::Unbind(replicate::binding(
                        &cx.vhost.name,
                        u.source.as_str(),
                        u.destination.as_str(),
                        "exchange",
                        u.routing_key.as_str(),
                        &u.arguments,
                    ))
                });
                let reply = (!u.nowait)
                    .then_some(AMQPClass::Exchange(x::AMQPMethod::UnbindOk(x::UnbindOk {})));
                self.reply_after(cx, cmd, reply);
            }
            other => {
                return Err(AmqpError::command_invalid(format_args!(
                    "unexpected exchange method {other:?}"
                )))
            }
        }
        Ok(())
    }

    pub(super) fn handle_queue(
        &mut self,
        m: q::AMQPMethod,
        cx: &mut ConnCtx<'_>,
    ) -> AmqpResult<()> {
        match m {
            q::AMQPMethod::Declare(d) => {
                let server_named = d.queue.as_str().is_empty() && !d.passive;
                if server_named {
                    if let Some(t) = crate::queue::args::QueueType::from_args(&d.arguments)
                        .filter(|t| !t.allows_server_named())
                    {
                        return Err(AmqpError::precondition_failed(format_args!(
                            "Cannot declare a server-named queue for type {}",
                            t.module()
                        )));
                    }
                }
                let name = if server_named {
                    generated_name("amq.gen-")
                } else {
                    self.queue_name(d.queue.as_str())?
                };
                let nowait = d.nowait;
                if d.passive
                    && self.barrier_first(cx, cx.vhost.queue(&name).is_none(), || {
                        Method::Other(Box::new(AMQPClass::Queue(q::AMQPMethod::Declare(
                            d.clone(),
                        ))))
                    })
                {
                    return Ok(());
                }
                let replicate = cx.broker.meta.is_some()
                    && !d.passive
                    && d.durable
                    && !d.exclusive
                    && !d.auto_delete
                    && !server_named;
                let args_json = replicate.then(|| d.arguments.clone());
                if !d.passive {
                    cx.permit(Access::Configure, Resource::Queue, &name)?;
                    if cx.vhost.queue(&name).is_none() {
                        crate::limits::check_new_queue(
                            cx.broker.limits,
                            &cx.vhost.name,
                            || cx.vhost.queues().len(),
                            &name,
                        )?;
                        if let Some(dlx) = exchange_arg(&d.arguments, "x-dead-letter-exchange") {
                            cx.permit(Access::Read, Resource::Queue, &name)?;
                            cx.permit(Access::Write, Resource::Exchange, dlx)?;
                        }
                    }
                }
                let (queue, created) = cx.vhost.declare_queue(
                    &QueueDeclare {
                        name,
                        server_named,
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: d.arguments,
                    },
                    cx.conn_id,
                )?;
                self.last_queue = Some(queue.name().to_string());
                let mut reply = None;
                if !nowait {
                    let (ready, _, mut consumers) = queue.stats();
                    if queue.name() == crate::vhost::REPLY_TO {
                        // As RabbitMQ: the pseudo-queue reports one consumer.
                        consumers = 1;
                    }
                    if queue.is_stream() {
                        // As RabbitMQ (`rabbit_stream_queue:stat/1`): always 0.
                        consumers = 0;
                    }
                    reply = Some(AMQPClass::Queue(q::AMQPMethod::DeclareOk(q::DeclareOk {
                        queue: queue.name().into(),
                        message_count: ready as u32,
                        consumer_count: consumers as u32,
                    })));
                }
                let cmd = match (args_json.filter(|_| created), cx.broker.meta) {
                    (Some(a), Some(meta)) => replicate::new_queue(meta, &cx.vhost.name, &queue, &a),
                    _ => None,
                };
                self.reply_after(cx, cmd, reply);
            }
            q::AMQPMethod::Bind(bd) => {
                let queue = self.queue_name(bd.queue.as_str())?;
                // Empty queue and routing key: the routing key is the last queue's name.
                let rk = if bd.queue.as_str().is_empty() && bd.routing_key.as_str().is_empty() {
                    queue.clone()
                } else {
                    bd.routing_key.to_string()
                };
                permit_binding(cx, Resource::Queue, &queue, bd.exchange.as_str(), &rk)?;
                cx.vhost.bind_queue(
                    &queue,
                    bd.exchange.as_str(),
                    &rk,
                    &bd.arguments,
                    cx.conn_id,
                )?;
                let cmd = replicated_queue_binding(cx, bd.exchange.as_str(), &queue).then(|| {
                    replicate::bind(replicate::binding(
                        &cx.vhost.name,
                        bd.exchange.as_str(),
                        &queue,
                        "queue",
                        &rk,
                        &bd.arguments,
                    ))
                });
                let reply =
                    (!bd.nowait).then_some(AMQPClass::Queue(q::AMQPMethod::BindOk(q::BindOk {})));
                self.reply_after(cx, cmd, reply);
            }
            q::AMQPMethod::Unbind(u) => {
                let queue = self.queue_name(u.queue.as_str())?;
                permit_binding(
                    cx,
                    Resource::Queue,
                    &queue,
                    u.exchange.as_str(),
                    u.routing_key.as_str(),
                )?;
                let replicate = replicated_queue_binding(cx, u.exchange.as_str(), &queue);
                cx.vhost.unbind_queue(
                    &queue,
                    u.exchange.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                    cx.conn_id,
                )?;
                let cmd = replicate.then(|| {
                    MetaCmd::Unbind(replicate::binding(
                        &cx.vhost.name,
                        u.exchange.as_str(),
                        &queue,
                        "queue",
                        u.routing_key.as_str(),
                        &u.arguments,
                    ))
                });
                let reply = Some(AMQPClass::Queue(q::AMQPMethod::UnbindOk(q::UnbindOk {})));
                self.reply_after(cx, cmd, reply);
            }
            q::AMQPMethod::Purge(p) => {
                let name = self.queue_name(p.queue.as_str())?;
                cx.permit(Access::Read, Resource::Queue, &name)?;
                let queue = cx.vhost.usable_queue(&name, cx.conn_id)?;
                if queue.is_stream() {
                    return Err(AmqpError::not_implemented(format_args!(
                        "queue.purge not supported by stream queues queue '{}' in vhost '{}'",
                        queue.name(),
                        cx.vhost.name
                    )));
                }
                let n = queue.purge();
                if !p.nowait {
                    self.reply(
                        cx,
                        AMQPClass::Queue(q::AMQPMethod::PurgeOk(q::PurgeOk { message_count: n })),
                    );
                }
            }
            q::AMQPMethod::Delete(d) => {
                let name = self.queue_name(d.queue.as_str())?;
                cx.permit(Access::Configure, Resource::Queue, &name)?;
                let replicate = cx.broker.meta.is_some()
                    && cx.vhost.queue(&name).is_some_and(|q| replicated(&q));
                let n = cx
                    .vhost
                    .delete_queue(&name, d.if_unused, d.if_empty, cx.conn_id)?;
                let cmd = replicate.then(|| MetaCmd::DeleteQueue {
                    vhost: cx.vhost.name.clone(),
                    name: name.clone(),
                });
                let reply =
                    (!d.nowait).then_some(AMQPClass::Queue(q::AMQPMethod::DeleteOk(q::DeleteOk {
                        message_count: n,
                    })));
                self.reply_after(cx, cmd, reply);
            }
            other => {
                return Err(AmqpError::command_invalid(format_args!(
                    "unexpected queue method {other:?}"
                )))
            }
        }
        Ok(())
    }
}

/// A queue whose definition every node has: durable, neither exclusive nor auto-delete.
fn replicated(q: &crate::queue::Queue) -> bool {
    q.config.durable && q.config.exclusive_owner.is_none() && !q.config.auto_delete
}

/// In a cluster: both exchanges are durable and not auto-delete (their binding is a
/// replicated definition).
fn replicated_exchanges(cx: &ConnCtx<'_>, source: &str, dest: &str) -> bool {
    let durable = |n: &str| {
        cx.vhost
            .exchange(n)
            .is_some_and(|x| x.durable && !x.auto_delete)
    };
    cx.broker.meta.is_some() && !source.is_empty() && durable(source) && durable(dest)
}

/// In a cluster: a binding from a durable exchange to a replicated queue.
fn replicated_queue_binding(cx: &ConnCtx<'_>, exchange: &str, queue: &str) -> bool {
    cx.broker.meta.is_some()
        && !exchange.is_empty()
        && cx
            .vhost
            .exchange(exchange)
            .is_some_and(|x| x.durable && !x.auto_delete)
        && cx.vhost.queue(queue).is_some_and(|q| replicated(&q))
}

/// Bindings need write on the destination, then read on the source (RabbitMQ's
/// `binding_action`); between the two RabbitMQ refuses the default exchange, which the
/// vhost does here. A topic exchange as the source also needs the binding key to match
/// the user's topic read permission there.
fn permit_binding(
    cx: &ConnCtx<'_>,
    dest_kind: Resource,
    dest: &str,
    source: &str,
    routing_key: &str,
) -> AmqpResult<()> {
    cx.permit(Access::Write, dest_kind, dest)?;
    if source.is_empty() || (dest_kind == Resource::Exchange && dest.is_empty()) {
        return Ok(());
    }
    cx.permit(Access::Read, Resource::Exchange, source)?;
    match cx.vhost.exchange(source) {
        Some(x) if x.kind == ExchangeKind::Topic => {
            cx.permit_topic(Access::Read, source, routing_key)
        }
        _ => Ok(()),
    }
}
