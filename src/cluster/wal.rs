//! The node's Raft write-ahead log, shared by every Raft group on the node (the metadata
//! group, group 0, and each quorum queue's group): segment files
//! `<data-dir>/cluster/wal.NNNNNNNN`, written in order. Records are
//! `[len u32][crc32 u32][group u64][index u64][payload]` (little-endian; `len` counts
//! group, index and payload); the payload is the group's own encoding, `index` the last
//! log index among the entries the record carries (0: none).
//!
//! One writer thread owns the files. Callers hand it records with a completion; it takes
//! every record waiting, writes them with one `write` and makes them durable with one
//! `fdatasync`, then completes them all: group commit, so many groups (and many appends
//! of one group) share each sync. At open the segments are read back once; a torn or
//! corrupt tail (length or CRC wrong) ends a segment and is cut off.
//!
//! # Reclaiming disk
//!
//! A segment past [`segment_bytes`] is closed and a new one begun with a **checkpoint** of
//! every registered group ([`Checkpoint`]: its vote, committed and purged ids, last
//! index — what a replay needs besides the entries), so the small records of closed
//! segments are never needed again. A closed segment is deleted once every group with
//! records in it has a checkpoint in a later segment and has purged (durably) every
//! entry the segment holds for it — or was forgotten (its member stopped here). So the
//! files hold about the groups' unpurged logs, however long the node runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Weak};

/// Largest record accepted at read-back (a corrupt length must not allocate gigabytes).
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 24;
/// A segment is closed past this size (`WARREN_CLUSTER_WAL_SEGMENT_BYTES` overrides it,
/// for tests).
const SEGMENT_BYTES: u64 = 64 << 20;
/// A forgotten group's purge mark: everything it had is gone.
const FORGOTTEN: u64 = u64::MAX;

/// The size past which a segment is closed.
pub fn segment_bytes() -> u64 {
    std::env::var("WARREN_CLUSTER_WAL_SEGMENT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 4096)
        .unwrap_or(SEGMENT_BYTES)
}

type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

struct Job {
    bytes: Vec<u8>,
    group: u64,
    index: u64,
    done: Option<Done>,
}

/// A group's state in the form of one of its own records, written at the start of each
/// new segment (see the module docs).
pub trait Checkpoint: Send + Sync + std::fmt::Debug {
    fn checkpoint(&self) -> Option<Vec<u8>>;
}

/// What the writer thread and the callers share: who to checkpoint, what is purged.
#[derive(Default)]
struct Shared {
    groups: parking_lot::Mutex<HashMap<u64, Weak<dyn Checkpoint>>>,
    /// Per group: entries up to this index are durably purged ([`FORGOTTEN`]: all).
    purged: parking_lot::Mutex<HashMap<u64, u64>>,
}

/// The log's writer. Dropping the last handle ends the writer thread.
pub struct Wal {
    tx: parking_lot::Mutex<mpsc::Sender<Job>>,
    dir: PathBuf,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

/// What the files held at open, per group, in order.
pub type Recovered = HashMap<u64, Vec<Vec<u8>>>;

/// Encodes one record (header and payload).
pub fn encode(group: u64, index: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = record_buffer(payload.len());
    out.extend_from_slice(payload);
    fill_header(&mut out, group, index);
    out
}

/// A buffer for a record built in place: room for the header, then the payload is
/// written behind it (capacity for `payload` bytes) and [`Wal::submit_record`] fills the
/// header. A large append is then not copied behind its header.
pub fn record_buffer(payload: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload);
    out.resize(HEADER, 0);
    out
}

/// Writes the header of a record built by [`record_buffer`]: length, CRC of group,
/// index and payload, group, index.
fn fill_header(rec: &mut [u8], group: u64, index: u64) {
    let len = (rec.len() - 8) as u32;
    rec[8..16].copy_from_slice(&group.to_le_bytes());
    rec[16..24].copy_from_slice(&index.to_le_bytes());
    let crc = crc32fast::hash(&rec[8..]);
    rec[0..4].copy_from_slice(&len.to_le_bytes());
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded record: group, last entry index, payload.
pub type Rec<'a> = (u64, u64, &'a [u8]);

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Decodes the records of `buf` in order; returns them and the length of the good prefix
/// (a torn or corrupt record ends the log).
pub fn decode(buf: &[u8]) -> (Vec<Rec<'_>>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 8 {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
        if !(16..=MAX_RECORD).contains(&len) || buf.len() - at - 8 < len {
            break;
        }
        let body = &buf[at + 8..at + 8 + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        out.push((u64_at(body, 0), u64_at(body, 8), &body[16..]));
        at += 8 + len;
    }
    (out, at)
}

/// The records of the single-file log of earlier versions (`<dir>/wal`:
/// `[len][crc32][group][payload]`, no index).
fn decode_legacy(buf: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 16 {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
        if !(8..=MAX_RECORD).contains(&len) || buf.len() - at - 8 < len {
            break;
        }
        let body = &buf[at + 8..at + 8 + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        out.push((u64_at(body, 0), &body[8..]));
        at += 8 + len;
    }
    out
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal.{seq:08}"))
}

/// A segment's bookkeeping on the writer thread.
#[derive(Debug, Default)]
struct Segment {
    bytes: u64,
    /// Groups with records here, and the last entry index among them (0: no entries).
    groups: HashMap<u64, u64>,
    /// Groups whose checkpoint starts this segment.
    checkpointed: HashSet<u64>,
}

/// The segments and the open one, owned by the writer thread.
struct Segments {
    dir: PathBuf,
    limit: u64,
    segs: BTreeMap<u64, Segment>,
    file: File,
    shared: Arc<Shared>,
}

impl Wal {
    /// Opens (or creates) the log under `dir`, reads back its records and starts the
    /// writer thread.
    pub fn open(dir: &Path) -> io::Result<(Wal, Recovered)> {
        Wal::open_with(dir, segment_bytes())
    }

    /// [`open`](Self::open) with segments closed past `limit` bytes.
    pub fn open_with(dir: &Path, limit: u64) -> io::Result<(Wal, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let mut recovered: Recovered = HashMap::new();
        let mut segs: BTreeMap<u64, Segment> = BTreeMap::new();
        let mut seqs: Vec<u64> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name();
            if let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix("wal."))
                .and_then(|n| n.parse::<u64>().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let legacy = dir.join("wal");
        if seqs.is_empty() && legacy.exists() {
            // An earlier version's single file: its records become the first segment's.
            let buf = std::fs::read(&legacy)?;
            let mut out = Vec::new();
            for (g, p) in decode_legacy(&buf) {
                // Unknown entry indexes: kept until the group is forgotten.
                out.extend(encode(g, FORGOTTEN - 1, p));
            }
            let mut f = File::create(segment_path(dir, 0))?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::remove_file(&legacy)?;
            sync_dir(dir)?;
            seqs.push(0);
        }
        for seq in &seqs {
            let path = segment_path(dir, *seq);
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            let (records, good) = decode(&buf);
            if good < buf.len() {
                tracing::warn!(
                    path = %path.display(),
                    offset = good,
                    bytes = buf.len() - good,
                    "cluster log: torn or corrupt tail cut off"
                );
                file.set_len(good as u64)?;
                file.sync_data()?;
            }
            let mut seg = Segment {
                bytes: good as u64,
                ..Segment::default()
            };
            for (g, index, payload) in records {
                recovered.entry(g).or_default().push(payload.to_vec());
                let m = seg.groups.entry(g).or_default();
                *m = (*m).max(index);
            }
            segs.insert(*seq, seg);
        }
        // Writes go to a new segment: a reopened one may end in a cut tail.
        let next = seqs.last().map_or(0, |s| s + 1);
        let file = File::create(segment_path(dir, next))?;
        segs.insert(next, Segment::default());
        sync_dir(dir)?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<Job>();
        let s = Segments {
            dir: dir.to_path_buf(),
            limit,
            segs,
            file,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("warren-raft-wal".into())
            .spawn(move || writer(s, rx))?;
        Ok((
            Wal {
                tx: parking_lot::Mutex::new(tx),
                dir: dir.to_path_buf(),
                shared,
            },
            recovered,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment files now, oldest first (tests and status).
    pub fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("wal."))
                    .is_some_and(|n| n.parse::<u64>().is_ok())
            })
            .collect();
        v.sort();
        v
    }

    /// Group `group` writes here: it is checkpointed at the start of every new segment.
    pub fn register(&self, group: u64, cp: Weak<dyn Checkpoint>) {
        self.shared.groups.lock().insert(group, cp);
        let mut p = self.shared.purged.lock();
        if p.get(&group) == Some(&FORGOTTEN) {
            p.remove(&group);
        }
    }

    /// Group `group` has durably purged its entries up to `index`.
    pub fn purged(&self, group: u64, index: u64) {
        purged(&self.shared, group, index);
    }

    /// Completion of a purge record: the purge counts once it is durable.
    pub fn purged_when_durable(&self, group: u64, index: u64) -> Done {
        let shared = self.shared.clone();
        Box::new(move |r| {
            if r.is_ok() {
                purged(&shared, group, index);
            }
        })
    }

    /// Completion of a group's last record: it no longer holds any segment (unless a
    /// new member of the group registered meanwhile).
    pub fn forgotten_when_durable(&self, group: u64, cp: Weak<dyn Checkpoint>) -> Done {
        let shared = self.shared.clone();
        Box::new(move |r| {
            if r.is_err() {
                return;
            }
            let mut groups = shared.groups.lock();
            if groups.get(&group).is_some_and(|w| !Weak::ptr_eq(w, &cp)) {
                return;
            }
            groups.remove(&group);
            shared.purged.lock().insert(group, FORGOTTEN);
        })
    }

    /// Queues a record that carries no entries; `done` runs on the writer thread once it
    /// is durable (or failed). Records are written in the order they are submitted.
    pub fn submit(&self, group: u64, payload: &[u8], done: Option<Done>) {
        self.submit_indexed(group, 0, payload, done);
    }

    /// Queues a record whose entries end at log index `index`.
    pub fn submit_indexed(&self, group: u64, index: u64, payload: &[u8], done: Option<Done>) {
        self.send(Job {
            bytes: encode(group, index, payload),
            group,
            index,
            done,
        });
    }

    /// Hands a record to the writer (a stopped writer fails its completion).
    fn send(&self, job: Job) {
        if let Err(mpsc::SendError(job)) = self.tx.lock().send(job) {
            if let Some(d) = job.done {
                d(Err(io::Error::other("cluster log writer stopped")));
            }
        }
    }

    /// [`submit_indexed`](Self::submit_indexed) of a record built in place
    /// ([`record_buffer`] with the payload written behind the header).
    pub fn submit_record(&self, group: u64, index: u64, mut rec: Vec<u8>, done: Option<Done>) {
        if rec.len() < HEADER {
            if let Some(d) = done {
                d(Err(io::Error::other(
                    "cluster log record without its header",
                )));
            }
            return;
        }
        fill_header(&mut rec, group, index);
        self.send(Job {
            bytes: rec,
            group,
            index,
            done,
        });
    }

    /// Queues a record and waits until it is durable.
    pub async fn write(&self, group: u64, payload: &[u8]) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            group,
            payload,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("cluster log writer stopped")))
    }
}

fn purged(shared: &Shared, group: u64, index: u64) {
    let mut p = shared.purged.lock();
    let e = p.entry(group).or_default();
    if *e != FORGOTTEN {
        *e = (*e).max(index);
    }
}

/// The writer thread: everything waiting goes out in one write and one fdatasync; a full
/// segment is closed and the ones no longer needed are deleted.
fn writer(mut s: Segments, rx: mpsc::Receiver<Job>) {
    let mut buf = Vec::new();
    let mut dones: Vec<Done> = Vec::new();
    while let Ok(first) = rx.recv() {
        buf.clear();
        let mut jobs = vec![first];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let (seq, seg) = match s.segs.iter_mut().next_back() {
            Some((k, v)) => (*k, v),
            None => return,
        };
        // One record alone (the usual case) is written from its own buffer, not copied.
        let single = jobs.len() == 1;
        for j in &mut jobs {
            if !single {
                buf.extend_from_slice(&j.bytes);
            }
            let m = seg.groups.entry(j.group).or_default();
            *m = (*m).max(j.index);
            if let Some(d) = j.done.take() {
                dones.push(d);
            }
        }
        let out: &[u8] = match &jobs[..] {
            [j] => &j.bytes,
            _ => &buf,
        };
        seg.bytes += out.len() as u64;
        let full = seg.bytes >= s.limit;
        let r = s.file.write_all(out).and_then(|_| s.file.sync_data());
        drop(jobs);
        if let Err(e) = &r {
            tracing::error!(error = %e, "cluster log write failed");
        }
        for d in dones.drain(..) {
            d(match &r {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        if full && r.is_ok() {
            if let Err(e) = s.roll(seq + 1) {
                tracing::error!(error = %e, "cluster log: new segment not begun");
            }
        }
        s.reclaim();
    }
}

impl Segments {
    /// Begins segment `seq` with every registered group's checkpoint.
    fn roll(&mut self, seq: u64) -> io::Result<()> {
        let mut file = File::create(segment_path(&self.dir, seq))?;
        let groups: Vec<(u64, Weak<dyn Checkpoint>)> = self
            .shared
            .groups
            .lock()
            .iter()
            .map(|(g, w)| (*g, w.clone()))
            .collect();
        let mut seg = Segment::default();
        let mut buf = Vec::new();
        for (g, w) in groups {
            let Some(cp) = w.upgrade().and_then(|c| c.checkpoint()) else {
                continue;
            };
            buf.extend(encode(g, 0, &cp));
            seg.groups.insert(g, 0);
            seg.checkpointed.insert(g);
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        seg.bytes = buf.len() as u64;
        self.file = file;
        self.segs.insert(seq, seg);
        Ok(())
    }

    /// Deletes the closed segments no group needs (see the module docs).
    fn reclaim(&mut self) {
        let Some(current) = self.segs.keys().next_back().copied() else {
            return;
        };
        let purged = self.shared.purged.lock().clone();
        let mut gone = Vec::new();
        for (seq, seg) in self.segs.range(..current) {
            let needed = seg.groups.iter().any(|(g, last)| {
                let p = purged.get(g).copied().unwrap_or(0);
                if p == FORGOTTEN {
                    return false;
                }
                let later = self
                    .segs
                    .range(seq + 1..)
                    .any(|(_, s)| s.checkpointed.contains(g));
                !later || p < *last
            });
            if !needed {
                gone.push(*seq);
            }
        }
        if gone.is_empty() {
            return;
        }
        for seq in gone {
            let path = segment_path(&self.dir, seq);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.segs.remove(&seq);
                    tracing::debug!(path = %path.display(), "cluster log segment reclaimed");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cluster log segment not deleted");
                }
            }
        }
        let _ = sync_dir(&self.dir);
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_ends_the_log() {
        let mut buf = encode(0, 0, b"one");
        buf.extend(encode(7, 3, b"two"));
        let full = buf.len();
        buf.extend(&encode(0, 0, b"three")[..10]);
        let (recs, good) = decode(&buf);
        assert_eq!(good, full);
        assert_eq!(recs, vec![(0, 0, &b"one"[..]), (7, 3, &b"two"[..])]);
        // A flipped byte fails the CRC: the log ends before that record.
        let mut bad = encode(0, 0, b"one");
        let first = bad.len();
        bad.extend(encode(0, 0, b"two"));
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let (recs, good) = decode(&bad);
        assert_eq!((recs.len(), good), (1, first));
        // A huge length is not believed.
        let mut huge = vec![0xff, 0xff, 0xff, 0x7f];
        huge.extend([0u8; 20]);
        assert_eq!(decode(&huge).0.len(), 0);
    }

    #[tokio::test]
    async fn writes_are_durable_in_order_and_read_back_by_group() {
        let dir = std::env::temp_dir().join(format!("warren-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (wal, rec) = Wal::open(&dir).unwrap();
            assert!(rec.is_empty());
            wal.submit(0, b"a", None);
            wal.submit(1, b"x", None);
            wal.write(0, b"b").await.unwrap();
        }
        // Append garbage: the next open cuts it off.
        let seg = segment_path(&dir, 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let (_wal, rec) = Wal::open(&dir).unwrap();
        assert_eq!(rec[&0], vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(rec[&1], vec![b"x".to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An earlier version's single file is read as the first segment.
    #[tokio::test]
    async fn a_legacy_single_file_is_read() {
        let dir = std::env::temp_dir().join(format!("warren-wal-legacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut old = Vec::new();
        for (g, p) in [(0u64, &b"a"[..]), (4, b"z")] {
            let len = (8 + p.len()) as u32;
            let mut h = crc32fast::Hasher::new();
            h.update(&g.to_le_bytes());
            h.update(p);
            old.extend_from_slice(&len.to_le_bytes());
            old.extend_from_slice(&h.finalize().to_le_bytes());
            old.extend_from_slice(&g.to_le_bytes());
            old.extend_from_slice(p);
        }
        std::fs::write(dir.join("wal"), &old).unwrap();
        let (_wal, rec) = Wal::open(&dir).unwrap();
        assert_eq!(rec[&0], vec![b"a".to_vec()]);
        assert_eq!(rec[&4], vec![b"z".to_vec()]);
        assert!(!dir.join("wal").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[derive(Debug)]
    struct Cp(Vec<u8>);
    impl Checkpoint for Cp {
        fn checkpoint(&self) -> Option<Vec<u8>> {
            Some(self.0.clone())
        }
    }

    /// Segments roll past their size; a closed one goes once its groups have
    /// checkpoints later and purged what it holds (or were forgotten); the files stay
    /// bounded however much is written.
    #[tokio::test]
    async fn closed_segments_are_deleted_once_purged_past() {
        let dir = std::env::temp_dir().join(format!("warren-wal-seg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (wal, _) = Wal::open_with(&dir, 4096).unwrap();
        let cp: Arc<dyn Checkpoint> = Arc::new(Cp(b"state".to_vec()));
        wal.register(1, Arc::downgrade(&cp));
        wal.register(2, Arc::downgrade(&cp));
        let body = vec![0u8; 1000];
        for i in 1..=200u64 {
            wal.submit_indexed(1, i, &body, None);
            if i % 10 == 0 {
                wal.write(1, b"sync").await.unwrap();
            }
        }
        wal.write(1, b"sync").await.unwrap();
        // Nothing purged yet: every segment stays (a batch of ~10 KiB per segment).
        assert!(wal.segments().len() > 10, "{}", wal.segments().len());
        wal.submit_indexed(2, 1, b"early", None);
        wal.purged(1, 200);
        // The writer reclaims after it answers a batch: the second write is answered
        // only after the first batch's reclaim ran.
        wal.write(1, b"sync").await.unwrap();
        wal.write(1, b"sync").await.unwrap();
        // Segment 1 had no group-2 entry: everything but the open one and the one with
        // group 2's entry is gone.
        let n = wal.segments().len();
        assert!(n <= 2, "{n}: {:?}", wal.segments());
        let forget = wal.forgotten_when_durable(2, Arc::downgrade(&cp));
        wal.submit(2, b"forget", Some(forget));
        for i in 201..=260u64 {
            wal.submit_indexed(1, i, &body, None);
        }
        wal.purged(1, 260);
        wal.write(1, b"sync").await.unwrap();
        wal.write(1, b"sync").await.unwrap();
        assert_eq!(wal.segments().len(), 1, "{:?}", wal.segments());
        // What is left reads back: group 1's checkpoint begins the segment.
        drop(wal);
        let (_w, rec) = Wal::open(&dir).unwrap();
        assert!(rec[&1].iter().any(|p| p == b"state"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
