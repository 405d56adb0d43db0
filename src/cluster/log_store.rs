//! One Raft group's log, vote and committed index, kept in memory and made durable
//! through the node's shared [`Wal`]: openraft's `RaftLogStorage`. An append is readable
//! at once and reported flushed (openraft's `LogFlushed`) when the WAL's group commit has
//! synced it.
//!
//! Generic over the group's type config: the metadata group ([`TypeConfig`]) writes its
//! records as JSON, quorum queue groups ([`super::qgroup::QTypeConfig`]) in postcard's
//! compact binary form (message bodies are bytes, not JSON number arrays).

use super::wal::{Checkpoint, Wal};
use super::{Member, Nid, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, LogId, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

/// A group's type config, as the log store needs it: ids and nodes of the cluster, and
/// how its records are encoded.
pub trait GroupConfig:
    RaftTypeConfig<NodeId = Nid, Node = Member, Entry = Entry<Self>, D = Self::Cmd> + Debug
{
    /// The group's command (`D`), named again so that its `Clone` bound is implied.
    type Cmd: openraft::AppData + Clone;
    /// Binary (postcard) records; JSON otherwise.
    const BINARY: bool;
}

impl GroupConfig for TypeConfig {
    type Cmd = super::handle::MetaCmd;
    const BINARY: bool = false;
}

fn encode<C: GroupConfig, T: Serialize>(t: &T) -> std::io::Result<Vec<u8>> {
    if C::BINARY {
        postcard::to_allocvec(t).map_err(io_err)
    } else {
        serde_json::to_vec(t).map_err(io_err)
    }
}

/// [`encode`] into a WAL record built in place ([`super::wal::record_buffer`]): the
/// entries, a batch of publishes among them, are written once, into a buffer of their
/// size, not into a growing one and then again behind the record's header.
fn encode_record<C: GroupConfig, T: Serialize>(t: &T) -> std::io::Result<Vec<u8>> {
    if C::BINARY {
        let size = postcard::experimental::serialized_size(t).map_err(io_err)?;
        let mut rec = super::wal::record_buffer(size);
        postcard::to_io(t, &mut rec).map_err(io_err)?;
        Ok(rec)
    } else {
        let mut rec = super::wal::record_buffer(0);
        serde_json::to_writer(&mut rec, t).map_err(io_err)?;
        Ok(rec)
    }
}

fn decode<C: GroupConfig, T: DeserializeOwned>(b: &[u8]) -> std::io::Result<T> {
    if C::BINARY {
        postcard::from_bytes(b).map_err(io_err)
    } else {
        serde_json::from_slice(b).map_err(io_err)
    }
}

/// A record of this group in the WAL.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
enum Record<C: GroupConfig> {
    Entries(Vec<Entry<C>>),
    Vote(Vote<Nid>),
    Committed(Option<LogId<Nid>>),
    /// Entries from this index on are gone (a follower's conflicting suffix).
    Truncate(u64),
    /// Entries up to this log id are gone (they are in a snapshot).
    Purge(LogId<Nid>),
    /// The state machine applied up to here (with this membership) and its effects are
    /// durable.
    Applied(LogId<Nid>, StoredMembership<Nid, Member>),
    /// Everything but the entries, at the start of a WAL segment: the records before it
    /// are not needed (entries past `last` are gone, those up to `purged` too).
    Checkpoint {
        vote: Option<Vote<Nid>>,
        committed: Option<LogId<Nid>>,
        purged: Option<LogId<Nid>>,
        last: Option<u64>,
        applied: Option<(LogId<Nid>, StoredMembership<Nid, Member>)>,
    },
    /// The group's member here stopped: what came before is not its any more.
    Forget,
}

#[derive(Debug)]
struct State<C: GroupConfig> {
    vote: Option<Vote<Nid>>,
    committed: Option<LogId<Nid>>,
    purged: Option<LogId<Nid>>,
    applied: Option<(LogId<Nid>, StoredMembership<Nid, Member>)>,
    logs: BTreeMap<u64, Entry<C>>,
}

impl<C: GroupConfig> Default for State<C> {
    fn default() -> Self {
        State {
            vote: None,
            committed: None,
            purged: None,
            applied: None,
            logs: BTreeMap::new(),
        }
    }
}

impl<C: GroupConfig> State<C> {
    fn replay(&mut self, r: Record<C>) {
        match r {
            Record::Entries(es) => {
                for e in es {
                    self.logs.insert(e.log_id.index, e);
                }
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::Truncate(from) => {
                self.logs.split_off(&from);
            }
            Record::Purge(upto) => {
                self.logs = self.logs.split_off(&(upto.index + 1));
                self.purged = Some(upto);
            }
            Record::Applied(a, m) => self.applied = Some((a, m)),
            Record::Checkpoint {
                vote,
                committed,
                purged,
                last,
                applied,
            } => {
                self.vote = vote.or(self.vote);
                self.committed = committed;
                if let Some(p) = purged {
                    self.logs = self.logs.split_off(&(p.index + 1));
                    self.purged = Some(p);
                }
                match last {
                    Some(l) => {
                        self.logs.split_off(&(l + 1));
                    }
                    None => self.logs.clear(),
                }
                if applied.is_some() {
                    self.applied = applied;
                }
            }
            Record::Forget => *self = State::default(),
        }
    }

    fn checkpoint(&self) -> Record<C> {
        Record::Checkpoint {
            vote: self.vote,
            committed: self.committed,
            purged: self.purged,
            last: self
                .logs
                .keys()
                .next_back()
                .copied()
                .or(self.purged.map(|p| p.index)),
            applied: self.applied.clone(),
        }
    }
}

/// A group's checkpoint, as the WAL asks for it when it begins a segment.
#[derive(Debug)]
struct CheckpointOf<C: GroupConfig>(Arc<parking_lot::Mutex<State<C>>>);

impl<C: GroupConfig> Checkpoint for CheckpointOf<C> {
    fn checkpoint(&self) -> Option<Vec<u8>> {
        let r = self.0.lock().checkpoint();
        encode::<C, _>(&r).ok()
    }
}

/// A group's log store; clones share it (the clone is openraft's log reader).
#[derive(Debug)]
pub struct LogStore<C: GroupConfig = TypeConfig> {
    group: u64,
    wal: Arc<Wal>,
    state: Arc<parking_lot::Mutex<State<C>>>,
    /// Registered (weakly) with the WAL while any clone lives.
    checkpoint: Arc<dyn Checkpoint>,
}

impl<C: GroupConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            group: self.group,
            wal: self.wal.clone(),
            state: self.state.clone(),
            checkpoint: self.checkpoint.clone(),
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl<C: GroupConfig> LogStore<C> {
    /// The group's store, rebuilt from its records in the WAL (unreadable records are
    /// skipped with an error in the log).
    pub fn new(group: u64, wal: Arc<Wal>, recovered: Vec<Vec<u8>>) -> LogStore<C> {
        let mut state = State::default();
        for payload in recovered {
            match decode::<C, Record<C>>(&payload) {
                Ok(r) => state.replay(r),
                Err(e) => tracing::error!(group, error = %e, "unreadable cluster log record"),
            }
        }
        if let Some(p) = state.purged {
            wal.purged(group, p.index);
        }
        let state = Arc::new(parking_lot::Mutex::new(state));
        let checkpoint: Arc<dyn Checkpoint> = Arc::new(CheckpointOf(state.clone()));
        wal.register(group, Arc::downgrade(&checkpoint));
        LogStore {
            group,
            wal,
            state,
            checkpoint,
        }
    }

    /// The last purged log id (entries up to it are in a snapshot only).
    pub fn purged(&self) -> Option<LogId<Nid>> {
        self.state.lock().purged
    }

    /// Entries held (in memory and in the WAL).
    pub fn len(&self) -> usize {
        self.state.lock().logs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The group's member here stopped: its log is dropped (here and, once this is
    /// durable, from the WAL's reckoning).
    pub fn forget(&self) {
        *self.state.lock() = State::default();
        let done = self
            .wal
            .forgotten_when_durable(self.group, Arc::downgrade(&self.checkpoint));
        self.submit(&Record::Forget, Some(done));
    }

    /// Where the state machine's effects were last known durable (see [`Record::Applied`]).
    pub fn applied(&self) -> Option<(LogId<Nid>, StoredMembership<Nid, Member>)> {
        self.state.lock().applied.clone()
    }

    /// Records that the state machine applied up to `log_id` durably (not waited for:
    /// losing it only means replaying idempotent commands).
    pub fn note_applied(&self, log_id: LogId<Nid>, membership: &StoredMembership<Nid, Member>) {
        self.state.lock().applied = Some((log_id, membership.clone()));
        self.submit(&Record::Applied(log_id, membership.clone()), None);
    }

    /// Waits until every record submitted so far is durable (writes the committed id
    /// again, durably, behind them).
    pub async fn flush(&self) -> std::io::Result<()> {
        let committed = self.state.lock().committed;
        self.write(&Record::Committed(committed)).await
    }

    fn submit(&self, r: &Record<C>, done: Option<Box<dyn FnOnce(std::io::Result<()>) + Send>>) {
        match encode::<C, _>(r) {
            Ok(bytes) => self.wal.submit(self.group, &bytes, done),
            Err(e) => {
                if let Some(d) = done {
                    d(Err(io_err(e)));
                }
            }
        }
    }

    async fn write(&self, r: &Record<C>) -> std::io::Result<()> {
        let bytes = encode::<C, _>(r)?;
        self.wal.write(self.group, &bytes).await
    }
}

impl<C: GroupConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<Nid>> {
        let s = self.state.lock();
        Ok(s.logs.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl<C: GroupConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<Nid>> {
        let s = self.state.lock();
        let last = s.logs.values().next_back().map(|e| e.log_id).or(s.purged);
        Ok(LogState {
            last_purged_log_id: s.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<Nid>) -> Result<(), StorageError<Nid>> {
        // Set first, so a WAL checkpoint taken meanwhile carries it.
        self.state.lock().vote = Some(*vote);
        self.write(&Record::Vote(*vote))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<Nid>>, StorageError<Nid>> {
        Ok(self.state.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<Nid>>,
    ) -> Result<(), StorageError<Nid>> {
        self.state.lock().committed = committed;
        self.submit(&Record::Committed(committed), None);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<Nid>>, StorageError<Nid>> {
        Ok(self.state.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<C>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let last = entries.last().map_or(0, |e| e.log_id.index);
        let record = Record::Entries(entries);
        let rec = encode_record::<C, _>(&record).map_err(|e| StorageIOError::write_logs(&e))?;
        if let Record::Entries(es) = record {
            let mut s = self.state.lock();
            for e in es {
                s.logs.insert(e.log_id.index, e);
            }
        }
        self.wal.submit_record(
            self.group,
            last,
            rec,
            Some(Box::new(move |r| callback.log_io_completed(r))),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        self.state.lock().logs.split_off(&log_id.index);
        self.submit(&Record::Truncate(log_id.index), None);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        {
            let mut s = self.state.lock();
            s.logs = s.logs.split_off(&(log_id.index + 1));
            s.purged = Some(log_id);
        }
        let done = self.wal.purged_when_durable(self.group, log_id.index);
        self.submit(&Record::Purge(log_id), Some(done));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// Appends, a vote, a truncation and a purge survive a reopen of the WAL.
    #[tokio::test]
    async fn log_state_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("warren-logstore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (wal, rec) = Wal::open(&dir).unwrap();
            let wal = Arc::new(wal);
            let mut s: LogStore =
                LogStore::new(0, wal.clone(), rec.get(&0).cloned().unwrap_or_default());
            s.save_vote(&Vote::new(2, 1)).await.unwrap();
            let recs: Vec<_> = (1..=5).map(|i| entry(1, i)).collect();
            let st = s.state.clone();
            s.state.lock().logs.clear();
            // Through the same path as openraft's append, minus its callback.
            let bytes = serde_json::to_vec(&Record::<TypeConfig>::Entries(recs.clone())).unwrap();
            wal.submit(0, &bytes, None);
            for e in recs {
                st.lock().logs.insert(e.log_id.index, e);
            }
            s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 5))
                .await
                .unwrap();
            s.purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
                .await
                .unwrap();
            s.note_applied(
                LogId::new(CommittedLeaderId::new(1, 1), 3),
                &StoredMembership::default(),
            );
            // A durable write after the others: they are on disk too (in order).
            s.save_vote(&Vote::new(3, 1)).await.unwrap();
        }
        let (wal, rec) = Wal::open(&dir).unwrap();
        let mut s: LogStore =
            LogStore::new(0, Arc::new(wal), rec.get(&0).cloned().unwrap_or_default());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(4));
        let got = s.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(s.applied().map(|l| l.0.index), Some(3));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With small WAL segments: old segments go once purged past, and what a reopen
    /// reads (checkpoints and the entries left) is the same log: vote, purge point,
    /// entries after it, none of a truncated suffix.
    #[tokio::test]
    async fn checkpoints_keep_the_log_whole_while_segments_go() {
        let dir = std::env::temp_dir().join(format!("warren-logstore-cp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lid = |i| LogId::new(CommittedLeaderId::new(1, 1), i);
        {
            let (wal, _) = Wal::open_with(&dir, 4096).unwrap();
            let wal = Arc::new(wal);
            let mut s: LogStore = LogStore::new(0, wal.clone(), Vec::new());
            s.save_vote(&Vote::new(2, 1)).await.unwrap();
            for i in 1..=300u64 {
                let mut e = entry(1, i);
                e.payload = EntryPayload::Normal(crate::cluster::handle::MetaCmd::DeleteQueue {
                    vhost: "/".into(),
                    name: "x".repeat(200),
                });
                let bytes =
                    serde_json::to_vec(&Record::<TypeConfig>::Entries(vec![e.clone()])).unwrap();
                s.state.lock().logs.insert(i, e);
                wal.submit_indexed(0, i, &bytes, None);
                if i % 20 == 0 {
                    s.flush().await.unwrap();
                }
            }
            s.truncate(lid(291)).await.unwrap();
            s.purge(lid(250)).await.unwrap();
            // Two more syncs: the purge is durable, then counted.
            s.flush().await.unwrap();
            s.flush().await.unwrap();
            // ~20 entries a segment: those of 251..=300 and the open one are left.
            let segs = wal.segments();
            assert!(segs.len() <= 4, "{segs:?}");
            assert!(!segs[0].ends_with("wal.00000000"), "{segs:?}");
        }
        let (wal, rec) = Wal::open(&dir).unwrap();
        let mut s: LogStore =
            LogStore::new(0, Arc::new(wal), rec.get(&0).cloned().unwrap_or_default());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(250));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(290));
        let got = s.try_get_log_entries(0..1000).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (251..=290).collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
