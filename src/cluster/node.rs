//! This node's place in the cluster: the metadata group's `Raft`, the listener on the
//! cluster port, the bootstrap of a new cluster, liveness probes of the other members,
//! and forwarding to the leader (writes, read barriers, membership changes).

use super::handle::{BoxFut, ClusterStatus, MetaCmd, Metadata, NodeStatus};
use super::log_store::LogStore;
use super::network::{self, Peer, Request, Response, Serve};
use super::qgroup::{QGroup, QRequest, QResponse};
use super::state_machine::{Apply, StateMachine};
use super::transport::{Conn, Transport};
use super::wal::Wal;
use super::{node_id, ClusterConfig, Member, Nid, TypeConfig};
use crate::queue::quorum::wire::{Group, Replica};
use crate::store::definitions::QuorumPlacement;
use openraft::Raft;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a replicated write or a barrier may wait (for a leader, a quorum, the apply).
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Forwarded requests to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Liveness probes: interval, and how long a member stays `running` without an answer.
const PROBE_EVERY: Duration = Duration::from_millis(300);
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
const ALIVE_FOR: Duration = Duration::from_millis(1500);
/// How long a membership change waits for its group to have a leader again.
const CHANGE_GROUP_PATIENCE: Duration = Duration::from_secs(10);
/// While waiting for a leader to be elected.
const NO_LEADER_RETRY: Duration = Duration::from_millis(50);

pub struct Node {
    pub id: Nid,
    pub me: Member,
    config: ClusterConfig,
    pub raft: Raft<TypeConfig>,
    /// The node's WAL, shared by every group.
    pub wal: Arc<Wal>,
    /// `<data-dir>/cluster`: the WAL's segments, snapshots.
    pub dir: std::path::PathBuf,
    /// What the WAL held at start for groups not started yet (quorum queues).
    recovered: parking_lot::Mutex<super::wal::Recovered>,
    /// This node's members of quorum queue groups, by group id.
    groups: parking_lot::Mutex<HashMap<u64, Arc<QGroup>>>,
    /// Random at each start: consumer keys of an earlier run are told apart.
    pub incarnation: u16,
    /// Connections for forwarding, by address (Raft's own RPCs use their own).
    peers: parking_lot::Mutex<HashMap<String, Arc<Peer>>>,
    /// When each member last answered a probe.
    alive: parking_lot::Mutex<HashMap<Nid, Instant>>,
    /// Wakes the probes at once (a peer's connection to this node closed: it may have
    /// died).
    probe_now: tokio::sync::Notify,
    /// Serves forwarding links from peers (`cluster::forward::home`), once set.
    forward: std::sync::OnceLock<ForwardHook>,
    /// Takes the cluster-port connections that are not Raft's (stream replication).
    pub links: std::sync::OnceLock<Arc<network::LinkServe>>,
    /// How connections to peers are made (plain TCP or TLS).
    pub transport: Transport,
}

/// Takes a peer's forwarding link.
pub type ForwardHook = Box<dyn Fn(Conn) + Send + Sync>;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("me", &self.me).finish()
    }
}

/// The Raft timing: heartbeats every 150 ms, elections after 0.6–1.2 s without one
/// (well above an fsync on a busy disk, the openraft FAQ's advice), snapshots every 1000
/// entries.
fn raft_config() -> Result<openraft::Config, String> {
    openraft::Config {
        cluster_name: "warren".into(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        install_snapshot_timeout: 3000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

impl Node {
    /// Opens the WAL and the state machine under `dir`, starts the Raft node and the
    /// listener on `bind:port` (connections made and accepted through `transport`), and
    /// the bootstrap and probe tasks (they end when `stop` flips).
    pub async fn start(
        config: ClusterConfig,
        transport: Transport,
        bind: IpAddr,
        dir: std::path::PathBuf,
        apply: Arc<dyn Apply>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<Arc<Node>> {
        let listener = tokio::net::TcpListener::bind((bind, config.port)).await?;
        let local = listener.local_addr()?;
        let me = config
            .nodes
            .iter()
            .find(|m| m.name == config.node_name)
            .cloned()
            .unwrap_or_else(|| Member {
                name: config.node_name.clone(),
                addr: local.to_string(),
            });
        let (wal, mut recovered) = Wal::open(&dir)?;
        let wal = Arc::new(wal);
        let log = LogStore::new(0, wal.clone(), recovered.remove(&0).unwrap_or_default());
        let sm = StateMachine::open(apply, log.clone(), dir.clone());
        let id = node_id(&me.name);
        let rc = raft_config().map_err(std::io::Error::other)?;
        let raft = Raft::new(
            id,
            Arc::new(rc),
            network::Network(transport.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let node = Arc::new(Node {
            id,
            me,
            config,
            raft,
            wal,
            dir,
            recovered: parking_lot::Mutex::new(recovered),
            groups: Default::default(),
            incarnation: rand::random(),
            peers: Default::default(),
            alive: Default::default(),
            probe_now: Default::default(),
            forward: Default::default(),
            links: Default::default(),
            transport: transport.clone(),
        });
        tokio::spawn(network::listen(
            listener,
            transport,
            Arc::new(Server(node.clone())) as Arc<dyn Serve>,
            stop.clone(),
        ));
        tokio::spawn(probe(Arc::downgrade(&node), stop.clone()));
        tokio::spawn(bootstrap(node.clone(), stop.clone()));
        let raft = node.raft.clone();
        let mut stop2 = stop;
        tokio::spawn(async move {
            let _ = stop2.wait_for(|s| *s).await;
            let _ = raft.shutdown().await;
        });
        tracing::info!(node = %node.me, id, "cluster node started");
        Ok(node)
    }

    /// Where peers' forwarding links go (links that arrive before are dropped; the peer
    /// tries again).
    pub fn set_forward(&self, hook: ForwardHook) {
        let _ = self.forward.set(hook);
    }

    /// The node named `name` answered probes lately (this node always does).
    pub fn is_alive(&self, name: &str) -> bool {
        let id = node_id(name);
        id == self.id
            || self
                .alive
                .lock()
                .get(&id)
                .is_some_and(|t| t.elapsed() < ALIVE_FOR)
    }

    fn is_alive_id(&self, id: Nid) -> bool {
        id == self.id
            || self
                .alive
                .lock()
                .get(&id)
                .is_some_and(|t| t.elapsed() < ALIVE_FOR)
    }

    /// `dead` refused a connection (its process is gone): the groups it led here elect
    /// a new leader at once ([`super::failover`]).
    fn peer_gone(&self, dead: Nid) {
        let alive = |id| self.is_alive_id(id);
        super::failover::leader_gone(&self.raft, dead, self.id, alive);
        let groups: Vec<Arc<QGroup>> = self.groups.lock().values().cloned().collect();
        for g in groups {
            super::failover::leader_gone(&g.raft, dead, self.id, alive);
        }
    }

    /// A cluster node by name (configured, or in the metadata group's membership).
    pub fn member_named(&self, name: &str) -> Option<Member> {
        self.config
            .nodes
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .or_else(|| self.members().get(&node_id(name)).cloned())
    }

    /// Starts this node's member of a quorum queue's group, unless it runs already or
    /// this node is not a member.
    pub async fn start_group(
        self: &Arc<Self>,
        p: &QuorumPlacement,
        replica: Arc<dyn Replica>,
    ) -> Option<Arc<QGroup>> {
        if !p.members.contains(&self.me.name) {
            return None;
        }
        if let Some(g) = self.groups.lock().get(&p.group) {
            return Some(g.clone());
        }
        let members: Vec<Member> = p
            .members
            .iter()
            .filter_map(|n| self.member_named(n))
            .collect();
        let recovered = self.recovered.lock().remove(&p.group).unwrap_or_default();
        match QGroup::start(self, p.group, members, recovered, replica).await {
            Ok(g) => {
                let mut groups = self.groups.lock();
                Some(groups.entry(p.group).or_insert(g).clone())
            }
            Err(e) => {
                tracing::error!(gid = p.group, error = %e, "queue group not started");
                None
            }
        }
    }

    /// This node runs a member of group `gid`.
    pub fn runs_group(&self, gid: u64) -> bool {
        self.groups.lock().contains_key(&gid)
    }

    /// Stops this node's member of a group (its queue was deleted).
    pub fn stop_group(&self, gid: u64) {
        if let Some(g) = self.groups.lock().remove(&gid) {
            tokio::spawn(async move { g.shutdown().await });
        }
    }

    /// A queue group's request from a peer.
    async fn handle_binary(&self, payload: Vec<u8>) -> std::io::Result<Vec<u8>> {
        let req: QRequest = network::from_binary(&payload)?;
        network::binary(&self.serve_group(req).await)
    }

    async fn serve_group(&self, req: QRequest) -> QResponse {
        let group = self.groups.lock().get(&req.group()).cloned();
        match group {
            Some(g) => g.serve(req).await,
            None => QResponse::NoGroup,
        }
    }

    /// Sends a group request to the named nodes in turn (this one served here) until
    /// one does it.
    async fn group_request(
        &self,
        via: &[String],
        make: impl Fn() -> QRequest,
    ) -> Result<(), String> {
        let mut last = "no member of the queue's group answered".to_string();
        for name in via {
            let req = make();
            let resp = if *name == self.me.name {
                self.serve_group(req).await
            } else {
                let Some(m) = self.member_named(name) else {
                    continue;
                };
                match super::qgroup::call(&self.peer(&m.addr), &req, FORWARD_TIMEOUT).await {
                    Ok(r) => r,
                    Err(e) => {
                        last = format!("{name}: {e}");
                        continue;
                    }
                }
            };
            match resp {
                QResponse::Done(Ok(())) => return Ok(()),
                QResponse::Done(Err(e)) => last = format!("{name}: {e}"),
                _ => last = format!("{name}: not a member"),
            }
        }
        Err(last)
    }

    fn peer(&self, addr: &str) -> Arc<Peer> {
        self.peers
            .lock()
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(Peer::new(addr.to_string(), &self.transport)))
            .clone()
    }

    /// Members of the metadata group, by id.
    fn members(&self) -> BTreeMap<Nid, Member> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    fn leader(&self) -> Option<(Nid, Member)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Sends `req` to the leader (waiting for one to be known, up to `deadline`).
    async fn to_leader(&self, req: Request, deadline: Instant) -> Result<Response, String> {
        loop {
            match self.leader() {
                Some((id, _)) if id == self.id => return Ok(self.handle(req).await),
                Some((_, leader)) => {
                    return self
                        .peer(&leader.addr)
                        .call(&req, FORWARD_TIMEOUT)
                        .await
                        .map_err(|e| format!("leader {leader} unreachable: {e}"))
                }
                None if Instant::now() < deadline => tokio::time::sleep(NO_LEADER_RETRY).await,
                None => return Err("no leader elected (is a majority of nodes running?)".into()),
            }
        }
    }

    /// Writes on this node if it leads; the index of the committed entry.
    async fn write_here(&self, cmd: MetaCmd) -> Result<u64, String> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(r.log_id.index),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left.max(Duration::from_millis(10))))
            .applied_index_at_least(Some(index), "metadata applied")
            .await
            .map(|_| ())
            .map_err(|e| format!("not applied in time: {e}"))
    }

    async fn replicate_cmd(&self, cmd: MetaCmd) -> Result<(), String> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let index = loop {
            // A leader that died or stepped down under us: ask again (until the deadline)
            // whoever leads then. A write whose answer was lost may be committed twice;
            // applying is idempotent.
            let r = match self.to_leader(Request::Write(cmd.clone()), deadline).await {
                Ok(Response::Index(r)) => r,
                Ok(_) => Err("unexpected response".into()),
                Err(e) => Err(e),
            };
            match r {
                Ok(i) => break i,
                Err(_) if Instant::now() + NO_LEADER_RETRY < deadline => {
                    tokio::time::sleep(NO_LEADER_RETRY).await
                }
                Err(e) => return Err(e),
            }
        };
        self.wait_applied(index, deadline).await
    }

    async fn barrier_now(&self) -> Result<(), String> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        match self.to_leader(Request::ReadIndex, deadline).await? {
            Response::Index(Ok(i)) => self.wait_applied(i, deadline).await,
            Response::Index(Err(e)) => Err(e),
            _ => Err("unexpected response".into()),
        }
    }

    /// Requests from peers (and from this node, when it leads).
    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Append(r) => Response::Append(self.raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(self.raft.vote(r).await),
            Request::Snapshot(r) => Response::Snapshot(self.raft.install_snapshot(r).await),
            Request::Write(cmd) => Response::Index(self.write_here(cmd).await),
            Request::ReadIndex => Response::Index(match self.raft.ensure_linearizable().await {
                Ok(l) => Ok(l.map(|l| l.index).unwrap_or(0)),
                Err(e) => Err(e.to_string()),
            }),
            Request::Join(m) => Response::Done(self.add_member(m).await),
            Request::Forget(name) => Response::Done(self.remove_member(&name).await),
            Request::Ping => Response::Pong(self.me.name.clone()),
            Request::Forward(_) => Response::Done(Err("not a request".into())),
        }
    }

    /// On the leader: the node joins as a learner, catches up, then becomes a voter.
    async fn add_member(&self, m: Member) -> Result<(), String> {
        let id = node_id(&m.name);
        self.raft
            .add_learner(id, m, true)
            .await
            .map_err(|e| e.to_string())?;
        let mut voters: BTreeSet<Nid> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn remove_member(&self, name: &str) -> Result<(), String> {
        let id = node_id(name);
        let voters: BTreeSet<Nid> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&id) && !self.members().contains_key(&id) {
            return Err(format!("node '{name}' is not a cluster member"));
        }
        let rest: BTreeSet<Nid> = voters.into_iter().filter(|v| *v != id).collect();
        if rest.is_empty() {
            return Err("cannot forget the last node".into());
        }
        self.raft
            .change_membership(rest, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Sends a membership request to the leader.
    async fn membership(&self, req: Request) -> Result<(), String> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        match self.to_leader(req, deadline).await? {
            Response::Done(r) => r,
            _ => Err("unexpected response".into()),
        }
    }
}

/// The cluster port's requests, served by the node.
struct Server(Arc<Node>);

impl Serve for Server {
    fn serve(&self, req: Request) -> BoxFut<Response> {
        let node = self.0.clone();
        Box::pin(async move { node.handle(req).await })
    }

    fn forward(&self, from: String, sock: Conn) {
        match self.0.forward.get() {
            Some(hook) => {
                tracing::debug!(peer = %from, "forwarding link accepted");
                hook(sock)
            }
            None => drop(sock),
        }
    }

    fn link(&self, sock: Conn) {
        if let Some(l) = self.0.links.get() {
            l(sock);
        }
    }

    fn serve_binary(&self, payload: Vec<u8>) -> BoxFut<std::io::Result<Vec<u8>>> {
        let node = self.0.clone();
        Box::pin(async move { node.handle_binary(payload).await })
    }

    fn closed(&self) {
        self.0.probe_now.notify_one();
    }
}

/// The handle the broker and the layers below it get ([`Metadata`]).
#[derive(Debug)]
pub struct Handle(pub Arc<Node>);

impl Metadata for Handle {
    fn replicate(&self, cmd: MetaCmd) -> BoxFut<Result<(), String>> {
        let node = self.0.clone();
        Box::pin(async move { node.replicate_cmd(cmd).await })
    }

    fn barrier(&self) -> BoxFut<Result<(), String>> {
        let node = self.0.clone();
        Box::pin(async move { node.barrier_now().await })
    }

    fn status(&self) -> ClusterStatus {
        let n = &self.0;
        let m = n.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<Nid> = membership.voter_ids().collect();
        let alive = n.alive.lock().clone();
        let now = Instant::now();
        let mut members: Vec<NodeStatus> = membership
            .nodes()
            .map(|(id, node)| NodeStatus {
                name: node.name.clone(),
                addr: node.addr.clone(),
                running: *id == n.id
                    || alive
                        .get(id)
                        .is_some_and(|t| now.duration_since(*t) < ALIVE_FOR),
                voter: voters.contains(id),
            })
            .collect();
        if members.is_empty() {
            // Not initialised yet: the configured nodes, as far as probes know.
            members = n
                .config
                .nodes
                .iter()
                .map(|node| {
                    let id = node_id(&node.name);
                    NodeStatus {
                        name: node.name.clone(),
                        addr: node.addr.clone(),
                        running: id == n.id
                            || alive
                                .get(&id)
                                .is_some_and(|t| now.duration_since(*t) < ALIVE_FOR),
                        voter: false,
                    }
                })
                .collect();
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let leader = m
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|x| x.name.clone()));
        ClusterStatus {
            node: n.me.name.clone(),
            leader,
            term: m.current_term,
            applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            members,
        }
    }

    fn join(&self, seed: String) -> BoxFut<Result<(), String>> {
        let node = self.0.clone();
        Box::pin(async move {
            let addr = seed
                .split_once('@')
                .map(|(_, a)| a)
                .unwrap_or(&seed)
                .to_string();
            match node
                .peer(&addr)
                .call(&Request::Join(node.me.clone()), WRITE_TIMEOUT)
                .await
                .map_err(|e| format!("{seed}: {e}"))?
            {
                Response::Done(r) => r,
                _ => Err("unexpected response".into()),
            }
        })
    }

    fn forget(&self, name: String) -> BoxFut<Result<(), String>> {
        let node = self.0.clone();
        Box::pin(async move { node.membership(Request::Forget(name)).await })
    }

    fn change_group(
        &self,
        gid: u64,
        via: Vec<String>,
        members: Vec<String>,
    ) -> BoxFut<Result<(), String>> {
        let node = self.0.clone();
        Box::pin(async move {
            // Right after a change that removed the leader, the group has none until the
            // others elect one (an election timeout): asked then, try again for a while.
            let deadline = tokio::time::Instant::now() + CHANGE_GROUP_PATIENCE;
            loop {
                match node
                    .group_request(&via, || QRequest::Members(gid, members.clone()))
                    .await
                {
                    Err(e)
                        if e.ends_with("not the leader")
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    r => return r,
                }
            }
        })
    }

    fn elect(&self, gid: u64, at: String) -> BoxFut<Result<(), String>> {
        let node = self.0.clone();
        Box::pin(async move { node.group_request(&[at], || QRequest::Elect(gid)).await })
    }

    fn start_group(
        &self,
        p: QuorumPlacement,
        replica: Arc<dyn Replica>,
    ) -> BoxFut<Option<Arc<dyn Group>>> {
        let node = self.0.clone();
        Box::pin(async move {
            node.start_group(&p, replica)
                .await
                .map(|g| g as Arc<dyn Group>)
        })
    }
}

/// Probes every other member (configured or in the membership) and records who answers.
async fn probe(node: std::sync::Weak<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let peers: parking_lot::Mutex<HashMap<Nid, Arc<Peer>>> = Default::default();
    loop {
        let Some(n) = node.upgrade() else { return };
        let mut targets: BTreeMap<Nid, Member> = n.members();
        for m in &n.config.nodes {
            targets.entry(node_id(&m.name)).or_insert_with(|| m.clone());
        }
        targets.remove(&n.id);
        let mut calls = tokio::task::JoinSet::new();
        for (id, m) in targets {
            let p = peers
                .lock()
                .entry(id)
                .or_insert_with(|| Arc::new(Peer::new(m.addr.clone(), &n.transport)))
                .clone();
            calls.spawn(async move { (id, p.call(&Request::Ping, PROBE_TIMEOUT).await) });
        }
        let results = calls.join_all().await;
        let mut gone = Vec::new();
        {
            let now = Instant::now();
            let mut alive = n.alive.lock();
            for (id, r) in results {
                match r {
                    Ok(Response::Pong(_)) => {
                        alive.insert(id, now);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        alive.remove(&id);
                        gone.push(id);
                    }
                    _ => {}
                }
            }
        }
        for id in gone {
            n.peer_gone(id);
        }
        let wake = n.clone();
        drop(n);
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = wake.probe_now.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The first configured node (by name) initialises the group with every configured node
/// as a voter once a majority of them answers; the others wait to be contacted by the
/// leader. A node listed alone waits for `join_cluster`.
async fn bootstrap(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let c = &node.config;
    if c.nodes.len() < 2 || c.bootstrapper().map(|m| &m.name) != Some(&node.me.name) {
        return;
    }
    loop {
        if node.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let reachable = {
            let alive = node.alive.lock();
            let now = Instant::now();
            1 + c
                .nodes
                .iter()
                .filter(|m| m.name != node.me.name)
                .filter(|m| {
                    alive
                        .get(&node_id(&m.name))
                        .is_some_and(|t| now.duration_since(*t) < ALIVE_FOR)
                })
                .count()
        };
        if reachable >= c.majority() {
            let members: BTreeMap<Nid, Member> = c
                .nodes
                .iter()
                .map(|m| (node_id(&m.name), m.clone()))
                .collect();
            match node.raft.initialize(members).await {
                Ok(()) => tracing::info!(reachable, "metadata group initialised"),
                Err(e) => tracing::info!(error = %e, "metadata group not initialised here"),
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
