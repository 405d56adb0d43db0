//! Definition changes made on a channel, in a cluster: the change is made here first
//! (with RabbitMQ's checks and reply codes), then replicated through the metadata group,
//! and its reply (declare-ok, bind-ok, …) leaves only once the group has committed it.
//! Meanwhile the connection handles no further frames, so the client sees its methods
//! answered in order. A passive declare that misses first waits for this node to apply
//! everything the group has committed, then looks again.

use super::{Channel, ConnCtx};
use crate::cluster::handle::{BoxFut, MetaCmd};
use crate::protocol::codec::Method;
use crate::store::definitions::{
    table_to_json, BindingDef, Definitions, ExchangeDef, QueueDef, QuorumPlacement,
};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::FieldTable;

/// A reply waiting for the metadata group.
pub struct PendingMeta {
    pub channel: u16,
    /// Resolves when the change is committed and applied here (or the barrier passed).
    pub wait: BoxFut<Result<(), String>>,
    /// Sent once `wait` succeeds.
    pub reply: Option<AMQPClass>,
    /// A method handled again after a read barrier (a passive declare that missed).
    pub retry: Option<Method>,
}

impl std::fmt::Debug for PendingMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingMeta")
            .field("channel", &self.channel)
            .field("reply", &self.reply)
            .finish()
    }
}

impl Channel {
    /// Sends `reply` now, or, when `cmd` must be replicated, once it is.
    pub(super) fn reply_after(
        &self,
        cx: &mut ConnCtx<'_>,
        cmd: Option<MetaCmd>,
        reply: Option<AMQPClass>,
    ) {
        if let (Some(cmd), Some(meta)) = (cmd, cx.broker.meta) {
            if let Some(slot) = cx.pending.as_deref_mut() {
                *slot = Some(PendingMeta {
                    channel: self.id,
                    wait: meta.replicate(cmd),
                    reply,
                    retry: None,
                });
                return;
            }
        }
        if let Some(r) = reply {
            self.reply(cx, r);
        }
    }

    /// In a cluster, when `missing`: asks for a read barrier and for `retry` to be
    /// handled again after it; true when the caller must stop here.
    pub(super) fn barrier_first(
        &self,
        cx: &mut ConnCtx<'_>,
        missing: bool,
        retry: impl FnOnce() -> Method,
    ) -> bool {
        if !missing || cx.barrier_passed {
            return false;
        }
        let Some(meta) = cx.broker.meta else {
            return false;
        };
        let Some(slot) = cx.pending.as_deref_mut() else {
            return false;
        };
        *slot = Some(PendingMeta {
            channel: self.id,
            wait: meta.barrier(),
            reply: None,
            retry: Some(retry()),
        });
        true
    }
}

/// The replicated form of an exchange declare.
pub fn exchange(d: ExchangeDef) -> MetaCmd {
    let mut defs = Definitions::default();
    defs.exchanges.push(d);
    MetaCmd::Import(defs)
}

pub fn exchange_def(
    vhost: &str,
    name: &str,
    kind: &str,
    auto_delete: bool,
    internal: bool,
    args: &FieldTable,
) -> ExchangeDef {
    ExchangeDef {
        name: name.to_string(),
        vhost: vhost.to_string(),
        kind: kind.to_string(),
        durable: true,
        auto_delete,
        internal,
        arguments: table_to_json(args),
    }
}

pub fn queue(
    vhost: &str,
    name: &str,
    args: &FieldTable,
    node: Option<String>,
    quorum: Option<QuorumPlacement>,
) -> MetaCmd {
    let mut defs = Definitions::default();
    defs.queues.push(QueueDef {
        name: name.to_string(),
        vhost: vhost.to_string(),
        durable: true,
        auto_delete: false,
        arguments: table_to_json(args),
        node,
        quorum,
    });
    MetaCmd::Import(defs)
}

/// The replicated form of a queue just created on this node, by an AMQP declare or the
/// management API (`PUT /api/queues`, a definitions import): its definition with its
/// home node (a classic queue) or its Raft group's placement (a quorum queue), or for a
/// stream its definition with a placement led by this node. `args` are the declare's
/// arguments. None for a queue whose definition stays on this node (transient,
/// exclusive, auto-delete).
pub fn new_queue(
    meta: &crate::cluster::handle::MetaHandle,
    vhost: &str,
    q: &crate::queue::Queue,
    args: &FieldTable,
) -> Option<MetaCmd> {
    if !q.config.durable || q.config.exclusive_owner.is_some() || q.config.auto_delete {
        return None;
    }
    let placement = q
        .is_quorum()
        .then(|| quorum_placement(meta, q.args.initial_cluster_size, &q.config.arguments));
    let cmd = queue(
        vhost,
        q.name(),
        args,
        q.home().map(str::to_string),
        placement,
    );
    match cmd {
        MetaCmd::Import(defs) if q.is_stream() => Some(MetaCmd::Stream {
            defs: Some(defs),
            placement: stream_placement(meta, vhost, q),
        }),
        cmd => Some(cmd),
    }
}

/// A new stream's placement: led by this node, on `x-initial-cluster-size` nodes.
pub fn stream_placement(
    meta: &crate::cluster::handle::MetaHandle,
    vhost: &str,
    q: &crate::queue::Queue,
) -> crate::queue::stream::replica::Placement {
    let st = meta.status();
    let nodes: Vec<String> = st.members.iter().map(|m| m.name.clone()).collect();
    crate::queue::stream::replica::Placement::initial(
        &st.node,
        &nodes,
        vhost,
        q.name(),
        q.args.initial_cluster_size,
    )
}

/// A new quorum queue's Raft group: `x-quorum-initial-group-size` members (3 by
/// default, at most the cluster's nodes), this node among them and first (the leader it
/// proposes) unless `x-queue-leader-locator` is `balanced` (then a random member).
pub fn quorum_placement(
    meta: &crate::cluster::handle::MetaHandle,
    size: Option<u64>,
    args: &FieldTable,
) -> QuorumPlacement {
    let status = meta.status();
    let nodes: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
    let balanced = matches!(
        args.inner().get("x-queue-leader-locator"),
        Some(amq_protocol::types::AMQPValue::LongString(s)) if s.to_string() == "balanced"
    );
    let mut rng = rand::rng();
    QuorumPlacement {
        group: rand::Rng::random_range(&mut rng, 1..u64::MAX),
        members: crate::queue::quorum::wire::place(
            &status.node,
            &nodes,
            size.unwrap_or(3) as usize,
            balanced,
            &mut rng,
        ),
    }
}

pub fn binding(
    vhost: &str,
    source: &str,
    dest: &str,
    dest_type: &str,
    rk: &str,
    args: &FieldTable,
) -> BindingDef {
    BindingDef {
        source: source.to_string(),
        vhost: vhost.to_string(),
        destination: dest.to_string(),
        destination_type: dest_type.to_string(),
        routing_key: rk.to_string(),
        arguments: table_to_json(args),
    }
}

pub fn bind(b: BindingDef) -> MetaCmd {
    let mut defs = Definitions::default();
    defs.bindings.push(b);
    MetaCmd::Import(defs)
}
