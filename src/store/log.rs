//! The message log: persistent messages of durable queues, on disk before they are confirmed.
//!
//! # Design
//!
//! One append-only log per broker, cut into segment files (`<data>/msgs/NNNNNNNN.seg`), holds
//! three kinds of record ([`super::record`]): a publish (the message once, with the keys of
//! every durable queue it went to), a remove (a queue is done with some messages) and a
//! redelivered mark. One log rather than a file per queue because a message routed to ten
//! durable queues is written once, and because a single file is what makes group commit
//! cheap: every publisher's records since the last sync share one `write` and one
//! `fdatasync`, however many queues they touched.
//!
//! Publishers hand records to the log under a short lock (a push onto a vector) and get a
//! *log sequence number*; one writer thread drains the vector, writes the batch, syncs it and
//! publishes the highest synced number on a watch channel. A connection sends the publisher
//! confirm (or tx.commit-ok) for a stored message only once that number has passed the
//! message's. While the writer syncs, the next batch accumulates: that is the group commit.
//!
//! Space comes back by segment: the writer counts, per segment, the (queue, message) pairs
//! still alive. A segment other than the one being written whose count reaches zero is
//! deleted — after the remove and redelivered records it holds that still matter (they
//! refer to messages in older, live segments) are copied to the head of the log and synced.
//!
//! Recovery reads every segment twice: first the remove and redelivered records, then the
//! publish records, handing each message that is still alive to its queue. A record whose
//! checksum or length is wrong ends its segment; the damage is reported and the segment
//! truncated there. The head segment is grown with zeros ahead of the writes (so a sync
//! flushes data only, [`super::prealloc`]); a zero-filled tail is the end of a segment, and
//! a clean shutdown cuts it off. After a crash (no clean-shutdown marker) every recovered message is
//! marked redelivered, since the log does not record deliveries and any of them may have
//! reached a consumer.

use super::prealloc;
use super::record::{self, Read, Record, KIND_REDELIVERED, KIND_REMOVE};
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::queue::stream::{Chunk, Stream};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const CLEAN_MARKER: &str = "clean-shutdown";
/// How far ahead of the writes the head segment is zero-filled ([`prealloc`]).
const PREALLOC_STEP: u64 = 4 << 20;

/// What the writer is asked to record.
#[derive(Debug)]
enum Op {
    Publish {
        id: u64,
        at_ms: u64,
        queues: Vec<Arc<str>>,
        msg: Arc<Message>,
    },
    Ids {
        kind: u8,
        queue: Arc<str>,
        ids: Vec<u64>,
    },
    /// Records for a stream's own segment files, written and synced in the same batch.
    Stream { stream: Arc<Stream>, chunk: Chunk },
    /// A record for another store's files (the delay store), at a place it chose.
    Side {
        log: Arc<dyn SideLog>,
        at: u64,
        bytes: Vec<u8>,
    },
}

/// Records for a [`SideLog`]: (place, bytes), in the order they were placed.
type SideRecords = Vec<(u64, Vec<u8>)>;

/// A store whose files the log's writer thread writes and syncs in its batches (after the
/// log's own records), so that the batch's sequence number counts as synced only once
/// they are on disk: the delay store (`crate::delayed`) uses it to confirm a delayed
/// message after fdatasync, sharing the group commit.
pub trait SideLog: Send + Sync + std::fmt::Debug {
    /// Writes each record at its place (an opaque number the store chose when it
    /// appended it) and syncs them. Called again with the same records after a failure.
    fn write_synced(&self, records: &[(u64, Vec<u8>)]) -> std::io::Result<()>;
}

#[derive(Debug, Default)]
struct Pending {
    ops: Vec<Op>,
    /// Ops enqueued so far: an op's log sequence number is the value after its push.
    lsn: u64,
    next_id: u64,
    closing: bool,
}

/// Damage found while recovering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: String,
    pub offset: u64,
    pub bytes_dropped: u64,
    pub why: &'static str,
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// The previous run did not shut down cleanly.
    pub after_crash: bool,
    pub segments: usize,
    /// (queue, message) pairs handed back to queues.
    pub messages: u64,
    /// Messages whose queue no longer exists.
    pub orphaned: u64,
    pub damage: Vec<Damage>,
    /// Publish records found twice (a batch rewritten after a failed write or sync whose
    /// first copy reached the disk after all): the later copy is ignored.
    pub duplicates: u64,
    pub elapsed: Duration,
}

/// A message read back at start, for its queue.
#[derive(Debug)]
pub struct Recovered {
    pub msg: Arc<Message>,
    pub redelivered: bool,
    /// How many times it was requeued after a delivery (a quorum queue's delivery count).
    pub returns: u32,
    /// When it was published (milliseconds since the Unix epoch), for TTLs.
    pub at_ms: u64,
}

#[derive(Debug)]
pub struct MessageLog {
    dir: PathBuf,
    pending: Mutex<Pending>,
    wake: Condvar,
    synced: watch::Sender<u64>,
    /// The last write or sync failed; the writer retries, confirms wait.
    failing: AtomicBool,
    report: Mutex<RecoveryReport>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// A durable queue was created since the definitions were last written by the writer.
    definitions_dirty: AtomicBool,
}

/// Writes the definitions file (called on the writer thread before a batch that may hold
/// messages for a queue created since the last write).
pub type DefinitionsFlush = Box<dyn Fn() -> std::io::Result<()> + Send>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl MessageLog {
    /// Opens (creating) the log under `data_dir/msgs`, recovers what it holds — `deliver`
    /// gets each live message for a queue key and says whether that queue exists — and
    /// starts the writer thread.
    pub fn open(
        data_dir: &Path,
        segment_size: u64,
        flush_definitions: DefinitionsFlush,
        mut deliver: impl FnMut(&Arc<str>, Recovered) -> bool,
    ) -> std::io::Result<Arc<MessageLog>> {
        let started = std::time::Instant::now();
        let dir = data_dir.join("msgs");
        std::fs::create_dir_all(&dir)?;
        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        let mut segs: Vec<(u32, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            let n = p
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_suffix(".seg"))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(n) = n {
                segs.push((n, p));
            }
        }
        segs.sort();
        let mut report = RecoveryReport {
            after_crash: !clean && !segs.is_empty(),
            segments: segs.len(),
            ..Default::default()
        };
        // Pass 1: what was removed or marked redelivered, per queue.
        let mut removed: HashMap<Arc<str>, HashSet<u64>> = HashMap::new();
        // How often each message was marked: a quorum queue's delivery count.
        let mut marked: HashMap<Arc<str>, HashMap<u64, u32>> = HashMap::new();
        for (_, path) in &segs {
            let data = Bytes::from(std::fs::read(path)?);
            let mut at = 0usize;
            loop {
                match record::read(&data.slice(at..)) {
                    Read::Ok(r, n) => {
                        match r {
                            Record::Remove { queue, ids } => {
                                removed.entry(queue).or_default().extend(ids)
                            }
                            Record::Redelivered { queue, ids } => {
                                let counts = marked.entry(queue).or_default();
                                for id in ids {
                                    *counts.entry(id).or_default() += 1;
                                }
                            }
                            Record::Publish { .. } => {}
                        }
                        at += n;
                    }
                    Read::End => break,
                    Read::Bad(why) => {
                        let d = Damage {
                            segment: path.display().to_string(),
                            offset: at as u64,
                            bytes_dropped: (data.len() - at) as u64,
                            why,
                        };
                        tracing::error!(segment = %d.segment, offset = d.offset, bytes_dropped = d.bytes_dropped, why, "message log damaged: records from here on are dropped");
                        report.damage.push(d);
                        OpenOptions::new()
                            .write(true)
                            .open(path)?
                            .set_len(at as u64)?;
                        break;
                    }
                }
            }
        }
        // Pass 2: publishes, in log order, to the queues that still want them.
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        let mut starts: Vec<(u64, u32)> = Vec::new();
        let mut max_id = 0u64;
        for (n, path) in &segs {
            // Read again rather than kept from pass 1: memory stays at one segment.
            let data = Bytes::from(std::fs::read(path)?);
            live.insert(*n, 0);
            let mut at = 0usize;
            while let Read::Ok(r, len) = record::read(&data.slice(at..)) {
                at += len;
                let Record::Publish {
                    id,
                    at_ms,
                    queues,
                    msg,
                } = r
                else {
                    continue;
                };
                // Ids only grow along the log: a smaller one is a second copy of a batch
                // that was rewritten to a later segment after a failed write or sync (the
                // first copy, whole since it passed its checksum, is the one kept).
                if id <= max_id {
                    report.duplicates += 1;
                    continue;
                }
                if starts.last().is_none_or(|(_, s)| s != n) {
                    starts.push((id, *n));
                }
                max_id = id;
                // Own copies: a slice would keep the whole segment buffer alive.
                let mut msg = msg;
                msg.properties = Bytes::copy_from_slice(&msg.properties);
                msg.exchange = ShortStr::copy_from(msg.exchange.as_str());
                msg.routing_key = ShortStr::copy_from(msg.routing_key.as_str());
                msg.body = Bytes::copy_from_slice(&msg.body);
                let msg = Arc::new(msg);
                for q in queues {
                    if removed.get(&q).is_some_and(|s| s.contains(&id)) {
                        continue;
                    }
                    let returns = marked
                        .get(&q)
                        .and_then(|s| s.get(&id))
                        .copied()
                        .unwrap_or(0);
                    let r = Recovered {
                        msg: msg.clone(),
                        redelivered: report.after_crash || returns > 0,
                        returns,
                        at_ms,
                    };
                    if deliver(&q, r) {
                        report.messages += 1;
                        *live.entry(*n).or_default() += 1;
                    } else {
                        report.orphaned += 1;
                    }
                }
            }
        }
        if clean {
            std::fs::remove_file(&marker)?;
            sync_dir(&dir)?;
        }
        report.elapsed = started.elapsed();
        let head = segs.last().map(|(n, _)| n + 1).unwrap_or(1);
        let (synced, _) = watch::channel(0u64);
        let log = Arc::new(MessageLog {
            dir: dir.clone(),
            pending: Mutex::new(Pending {
                next_id: max_id + 1,
                ..Default::default()
            }),
            wake: Condvar::new(),
            synced,
            failing: AtomicBool::new(false),
            report: Mutex::new(report),
            thread: Mutex::new(None),
            definitions_dirty: AtomicBool::new(false),
        });
        let mut writer = Writer {
            log: log.clone(),
            dir,
            segment_size,
            head,
            file: None,
            head_bytes: 0,
            head_alloc: 0,
            live,
            starts,
            buf: Vec::with_capacity(1 << 20),
            acct: Vec::new(),
            streams: Vec::new(),
            sides: Vec::new(),
            flush_definitions,
        };
        // Segments nobody needs any more go now (after a crash, or queues deleted meanwhile).
        writer.reclaim();
        let t = std::thread::Builder::new()
            .name("warren-msglog".into())
            .spawn(move || writer.run())?;
        *log.thread.lock() = Some(t);
        Ok(log)
    }

    pub fn recovery_report(&self) -> RecoveryReport {
        self.report.lock().clone()
    }

    /// Follows the highest synced log sequence number.
    pub fn synced(&self) -> watch::Receiver<u64> {
        self.synced.subscribe()
    }

    pub fn synced_now(&self) -> u64 {
        *self.synced.borrow()
    }

    /// True while writes to the log fail (the writer keeps retrying).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Records a publish to `queues` (durable queue keys): gives the message its log id and
    /// returns the log sequence number to wait for before confirming it.
    pub fn append_publish(&self, msg: &mut Arc<Message>, queues: Vec<Arc<str>>) -> u64 {
        if Arc::get_mut(msg).is_none() {
            *msg = Arc::new((**msg).clone());
        }
        let at_ms = now_ms();
        let mut p = self.pending.lock();
        let id = p.next_id;
        p.next_id += 1;
        if let Some(m) = Arc::get_mut(msg) {
            m.persist_id = id;
        }
        p.ops.push(Op::Publish {
            id,
            at_ms,
            queues,
            msg: msg.clone(),
        });
        p.lsn += 1;
        let lsn = p.lsn;
        drop(p);
        self.wake.notify_one();
        lsn
    }

    /// Records for a stream's segment: written and fdatasynced by the writer thread with
    /// the next batch, before the returned log sequence number counts as synced (so a
    /// publisher confirm waiting for it means the stream has the message on disk). The
    /// caller holds the stream's numbering lock, which keeps its records in offset order.
    pub fn append_stream(&self, stream: Arc<Stream>, chunk: Chunk) -> u64 {
        let mut p = self.pending.lock();
        p.ops.push(Op::Stream { stream, chunk });
        p.lsn += 1;
        let lsn = p.lsn;
        drop(p);
        self.wake.notify_one();
        lsn
    }

    /// A record for `log`'s own files, written and synced with the next batch; returns
    /// the log sequence number to wait for. The caller keeps the records of one store in
    /// the order it placed them.
    pub fn append_side(&self, log: Arc<dyn SideLog>, at: u64, bytes: Vec<u8>) -> u64 {
        let mut p = self.pending.lock();
        p.ops.push(Op::Side { log, at, bytes });
        p.lsn += 1;
        let lsn = p.lsn;
        drop(p);
        self.wake.notify_one();
        lsn
    }

    /// A queue is done with these messages (acked, dropped, expired, purged).
    pub fn remove(&self, queue: &Arc<str>, ids: Vec<u64>) {
        self.push_ids(KIND_REMOVE, queue, ids);
    }

    /// These messages were requeued after a delivery: they come back redelivered.
    pub fn mark_redelivered(&self, queue: &Arc<str>, ids: Vec<u64>) {
        self.push_ids(KIND_REDELIVERED, queue, ids);
    }

    fn push_ids(&self, kind: u8, queue: &Arc<str>, ids: Vec<u64>) {
        if ids.is_empty() {
            return;
        }
        let mut p = self.pending.lock();
        p.ops.push(Op::Ids {
            kind,
            queue: queue.clone(),
            ids,
        });
        p.lsn += 1;
        drop(p);
        self.wake.notify_one();
    }

    /// A durable queue was created: the definitions file is written before the next batch
    /// of messages is synced, so a confirmed message never outlives its queue's definition
    /// (the definitions writer alone is asynchronous).
    pub fn definitions_changed(&self) {
        self.definitions_dirty.store(true, Ordering::SeqCst);
    }

    /// The current log sequence number (everything recorded so far).
    pub fn lsn(&self) -> u64 {
        self.pending.lock().lsn
    }

    /// Writes and syncs everything recorded, stops the writer and leaves the clean-shutdown
    /// marker (so the next start knows which messages were really delivered).
    pub fn close(&self) {
        self.pending.lock().closing = true;
        self.wake.notify_one();
        let t = self.thread.lock().take();
        if let Some(t) = t {
            let _ = t.join();
            if !self.failing() {
                let marker = self.dir.join(CLEAN_MARKER);
                let ok = File::create(&marker)
                    .and_then(|f| f.sync_all())
                    .and_then(|_| sync_dir(&self.dir));
                if let Err(e) = ok {
                    tracing::error!(error = %e, "cannot write the clean-shutdown marker");
                }
            }
        }
    }
}

/// Where the valid records of a segment's data end.
fn valid_end(data: &Bytes) -> u64 {
    let mut at = 0usize;
    while let Read::Ok(_, n) = record::read(&data.slice(at..)) {
        at += n;
    }
    at as u64
}

/// A change to the live counts, pending until its batch is synced.
enum Acct {
    /// A publish record for `n` queues.
    Publish {
        id: u64,
        n: u64,
    },
    Remove(Vec<u64>),
}

/// The writer thread's state: the head segment and the live counts of all segments.
struct Writer {
    log: Arc<MessageLog>,
    dir: PathBuf,
    segment_size: u64,
    /// Number of the segment being written (created on first write).
    head: u32,
    file: Option<File>,
    /// Bytes of records in the head segment.
    head_bytes: u64,
    /// Size of the head segment file: records, then zeros up to here.
    head_alloc: u64,
    /// Per segment: (queue, message) pairs still alive.
    live: BTreeMap<u32, u64>,
    /// (first message id, segment) for every segment that ever held publishes, in order
    /// (deleted ones stay, so an id never maps to the wrong segment).
    starts: Vec<(u64, u32)>,
    buf: Vec<u8>,
    /// What `buf` changes in the live counts, applied once it is synced — to the segment it
    /// was synced in, which after a failed write or sync is not the one it was encoded for.
    acct: Vec<Acct>,
    /// Stream records of the batch being written, merged per stream.
    streams: Vec<(Arc<Stream>, Chunk)>,
    /// Other stores' records of the batch, per store, in order.
    sides: Vec<(Arc<dyn SideLog>, SideRecords)>,
    flush_definitions: DefinitionsFlush,
}

impl Writer {
    fn run(mut self) {
        loop {
            let (ops, lsn, closing) = {
                let mut p = self.log.pending.lock();
                while p.ops.is_empty() && !p.closing {
                    self.log.wake.wait(&mut p);
                }
                (std::mem::take(&mut p.ops), p.lsn, p.closing)
            };
            if !ops.is_empty() {
                self.encode(ops);
                self.write_batch_retrying();
                self.write_streams_retrying();
                self.write_sides_retrying();
                self.log.synced.send_replace(lsn);
                if self.head_bytes >= self.segment_size {
                    self.cut_tail();
                    self.file = None;
                    self.head += 1;
                    self.head_bytes = 0;
                    self.live.entry(self.head).or_default();
                }
                self.reclaim();
            } else if closing {
                self.cut_tail();
                return;
            }
        }
    }

    fn segment_of(&self, id: u64) -> Option<u32> {
        let i = self.starts.partition_point(|(first, _)| *first <= id);
        (i > 0).then(|| self.starts[i - 1].1)
    }

    fn encode(&mut self, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Publish {
                    id,
                    at_ms,
                    queues,
                    msg,
                } => {
                    record::encode_publish(&mut self.buf, id, at_ms, &queues, &msg);
                    self.acct.push(Acct::Publish {
                        id,
                        n: queues.len() as u64,
                    });
                }
                Op::Stream { stream, chunk } => {
                    match self
                        .streams
                        .iter_mut()
                        .find(|(s, _)| Arc::ptr_eq(s, &stream))
                    {
                        Some((_, c)) => c.extend(chunk),
                        None => self.streams.push((stream, chunk)),
                    }
                }
                Op::Side { log, at, bytes } => {
                    match self
                        .sides
                        .iter_mut()
                        .find(|(s, _)| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(&log)))
                    {
                        Some((_, recs)) => recs.push((at, bytes)),
                        None => self.sides.push((log, vec![(at, bytes)])),
                    }
                }
                Op::Ids { kind, queue, ids } => {
                    record::encode_ids(&mut self.buf, kind, &queue, &ids);
                    if kind == KIND_REMOVE {
                        self.acct.push(Acct::Remove(ids));
                    }
                }
            }
        }
    }

    /// The batch is synced in the head segment: its publishes live there, its removes
    /// count down the segments of their messages.
    fn account(&mut self) {
        for a in std::mem::take(&mut self.acct) {
            match a {
                Acct::Publish { id, n } => {
                    if self.starts.last().is_none_or(|(_, s)| *s != self.head) {
                        self.starts.push((id, self.head));
                    }
                    *self.live.entry(self.head).or_default() += n;
                }
                Acct::Remove(ids) => {
                    for id in ids {
                        if let Some(s) = self.segment_of(id) {
                            if let Some(n) = self.live.get_mut(&s) {
                                *n = n.saturating_sub(1);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes and syncs each stream's records of the batch (one write and one fdatasync
    /// per stream), retrying like the log itself: nothing is confirmed that is not on disk.
    fn write_streams_retrying(&mut self) {
        for (stream, chunk) in std::mem::take(&mut self.streams) {
            let mut delay = Duration::from_millis(100);
            while let Err(e) = stream.write_chunk(&chunk) {
                if !self.log.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, dir = %stream.dir().display(), "cannot write a stream segment; confirms wait until it works again");
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            if self.log.failing.swap(false, Ordering::Relaxed) {
                tracing::warn!("stream segment writes work again");
            }
        }
    }

    /// Writes and syncs other stores' records of the batch, after the log's own (so a
    /// removal recorded there never reaches the disk before the publish it follows),
    /// retrying like the log itself.
    fn write_sides_retrying(&mut self) {
        for (side, recs) in std::mem::take(&mut self.sides) {
            let mut delay = Duration::from_millis(100);
            while let Err(e) = side.write_synced(&recs) {
                if !self.log.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, store = ?side, "cannot write a store's records; confirms wait until it works again");
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            if self.log.failing.swap(false, Ordering::Relaxed) {
                tracing::warn!("store writes work again");
            }
        }
    }

    /// Writes and syncs the buffer, retrying (with the disk alarm's help, publishers stop)
    /// until it works: nothing is confirmed that is not on disk.
    fn write_batch_retrying(&mut self) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.write_batch() {
                Ok(()) => {
                    if self.log.failing.swap(false, Ordering::Relaxed) {
                        tracing::warn!("message log writes work again");
                    }
                    self.buf.clear();
                    self.account();
                    return;
                }
                Err(e) => {
                    if !self.log.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %e, dir = %self.dir.display(), "cannot write the message log; confirms wait until it works again");
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn write_batch(&mut self) -> std::io::Result<()> {
        if self.log.definitions_dirty.swap(false, Ordering::SeqCst) {
            if let Err(e) = (self.flush_definitions)() {
                self.log.definitions_dirty.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        if self.buf.is_empty() {
            // Only stream records in this batch: the log file has nothing to sync.
            return Ok(());
        }
        if self.file.is_none() {
            let path = segment_path(&self.dir, self.head);
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)?;
            // A new segment is empty; one already there (never, by numbering) is continued
            // after its last valid record.
            self.head_alloc = f.metadata()?.len();
            self.head_bytes = if self.head_alloc == 0 {
                0
            } else {
                valid_end(&Bytes::from(std::fs::read(&path)?))
            };
            sync_dir(&self.dir)?;
            self.file = Some(f);
        }
        let f = self.file.as_ref().expect("opened above");
        let synced = self.head_bytes;
        let done = prealloc::write_synced(
            f,
            synced,
            &self.buf,
            self.head_alloc,
            PREALLOC_STEP,
            self.segment_size,
            ("msglog::write", "msglog::sync"),
        );
        match done {
            Ok(size) => self.head_alloc = size,
            Err((sync, e)) => {
                // Whatever this batch left in the segment is not trusted: a partial write
                // is a torn record, and after a failed fdatasync the kernel may have
                // dropped the dirty pages and marked them clean, so a second fdatasync of
                // the same file would succeed without writing them (PostgreSQL's
                // "fsyncgate"). The segment is cut back to its last good sync (best
                // effort; recovery also ignores a second copy) and the whole batch is
                // rewritten to a fresh segment.
                let _ = f.set_len(synced);
                let failed = self.head;
                self.file = None;
                self.head += 1;
                self.live.entry(self.head).or_default();
                if sync {
                    tracing::error!(error = %e, segment = failed, bytes = self.buf.len(), rewrite_to = self.head, "message log fdatasync failed: the bytes written since the last good sync are treated as lost and rewritten to a new segment; their confirms wait");
                } else {
                    tracing::error!(error = %e, segment = failed, bytes = self.buf.len(), rewrite_to = self.head, "message log write failed: the batch is rewritten to a new segment; its confirms wait");
                }
                return Err(e);
            }
        }
        self.head_bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Cuts the zero-filled tail off the head segment (when it is closed: rolled, or at a
    /// clean shutdown), so closed segments hold records only.
    fn cut_tail(&mut self) {
        let Some(f) = self.file.as_ref() else { return };
        if self.head_alloc > self.head_bytes {
            match f.set_len(self.head_bytes).and_then(|_| f.sync_all()) {
                Ok(()) => self.head_alloc = self.head_bytes,
                // Harmless: recovery reads a zero tail as the end of the segment.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot cut the preallocated tail of a message log segment")
                }
            }
        }
    }

    /// Deletes segments (other than the head) with nothing alive, keeping the records in
    /// them that still matter.
    fn reclaim(&mut self) {
        let dead: Vec<u32> = self
            .live
            .iter()
            .filter(|(n, c)| **c == 0 && **n != self.head)
            .map(|(n, _)| *n)
            .collect();
        if dead.is_empty() {
            return;
        }
        for n in &dead {
            self.live.remove(n);
        }
        for n in &dead {
            let path = segment_path(&self.dir, *n);
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            let data = Bytes::from(data);
            let mut at = 0;
            while let Read::Ok(r, len) = record::read(&data.slice(at..)) {
                at += len;
                let (kind, queue, ids) = match r {
                    Record::Remove { queue, ids } => (KIND_REMOVE, queue, ids),
                    Record::Redelivered { queue, ids } => (KIND_REDELIVERED, queue, ids),
                    Record::Publish { .. } => continue,
                };
                let keep: Vec<u64> = ids
                    .into_iter()
                    .filter(|id| {
                        self.segment_of(*id)
                            .is_some_and(|s| s < *n && self.live.contains_key(&s))
                    })
                    .collect();
                if !keep.is_empty() {
                    record::encode_ids(&mut self.buf, kind, &queue, &keep);
                }
            }
        }
        if !self.buf.is_empty() {
            self.write_batch_retrying();
        }
        for n in dead {
            let path = segment_path(&self.dir, n);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(segment = %path.display(), "message log segment reclaimed")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete a message log segment")
                }
            }
        }
        let _ = sync_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(what: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "warren-log-{what}-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(p.join("msgs")).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn msg(body: &str) -> Message {
        Message::new(
            ShortStr::copy_from("x"),
            ShortStr::copy_from("rk"),
            Bytes::from_static(&[0x10, 0x00, 2]),
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    /// A segment as a crash leaves it: `n` publishes to queue `q`, then `zeros` zero bytes.
    fn segment(n: u64, zeros: usize) -> (Vec<u8>, Vec<usize>) {
        let q = [record::queue_key("/", "q")];
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for id in 1..=n {
            record::encode_publish(&mut out, id, 0, &q, &msg(&format!("m{id}")));
            ends.push(out.len());
        }
        out.resize(out.len() + zeros, 0);
        (out, ends)
    }

    /// Opens the log in `dir` and returns the recovered bodies and the report.
    fn recover(dir: &Path) -> (Vec<String>, RecoveryReport) {
        let mut got = Vec::new();
        let log = MessageLog::open(dir, 1 << 20, Box::new(|| Ok(())), |_, r| {
            got.push(String::from_utf8_lossy(&r.msg.body).into_owned());
            true
        })
        .unwrap();
        let report = log.recovery_report();
        log.close();
        (got, report)
    }

    fn seg_path(dir: &Path, n: u32) -> PathBuf {
        segment_path(&dir.join("msgs"), n)
    }

    #[test]
    fn zero_tail_is_the_end_of_a_segment() {
        let d = TempDir::new("zero-tail");
        let (data, _) = segment(5, 1 << 16);
        std::fs::write(seg_path(&d.0, 1), &data).unwrap();
        let (got, report) = recover(&d.0);
        assert_eq!(got, ["m1", "m2", "m3", "m4", "m5"]);
        assert!(report.damage.is_empty(), "{report:?}");
        assert!(report.after_crash);
    }

    #[test]
    fn torn_record_before_zeros_is_damage() {
        let d = TempDir::new("torn");
        let (mut data, ends) = segment(5, 1 << 16);
        // The last record's second half never reached the disk (zeros where it should be).
        let cut = (ends[3] + ends[4]) / 2;
        data[cut..ends[4]].fill(0);
        std::fs::write(seg_path(&d.0, 1), &data).unwrap();
        let (got, report) = recover(&d.0);
        assert_eq!(got, ["m1", "m2", "m3", "m4"]);
        assert_eq!(report.damage.len(), 1, "{report:?}");
        assert_eq!(report.damage[0].offset, ends[3] as u64);
        assert_eq!(
            std::fs::metadata(seg_path(&d.0, 1)).unwrap().len(),
            ends[3] as u64,
            "cut at the damage"
        );
        // A zero header followed by data (a record whose header was lost) is damage too.
        let d = TempDir::new("zero-header");
        let (mut data, ends) = segment(5, 1 << 16);
        data[ends[2]..ends[2] + record::HEADER].fill(0);
        std::fs::write(seg_path(&d.0, 1), &data).unwrap();
        let (got, report) = recover(&d.0);
        assert_eq!(got, ["m1", "m2", "m3"]);
        assert_eq!(report.damage.len(), 1, "{report:?}");
    }

    #[test]
    fn crash_mid_preallocation_loses_nothing() {
        let d = TempDir::new("mid-prealloc");
        // The head segment grown part way (a short zero tail, not a whole step), and a new
        // segment that was created but only partly zero-filled when the crash came.
        let (data, _) = segment(3, 1000);
        std::fs::write(seg_path(&d.0, 1), &data).unwrap();
        std::fs::write(seg_path(&d.0, 2), vec![0u8; 12345]).unwrap();
        let (got, report) = recover(&d.0);
        assert_eq!(got, ["m1", "m2", "m3"]);
        assert!(report.damage.is_empty(), "{report:?}");
        // The empty segment holds nothing alive: reclaimed.
        assert!(!seg_path(&d.0, 2).exists());
    }

    #[test]
    fn writer_preallocates_and_a_clean_close_cuts_the_tail() {
        let d = TempDir::new("writer");
        let log = MessageLog::open(&d.0, 1 << 20, Box::new(|| Ok(())), |_, _| true).unwrap();
        let q: Arc<str> = record::queue_key("/", "q");
        let mut lsn = 0;
        for i in 0..10 {
            let mut m = Arc::new(msg(&format!("m{i}")));
            lsn = log.append_publish(&mut m, vec![q.clone()]);
        }
        let mut synced = log.synced();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(synced.wait_for(|s| *s >= lsn))
            .unwrap();
        // Find the head segment: the only one.
        let segs: Vec<PathBuf> = std::fs::read_dir(d.0.join("msgs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        assert_eq!(segs.len(), 1);
        let data = std::fs::read(&segs[0]).unwrap();
        let end = valid_end(&Bytes::from(data.clone())) as usize;
        assert!(
            end > 0 && data.len() > end,
            "zero-filled ahead: {end} of {}",
            data.len()
        );
        assert!(data[end..].iter().all(|b| *b == 0));
        log.close();
        assert_eq!(std::fs::metadata(&segs[0]).unwrap().len(), end as u64);
        let (got, report) = recover(&d.0);
        assert_eq!(got.len(), 10);
        assert!(!report.after_crash && report.damage.is_empty());
    }
}
