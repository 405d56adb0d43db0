//! Streams (`x-queue-type: stream`): an append-only log per queue that consumers read from
//! any offset, without removing anything.
//!
//! # Storage
//!
//! Each stream has its own directory (`<data>/streams/<hash of the queue key>/`) of segment
//! files ([`segment`]) and a sparse index per segment ([`index`]). A segment is rolled when
//! it passes `x-stream-max-segment-size-bytes`; retention (`x-max-length-bytes`,
//! `x-max-age`) deletes whole closed segments, oldest first, never the active one.
//!
//! # Who owns what
//!
//! - Publishers take the `head` lock to number a message (its offset and timestamp) and hand
//!   the encoded record to the broker's message log ([`crate::store::log`]) under that lock,
//!   so records reach the writer in offset order. The log's writer thread writes and
//!   `fdatasync`s the stream's segment as part of its group commit ([`Stream::write_chunk`],
//!   the `files` lock is the writer's) before it publishes the log sequence number the
//!   channel's held publisher confirm waits for: a confirm means the bytes are on disk.
//! - After the sync the writer extends the segment table (`segs`, a short lock readers take
//!   to find where an offset is) and publishes the committed offset on a watch channel.
//! - Each consumer has a reader task ([`reader`]) that reads committed records from the
//!   files outside any queue lock (in `spawn_blocking`, in bounded batches), within the
//!   consumer's credit, and sends them to the consumer's connection. A reader at the tail
//!   sleeps on the committed-offset watch and wakes as soon as the writer publishes.
//!
//! Nothing of a stream is kept in memory besides the segment table and index (a few MB for
//! 10 GB); a replay from `first` reads the files and does not touch the publish path.

pub mod index;
pub mod offset;
pub mod reader;
pub mod replica;
mod replicated;
pub mod segment;

use crate::message::Message;
use crate::store::log::MessageLog;
use index::IndexEntry;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::watch;

/// RabbitMQ's default `x-stream-max-segment-size-bytes`.
pub const DEFAULT_SEGMENT_SIZE: u64 = 500_000_000;

/// A stream's storage settings (from its declare arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub max_segment_size: u64,
    /// x-max-length-bytes: total bytes of segments to keep.
    pub max_bytes: Option<u64>,
    /// x-max-age in milliseconds.
    pub max_age_ms: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_segment_size: DEFAULT_SEGMENT_SIZE,
            max_bytes: None,
            max_age_ms: None,
        }
    }
}

/// Encoded records on their way to the segment file: the bytes and, per record,
/// (offset, timestamp, length).
#[derive(Debug, Default)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub records: Vec<(u64, u64, u64)>,
}

impl Chunk {
    /// Adds `other`'s records after these (the writer merges one batch's chunks).
    pub fn extend(&mut self, other: Chunk) {
        self.bytes.extend_from_slice(&other.bytes);
        self.records.extend(other.records);
    }
}

/// One segment as readers and retention see it.
#[derive(Debug, Clone)]
struct Seg {
    base: u64,
    /// Bytes of committed (synced) records.
    len: u64,
    /// The offset after the last committed record.
    end: u64,
    index: Vec<IndexEntry>,
}

impl Seg {
    fn first_ts(&self) -> Option<u64> {
        self.index.first().map(|e| e.ts)
    }
}

/// The numbering of new messages (publish side).
#[derive(Debug)]
struct Head {
    next_offset: u64,
    last_ts: u64,
}

/// The active segment (writer side).
#[derive(Debug, Default)]
struct Files {
    active: Option<(u64, File)>,
    index: Option<File>,
    /// Bytes of the active segment known written and synced.
    active_len: u64,
    /// Size of the active segment file: records, then zeros up to here.
    active_alloc: u64,
    /// A segment a write or sync failed in that holds no committed record: replaced by a
    /// new file when the retry rolls to the same base offset.
    discard: Option<u64>,
}

/// How far ahead of the writes the active segment is zero-filled
/// ([`crate::store::prealloc`]); a closed segment has its zero tail cut off.
const PREALLOC_STEP: u64 = 1 << 20;

#[derive(Debug)]
pub struct Stream {
    dir: PathBuf,
    settings: Mutex<Settings>,
    head: Mutex<Head>,
    files: Mutex<Files>,
    segs: Mutex<VecDeque<Seg>>,
    /// The offset after the last committed record.
    committed: watch::Sender<u64>,
    deleted: AtomicBool,
    /// Reader tasks' wake-ups (credit came back), by consumer.
    readers: Mutex<Vec<reader::Handle>>,
    /// In a cluster: the stream's replication state (set once; absent alone).
    repl: std::sync::OnceLock<Arc<replica::Replica>>,
}

/// The properties of a message with an `x-stream-offset` header whose 8 value bytes are
/// at the returned position (patched per record), and its filter value. The header is
/// appended to the raw bytes; only a message that already has one (or odd properties) is
/// decoded and re-encoded.
fn prepare(msg: &Message) -> (bytes::Bytes, Option<usize>, Option<String>) {
    use amq_protocol::types::{AMQPValue, FieldTable};
    const KEY: &str = "x-stream-offset";
    let mentions = |what: &[u8]| msg.properties.windows(what.len()).any(|w| w == what);
    let filter = if mentions(b"x-stream-filter-value") {
        offset::filter_value(crate::protocol::properties::headers(&msg.properties).as_ref())
    } else {
        None
    };
    if let Some((props, at)) = crate::protocol::properties::with_long_header(&msg.properties, KEY) {
        return (props, Some(at), filter);
    }
    const SENTINEL: i64 = 0x5717_ea4d_0ff5_e7a1;
    let mut h: FieldTable =
        crate::protocol::properties::headers(&msg.properties).unwrap_or_default();
    h.insert(KEY.into(), AMQPValue::LongLongInt(SENTINEL));
    let Some(props) = crate::protocol::properties::with_headers(&msg.properties, h) else {
        return (msg.properties.clone(), None, filter);
    };
    let mut needle = vec![KEY.len() as u8];
    needle.extend_from_slice(KEY.as_bytes());
    needle.push(b'l');
    needle.extend_from_slice(&SENTINEL.to_be_bytes());
    let at = props
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .map(|p| p + needle.len() - 8);
    match at {
        Some(at) => (props, Some(at), filter),
        None => (msg.properties.clone(), None, filter),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Stream {
    /// Opens (creating) the stream stored in `dir`, recovering what is there: segments are
    /// checked from their last index entry on, and a torn or corrupt tail is truncated.
    pub fn open(dir: PathBuf, settings: Settings) -> std::io::Result<Arc<Stream>> {
        std::fs::create_dir_all(&dir)?;
        let mut bases: Vec<u64> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| segment::base_of(e.file_name().to_str()?))
            .collect();
        bases.sort_unstable();
        let mut segs: VecDeque<Seg> = VecDeque::new();
        let mut last_ts = 0;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::path(&dir, base);
            let last = i + 1 == bases.len();
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            let file_len = file.metadata()?.len();
            let mut idx = index::load(&dir, base, file_len);
            let len;
            let mut end = bases.get(i + 1).copied().unwrap_or(base);
            // Every segment is checked record by record from its last index entry on (the
            // whole segment when it has no index): a closed one may end with what a failed
            // write or sync left before the writer moved to a new segment.
            {
                let from = idx.last().copied();
                let mut scan = match from {
                    Some(e) => segment::scan(&mut file, e.pos, file_len, Some(e.offset))?,
                    None => Default::default(),
                };
                let verified = from.is_some()
                    && scan
                        .records
                        .first()
                        .is_some_and(|r| Some(r.offset) == from.map(|e| e.offset));
                if !verified {
                    idx.clear();
                    scan = segment::scan(&mut file, 0, file_len, Some(base))?;
                }
                if let Some(why) = scan.damage {
                    tracing::error!(segment = %path.display(), offset = scan.end, bytes_dropped = file_len - scan.end, why, "stream segment damaged: records from here on are dropped");
                    file.set_len(scan.end)?;
                    file.sync_all()?;
                }
                len = scan.end;
                let skip = usize::from(verified);
                let more = index::entries_for(
                    idx.last(),
                    scan.records[skip.min(scan.records.len())..]
                        .iter()
                        .map(|r| (r.offset, r.ts, r.pos)),
                );
                idx.extend(more);
                if let Some(r) = scan.records.last() {
                    last_ts = last_ts.max(r.ts);
                    if last {
                        end = r.offset + 1;
                    }
                }
                index::rewrite(&dir, base, &idx)?;
            }
            if let Some(e) = idx.last() {
                last_ts = last_ts.max(e.ts);
            }
            if len == 0 && !last {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(index::path(&dir, base));
                continue;
            }
            segs.push_back(Seg {
                base,
                len,
                end,
                index: idx,
            });
        }
        let next_offset = segs.back().map_or(0, |s| s.end);
        let mut files = Files::default();
        if let Some(s) = segs.back() {
            let f = OpenOptions::new()
                .write(true)
                .open(segment::path(&dir, s.base))?;
            let alloc = f.metadata()?.len().max(s.len);
            let i = OpenOptions::new()
                .append(true)
                .create(true)
                .open(index::path(&dir, s.base))?;
            files = Files {
                active: Some((s.base, f)),
                index: Some(i),
                active_len: s.len,
                active_alloc: alloc,
                discard: None,
            };
        }
        let s = Self::build(dir, settings, segs, files, next_offset, last_ts);
        s.apply_retention(&mut s.segs.lock());
        Ok(s)
    }

    fn build(
        dir: PathBuf,
        settings: Settings,
        segs: VecDeque<Seg>,
        files: Files,
        next_offset: u64,
        last_ts: u64,
    ) -> Arc<Stream> {
        let (committed, _) = watch::channel(next_offset);
        Arc::new(Stream {
            dir,
            settings: Mutex::new(settings),
            head: Mutex::new(Head {
                next_offset,
                last_ts,
            }),
            files: Mutex::new(files),
            segs: Mutex::new(segs),
            committed,
            deleted: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
            repl: std::sync::OnceLock::new(),
        })
    }

    /// Opens the stream in `dir`; when its files cannot be read, an empty stream there
    /// (reported: what the directory held is not served, writes keep retrying).
    pub fn open_or_empty(dir: PathBuf, settings: Settings) -> Arc<Stream> {
        match Stream::open(dir.clone(), settings) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot open a stream's files; it starts empty");
                Self::build(dir, settings, VecDeque::new(), Files::default(), 0, 0)
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn set_settings(&self, s: Settings) {
        *self.settings.lock() = s;
    }

    /// The offset after the last committed message.
    pub fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Follows the committed offset.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// The first offset still stored (the committed offset when empty).
    pub fn first_offset(&self) -> u64 {
        let segs = self.segs.lock();
        match segs.front() {
            Some(s) if s.end > s.base || segs.len() > 1 => s.base,
            _ => self.committed(),
        }
    }

    /// Messages in the stream (committed ones).
    pub fn message_count(&self) -> u64 {
        self.committed().saturating_sub(self.first_offset())
    }

    /// (segments, committed bytes, first timestamp in ms) for management.
    pub fn info(&self) -> (usize, u64, Option<u64>) {
        let segs = self.segs.lock();
        (
            segs.len(),
            segs.iter().map(|s| s.len).sum(),
            segs.front().and_then(Seg::first_ts),
        )
    }

    /// The offset of the start of the last chunk (the last index group with messages).
    pub fn last_chunk_offset(&self) -> u64 {
        let committed = self.committed();
        let segs = self.segs.lock();
        segs.iter()
            .rev()
            .flat_map(|s| s.index.iter().rev())
            .find(|e| e.offset < committed)
            .map_or(committed, |e| e.offset)
    }

    /// Appends a message: numbers it, encodes it and hands it to the message log's writer
    /// (returning the log sequence number its confirm waits for), or writes and syncs it
    /// here when there is no log.
    pub fn append(self: &Arc<Self>, msg: &Message, log: Option<&Arc<MessageLog>>) -> Option<u64> {
        let (props, patch, filter) = prepare(msg);
        let mut chunk = Chunk::default();
        let mut h = self.head.lock();
        let offset = h.next_offset;
        h.next_offset += 1;
        let ts = crate::store::log::now_ms().max(h.last_ts);
        h.last_ts = ts;
        segment::encode(
            &mut chunk.bytes,
            offset,
            ts,
            filter.as_deref(),
            msg.exchange.as_bytes(),
            msg.routing_key.as_bytes(),
            &props,
            patch.map(|at| (at, offset as i64)),
            &msg.body,
        );
        let len = chunk.bytes.len() as u64;
        chunk.records.push((offset, ts, len));
        match log {
            Some(log) => Some(log.append_stream(self.clone(), chunk)),
            None => {
                while let Err(e) = self.write_chunk(&chunk) {
                    tracing::error!(error = %e, dir = %self.dir.display(), "cannot write a stream segment; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                None
            }
        }
    }

    /// Writes and syncs records (the message log's writer thread, or `append` without a
    /// log), rolling the segment whenever it reaches the maximum size (between records, so
    /// one batch may span segments), indexes them, applies retention and publishes the new
    /// committed offset. On an error the segment is cut back to its last good length and
    /// the caller retries with the same chunk: records already committed are skipped.
    pub fn write_chunk(&self, chunk: &Chunk) -> std::io::Result<()> {
        let mut f = self.files.lock();
        if self.deleted.load(SeqCst) {
            return Ok(());
        }
        let written = self.written_end();
        let mut i = chunk.records.partition_point(|r| r.0 < written);
        let mut at: u64 = chunk.records[..i].iter().map(|r| r.2).sum();
        let max_segment = self.settings.lock().max_segment_size;
        while i < chunk.records.len() {
            let first = chunk.records[i].0;
            let full = f.active_len > 0 && f.active_len >= max_segment;
            if f.active.is_none() || full {
                self.roll(&mut f, first)?;
            }
            // Records up to the one that makes the segment reach its size.
            let mut j = i;
            let mut len = 0u64;
            while j < chunk.records.len() && (j == i || f.active_len + len < max_segment) {
                len += chunk.records[j].2;
                j += 1;
            }
            let bytes = &chunk.bytes[at as usize..(at + len) as usize];
            let start = f.active_len;
            let Some((_, file)) = f.active.as_ref() else {
                return Ok(());
            };
            let written = crate::store::prealloc::write_synced(
                file,
                start,
                bytes,
                f.active_alloc,
                PREALLOC_STEP,
                max_segment,
                ("stream::write", "stream::sync"),
            );
            match written {
                Ok(size) => f.active_alloc = size,
                Err((sync, e)) => {
                    // Nothing this write left in the segment is trusted: a torn record, or
                    // bytes whose fdatasync failed (the kernel may have dropped them and a
                    // second fdatasync would not say so: "fsyncgate"). The segment is cut
                    // back to its last good length (best effort: readers and recovery stop
                    // there anyway) and closed; the retry writes the records to a fresh
                    // segment.
                    let _ = file.set_len(start);
                    let base = f.active.take().map_or(first, |(b, _)| b);
                    f.index = None;
                    f.discard = Some(base);
                    f.active_alloc = start;
                    if sync {
                        tracing::error!(error = %e, dir = %self.dir.display(), segment = base, first_offset = first, "stream fdatasync failed: the records written since the last good sync are treated as lost and rewritten to a new segment; their confirms wait");
                    } else {
                        tracing::error!(error = %e, dir = %self.dir.display(), segment = base, first_offset = first, "stream write failed: the records are rewritten to a new segment; their confirms wait");
                    }
                    return Err(e);
                }
            }
            f.active_len += len;
            let records = &chunk.records[i..j];
            let mut segs = self.segs.lock();
            if let Some(seg) = segs.back_mut() {
                let mut pos = start;
                let new = index::entries_for(
                    seg.index.last(),
                    records.iter().map(|&(o, t, l)| {
                        let p = pos;
                        pos += l;
                        (o, t, p)
                    }),
                );
                if !new.is_empty() {
                    let mut out = Vec::with_capacity(new.len() * index::ENTRY);
                    for e in &new {
                        index::encode(&mut out, e);
                    }
                    if let Some(ix) = f.index.as_mut() {
                        if let Err(e) = ix.write_all(&out) {
                            tracing::warn!(error = %e, "cannot write a stream index (rebuilt at the next start)");
                        }
                    }
                    seg.index.extend(new);
                }
                seg.len = f.active_len;
                seg.end = records.last().map_or(first, |r| r.0 + 1);
                let end = seg.end;
                self.apply_retention(&mut segs);
                drop(segs);
                self.publish_end(end);
            }
            at += len;
            i = j;
        }
        Ok(())
    }

    /// Starts a new active segment whose first record is `first`.
    fn roll(&self, f: &mut Files, first: u64) -> std::io::Result<()> {
        // The closing segment loses its zero tail first, durably, so a closed segment (whose
        // length recovery trusts) never has one.
        if let Some((_, old)) = f.active.as_ref() {
            if f.active_alloc > f.active_len {
                old.set_len(f.active_len)?;
                old.sync_all()?;
                f.active_alloc = f.active_len;
            }
        }
        std::fs::create_dir_all(&self.dir)?;
        // A segment named `first` holds no committed record (all of its offsets are
        // `first` or later): it is what a failed write left. It is replaced by a new file
        // rather than reused, since its pages cannot be trusted after a failed sync.
        let path = segment::path(&self.dir, first);
        if f.discard == Some(first) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        f.discard = None;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let idx = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(index::path(&self.dir, first))?;
        sync_dir(&self.dir)?;
        // New, so empty; one already there (never, by numbering) is continued after its
        // last valid record.
        let size = file.metadata()?.len();
        f.active_len = if size == 0 {
            0
        } else {
            segment::scan(&mut file, 0, size, None)?.end
        };
        f.active_alloc = size;
        f.active = Some((first, file));
        f.index = Some(idx);
        let mut segs = self.segs.lock();
        if segs.back().is_none_or(|s| s.base != first) {
            segs.push_back(Seg {
                base: first,
                len: f.active_len,
                end: first,
                index: Vec::new(),
            });
        }
        Ok(())
    }

    /// Deletes the oldest closed segments while the stream is over its length or age limit.
    fn apply_retention(&self, segs: &mut VecDeque<Seg>) {
        let s = *self.settings.lock();
        let now = crate::store::log::now_ms();
        while segs.len() > 1 {
            let total: u64 = segs.iter().map(|s| s.len).sum();
            let over_bytes = s.max_bytes.is_some_and(|m| total > m);
            // Everything in the oldest segment is older than the next one's first message.
            let over_age = s.max_age_ms.is_some_and(|a| {
                segs[1]
                    .first_ts()
                    .is_some_and(|t| t.saturating_add(a) < now)
            });
            if !(over_bytes || over_age) {
                break;
            }
            let Some(old) = segs.pop_front() else { break };
            for p in [
                segment::path(&self.dir, old.base),
                index::path(&self.dir, old.base),
            ] {
                if let Err(e) = std::fs::remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(file = %p.display(), error = %e, "cannot delete a stream segment");
                    }
                }
            }
            tracing::debug!(dir = %self.dir.display(), base = old.base, "stream segment removed by retention");
        }
    }

    /// Runs retention now (a periodic check for `x-max-age` without new writes).
    pub fn retain(&self) {
        let _f = self.files.lock();
        self.apply_retention(&mut self.segs.lock());
    }

    /// The stream was deleted: its readers stop, its files go.
    pub fn delete(&self) {
        self.deleted.store(true, SeqCst);
        for r in self.readers.lock().drain(..) {
            r.stop();
        }
        let mut f = self.files.lock();
        *f = Files::default();
        self.segs.lock().clear();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot delete a stream's files");
            }
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(SeqCst)
    }

    /// Where to start reading for `offset`: the segment's base and the index entry to seek
    /// to, with `offset` clamped to what is stored.
    fn locate(&self, offset: u64) -> Option<(u64, IndexEntry, u64)> {
        let segs = self.segs.lock();
        let first = segs.front()?.base;
        let offset = offset.max(first);
        let i = segs.partition_point(|s| s.base <= offset).saturating_sub(1);
        let s = &segs[i];
        let e = index::for_offset(&s.index, offset).unwrap_or(IndexEntry {
            offset: s.base,
            ts: 0,
            pos: 0,
        });
        Some((s.base, e, offset))
    }

    /// Where to start looking for the first message stored at or after `ts`.
    fn locate_timestamp(&self, ts: u64) -> Option<(u64, IndexEntry)> {
        let segs = self.segs.lock();
        let i = segs
            .iter()
            .rposition(|s| s.first_ts().is_some_and(|t| t < ts))
            .unwrap_or(0);
        let s = segs.get(i)?;
        let e = index::for_timestamp(&s.index, ts).unwrap_or(IndexEntry {
            offset: s.base,
            ts: 0,
            pos: 0,
        });
        Some((s.base, e))
    }

    /// The committed length of segment `base` and the next segment's base when it is not
    /// the last; `None` when the segment is gone.
    fn segment_limit(&self, base: u64) -> Option<(u64, Option<u64>)> {
        let segs = self.segs.lock();
        let i = segs.binary_search_by_key(&base, |s| s.base).ok()?;
        Some((segs[i].len, segs.get(i + 1).map(|s| s.base)))
    }

    /// Wakes every reader (credit came back to some consumer).
    pub fn wake_readers(&self) {
        for r in self.readers.lock().iter() {
            r.wake();
        }
    }

    fn add_reader(&self, h: reader::Handle) {
        self.readers.lock().push(h);
    }

    /// Stops the reader of `consumer`.
    pub fn remove_reader(&self, consumer: &Arc<crate::queue::consumer::Consumer>) {
        self.readers.lock().retain(|r| {
            let same = r.is_for(consumer);
            if same {
                r.stop();
            }
            !same
        });
    }
}

/// The storage settings of a stream with these (validated, policy-merged) arguments; `None`
/// when the queue is not a stream.
pub fn settings_from_args(a: &crate::queue::args::QueueArgs) -> Option<Settings> {
    (a.queue_type == crate::queue::args::QueueType::Stream).then(|| Settings {
        max_segment_size: a
            .stream_max_segment_size_bytes
            .unwrap_or(DEFAULT_SEGMENT_SIZE)
            .max(1),
        max_bytes: a.max_length_bytes,
        max_age_ms: a.max_age.map(|s| s.saturating_mul(1000)),
    })
}

/// A stream's directory name: a hash of its vhost and name (names can be 255 bytes of
/// anything; the directory also holds a `name` file saying whose it is).
pub fn dir_name(vhost: &str, name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(crate::store::record::queue_key(vhost, name).as_bytes());
    h[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
