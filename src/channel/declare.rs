//! exchange.* and queue.* handlers: thin translations to [`crate::vhost::VHost`] calls.

use super::basic::generated_name;
use super::{Channel, ConnCtx};
use crate::auth::{access::Resource, Access};
use crate::error::{AmqpError, AmqpResult};
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
                cx.vhost.declare_exchange(&ExchangeDeclare {
                    name: d.exchange.to_string(),
                    kind: d.kind.to_string(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                })?;
                if !nowait {
                    self.reply(
                        cx,
                        AMQPClass::Exchange(x::AMQPMethod::DeclareOk(x::DeclareOk {})),
                    );
                }
            }
            x::AMQPMethod::Delete(d) => {
                let name = d.exchange.as_str();
                if !name.is_empty() && !name.starts_with("amq.") {
                    cx.permit(Access::Configure, Resource::Exchange, name)?;
                }
                cx.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.reply(
                        cx,
                        AMQPClass::Exchange(x::AMQPMethod::DeleteOk(x::DeleteOk {})),
                    );
                }
            }
            x::AMQPMethod::Bind(bd) => {
                permit_binding(
                    cx,
                    Resource::Exchange,
                    bd.destination.as_str(),
                    bd.source.as_str(),
                )?;
                cx.vhost.bind_exchange(
                    bd.destination.as_str(),
                    bd.source.as_str(),
                    bd.routing_key.as_str(),
                    &bd.arguments,
                )?;
                if !bd.nowait {
                    self.reply(cx, AMQPClass::Exchange(x::AMQPMethod::BindOk(x::BindOk {})));
                }
            }
            x::AMQPMethod::Unbind(u) => {
                permit_binding(
                    cx,
                    Resource::Exchange,
                    u.destination.as_str(),
                    u.source.as_str(),
                )?;
                cx.vhost.unbind_exchange(
                    u.destination.as_str(),
                    u.source.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                )?;
                if !u.nowait {
                    self.reply(
                        cx,
                        AMQPClass::Exchange(x::AMQPMethod::UnbindOk(x::UnbindOk {})),
                    );
                }
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
                let (queue, _) = cx.vhost.declare_queue(
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
                    self.reply(
                        cx,
                        AMQPClass::Queue(q::AMQPMethod::DeclareOk(q::DeclareOk {
                            queue: queue.name().into(),
                            message_count: ready as u32,
                            consumer_count: consumers as u32,
                        })),
                    );
                }
            }
            q::AMQPMethod::Bind(bd) => {
                let queue = self.queue_name(bd.queue.as_str())?;
                // Empty queue and routing key: the routing key is the last queue's name.
                let rk = if bd.queue.as_str().is_empty() && bd.routing_key.as_str().is_empty() {
                    queue.clone()
                } else {
                    bd.routing_key.to_string()
                };
                permit_binding(cx, Resource::Queue, &queue, bd.exchange.as_str())?;
                cx.vhost.bind_queue(
                    &queue,
                    bd.exchange.as_str(),
                    &rk,
                    &bd.arguments,
                    cx.conn_id,
                )?;
                if !bd.nowait {
                    self.reply(cx, AMQPClass::Queue(q::AMQPMethod::BindOk(q::BindOk {})));
                }
            }
            q::AMQPMethod::Unbind(u) => {
                let queue = self.queue_name(u.queue.as_str())?;
                permit_binding(cx, Resource::Queue, &queue, u.exchange.as_str())?;
                cx.vhost.unbind_queue(
                    &queue,
                    u.exchange.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                    cx.conn_id,
                )?;
                self.reply(
                    cx,
                    AMQPClass::Queue(q::AMQPMethod::UnbindOk(q::UnbindOk {})),
                );
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
                let n = cx
                    .vhost
                    .delete_queue(&name, d.if_unused, d.if_empty, cx.conn_id)?;
                if !d.nowait {
                    self.reply(
                        cx,
                        AMQPClass::Queue(q::AMQPMethod::DeleteOk(q::DeleteOk { message_count: n })),
                    );
                }
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

/// Bindings need write on the destination, then read on the source (RabbitMQ's
/// `binding_action`); between the two RabbitMQ refuses the default exchange, which the
/// vhost does here.
fn permit_binding(
    cx: &ConnCtx<'_>,
    dest_kind: Resource,
    dest: &str,
    source: &str,
) -> AmqpResult<()> {
    cx.permit(Access::Write, dest_kind, dest)?;
    if source.is_empty() || (dest_kind == Resource::Exchange && dest.is_empty()) {
        return Ok(());
    }
    cx.permit(Access::Read, Resource::Exchange, source)
}
