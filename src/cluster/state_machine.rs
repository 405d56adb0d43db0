//! The metadata group's state machine: each committed [`MetaCmd`] is applied to this
//! node's registries through an [`Apply`] (the broker's side, in `cluster::apply`). A
//! snapshot is the definitions export, saved as `<data-dir>/cluster/snapshot.json`.
//!
//! The registries are already durable on their own (`definitions.json`); after a batch is
//! applied they are saved at once and the applied log id is recorded in the WAL, so a
//! restart replays only what came after (replaying a queue's delete and re-declare would
//! drop the messages it got since).

use super::handle::{BoxFut, MetaCmd};
use super::log_store::LogStore;
use super::{Member, Nid, TypeConfig};
use crate::store::definitions::Definitions;
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

/// The broker's side of the state machine.
pub trait Apply: Send + Sync + 'static {
    /// Applies one command; an error (an inequivalent redeclare made concurrently on
    /// another node, say) is logged, not fatal.
    fn apply(&self, cmd: MetaCmd) -> BoxFut<Result<(), String>>;
    /// Makes what was applied durable (the definitions file).
    fn persist(&self) -> std::io::Result<()>;
    /// The definitions export: the snapshot.
    fn export(&self) -> Definitions;
    /// Makes the registries equal to `d` (a snapshot from the leader): imports it and
    /// deletes durable exchanges and queues it does not have.
    fn install(&self, d: &Definitions);
    /// Imports `d` without deleting anything (this node's own snapshot at start).
    fn merge(&self, d: &Definitions);
}

/// The reply to a command: None, or the error text applying it gave.
pub type MetaReply = Option<String>;

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<Nid, Member>,
    definitions: Definitions,
}

pub struct StateMachine {
    applied: Option<LogId<Nid>>,
    membership: StoredMembership<Nid, Member>,
    apply: Arc<dyn Apply>,
    log: LogStore,
    dir: PathBuf,
    snapshots: u64,
}

impl StateMachine {
    /// The state machine at start: from the saved snapshot (merged into the registries)
    /// and the applied log id the WAL recorded, whichever is later.
    pub fn open(apply: Arc<dyn Apply>, log: LogStore, dir: PathBuf) -> StateMachine {
        let mut sm = StateMachine {
            applied: None,
            membership: StoredMembership::default(),
            apply,
            log,
            dir,
            snapshots: 0,
        };
        if let Some(f) = sm.read_snapshot() {
            sm.apply.merge(&f.definitions);
            sm.applied = f.meta.last_log_id;
            sm.membership = f.meta.last_membership;
        }
        if let Some((a, m)) = sm.log.applied() {
            if Some(a) > sm.applied {
                sm.applied = Some(a);
                sm.membership = m;
            }
        }
        sm
    }

    fn path(&self) -> PathBuf {
        self.dir.join("snapshot.json")
    }

    fn read_snapshot(&self) -> Option<SnapshotFile> {
        let bytes = std::fs::read(self.path()).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(error = %e, "unreadable cluster snapshot ignored");
                None
            }
        }
    }
}

/// Writes a snapshot file atomically (temporary file, fsync, rename, fsync of the dir).
fn save_snapshot(dir: &std::path::Path, f: &SnapshotFile) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let bytes = serde_json::to_vec(f).map_err(std::io::Error::other)?;
    let tmp = dir.join("snapshot.json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, dir.join("snapshot.json"))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(bytes)
}

/// Builds snapshots from the registries as they are when asked.
pub struct Builder {
    applied: Option<LogId<Nid>>,
    membership: StoredMembership<Nid, Member>,
    apply: Arc<dyn Apply>,
    dir: PathBuf,
    n: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<Nid>> {
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{}-{}", self.applied.map(|l| l.index).unwrap_or(0), self.n),
        };
        let f = SnapshotFile {
            meta: meta.clone(),
            definitions: self.apply.export(),
        };
        save_snapshot(&self.dir, &f).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let data = serde_json::to_vec(&f.definitions)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<Nid>>, StoredMembership<Nid, Member>), StorageError<Nid>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaReply>, StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        let mut changed = false;
        for e in entries {
            self.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => replies.push(None),
                EntryPayload::Normal(cmd) => {
                    changed = true;
                    let r = self.apply.apply(cmd).await.err();
                    if let Some(err) = &r {
                        tracing::debug!(index = e.log_id.index, error = %err, "metadata command not applied");
                    }
                    replies.push(r);
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    replies.push(None);
                }
            }
        }
        if let Some(last) = self.applied {
            if changed {
                self.apply
                    .persist()
                    .map_err(|e| StorageIOError::write_state_machine(&e))?;
            }
            self.log.note_applied(last, &self.membership);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots += 1;
        Builder {
            applied: self.applied,
            membership: self.membership.clone(),
            apply: self.apply.clone(),
            dir: self.dir.clone(),
            n: self.snapshots,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<Nid>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Nid, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Nid>> {
        let definitions: Definitions = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.apply.install(&definitions);
        self.apply
            .persist()
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        let f = SnapshotFile {
            meta: meta.clone(),
            definitions,
        };
        save_snapshot(&self.dir, &f)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        if let Some(l) = self.applied {
            self.log.note_applied(l, &self.membership);
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<Nid>> {
        let Some(f) = self.read_snapshot() else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&f.definitions)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta: f.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wal::Wal;
    use openraft::{CommittedLeaderId, Membership};
    use std::collections::{BTreeMap, BTreeSet};

    /// Records what it is asked; its "registries" are one definitions document.
    #[derive(Default)]
    struct Fake {
        applied: parking_lot::Mutex<Vec<MetaCmd>>,
        defs: parking_lot::Mutex<Definitions>,
        persisted: parking_lot::Mutex<usize>,
        installed: parking_lot::Mutex<Vec<Definitions>>,
    }

    impl Apply for Fake {
        fn apply(&self, cmd: MetaCmd) -> BoxFut<Result<(), String>> {
            if let MetaCmd::Import(d) = &cmd {
                self.defs.lock().queues.extend(d.queues.iter().cloned());
            }
            self.applied.lock().push(cmd.clone());
            let r = match cmd {
                MetaCmd::DeleteQueue { .. } => Err("no such queue".to_string()),
                _ => Ok(()),
            };
            Box::pin(async move { r })
        }
        fn persist(&self) -> std::io::Result<()> {
            *self.persisted.lock() += 1;
            Ok(())
        }
        fn export(&self) -> Definitions {
            self.defs.lock().clone()
        }
        fn install(&self, d: &Definitions) {
            self.installed.lock().push(d.clone());
        }
        fn merge(&self, d: &Definitions) {
            self.defs.lock().queues.extend(d.queues.iter().cloned());
        }
    }

    fn log_id(index: u64) -> LogId<Nid> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn import_queue(name: &str) -> MetaCmd {
        let mut d = Definitions::default();
        d.queues.push(crate::store::definitions::QueueDef {
            name: name.into(),
            vhost: "/".into(),
            durable: true,
            auto_delete: false,
            arguments: Default::default(),
            node: None,
            quorum: None,
        });
        MetaCmd::Import(d)
    }

    fn open(dir: &std::path::Path, fake: Arc<Fake>) -> StateMachine {
        let (wal, mut rec) = Wal::open(dir).unwrap();
        let log = LogStore::new(0, Arc::new(wal), rec.remove(&0).unwrap_or_default());
        StateMachine::open(fake, log, dir.to_path_buf())
    }

    /// Commands are applied in order with their replies, the registries saved once per
    /// batch; the applied id and membership survive a restart (nothing is replayed); a
    /// snapshot is the export, and installing one hands it to the registries.
    #[tokio::test]
    async fn applies_in_order_and_remembers_where_it_stopped() {
        let dir = std::env::temp_dir().join(format!("warren-sm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fake = Arc::new(Fake::default());
        let members = BTreeMap::from([(
            1,
            Member {
                name: "n1".into(),
                addr: "127.0.0.1:1".into(),
            },
        )]);
        let membership = Membership::new(vec![BTreeSet::from([1])], members);
        let entries = vec![
            Entry {
                log_id: log_id(1),
                payload: EntryPayload::Membership(membership.clone()),
            },
            Entry {
                log_id: log_id(2),
                payload: EntryPayload::Normal(import_queue("a")),
            },
            Entry {
                log_id: log_id(3),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(4),
                payload: EntryPayload::Normal(MetaCmd::DeleteQueue {
                    vhost: "/".into(),
                    name: "gone".into(),
                }),
            },
        ];
        {
            let mut sm = open(&dir, fake.clone());
            assert_eq!(sm.applied_state().await.unwrap().0, None);
            let replies = sm.apply(entries).await.unwrap();
            assert_eq!(
                replies,
                vec![None, None, None, Some("no such queue".into())]
            );
            assert_eq!(fake.applied.lock().len(), 2);
            assert_eq!(*fake.persisted.lock(), 1);
            let (applied, m) = sm.applied_state().await.unwrap();
            assert_eq!(applied, Some(log_id(4)));
            assert_eq!(m.log_id(), &Some(log_id(1)));
            let mut b = sm.get_snapshot_builder().await;
            let snap = b.build_snapshot().await.unwrap();
            assert_eq!(snap.meta.last_log_id, Some(log_id(4)));
            let d: Definitions = serde_json::from_slice(snap.snapshot.get_ref()).unwrap();
            assert_eq!(d.queues[0].name, "a");
            sm.log.flush().await.unwrap();
        }
        // Reopened: where it stopped, with the membership, the snapshot merged in.
        let again = Arc::new(Fake::default());
        let mut sm = open(&dir, again.clone());
        let (applied, m) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(4)));
        assert_eq!(m.membership(), &membership);
        assert_eq!(again.defs.lock().queues.len(), 1);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(4)));
        // A snapshot from a leader replaces the registries' content.
        let mut meta = current.meta.clone();
        meta.last_log_id = Some(log_id(9));
        let mut data = Definitions::default();
        data.vhosts.push(crate::store::definitions::VHostDef {
            name: "v".into(),
            ..Default::default()
        });
        let bytes = serde_json::to_vec(&data).unwrap();
        sm.install_snapshot(&meta, Box::new(Cursor::new(bytes)))
            .await
            .unwrap();
        assert_eq!(again.installed.lock()[0].vhosts[0].name, "v");
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(9)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
