//! A queue group's state machine on one member: committed entries applied to the
//! queue's replica; no snapshots.

use super::QTypeConfig;
use crate::cluster::{Member, Nid};
use crate::queue::quorum::wire::{QCmd, QEntry, QReply, Replica};
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use std::io::{self, Cursor};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

/// The group's state machine on this member: applies committed entries to the queue's
/// replica. Not persisted: after a restart the log is applied again from the start.
pub struct QStateMachine {
    pub(super) applied: Option<LogId<Nid>>,
    pub(super) membership: StoredMembership<Nid, Member>,
    pub(super) replica: Arc<dyn Replica>,
    pub(super) leader: Arc<AtomicBool>,
    /// Numbered commands applied already (part of the replicated state).
    pub(super) dedup: super::dedup::Dedup,
}

/// Snapshots are not made (the policy is never); asked for one anyway, it fails.
pub struct NoSnapshots;

impl RaftSnapshotBuilder<QTypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QTypeConfig>, StorageError<Nid>> {
        Err(StorageIOError::write_snapshot(
            None,
            &io::Error::other("queue groups keep their whole log"),
        )
        .into())
    }
}

impl RaftStateMachine<QTypeConfig> for QStateMachine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<Nid>>, StoredMembership<Nid, Member>), StorageError<Nid>> {
        Ok((self.applied, self.membership.clone()))
    }

    /// Each entry answers one reply per command it carries (a [`QCmd::Batch`] many).
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<QReply>>, StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<QTypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let leader = self.leader.load(SeqCst);
        let mut replies = Vec::new();
        for e in entries {
            self.applied = Some(e.log_id);
            replies.push(match e.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(QEntry { at, cmd }) => {
                    let cmds = match cmd {
                        QCmd::Batch(cmds) => cmds,
                        cmd => vec![cmd],
                    };
                    // A copy of a numbered command applied already answers as it did.
                    cmds.into_iter()
                        .map(|cmd| match self.dedup.unwrap(cmd) {
                            Some(cmd) => self.replica.apply_entry(QEntry { at, cmd }, leader),
                            None => QReply::default(),
                        })
                        .collect()
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    Vec::new()
                }
            });
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<Nid>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Nid, Member>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Nid>> {
        Err(StorageIOError::read_snapshot(
            Some(meta.signature()),
            &io::Error::other("queue groups keep their whole log"),
        )
        .into())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<QTypeConfig>>, StorageError<Nid>> {
        Ok(None)
    }
}
