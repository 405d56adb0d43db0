//! A stream consumer's reader: a task that reads committed records from the segment files
//! and sends them to the consumer's connection, never more than the consumer's credit.
//!
//! File reads run in `spawn_blocking`, a bounded batch at a time, with no lock held but the
//! segment table's for a lookup, so a replay from `first` costs the publishers and other
//! consumers nothing but disk bandwidth. At the tail the task waits on the committed-offset
//! watch (the message log's writer publishes it right after the fdatasync); out of credit it
//! waits on its wake-up, which the queue's `dispatch` sends when an ack (any settle) or a
//! written delivery returns credit.

use super::offset::{self, Filter, Start};
use super::segment::{self, Entry, Next};
use super::Stream;
use crate::connection::outbound::Outbound;
use crate::message::Message;
use crate::protocol::codec::ShortStr;
use crate::queue::consumer::Consumer;
use crate::queue::{Queue, QueuedMessage};
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::Notify;

/// Deliveries one batch reads at most.
const BATCH: usize = 256;
/// Bytes one batch reads at most (it ends after the record that passes this).
const BATCH_BYTES: usize = 4 << 20;
/// Records one batch looks at at most (filtered-out ones included).
const BATCH_SCAN: usize = 16 * 1024;

/// The stream's handle on a reader task.
#[derive(Debug)]
pub(crate) struct Handle {
    consumer: Arc<Consumer>,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
}

impl Handle {
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, SeqCst);
        self.wake.notify_one();
    }

    pub(crate) fn is_for(&self, c: &Arc<Consumer>) -> bool {
        Arc::ptr_eq(&self.consumer, c)
    }
}

/// An open segment and where in it the cursor is.
#[derive(Debug)]
struct Open {
    base: u64,
    r: BufReader<File>,
    pos: u64,
    /// Committed bytes of the segment when last looked up.
    limit: u64,
    /// The next segment's base, once this one is closed.
    next_seg: Option<u64>,
}

/// A read position in a stream.
#[derive(Debug)]
pub struct Cursor {
    stream: Arc<Stream>,
    /// The next offset wanted.
    pub next: u64,
    open: Option<Open>,
}

impl Cursor {
    pub fn new(stream: Arc<Stream>, next: u64) -> Cursor {
        Cursor {
            stream,
            next,
            open: None,
        }
    }

    /// Opens the segment holding `next` at its index entry; false when nothing is stored
    /// or the files are gone.
    fn open(&mut self) -> bool {
        for _ in 0..3 {
            let Some((base, e, next)) = self.stream.locate(self.next) else {
                return false;
            };
            self.next = next;
            let Some((limit, next_seg)) = self.stream.segment_limit(base) else {
                continue;
            };
            let f = match File::open(segment::path(self.stream.dir(), base)) {
                Ok(f) => f,
                // Removed by retention meanwhile: look again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a stream segment");
                    return false;
                }
            };
            let mut r = BufReader::with_capacity(128 * 1024, f);
            if r.seek(SeekFrom::Start(e.pos)).is_err() {
                return false;
            }
            self.open = Some(Open {
                base,
                r,
                pos: e.pos,
                limit,
                next_seg,
            });
            return true;
        }
        false
    }

    /// The next committed record at or after `next` (below `committed`), or `None` at the
    /// end of what is committed.
    pub fn next_entry(&mut self, committed: u64) -> Option<Entry> {
        loop {
            if self.next >= committed {
                return None;
            }
            if self.open.is_none() && !self.open() {
                return None;
            }
            let o = self.open.as_mut()?;
            if o.pos >= o.limit {
                match self.stream.segment_limit(o.base) {
                    Some((limit, next_seg)) => {
                        if limit > o.limit {
                            // The buffer may hold what the file had past the old limit:
                            // zeros of the preallocated tail, since overwritten with
                            // records. Seeking drops it, so they are read afresh.
                            if o.r.seek(SeekFrom::Start(o.pos)).is_err() {
                                self.open = None;
                                continue;
                            }
                        }
                        o.limit = limit;
                        o.next_seg = next_seg;
                    }
                    None => {
                        // Removed by retention: continue from what is left.
                        self.open = None;
                        continue;
                    }
                }
                if o.pos >= o.limit {
                    match o.next_seg {
                        Some(b) => {
                            self.next = self.next.max(b);
                            self.open = None;
                            continue;
                        }
                        None => return None,
                    }
                }
            }
            match segment::read_next(&mut o.r, o.limit - o.pos) {
                Next::Ok(e, len) => {
                    o.pos += len;
                    if e.offset < self.next {
                        continue;
                    }
                    self.next = e.offset + 1;
                    return Some(e);
                }
                Next::End => o.pos = o.limit,
                Next::Bad(why) => {
                    tracing::error!(base = o.base, pos = o.pos, why, dir = %self.stream.dir().display(), "stream segment unreadable here; skipping to the next segment");
                    match o.next_seg {
                        Some(b) => {
                            self.next = self.next.max(b);
                            self.open = None;
                        }
                        None => {
                            // The active segment: nothing readable until more is written.
                            self.next = committed;
                            self.open = None;
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// Moves to the first message stored at or after `ts` (milliseconds), or to the end of
    /// what is committed when there is none.
    pub fn seek_timestamp(&mut self, ts: u64, committed: u64) {
        self.open = None;
        let Some((_, e)) = self.stream.locate_timestamp(ts) else {
            self.next = committed;
            return;
        };
        self.next = e.offset;
        while let Some(r) = self.next_entry(committed) {
            if r.ts >= ts {
                self.next = r.offset;
                self.open = None;
                return;
            }
        }
        self.next = committed;
        self.open = None;
    }

    /// Up to `n` messages that pass `filter`, for a delivery.
    pub fn read_batch(&mut self, n: usize, committed: u64, filter: &Filter) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        let (mut bytes, mut scanned) = (0usize, 0usize);
        while out.len() < n && bytes < BATCH_BYTES && scanned < BATCH_SCAN {
            let Some(e) = self.next_entry(committed) else {
                break;
            };
            scanned += 1;
            if !filter.matches(e.filter.as_deref()) {
                continue;
            }
            bytes += e.body.len() + e.properties.len();
            out.push(to_queued(e));
        }
        out
    }
}

/// A record as a delivery: offset as the queue position, never redelivered.
fn to_queued(e: Entry) -> QueuedMessage {
    let short =
        |b: bytes::Bytes| ShortStr::from_bytes(b).unwrap_or_else(|_| ShortStr::from_static(""));
    QueuedMessage {
        seq: e.offset,
        msg: Arc::new(Message {
            exchange: short(e.exchange),
            routing_key: short(e.routing_key),
            properties: e.properties,
            body: e.body,
            priority: 0,
            expiration: None,
            persistent: true,
            persist_id: 0,
        }),
        redelivered: false,
        expires_at: None,
        delivery_count: 0,
        holder: 0,
    }
}

/// Starts the reader of a new consumer. Where it starts is decided now (`next` means the
/// messages committed after this call), except for a timestamp, which the task looks up.
pub(crate) fn spawn(queue: Arc<Queue>, stream: Arc<Stream>, consumer: Arc<Consumer>) {
    let wake = Arc::new(Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let args = consumer.arguments.inner();
    let start = offset::parse_start(args.get("x-stream-offset"), crate::store::log::now_ms())
        .unwrap_or(Start::Next);
    let filter = Filter::from_args(&consumer.arguments);
    let committed = stream.committed();
    let first = stream.first_offset();
    let (next, ts) = match start {
        Start::First => (first, None),
        Start::Last => (stream.last_chunk_offset(), None),
        Start::Next => (committed, None),
        Start::Offset(n) => (n.clamp(first, committed), None),
        Start::Timestamp(t) => (first, Some(t)),
    };
    stream.add_reader(Handle {
        consumer: consumer.clone(),
        wake: wake.clone(),
        stop: stop.clone(),
    });
    let cursor = Cursor::new(stream.clone(), next);
    tokio::spawn(run(queue, stream, consumer, wake, stop, cursor, ts, filter));
}

#[allow(clippy::too_many_arguments)]
async fn run(
    queue: Arc<Queue>,
    stream: Arc<Stream>,
    consumer: Arc<Consumer>,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
    mut cursor: Cursor,
    ts: Option<u64>,
    filter: Filter,
) {
    let mut committed_rx = stream.subscribe();
    if let Some(ts) = ts {
        let committed = stream.committed();
        match tokio::task::spawn_blocking(move || {
            cursor.seek_timestamp(ts, committed);
            cursor
        })
        .await
        {
            Ok(c) => cursor = c,
            Err(_) => return,
        }
    }
    let filter = Arc::new(filter);
    loop {
        if stop.load(SeqCst) || stream.is_deleted() {
            return;
        }
        let committed = *committed_rx.borrow_and_update();
        if cursor.next >= committed {
            tokio::select! {
                r = committed_rx.changed() => if r.is_err() { return },
                _ = wake.notified() => {}
            }
            continue;
        }
        let mut n = 0;
        while n < BATCH && consumer.reserve_or_block() {
            n += 1;
        }
        if n == 0 {
            wake.notified().await;
            continue;
        }
        let f = filter.clone();
        let before = cursor.next;
        let read = tokio::task::spawn_blocking(move || {
            let msgs = cursor.read_batch(n, committed, &f);
            (cursor, msgs)
        })
        .await;
        let Ok((c, msgs)) = read else { return };
        cursor = c;
        for _ in msgs.len()..n {
            consumer.unreserve();
        }
        if msgs.is_empty() && cursor.next == before {
            // Committed records that cannot be read (the files are unreadable): retry
            // later rather than spin.
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                _ = wake.notified() => {}
            }
            continue;
        }
        if msgs.is_empty() || stop.load(SeqCst) {
            for _ in 0..msgs.len() {
                consumer.unreserve();
            }
            continue;
        }
        queue.stream_delivered(msgs.len() as u64);
        let out = Outbound::Deliver {
            consumer: consumer.clone(),
            queue: queue.clone(),
            msgs,
        };
        if consumer.conn.send(out).is_err() {
            // The connection is gone; its close cancels the consumer.
            return;
        }
    }
}
