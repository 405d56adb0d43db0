//! A Warren cluster on openraft (0.9): nodes named by `--node-name`, listed with
//! `--cluster-nodes n1@127.0.0.1:25672,n2@…`, talking over `--cluster-port`.
//!
//! Today one Raft group runs on every node: the **metadata group**, whose log carries the
//! definition changes ([`handle::MetaCmd`]: vhosts, users, permissions, policies,
//! durable exchanges, queues and bindings) and whose state machine applies them to each
//! node's registries, as RabbitMQ's Khepri. A declare on any node is replicated before its
//! declare-ok (forwarded to the leader when this node is not it), so once a client has
//! its declare-ok every node has the definition (a lookup that misses on another node
//! first waits for that node to apply what is committed: [`handle::Metadata::barrier`]).
//! Each quorum queue declared in a cluster is a Raft group of its own ([`qgroup`]) among
//! the members its definition names, sharing the node's WAL and cluster port.
//!
//! | piece | owns | module |
//! |---|---|---|
//! | WAL writer thread | the node's Raft log file; group commit | [`wal`] |
//! | a group's log store | its entries, vote, committed index in memory | [`log_store`] |
//! | state machine | applied index, membership, snapshots | [`state_machine`] |
//! | transport | the cluster port's listener, one connection per peer | [`network`] |
//! | TLS or plain TCP | how every inter-node connection is dialled and accepted | [`transport`] |
//! | node | the `Raft` instance, bootstrap, liveness probes, forwarding | [`node`] |
//! | failover | standing for election at once when a leader's process is gone | [`failover`] |
//! | forwarding links | proxies' pending answers; a peer's consumers here | [`forward`] |
//! | broker side | applying commands to the registries | [`apply`] |
//! | stream replication | replicated streams' follower, forwarder and coordinator tasks | [`stream_repl`] |
//! | queue groups | one quorum queue's Raft member on this node, its driver | [`qgroup`] |
//!
//! Without `--cluster-nodes` none of this starts and nothing on the hot path changes.

pub mod apply;
pub mod failover;
pub mod forward;
pub mod handle;
pub mod log_store;
pub mod network;
pub mod node;
pub mod qgroup;
pub mod qmembers;
pub mod state_machine;
pub mod stream_repl;
pub mod transport;
pub mod wal;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

/// A node's Raft id: the FNV-1a hash of its name, so every node derives the same id for
/// a name without coordination.
pub type Nid = u64;

/// A member of a Raft group: its name and cluster address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// The metadata group's types.
    pub TypeConfig:
        D = handle::MetaCmd,
        R = state_machine::MetaReply,
        Node = Member,
);

/// FNV-1a, 64 bits.
pub fn node_id(name: &str) -> Nid {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The cluster options.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `--node-name`.
    pub node_name: String,
    /// `--cluster-port` (0 picks a free one, for tests).
    pub port: u16,
    /// `--cluster-nodes`, this node included.
    pub nodes: Vec<Member>,
    /// `--cluster-tls-*`: every inter-node connection is TLS.
    pub tls: Option<transport::TlsOptions>,
}

impl ClusterConfig {
    /// Parses `n1@127.0.0.1:25672,n2@127.0.0.1:25673`.
    pub fn parse_nodes(s: &str) -> Result<Vec<Member>, String> {
        let mut out: Vec<Member> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, addr) = item
                .split_once('@')
                .ok_or_else(|| format!("'{item}': expected name@host:port"))?;
            if name.is_empty()
                || addr
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(format!("'{item}': expected name@host:port"));
            }
            if out.iter().any(|m| m.name == name) {
                return Err(format!("node '{name}' listed twice"));
            }
            out.push(Member {
                name: name.into(),
                addr: addr.into(),
            });
        }
        Ok(out)
    }

    /// The node that initialises the group: the first name in sort order.
    pub fn bootstrapper(&self) -> Option<&Member> {
        self.nodes.iter().min_by(|a, b| a.name.cmp(&b.name))
    }

    /// Votes needed among the listed nodes.
    pub fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_parse_and_the_first_name_bootstraps() {
        let nodes =
            ClusterConfig::parse_nodes("n2@127.0.0.1:25673, n1@127.0.0.1:25672,n3@localhost:9")
                .unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[1].name, "n1");
        assert_eq!(nodes[1].addr, "127.0.0.1:25672");
        let c = ClusterConfig {
            node_name: "n3".into(),
            port: 0,
            nodes,
            tls: None,
        };
        assert_eq!(c.bootstrapper().unwrap().name, "n1");
        assert_eq!(c.majority(), 2);
        for bad in ["n1", "n1@", "@h:1", "n1@h", "n1@h:x", "n1@h:1,n1@h:2"] {
            assert!(ClusterConfig::parse_nodes(bad).is_err(), "{bad}");
        }
        assert_ne!(node_id("n1"), node_id("n2"));
        assert_eq!(node_id("n1"), node_id("n1"));
    }
}
