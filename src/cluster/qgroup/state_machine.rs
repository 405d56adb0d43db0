//! A queue group's state machine on one member: committed entries applied to the
//! queue's replica, and its snapshots.
//!
//! A snapshot is the replica's whole state ([`crate::queue::quorum::fifo::image`]: ready
//! messages with their bodies, what each consumer has checked out, held dead letters)
//! at an applied log id, saved per group ([`super::snapshot`]); the log up to it can then
//! be purged. A member starts from its snapshot and applies only the log after it; a
//! member too far behind (or added later) installs the leader's.
//!
//! When: the state machine counts the log's weight applied since the last snapshot and
//! asks for one ([`QStateMachine::compact`]) once it is at least [`snapshot_floor`] and
//! at least twice what the state holds, so a snapshot costs about half what the log it
//! replaces took, and the log stays within about twice the state's size (a queue that
//! is drained keeps a short log; one with a large backlog is not rewritten for every
//! few entries).

use super::currency::Currency;
use super::dedup::Dedup;
use super::snapshot;
use super::QTypeConfig;
use crate::cluster::{Member, Nid};
use crate::queue::quorum::fifo::image::Image;
use crate::queue::quorum::wire::{self, QCmd, QEntry, QReply, Replica, SnapMsg};
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use std::io::{self, Cursor, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The least log weight (bytes) between two snapshots
/// (`WARREN_QSNAP_MIN_BYTES` overrides it, for tests).
const SNAPSHOT_FLOOR: usize = 4 << 20;
/// What an entry without messages counts for.
const ENTRY_WEIGHT: usize = 64;

/// The least log weight between two snapshots.
pub fn snapshot_floor() -> usize {
    static FLOOR: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *FLOOR.get_or_init(|| {
        std::env::var("WARREN_QSNAP_MIN_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SNAPSHOT_FLOOR)
    })
}

/// How many times the state's weight the log grows between two snapshots. A snapshot
/// re-encodes (and writes) the whole state, so a queue whose backlog grows costs about
/// `1 / LOG_PER_STATE` of an encoding per byte logged: at 1, a quarter to a third of the
/// nodes' CPU went to snapshots of the backlog in the 4-publisher benchmark. The log
/// then holds up to this many times the state (most of it, for a growing backlog, the
/// same bodies the state holds: they are shared, not copied).
const LOG_PER_STATE: usize = 2;

/// Whether a snapshot is due: the log since the last one weighs at least the floor and
/// at least [`LOG_PER_STATE`] times what the state holds.
pub fn snapshot_due(since: usize, held: usize, floor: usize) -> bool {
    since >= floor && since >= held.saturating_mul(LOG_PER_STATE)
}

/// The group's state machine on this member.
pub struct QStateMachine {
    pub(super) gid: u64,
    /// The cluster directory (snapshots under `qsnap/`).
    pub(super) dir: PathBuf,
    pub(super) applied: Option<LogId<Nid>>,
    pub(super) membership: StoredMembership<Nid, Member>,
    pub(super) replica: Arc<dyn Replica>,
    pub(super) leader: Arc<AtomicBool>,
    /// Numbered commands applied already (part of the replicated state).
    pub(super) dedup: Dedup,
    /// Log weight applied since the last snapshot.
    pub(super) since: usize,
    /// Asks the group for a snapshot (full: one is asked for already).
    pub(super) compact: mpsc::Sender<()>,
    /// The last id saved to the snapshot file: an older one never replaces it (a build
    /// runs on its own task and may finish after an install).
    pub(super) saved: Arc<parking_lot::Mutex<Option<LogId<Nid>>>>,
    pub(super) snapshots: u64,
    /// How current this member is: the gate of the deliveries to this node's consumers.
    pub(super) currency: Arc<parking_lot::Mutex<Currency>>,
}

impl QStateMachine {
    /// Sends the held deliveries if this member is current (see [`super::currency`]).
    fn deliver_if_current(&self, at: Option<u64>) {
        let current = {
            let mut c = self.currency.lock();
            c.applied(self.applied.map(|l| l.index), at);
            c.current(
                std::time::Instant::now(),
                crate::store::log::now_ms(),
                self.leader.load(SeqCst),
            )
        };
        if current {
            self.replica.deliver_held();
        }
    }
}

/// A snapshot's bytes, written to `out` as they are encoded: the table of numbered
/// commands applied (so a retried command is still applied once after an install or a
/// restart), then the queue's state (paged bodies read one at a time as they are
/// written: the backlog is never copied into memory whole).
fn encode_state(dedup: &Dedup, image: &Image<SnapMsg>, out: &mut dyn Write) -> io::Result<()> {
    postcard::to_io(dedup, &mut *out).map_err(io::Error::other)?;
    wire::encode_image_to(image, out)
}

/// Reads a snapshot's bytes back (see [`encode_state`]).
pub(super) fn decode_state(data: &[u8]) -> Result<(Dedup, wire::QImage), String> {
    let (dedup, rest) = postcard::take_from_bytes::<Dedup>(data)
        .map_err(|e| format!("unreadable table of applied commands: {e}"))?;
    Ok((dedup, wire::decode_image(rest)?))
}

fn weight(e: &Entry<QTypeConfig>) -> usize {
    match &e.payload {
        EntryPayload::Normal(e) => e.cmd.weight().max(ENTRY_WEIGHT),
        _ => ENTRY_WEIGHT,
    }
}

/// Saves a snapshot, its data written by `data` into the file, unless a newer one is
/// saved already (None then; else the data's length).
fn save(
    dir: &std::path::Path,
    gid: u64,
    saved: &parking_lot::Mutex<Option<LogId<Nid>>>,
    meta: &SnapshotMeta<Nid, Member>,
    data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Option<u64>> {
    let mut last = saved.lock();
    if last.is_some() && meta.last_log_id <= *last {
        return Ok(None);
    }
    let len = snapshot::save_with(dir, gid, meta, data)?;
    *last = meta.last_log_id;
    Ok(Some(len))
}

/// Builds a snapshot from the replica's state as it was when asked.
pub struct QSnapshotBuilder {
    gid: u64,
    dir: PathBuf,
    meta: SnapshotMeta<Nid, Member>,
    image: Option<Image<SnapMsg>>,
    /// The numbered commands applied when the image was taken.
    dedup: super::dedup::Dedup,
    saved: Arc<parking_lot::Mutex<Option<LogId<Nid>>>>,
}

impl RaftSnapshotBuilder<QTypeConfig> for QSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QTypeConfig>, StorageError<Nid>> {
        let err = |e: &dyn std::fmt::Display| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(self.meta.signature()),
                &io::Error::other(e.to_string()),
            ))
        };
        let Some(image) = self.image.take() else {
            return Err(err(&"the queue is gone"));
        };
        // Streamed into the snapshot file (the image holds references: shared bodies
        // and open page segments, read here, outside the queue's lock).
        let dedup = &self.dedup;
        let saved = save(&self.dir, self.gid, &self.saved, &self.meta, |w| {
            encode_state(dedup, &image, w)
        });
        drop(image);
        let bytes = saved.map_err(|e| err(&e))?;
        tracing::debug!(gid = self.gid, index = ?self.meta.last_log_id.map(|l| l.index), ?bytes, "queue group snapshot saved");
        // openraft 0.9 keeps only the meta of a snapshot it had built (`sm::worker`:
        // `Response::BuildSnapshot(snap.meta)`); the data is the file, read back by
        // `get_current_snapshot` when a member needs it. So it is not read back here.
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<QTypeConfig> for QStateMachine {
    type SnapshotBuilder = QSnapshotBuilder;

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
        let mut last_at = None;
        for e in entries {
            self.applied = Some(e.log_id);
            self.since += weight(&e);
            replies.push(match e.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(e) => {
                    // The log still holds the entry (shared): each command is read from
                    // it and only the one applied is copied (its bodies and names are
                    // shared), not the whole batch with a box per numbered command.
                    let at = e.at;
                    last_at = Some(at);
                    let cmds = match &e.cmd {
                        QCmd::Batch(cmds) => cmds.as_slice(),
                        cmd => std::slice::from_ref(cmd),
                    };
                    // A copy of a numbered command applied already answers as it did.
                    cmds.iter()
                        .map(|cmd| match self.dedup.unwrap_ref(cmd) {
                            Some(cmd) => self.replica.apply_entry(
                                QEntry {
                                    at,
                                    cmd: cmd.clone(),
                                },
                                leader,
                            ),
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
        // What the run gave this node's consumers goes now if this member is current,
        // and only what is still theirs after the whole run.
        self.deliver_if_current(last_at);
        let floor = snapshot_floor();
        if self.since >= floor && snapshot_due(self.since, self.replica.held_bytes(), floor) {
            let _ = self.compact.try_send(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots += 1;
        self.since = 0;
        QSnapshotBuilder {
            gid: self.gid,
            dir: self.dir.clone(),
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id: format!("{}-{}", self.applied.map_or(0, |l| l.index), self.snapshots),
            },
            image: self.replica.image(),
            dedup: self.dedup.clone(),
            saved: self.saved.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<Nid>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// The leader's snapshot: saved here, then the replica takes its state.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Nid, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Nid>> {
        let data = snapshot.into_inner();
        let (dedup, image) = decode_state(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &io::Error::other(e))
        })?;
        save(&self.dir, self.gid, &self.saved, meta, |w| {
            w.write_all(&data)
        })
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        drop(data);
        self.replica.restore(image);
        self.dedup = dedup;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.since = 0;
        self.deliver_if_current(None);
        tracing::info!(gid = self.gid, index = ?meta.last_log_id.map(|l| l.index), "queue group snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<QTypeConfig>>, StorageError<Nid>> {
        match snapshot::load(&self.dir, self.gid) {
            Ok(None) => Ok(None),
            Ok(Some(f)) => Ok(Some(Snapshot {
                meta: f.meta,
                snapshot: Box::new(Cursor::new(f.data)),
            })),
            Err(e) => Err(StorageIOError::read_snapshot(None, &io::Error::other(e)).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot is due once the log since the last one reaches the floor and twice
    /// the state's size, whichever is larger.
    #[test]
    fn a_snapshot_is_due_when_the_log_outweighs_the_state() {
        assert!(!snapshot_due(100, 0, 1000));
        assert!(snapshot_due(1000, 0, 1000));
        assert!(snapshot_due(1000, 500, 1000));
        assert!(!snapshot_due(1000, 501, 1000));
        assert!(!snapshot_due(8000, 8000, 1000));
        assert!(!snapshot_due(15999, 8000, 1000));
        assert!(snapshot_due(16000, 8000, 1000));
        assert!(!snapshot_due(usize::MAX - 1, usize::MAX, 1000));
    }

    fn entry(id: u64) -> crate::queue::quorum::fifo::image::ImageEntry<SnapMsg> {
        use crate::queue::quorum::wire::WireMsg;
        crate::queue::quorum::fifo::image::ImageEntry {
            id,
            msg: SnapMsg::mem(
                WireMsg {
                    exchange: crate::protocol::codec::ShortStr::from_static("x"),
                    routing_key: crate::protocol::codec::ShortStr::from_static("q"),
                    properties: vec![1; 20].into(),
                    body: vec![id as u8; 2000].into(),
                    priority: 0,
                    expiration: None,
                    persistent: true,
                }
                .into_message(),
            ),
            redelivered: id.is_multiple_of(3),
            delivery_count: (id % 4) as u32,
            expires_at: None,
            pos: id,
        }
    }

    /// The state streams into a snapshot file (the table, then the image: the same
    /// bytes as encoding them one after the other) and reads back; a damaged file is
    /// refused.
    #[test]
    fn the_state_streams_into_a_snapshot_file_and_back() {
        let mut dedup = Dedup::default();
        assert!(dedup.admit(3, 1, 0));
        let image: Image<SnapMsg> = Image {
            ready: (1..=300).map(entry).collect(),
            checked_out: vec![(9, entry(301))],
            consumers: Vec::new(),
            dlx_held: vec![(entry(302), 1)],
            next_id: 303,
            next_pos: 303,
        };
        let mut want = postcard::to_allocvec(&dedup).unwrap();
        want.extend_from_slice(&wire::encode_image(&image).unwrap());
        let dir = std::env::temp_dir().join(format!("warren-qsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let meta = SnapshotMeta::<Nid, Member>::default();
        let saved = parking_lot::Mutex::new(None);
        let len = save(&dir, 4, &saved, &meta, |w| encode_state(&dedup, &image, w)).unwrap();
        assert_eq!(len, Some(want.len() as u64));
        let f = snapshot::load(&dir, 4).unwrap().unwrap();
        assert_eq!(f.data, want);
        let (back, img) = decode_state(&f.data).unwrap();
        assert_eq!(back, dedup);
        assert_eq!(img.ready.len(), 300);
        assert_eq!(
            postcard::to_allocvec(&img).unwrap(),
            wire::encode_image(&image).unwrap()
        );
        let path = snapshot::path(&dir, 4);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(snapshot::load(&dir, 4).unwrap_err().contains("CRC"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A snapshot carries the table of applied numbered commands: after an install, a
    /// retried copy of a command the snapshot covers is still refused.
    #[test]
    fn a_snapshot_keeps_the_applied_commands_table() {
        let mut dedup = Dedup::default();
        assert!(dedup.admit(7, 41, 40));
        let image: Image<SnapMsg> = Image {
            ready: Vec::new(),
            checked_out: Vec::new(),
            consumers: Vec::new(),
            dlx_held: Vec::new(),
            next_id: 3,
            next_pos: 9,
        };
        let mut data = Vec::new();
        encode_state(&dedup, &image, &mut data).unwrap();
        let (mut back, img) = decode_state(&data).unwrap();
        assert_eq!(back, dedup);
        assert_eq!((img.next_id, img.next_pos), (3, 9));
        assert!(!back.admit(7, 41, 40), "the retry of 41 after the install");
        assert!(decode_state(&data[..data.len() - 1]).is_err());
        assert!(decode_state(&[]).is_err());
    }
}
