//! Quorum queues as Raft groups: each quorum queue declared in a cluster is its own
//! openraft group ([`QTypeConfig`]) among the members its definition names. Its log
//! carries the queue's commands ([`QEntry`]); every member's state machine
//! ([`QStateMachine`]) applies them to its own replica of the queue. Groups share the
//! node's one WAL (records carry the group id, so one fdatasync serves every group) and
//! the cluster port (binary frames naming the group: [`QRequest`]).
//!
//! [`QGroup`] is this node's member of one group and the queue's [`Group`] handle: a
//! driver task takes the queue's commands, stamps them with the leader's clock and writes
//! them through the leader (here as few log entries as possible, [`QCmd::Batch`]: openraft
//! 0.9 syncs each append before it takes the next write; or forwarded in batches to the
//! leader over the cluster link),
//! and answers each once it is committed. After a batch commits the leader sends a
//! heartbeat at once, so followers learn the commit index (and deliver) without waiting
//! for the next one. While leading, it also watches the members: consumers of a node
//! that stops answering are declared down ([`QCmd::Down`]), so what they had checked out
//! is delivered again elsewhere.
//!
//! Snapshots ([`state_machine`], [`snapshot`]): each member snapshots its replica's
//! state once the log since the last snapshot outweighs it, saves it per group and purges
//! its log up to it (the WAL then reclaims the segments); it starts from its snapshot; a
//! member that is too far behind, or added later, installs the leader's.

mod currency;
mod dedup;
mod entry;
mod network;
pub mod snapshot;
mod state_machine;

use dedup::{Dedup, Numbers};
pub use entry::LogCmd;
pub use network::{call, QNetwork};
pub use state_machine::{snapshot_floor, QStateMachine};

use super::log_store::{GroupConfig, LogStore};
use super::network::Peer;
use super::node::Node;
use super::{node_id, Member, Nid};
use crate::queue::quorum::wire::{Done, Group, QCmd, QEntry, QReply, Replica};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Raft, StoredMembership};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Cursor};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

openraft::declare_raft_types!(
    /// A quorum queue group's types.
    pub QTypeConfig:
        D = LogCmd,
        R = Vec<QReply>,
        Node = Member,
);

impl GroupConfig for QTypeConfig {
    type Cmd = LogCmd;
    const BINARY: bool = true;
}

/// How long a publish (or a purge, a tick) may wait for a leader and its commit before it
/// fails (a publish's confirm then becomes a basic.nack).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the other commands keep being tried: a consumer's checkout, cancel, acks and
/// returns must reach the group after a partition of any sensible length (a consumer
/// whose checkout was dropped would wait forever; an ack dropped leaves its message
/// checked out), and retrying them is safe (numbered: applied once).
const KEEP_TRYING: Duration = Duration::from_secs(600);
/// A batch forwarded to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_millis(50);
/// Most commands in one batch.
const BATCH: usize = 1024;
/// About the most bytes of commands in one log entry (a batch past it takes several).
const ENTRY_BYTES: usize = 1 << 20;
/// Most entries in one AppendEntries: with [`ENTRY_BYTES`], well inside a cluster frame.
const PAYLOAD_ENTRIES: u64 = 32;
/// How often a leader checks that the nodes holding consumers still answer.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Entries kept behind a snapshot (a follower a little behind catches up from the log;
/// few, as an entry may carry up to [`ENTRY_BYTES`] of messages).
const KEEP_BEHIND_SNAPSHOT: u64 = 8;
/// Bytes of a snapshot per install RPC.
const SNAPSHOT_CHUNK: u64 = 2 << 20;

/// A node's 16-bit tag in consumer keys.
pub fn node_tag(name: &str) -> u16 {
    (node_id(name) & 0xffff) as u16
}

/// A queue group's request on the cluster port.
#[derive(Debug, Serialize, Deserialize)]
pub enum QRequest {
    Append(u64, AppendEntriesRequest<QTypeConfig>),
    Vote(u64, VoteRequest<Nid>),
    /// Commands for the leader to write, in order.
    Write(u64, Vec<QCmd>),
    /// To the leader: make these nodes the group's voters (learners first, caught up).
    Members(u64, Vec<String>),
    /// To a member: stand for election (leadership moves here if its log is current).
    Elect(u64),
    /// A chunk of the leader's snapshot (last variant: older frames still decode).
    Snapshot(u64, InstallSnapshotRequest<QTypeConfig>),
    /// An append with the leader's clock (ms) when it sent it: a request that waited in
    /// a paused member's socket is known for old news ([`currency`]). Last variant.
    AppendAt(u64, u64, AppendEntriesRequest<QTypeConfig>),
}

impl QRequest {
    pub fn group(&self) -> u64 {
        match self {
            QRequest::Append(g, _)
            | QRequest::Vote(g, _)
            | QRequest::Write(g, _)
            | QRequest::Members(g, _)
            | QRequest::Elect(g)
            | QRequest::Snapshot(g, _)
            | QRequest::AppendAt(g, _, _) => *g,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum QResponse {
    Append(Result<AppendEntriesResponse<Nid>, String>),
    Vote(Result<VoteResponse<Nid>, String>),
    /// Each command's outcome.
    Written(Vec<Result<QReply, String>>),
    Done(Result<(), String>),
    /// This node has no member of that group (not yet, or no longer).
    NoGroup,
    Snapshot(Result<InstallSnapshotResponse<Nid>, String>),
}

/// The Raft timing of a queue group (as the metadata group's). Snapshots are asked for by
/// the state machine (by weight, not openraft's entry count).
fn raft_config() -> Result<openraft::Config, String> {
    openraft::Config {
        cluster_name: "warren-qq".into(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: KEEP_BEHIND_SNAPSHOT,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK,
        install_snapshot_timeout: 3000,
        max_payload_entries: PAYLOAD_ENTRIES,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

/// Commands handed to openraft: per log entry, how many commands it carries and the
/// receiver of its answer.
type Proposed = Vec<(
    usize,
    Result<
        tokio::sync::oneshot::Receiver<
            Result<
                openraft::raft::ClientWriteResponse<QTypeConfig>,
                openraft::error::ClientWriteError<Nid, Member>,
            >,
        >,
        openraft::error::Fatal<Nid>,
    >,
)>;

/// A command waiting for its commit, with its number (open until it is answered).
struct Pending {
    cmd: QCmd,
    seq: u64,
    numbers: Arc<parking_lot::Mutex<Numbers>>,
    done: Option<Done>,
    deadline: Instant,
}

impl Pending {
    fn finish(mut self, r: Result<QReply, String>) {
        if let Some(d) = self.done.take() {
            d(r);
        }
    }

    /// As it travels: numbered, with how far this member has settled.
    fn wire(&self, origin: u32, settled: u64) -> QCmd {
        QCmd::Once {
            origin,
            seq: self.seq,
            settled,
            cmd: Box::new(self.cmd.clone()),
        }
    }
}

impl Drop for Pending {
    /// Answered or dropped (the group stopped): its number is settled.
    fn drop(&mut self) {
        self.numbers.lock().finish(self.seq);
        if let Some(d) = self.done.take() {
            d(Err("queue group stopped".into()));
        }
    }
}

/// How long a command is tried (see [`KEEP_TRYING`]).
fn patience(cmd: &QCmd) -> Duration {
    match cmd {
        QCmd::Enqueue(_) | QCmd::Purge | QCmd::Tick | QCmd::Dequeue { .. } => WRITE_TIMEOUT,
        _ => KEEP_TRYING,
    }
}

/// This node's member of one queue group.
pub struct QGroup {
    pub gid: u64,
    pub raft: Raft<QTypeConfig>,
    node: Weak<Node>,
    me: String,
    tx: mpsc::UnboundedSender<Pending>,
    /// This member's command numbers (see [`dedup`]); `origin` names it in them.
    numbers: Arc<parking_lot::Mutex<Numbers>>,
    origin: u32,
    leader: Arc<AtomicBool>,
    stopped: AtomicBool,
    /// Batches being written here (the last to commit sends the heartbeat).
    writing: AtomicUsize,
    /// The group's log here (shared with its Raft): dropped when the member stops.
    log: LogStore<QTypeConfig>,
    /// How current this member is (shared with its state machine): [`currency`].
    currency: Arc<parking_lot::Mutex<currency::Currency>>,
    replica: Arc<dyn Replica>,
}

impl std::fmt::Debug for QGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QGroup").field("gid", &self.gid).finish()
    }
}

impl QGroup {
    /// Starts this node's member of group `gid` (its log from `recovered`), its driver and
    /// its watcher. The first member initialises a new group.
    pub async fn start(
        node: &Arc<Node>,
        gid: u64,
        members: Vec<Member>,
        recovered: Vec<Vec<u8>>,
        replica: Arc<dyn Replica>,
    ) -> io::Result<Arc<QGroup>> {
        let log: LogStore<QTypeConfig> = LogStore::new(gid, node.wal.clone(), recovered);
        // The state machine starts from the snapshot (or empty) and applies the log after it.
        let (applied, membership, dedup) = load_snapshot(&node.dir, gid, &log, &replica)?;
        let leader = Arc::new(AtomicBool::new(false));
        let (compact, compacts) = mpsc::channel(1);
        let currency = Arc::new(parking_lot::Mutex::new(currency::Currency::default()));
        let sm = QStateMachine {
            gid,
            dir: node.dir.clone(),
            applied,
            membership,
            replica: replica.clone(),
            leader: leader.clone(),
            dedup,
            since: 0,
            compact,
            saved: Arc::new(parking_lot::Mutex::new(applied)),
            snapshots: 0,
            currency: currency.clone(),
        };
        let rc = raft_config().map_err(io::Error::other)?;
        let net = QNetwork {
            gid,
            transport: node.transport.clone(),
        };
        let raft = Raft::new(node.id, Arc::new(rc), net, log.clone(), sm)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let g = Arc::new(QGroup {
            gid,
            raft: raft.clone(),
            node: Arc::downgrade(node),
            me: node.me.name.clone(),
            tx,
            numbers: Arc::new(parking_lot::Mutex::new(Numbers::from_clock())),
            origin: (u32::from(node_tag(&node.me.name)) << 16) | u32::from(node.incarnation),
            leader: leader.clone(),
            stopped: AtomicBool::new(false),
            writing: AtomicUsize::new(0),
            log,
            currency,
            replica: replica.clone(),
        });
        if members.first().map(|m| &m.name) == Some(&node.me.name)
            && !raft.is_initialized().await.unwrap_or(true)
        {
            let init: BTreeMap<Nid, Member> = members
                .iter()
                .map(|m| (node_id(&m.name), m.clone()))
                .collect();
            if let Err(e) = raft.initialize(init).await {
                tracing::info!(gid, error = %e, "queue group not initialised here");
            }
        }
        tokio::spawn(drive(Arc::downgrade(&g), rx));
        tokio::spawn(watch_leader(raft.clone(), node.id, leader));
        tokio::spawn(watch_members(Arc::downgrade(&g), replica));
        tokio::spawn(compact_when_asked(raft.clone(), compacts));
        // Consumers of this node's earlier runs are gone: what they held comes back.
        g.submit(
            QCmd::Down {
                node: node_tag(&node.me.name),
                keep: Some(node.incarnation),
            },
            None,
        );
        Ok(g)
    }

    fn is_leader_now(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(node_id(&self.me))
    }

    /// Writes commands on this node, which leads: each answer when committed (and
    /// applied here). A write refused because leadership moved is retried.
    async fn write_here(&self, cmds: Vec<QCmd>) -> Vec<Result<QReply, String>> {
        let proposed = self.propose(cmds).await;
        self.answers(proposed).await
    }

    /// Hands the commands to openraft, in order, as few log entries as [`ENTRY_BYTES`]
    /// allows ([`QCmd::Batch`]): openraft 0.9 waits for each append's flush before it
    /// takes the next write, so an entry per command meant a WAL sync per publish. The
    /// answers come with [`answers`](Self::answers); proposing in the driver and
    /// waiting elsewhere keeps the queue's order across batches.
    async fn propose(&self, cmds: Vec<QCmd>) -> Proposed {
        self.writing.fetch_add(1, SeqCst);
        let mut rxs = Vec::new();
        for cmd in entries(cmds, ENTRY_BYTES) {
            let n = match &cmd {
                QCmd::Batch(c) => c.len(),
                _ => 1,
            };
            let e = LogCmd::new(QEntry {
                at: crate::store::log::now_ms(),
                cmd,
            });
            rxs.push((n, self.raft.client_write_ff(e).await));
        }
        rxs
    }

    /// Waits for what [`propose`](Self::propose) handed over to commit.
    async fn answers(&self, rxs: Proposed) -> Vec<Result<QReply, String>> {
        let mut out = Vec::with_capacity(rxs.iter().map(|r| r.0).sum());
        for (n, rx) in rxs {
            let r = match rx {
                Ok(rx) => match rx.await {
                    Ok(Ok(r)) => Ok(r.data),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            match r {
                Ok(rs) => out.extend((0..n).map(|i| Ok(rs.get(i).copied().unwrap_or_default()))),
                Err(e) => out.extend(std::iter::repeat_n(Err(e), n)),
            }
        }
        // Followers learn the new commit index now, not at the next heartbeat; while
        // other batches are in flight their appends carry it anyway.
        if self.writing.fetch_sub(1, SeqCst) == 1 {
            let _ = self.raft.trigger().heartbeat().await;
        }
        out
    }

    /// Serves a request from a peer.
    pub async fn serve(&self, req: QRequest) -> QResponse {
        match req {
            QRequest::Append(_, r) => {
                QResponse::Append(self.raft.append_entries(r).await.map_err(|e| e.to_string()))
            }
            QRequest::AppendAt(_, sent, r) => {
                let commit = r.leader_commit.map(|l| l.index);
                let resp = self.raft.append_entries(r).await;
                if let Ok(
                    AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_),
                ) = &resp
                {
                    self.heard_leader(sent, commit);
                }
                QResponse::Append(resp.map_err(|e| e.to_string()))
            }
            QRequest::Vote(_, r) => {
                QResponse::Vote(self.raft.vote(r).await.map_err(|e| e.to_string()))
            }
            QRequest::Write(_, cmds) => {
                if !self.is_leader_now() {
                    let n = cmds.len();
                    return QResponse::Written(vec![Err("not the leader".into()); n]);
                }
                QResponse::Written(self.write_here(cmds).await)
            }
            QRequest::Members(_, names) => QResponse::Done(self.change_members(names).await),
            QRequest::Elect(_) => {
                QResponse::Done(self.raft.trigger().elect().await.map_err(|e| e.to_string()))
            }
            QRequest::Snapshot(_, r) => QResponse::Snapshot(
                self.raft
                    .install_snapshot(r)
                    .await
                    .map_err(|e| e.to_string()),
            ),
        }
    }

    /// The leader's append was accepted: what it committed then is noted, and held
    /// deliveries go if this member is current now ([`currency`]).
    fn heard_leader(&self, sent_ms: u64, commit: Option<u64>) {
        let now = Instant::now();
        let now_ms = crate::store::log::now_ms();
        let current = {
            let mut c = self.currency.lock();
            // When the leader sent it, on this node's clock (the wall clocks' offset
            // taken out: see `Currency::transit`).
            let age = c.transit(now_ms as i64 - sent_ms as i64, now);
            let sent = now.checked_sub(age).unwrap_or(now);
            // One that took long to arrive (it waited in this member's socket while the
            // process was paused) says nothing of the leader's commit now.
            if age <= currency::TRANSIT {
                c.heard(sent, commit);
            }
            c.current(now, now_ms, self.leader.load(SeqCst))
        };
        if current && self.replica.holds_deliveries() {
            self.replica.deliver_held();
        }
    }

    /// The leader holds deliveries (it applied entries stamped long ago: after a pause,
    /// or of an earlier leader): once a quorum confirms its leadership and it applied
    /// what was committed before, it is current and they go.
    async fn confirm_leadership(&self) {
        let confirmed =
            tokio::time::timeout(Duration::from_secs(1), self.raft.ensure_linearizable()).await;
        if let Ok(Ok(_)) = confirmed {
            self.currency.lock().confirmed(crate::store::log::now_ms());
            self.replica.deliver_held();
        }
    }

    /// Entries this member holds in its log (memory and WAL).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The last log id this member purged (covered by its snapshot).
    pub fn purged(&self) -> Option<LogId<Nid>> {
        self.log.purged()
    }

    /// On the leader: new members join as learners and catch up from the log, then the
    /// voters become exactly `names` (one joint-consensus change).
    async fn change_members(&self, names: Vec<String>) -> Result<(), String> {
        if !self.is_leader_now() {
            return Err("not the leader".into());
        }
        let node = self.node.upgrade().ok_or("node stopped")?;
        let voters: BTreeSet<Nid> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        for n in &names {
            let id = node_id(n);
            if voters.contains(&id) {
                continue;
            }
            let m = node
                .member_named(n)
                .ok_or_else(|| format!("no node '{n}'"))?;
            tokio::time::timeout(WRITE_TIMEOUT, self.raft.add_learner(id, m, true))
                .await
                .map_err(|_| format!("'{n}' did not catch up in time"))?
                .map_err(|e| e.to_string())?;
        }
        let want: BTreeSet<Nid> = names.iter().map(|n| node_id(n)).collect();
        self.raft
            .change_membership(want, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Stops this member (its queue was deleted here, or this node is no longer a
    /// member): its log and snapshot go.
    pub async fn shutdown(&self) {
        self.stopped.store(true, SeqCst);
        let _ = self.raft.shutdown().await;
        if let Some(node) = self.node.upgrade() {
            // Unless a new member of the group started here meanwhile (added back).
            if !node.runs_group(self.gid) {
                self.log.forget();
                snapshot::remove(&node.dir, self.gid);
            }
        }
    }
}

impl Group for QGroup {
    fn submit(&self, cmd: QCmd, done: Option<Done>) {
        let p = Pending {
            deadline: Instant::now() + patience(&cmd),
            seq: self.numbers.lock().take(),
            numbers: self.numbers.clone(),
            cmd,
            done,
        };
        if let Err(mpsc::error::SendError(p)) = self.tx.send(p) {
            p.finish(Err("queue group stopped".into()));
        }
    }

    fn leader(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.name.clone())
    }

    fn is_leader(&self) -> bool {
        self.leader.load(SeqCst)
    }

    fn members(&self) -> Vec<String> {
        let m = self.raft.metrics().borrow().clone();
        let mut names: Vec<String> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| n.name.clone())
            .collect();
        names.sort();
        names
    }

    fn online(&self) -> Vec<String> {
        let Some(node) = self.node.upgrade() else {
            return Vec::new();
        };
        self.members()
            .into_iter()
            .filter(|m| node.is_alive(m))
            .collect()
    }

    fn local(&self) -> (u16, u16) {
        let inc = self.node.upgrade().map_or(0, |n| n.incarnation);
        (node_tag(&self.me), inc)
    }

    fn stop(&self) {
        if let Some(node) = self.node.upgrade() {
            node.stop_group(self.gid);
        }
    }
}

/// Where a state machine starts: the last applied log id, the membership then, and the
/// numbered commands applied by then.
type Applied = (Option<LogId<Nid>>, StoredMembership<Nid, Member>, Dedup);

/// The replica's state at start: its snapshot's (and the snapshot's log id and
/// membership), or empty when it has none. A snapshot that cannot be read is an error
/// when the log no longer holds what it covers (the member is then not started: no
/// panic, and the other members keep the queue); otherwise it is ignored.
fn load_snapshot(
    dir: &std::path::Path,
    gid: u64,
    log: &LogStore<QTypeConfig>,
    replica: &Arc<dyn Replica>,
) -> io::Result<Applied> {
    replica.reset();
    snapshot::clear_unfinished(dir, gid);
    let read = snapshot::load(dir, gid).and_then(|f| {
        f.map(|f| {
            state_machine::decode_state(&f.data)
                .map(|(dedup, img)| (f.meta, dedup, img))
                .map_err(|e| format!("{}: {e}", snapshot::path(dir, gid).display()))
        })
        .transpose()
    });
    let purged = log.purged();
    match read {
        Ok(Some((meta, dedup, img))) => {
            replica.restore(img);
            Ok((meta.last_log_id, meta.last_membership, dedup))
        }
        Ok(None) => match purged {
            None => Ok((None, StoredMembership::default(), Dedup::default())),
            Some(p) => Err(io::Error::other(format!(
                "queue group {gid:016x}: its log is purged up to {} but it has no snapshot ({}); this member is not started (delete_member and add_member rebuild it from the others)",
                p.index,
                snapshot::path(dir, gid).display()
            ))),
        },
        Err(e) if purged.is_none() => {
            tracing::warn!(gid, error = %e, "unreadable queue snapshot ignored: the whole log is here");
            snapshot::remove(dir, gid);
            Ok((None, StoredMembership::default(), Dedup::default()))
        }
        Err(e) => Err(io::Error::other(format!(
            "queue group {gid:016x}: unusable snapshot, this member is not started (delete_member and add_member rebuild it from the others): {e}"
        ))),
    }
}

/// Asks openraft for a snapshot each time the state machine says one is due; ends with
/// the group (its state machine, holding the sender, is dropped).
async fn compact_when_asked(raft: Raft<QTypeConfig>, mut asked: mpsc::Receiver<()>) {
    while asked.recv().await.is_some() {
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// Groups commands, in order, into log entries of about `max_bytes` at most (a command
/// larger than that alone): one command as itself, several as a [`QCmd::Batch`].
fn entries(cmds: Vec<QCmd>, max_bytes: usize) -> Vec<QCmd> {
    let mut out = Vec::new();
    let mut cur: Vec<QCmd> = Vec::new();
    let mut bytes = 0;
    let close = |cur: &mut Vec<QCmd>, out: &mut Vec<QCmd>| match cur.len() {
        0 => {}
        1 => out.extend(cur.pop()),
        _ => out.push(QCmd::Batch(std::mem::take(cur))),
    };
    for c in cmds {
        let w = c.weight();
        if !cur.is_empty() && bytes + w > max_bytes {
            close(&mut cur, &mut out);
            bytes = 0;
        }
        bytes += w;
        cur.push(c);
    }
    close(&mut cur, &mut out);
    out
}

/// Acks of one consumer in a batch become one command: each later `Settle` of a key is
/// merged into the batch's first one of that key, so a consumer acking every message
/// costs one log command per batch, not one per ack (each is numbered, deduplicated,
/// encoded and applied on every member). A merge moves the ids only past publishes and
/// other consumers' acks (which they commute with: an ack names messages delivered
/// before, so never one a publish of the same batch adds); any other command ends the
/// runs. Only commands no one waits for are merged; a merged one's number is settled
/// when it is dropped here, and the command it joined carries its ids, retried as one.
fn coalesce_settles(batch: Vec<Pending>) -> Vec<Pending> {
    let mut out: Vec<Pending> = Vec::with_capacity(batch.len());
    // Per consumer key: where its open Settle is in `out`.
    let mut open: Vec<(u64, usize)> = Vec::new();
    for mut p in batch {
        match &mut p.cmd {
            QCmd::Settle { key, ids } if p.done.is_none() => {
                if let Some(&(_, at)) = open.iter().find(|(k, _)| k == key) {
                    if let QCmd::Settle { ids: into, .. } = &mut out[at].cmd {
                        into.append(ids);
                        continue;
                    }
                }
                open.push((*key, out.len()));
            }
            QCmd::Enqueue(_) | QCmd::Settle { .. } => {}
            _ => open.clear(),
        }
        out.push(p);
    }
    out
}

/// Takes the queue's commands in batches and writes them through the leader; retries
/// (against whoever leads then) until each command's deadline.
async fn drive(g: Weak<QGroup>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut forward: Option<(String, Arc<Peer>)> = None;
    let mut retry: Vec<Pending> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut retry);
        if batch.is_empty() {
            match rx.recv().await {
                Some(p) => batch.push(p),
                None => return,
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Some(group) = g.upgrade() else { return };
        if group.stopped.load(SeqCst) {
            for p in batch {
                p.finish(Err("queue group stopped".into()));
            }
            continue;
        }
        let now = Instant::now();
        let (live, late): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| p.deadline > now);
        for p in late {
            p.finish(Err(
                "no quorum: the queue's group did not commit in time".into()
            ));
        }
        if live.is_empty() {
            continue;
        }
        let live = coalesce_settles(live);
        let leader = {
            let m = group.raft.metrics().borrow().clone();
            m.current_leader.and_then(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| (id, n.clone()))
            })
        };
        let results: Vec<Result<QReply, String>> = match leader {
            None => {
                retry = live;
                drop(group);
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Some((id, _)) if node_id(&group.me) == id => {
                // Proposed here, in order; answered by a task of its own: the next batch
                // goes in meanwhile.
                let settled = group.numbers.lock().settled();
                let cmds = live.iter().map(|p| p.wire(group.origin, settled)).collect();
                let proposed = group.propose(cmds).await;
                let tx = group.tx.clone();
                let gr = group.clone();
                tokio::spawn(async move {
                    let results = gr.answers(proposed).await;
                    for (p, r) in live.into_iter().zip(results) {
                        match r {
                            Err(_) if p.deadline > Instant::now() => {
                                // Leadership moved: again, through the driver.
                                if let Err(mpsc::error::SendError(p)) = tx.send(p) {
                                    p.finish(Err("queue group stopped".into()));
                                }
                            }
                            r => p.finish(r),
                        }
                    }
                });
                continue;
            }
            Some((_, m)) => {
                let peer = match &forward {
                    Some((addr, p)) if *addr == m.addr => p.clone(),
                    _ => {
                        let Some(node) = group.node.upgrade() else {
                            for p in live {
                                p.finish(Err("node stopped".into()));
                            }
                            return;
                        };
                        let p = Arc::new(Peer::new(m.addr.clone(), &node.transport));
                        forward = Some((m.addr.clone(), p.clone()));
                        p
                    }
                };
                let settled = group.numbers.lock().settled();
                let cmds = live.iter().map(|p| p.wire(group.origin, settled)).collect();
                let req = QRequest::Write(group.gid, cmds);
                drop(group);
                match call(&peer, &req, FORWARD_TIMEOUT).await {
                    Ok(QResponse::Written(rs)) if rs.len() == live.len() => rs,
                    _ => vec![Err("leader unreachable".into()); live.len()],
                }
            }
        };
        let mut failed = false;
        for (p, r) in live.into_iter().zip(results) {
            match r {
                Err(_) if p.deadline > Instant::now() => {
                    failed = true;
                    retry.push(p);
                }
                r => p.finish(r),
            }
        }
        if failed {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Keeps the group's "this node leads" flag current.
async fn watch_leader(raft: Raft<QTypeConfig>, me: Nid, leader: Arc<AtomicBool>) {
    let mut m = raft.metrics();
    loop {
        leader.store(m.borrow().current_leader == Some(me), SeqCst);
        if m.changed().await.is_err() {
            leader.store(false, SeqCst);
            return;
        }
    }
}

/// While this node leads: members that stopped answering lose their consumers (their
/// checked-out messages go back, for consumers elsewhere), once per outage.
async fn watch_members(g: Weak<QGroup>, replica: Arc<dyn Replica>) {
    let mut downed: BTreeSet<u16> = BTreeSet::new();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(group) = g.upgrade() else { return };
        if group.stopped.load(SeqCst) {
            return;
        }
        let Some(node) = group.node.upgrade() else {
            return;
        };
        if !group.is_leader() {
            downed.clear();
            continue;
        }
        if replica.holds_deliveries() {
            group.confirm_leadership().await;
        }
        let holding = replica.consumer_nodes();
        for m in group.members() {
            if m == group.me {
                continue;
            }
            let tag = node_tag(&m);
            if node.is_alive(&m) {
                downed.remove(&tag);
            } else if holding.contains(&tag) && downed.insert(tag) {
                tracing::info!(gid = group.gid, node = %m, "queue member down: its consumers' messages return");
                group.submit(
                    QCmd::Down {
                        node: tag,
                        keep: None,
                    },
                    None,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::network;
    use crate::queue::quorum::wire::WireMsg;

    /// Commands go into as few entries as the byte bound allows, in order; one alone is
    /// not wrapped.
    #[test]
    fn commands_batch_into_entries_by_size() {
        let msg = |n: usize| {
            QCmd::Enqueue(WireMsg {
                exchange: Default::default(),
                routing_key: Default::default(),
                properties: Default::default(),
                body: vec![n as u8; n].into(),
                priority: 0,
                expiration: None,
                persistent: false,
            })
        };
        assert!(entries(vec![], 1000).is_empty());
        assert_eq!(entries(vec![QCmd::Tick], 1000), vec![QCmd::Tick]);
        let cmds = vec![
            msg(100),
            QCmd::Tick,
            msg(300),
            msg(900),
            msg(2000),
            QCmd::Purge,
        ];
        let got = entries(cmds.clone(), 1000);
        assert_eq!(
            got,
            vec![
                QCmd::Batch(cmds[..3].to_vec()),
                cmds[3].clone(),
                cmds[4].clone(),
                cmds[5].clone(),
            ]
        );
        let flat: Vec<QCmd> = got
            .into_iter()
            .flat_map(|c| match c {
                QCmd::Batch(v) => v,
                c => vec![c],
            })
            .collect();
        assert_eq!(flat, cmds);
    }

    /// A consumer's acks in one batch travel as one Settle at its first ack's place,
    /// past publishes and other consumers' acks, never past another kind of command;
    /// an ack someone waits for is left alone; merged ones' numbers are settled.
    #[test]
    fn acks_of_a_consumer_in_a_batch_become_one_settle() {
        let numbers = Arc::new(parking_lot::Mutex::new(Numbers::default()));
        let pending = |cmd: QCmd, done: Option<Done>| Pending {
            seq: numbers.lock().take(),
            numbers: numbers.clone(),
            cmd,
            done,
            deadline: Instant::now(),
        };
        let settle = |key: u64, ids: &[u64]| QCmd::Settle {
            key,
            ids: ids.to_vec(),
        };
        let enqueue = QCmd::Enqueue(WireMsg {
            exchange: Default::default(),
            routing_key: crate::protocol::codec::ShortStr::from_static("q"),
            properties: Default::default(),
            body: vec![1; 10].into(),
            priority: 0,
            expiration: None,
            persistent: false,
        });
        let batch = vec![
            pending(settle(1, &[10]), None),
            pending(enqueue.clone(), None),
            pending(settle(2, &[20]), None),
            pending(settle(1, &[11, 12]), None),
            pending(enqueue.clone(), None),
            pending(settle(1, &[13]), Some(Box::new(|_| {}))),
            pending(settle(2, &[21]), None),
            pending(QCmd::Cancel { key: 2 }, None),
            pending(settle(2, &[22]), None),
            pending(settle(1, &[14]), None),
            pending(settle(2, &[23]), None),
        ];
        let seqs: Vec<u64> = batch.iter().map(|p| p.seq).collect();
        let out = coalesce_settles(batch);
        let cmds: Vec<QCmd> = out.iter().map(|p| p.cmd.clone()).collect();
        assert_eq!(
            cmds,
            vec![
                settle(1, &[10, 11, 12]),
                enqueue.clone(),
                settle(2, &[20, 21]),
                enqueue,
                settle(1, &[13]),
                QCmd::Cancel { key: 2 },
                settle(2, &[22, 23]),
                settle(1, &[14]),
            ]
        );
        // The merged commands' numbers are settled; the others stay open until answered.
        let open: Vec<u64> = out.iter().map(|p| p.seq).collect();
        assert_eq!(open, [0, 1, 2, 4, 5, 7, 8, 9].map(|i| seqs[i]).to_vec());
        assert_eq!(numbers.lock().settled(), seqs[0] - 1);
        drop(out);
        assert_eq!(numbers.lock().settled(), seqs[10]);
    }

    /// A queue group's requests cross the link as binary frames (bodies as bytes).
    #[test]
    fn writes_travel_as_binary_frames() {
        let req = QRequest::Write(
            7,
            vec![QCmd::Enqueue(WireMsg {
                exchange: Default::default(),
                routing_key: crate::protocol::codec::ShortStr::from_static("q"),
                properties: Default::default(),
                body: vec![1; 4096].into(),
                priority: 0,
                expiration: None,
                persistent: false,
            })],
        );
        let bytes = network::binary(&req).unwrap();
        assert!(bytes.len() < 4200, "{}", bytes.len());
        match network::from_binary::<QRequest>(&bytes).unwrap() {
            QRequest::Write(7, cmds) => assert_eq!(cmds.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(network::from_binary::<QRequest>(b"{}").is_err());
        assert!(network::from_binary::<QRequest>(&bytes[..20]).is_err());
    }
}
