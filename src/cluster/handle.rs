//! What the layers below the broker (channels) and the management API see of the cluster:
//! the replicated metadata commands and a narrow [`Metadata`] handle. Nothing here names
//! the broker or the Raft engine, so a channel handler can ask for a definition change to
//! be replicated without depending on either.

use crate::queue::quorum::wire::{Group, Replica};
use crate::store::definitions::{BindingDef, Definitions, QuorumPlacement};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, as the handle's methods return (the handle is a trait object).
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One replicated definition change: an entry of the metadata group's log. Every node's
/// state machine applies it to its own registries; applying is idempotent (a declare of
/// what exists, a delete of what is gone, are no-ops), so the node that made the change
/// locally first applies it again harmlessly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum MetaCmd {
    /// Additive: vhosts, users, permissions, limits, policies, exchanges, queues and
    /// bindings, imported as a definitions document (AMQP declares and binds).
    Import(Definitions),
    DeleteExchange {
        vhost: String,
        name: String,
    },
    DeleteQueue {
        vhost: String,
        name: String,
    },
    Unbind(BindingDef),
    /// A stream's placement (leader, members, epoch), with its definition when it is new
    /// (a declare) or alone (a leader change); see `cluster::stream_repl`.
    Stream {
        defs: Option<Definitions>,
        placement: crate::queue::stream::replica::Placement,
    },
    /// A management API write (`PUT /users/bob`, `DELETE /policies/%2f/p`, …), replayed
    /// through the same handlers on every node. `path` is relative to `/api`.
    Http {
        method: String,
        path: String,
        body: String,
    },
}

/// A member of the cluster as the operator surface reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// The `--node-name` (e.g. `n1`).
    pub name: String,
    /// The cluster port's address (`127.0.0.1:25672`).
    pub addr: String,
    /// Answered the last liveness probe (this node always is).
    pub running: bool,
    /// A voting member of the metadata group (false for a learner still catching up).
    pub voter: bool,
}

/// `warren-ctl cluster_status`, `GET /api/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// The metadata group's leader, when one is known.
    pub leader: Option<String>,
    /// The Raft term this node is in.
    pub term: u64,
    /// The last log index this node applied.
    pub applied: u64,
    pub members: Vec<NodeStatus>,
}

/// The metadata group as seen from below the broker.
pub trait Metadata: Send + Sync + Debug {
    /// Replicates `cmd` through the metadata group (forwarded to the leader when this
    /// node is not) and resolves once it is committed and applied on this node.
    fn replicate(&self, cmd: MetaCmd) -> BoxFut<Result<(), String>>;
    /// Resolves once this node has applied everything committed before the call (a
    /// read barrier: a lookup that missed is repeated after it).
    fn barrier(&self) -> BoxFut<Result<(), String>>;
    fn status(&self) -> ClusterStatus;
    /// Asks the cluster that `seed` (`name@host:port`) belongs to to take this node in.
    fn join(&self, seed: String) -> BoxFut<Result<(), String>>;
    /// Removes a node from the metadata group's membership.
    fn forget(&self, node: String) -> BoxFut<Result<(), String>>;
    /// Makes `members` the voters of quorum queue group `gid`, asking the nodes `via`
    /// (its current members) until its leader does it.
    fn change_group(
        &self,
        gid: u64,
        via: Vec<String>,
        members: Vec<String>,
    ) -> BoxFut<Result<(), String>>;
    /// Asks node `at`'s member of group `gid` to stand for election (rebalancing).
    fn elect(&self, gid: u64, at: String) -> BoxFut<Result<(), String>>;
    /// Starts this node's member of a quorum queue's Raft group (None when this node is
    /// not a member); `replica` is the queue committed commands are applied to.
    fn start_group(
        &self,
        p: QuorumPlacement,
        replica: Arc<dyn Replica>,
    ) -> BoxFut<Option<Arc<dyn Group>>>;
}

/// Shared handle to the metadata group (absent when Warren runs alone).
pub type MetaHandle = Arc<dyn Metadata>;
