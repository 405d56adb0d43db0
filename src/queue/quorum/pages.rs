//! Where a quorum queue keeps the bodies of a backlog beyond its memory budget
//! (`--queue-memory-budget`): page files, written when a message is enqueued past the
//! budget and read back when it is delivered, so a queue of millions of messages costs
//! tens of bytes each in RAM. The state machine only ever sees a [`QMsg`] (its size and
//! expiration); whether the body is in memory or here is the driver's business.
//!
//! Page files are cut into segments. A segment is only ever appended to, never truncated
//! or reused: a [`Paged`] message holds its segment's open file, so it can be read
//! without the queue's lock (a replicated queue's snapshot is encoded from such handles
//! outside it) even after the queue released it. A segment is unlinked once none of its
//! messages is still in the queue; an open handle keeps reading the unlinked file. Page
//! files are a cache, never synced (durability is the message log's, or in a cluster the
//! Raft log's and snapshot's, job) and emptied at start.

use crate::message::Message;
use crate::queue::pager::Paging;
use crate::store::record::{self, Read, Record};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A segment is closed for writing at this size.
const SEGMENT_SIZE: u64 = 64 << 20;

/// A quorum queue's message as its state machine holds it.
#[derive(Debug, Clone)]
pub(crate) enum QMsg {
    Mem(Arc<Message>),
    Paged(Arc<Paged>),
}

impl QMsg {
    /// The message's id in the message log (0 when not stored).
    pub(crate) fn persist_id(&self) -> u64 {
        match self {
            QMsg::Mem(m) => m.persist_id,
            QMsg::Paged(p) => p.persist_id,
        }
    }
}

impl super::fifo::FifoMsg for QMsg {
    fn size(&self) -> usize {
        match self {
            QMsg::Mem(m) => m.size(),
            QMsg::Paged(p) => p.size as usize,
        }
    }
    fn expiration_ms(&self) -> Option<u64> {
        match self {
            QMsg::Mem(m) => m.expiration,
            QMsg::Paged(p) => p.expiration,
        }
    }
}

impl Paged {
    /// Reads the body back (from its segment's open file: no lock needed, and it works
    /// after the segment was unlinked).
    pub(crate) fn read(&self) -> std::io::Result<Arc<Message>> {
        let raw = AHEAD.with(|a| a.borrow_mut().read(self))?;
        match record::read(&raw) {
            Read::Ok(Record::Publish { mut msg, .. }, _) => {
                // As held, not as re-derived from the properties.
                msg.persist_id = self.persist_id;
                msg.expiration = self.expiration;
                msg.priority = self.priority;
                msg.persistent = self.persistent;
                Ok(Arc::new(msg))
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unreadable page record",
            )),
        }
    }
}

/// Bytes read past a message when [`reading_ahead`]: a snapshot reads a backlog's pages
/// in the order they were written, so one read per MiB serves about a thousand 1 KiB
/// messages (one `pread` per message was the largest cost of a paged queue's snapshots).
const AHEAD_BYTES: usize = 1 << 20;

/// This thread's read-ahead, on only inside [`reading_ahead`].
#[derive(Default)]
struct Ahead {
    on: bool,
    /// A segment's bytes from an offset.
    chunk: Option<(Arc<SegFile>, u64, Vec<u8>)>,
}

thread_local! {
    static AHEAD: std::cell::RefCell<Ahead> = std::cell::RefCell::new(Ahead::default());
}

impl Ahead {
    /// `p`'s record: from the chunk read ahead when on and it holds it, else read (and,
    /// when on, the next MiB with it).
    fn read(&mut self, p: &Paged) -> std::io::Result<Bytes> {
        let len = p.len as usize;
        if !self.on {
            let mut buf = vec![0u8; len];
            p.seg.file.read_exact_at(&mut buf, p.off)?;
            return Ok(Bytes::from(buf));
        }
        let held = |c: &(Arc<SegFile>, u64, Vec<u8>)| {
            Arc::ptr_eq(&c.0, &p.seg)
                && p.off >= c.1
                && p.off + len as u64 <= c.1 + c.2.len() as u64
        };
        if !self.chunk.as_ref().is_some_and(held) {
            let mut buf = vec![0u8; len.max(AHEAD_BYTES)];
            let mut got = 0;
            while got < len {
                match p.seg.file.read_at(&mut buf[got..], p.off + got as u64) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(got);
            self.chunk = Some((p.seg.clone(), p.off, buf));
        }
        match &self.chunk {
            Some((_, start, buf)) => {
                let at = (p.off - start) as usize;
                Ok(Bytes::copy_from_slice(&buf[at..at + len]))
            }
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }
}

/// Runs `f` (a snapshot's encoding, on this thread, without awaiting) with paged bodies
/// read ahead a MiB at a time; the chunk (and the segment it holds open) goes after.
pub(crate) fn reading_ahead<T>(f: impl FnOnce() -> T) -> T {
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            AHEAD.with(|a| *a.borrow_mut() = Ahead::default());
        }
    }
    AHEAD.with(|a| a.borrow_mut().on = true);
    let _off = Off;
    f()
}

/// An open page file segment (append-only; see the module doc).
#[derive(Debug)]
pub(crate) struct SegFile {
    file: File,
    /// Its number in its store.
    n: u32,
}

/// A body in a page file.
#[derive(Debug)]
pub(crate) struct Paged {
    seg: Arc<SegFile>,
    off: u64,
    len: u32,
    size: u32,
    expiration: Option<u64>,
    priority: u8,
    persistent: bool,
    persist_id: u64,
    /// Reading it back failed: the message left the queue's memory, but its record stays
    /// in the message log, so a restart brings it back.
    pub(crate) unreadable: AtomicBool,
}

#[derive(Debug)]
struct Segment {
    file: Arc<SegFile>,
    len: u64,
    /// Messages in it still held by the queue.
    live: u64,
}

#[derive(Debug)]
pub(crate) struct PageStore {
    cfg: Arc<Paging>,
    name: u64,
    segments: BTreeMap<u32, Segment>,
    /// The segment written to (it may have been unlinked: then the next write opens
    /// `head + 1`).
    head: u32,
    broken: bool,
    /// Body bytes of the messages paged here and not released.
    live_bytes: usize,
}

impl PageStore {
    /// An empty store under the same settings (its own files): the old one's files go
    /// when it is dropped, and its messages stay readable while something holds them.
    pub(crate) fn fresh(&self) -> Self {
        PageStore::new(self.cfg.clone())
    }

    pub(crate) fn new(cfg: Arc<Paging>) -> Self {
        let name = cfg.next_name();
        PageStore {
            cfg,
            name,
            segments: BTreeMap::new(),
            head: 0,
            broken: false,
            live_bytes: 0,
        }
    }

    /// Body bytes paged here and not released.
    pub(crate) fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Body bytes the queue keeps in memory before paging.
    pub(crate) fn budget(&self) -> usize {
        self.cfg.budget
    }

    fn path(&self, seg: u32) -> PathBuf {
        self.cfg.dir.join(format!("q{}-{seg}.page", self.name))
    }

    /// The message as a queue holds it, `ahead` bytes of ready bodies before it: in
    /// memory while those and it fit the budget, else written to a page file (in
    /// memory still should paging be broken).
    pub(crate) fn place(&mut self, ahead: usize, msg: Arc<Message>) -> QMsg {
        if ahead + msg.size() <= self.budget() {
            return QMsg::Mem(msg);
        }
        match self.write(&msg) {
            Some(p) => QMsg::Paged(Arc::new(p)),
            None => QMsg::Mem(msg),
        }
    }

    /// Writes a message's record; `None` when paging is broken (the message then stays
    /// in memory; the failure is logged once).
    pub(crate) fn write(&mut self, m: &Message) -> Option<Paged> {
        if self.broken {
            return None;
        }
        match self.try_write(m) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "quorum queue paging failed: messages stay in memory");
                self.broken = true;
                None
            }
        }
    }

    fn try_write(&mut self, m: &Message) -> std::io::Result<Paged> {
        if self
            .segments
            .get(&self.head)
            .is_none_or(|s| s.len >= SEGMENT_SIZE)
        {
            // A new segment: never one written before (an emptied head was unlinked,
            // and a reader may still hold it).
            self.head += 1;
            std::fs::create_dir_all(&self.cfg.dir)?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(self.path(self.head))?;
            self.segments.insert(
                self.head,
                Segment {
                    file: Arc::new(SegFile { file, n: self.head }),
                    len: 0,
                    live: 0,
                },
            );
        }
        let mut buf = Vec::with_capacity(m.size() + 64);
        record::encode_publish(&mut buf, m.persist_id, 0, &[], m);
        let seg = self.segments.get_mut(&self.head).expect("opened above");
        crate::store::fault::write_all_at("quorum_pages::write", &seg.file.file, &buf, seg.len)?;
        let p = Paged {
            seg: seg.file.clone(),
            off: seg.len,
            len: buf.len() as u32,
            size: m.size() as u32,
            expiration: m.expiration,
            priority: m.priority,
            persistent: m.persistent,
            persist_id: m.persist_id,
            unreadable: AtomicBool::new(false),
        };
        seg.len += buf.len() as u64;
        seg.live += 1;
        self.live_bytes += p.size as usize;
        Ok(p)
    }

    /// The queue is done with a paged message: its segment is unlinked once it holds
    /// none (a message of another store, replaced meanwhile, is not counted here).
    pub(crate) fn release(&mut self, p: &Paged) {
        let Some(seg) = self.segments.get_mut(&p.seg.n) else {
            return;
        };
        if !Arc::ptr_eq(&seg.file, &p.seg) {
            return;
        }
        seg.live = seg.live.saturating_sub(1);
        self.live_bytes = self.live_bytes.saturating_sub(p.size as usize);
        if seg.live == 0 {
            self.segments.remove(&p.seg.n);
            let _ = std::fs::remove_file(self.path(p.seg.n));
        }
    }

    /// Page files in use.
    #[cfg(test)]
    fn segments(&self) -> usize {
        self.segments.len()
    }
}

impl Drop for PageStore {
    fn drop(&mut self) {
        for seg in self.segments.keys() {
            let _ = std::fs::remove_file(self.path(*seg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::ShortStr;

    fn msg(body: &'static [u8]) -> Message {
        let mut m = Message::new(
            ShortStr::from_static("x"),
            ShortStr::from_static("rk"),
            Bytes::new(),
            Bytes::from_static(body),
        );
        m.persist_id = 42;
        m
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| d.count())
    }

    #[test]
    fn bodies_round_trip_and_segments_go_when_empty() {
        let dir = std::env::temp_dir().join(format!("warren-qpages-{}", std::process::id()));
        let mut s = PageStore::new(Paging::new(dir.clone(), 0));
        let a = s.write(&msg(b"first")).unwrap();
        let b = s.write(&msg(b"second")).unwrap();
        let back = b.read().unwrap();
        assert_eq!(&back.body[..], b"second");
        assert_eq!(back.persist_id, 42);
        assert_eq!(&back.routing_key.as_str(), &"rk");
        s.release(&a);
        assert_eq!(&b.read().unwrap().body[..], b"second");
        s.release(&b);
        // The emptied segment is unlinked, head or not.
        assert_eq!(s.segments(), 0);
        assert_eq!(files(&dir), 0);
        let c = s.write(&msg(b"third")).unwrap();
        assert_eq!(c.off, 0);
        assert_ne!(c.seg.n, a.seg.n, "a segment number is never used again");
        drop(s);
        assert_eq!(files(&dir), 0);
    }

    /// A segment is never rewritten: a message held after its release (as a snapshot
    /// being encoded holds it) still reads back intact from the unlinked file, while
    /// the store writes on into a new one; a release of another store's message (the
    /// queue's store was replaced) changes nothing here.
    #[test]
    fn segments_are_immutable_and_readable_after_unlink() {
        let dir = std::env::temp_dir().join(format!("warren-qpages-imm-{}", std::process::id()));
        let mut s = PageStore::new(Paging::new(dir.clone(), 0));
        let held = s.write(&msg(b"kept by a reader")).unwrap();
        s.release(&held);
        assert_eq!(files(&dir), 0, "emptied segment unlinked");
        for i in 0..100u8 {
            let m = s.write(&msg(if i % 2 == 0 {
                b"xxxxxxxxxxxxxxxx"
            } else {
                b"y"
            }));
            s.release(&m.unwrap());
        }
        assert_eq!(&held.read().unwrap().body[..], b"kept by a reader");

        let mut other = s.fresh();
        let theirs = other.write(&msg(b"other")).unwrap();
        let mine = s.write(&msg(b"mine")).unwrap();
        s.release(&theirs);
        assert_eq!(s.segments(), 1);
        assert_eq!(other.segments(), 1);
        drop(other);
        assert_eq!(&theirs.read().unwrap().body[..], b"other");
        assert_eq!(&mine.read().unwrap().body[..], b"mine");
        drop(s);
        assert_eq!(files(&dir), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Read ahead (a snapshot's encoding): the same bodies as one read each, from two
    /// segments and in any order, a message written after the chunk was read included;
    /// off again afterwards (the chunk and its segment let go).
    #[test]
    fn reading_ahead_gives_the_same_bodies() {
        let dir = std::env::temp_dir().join(format!("warren-qpages-ahead-{}", std::process::id()));
        let mut s = PageStore::new(Paging::new(dir.clone(), 0));
        let bodies: Vec<Vec<u8>> = (0..300u32)
            .map(|i| vec![(i % 251) as u8; 700 + i as usize])
            .collect();
        let mut paged = Vec::new();
        for b in &bodies {
            let m = Message::new(
                ShortStr::from_static("x"),
                ShortStr::from_static("rk"),
                Bytes::new(),
                Bytes::from(b.clone()),
            );
            paged.push(s.write(&m).unwrap());
        }
        let mut other = s.fresh();
        let late = Message::new(
            ShortStr::from_static("x"),
            ShortStr::from_static("rk"),
            Bytes::new(),
            Bytes::from_static(b"late"),
        );
        let theirs = other.write(&late).unwrap();
        reading_ahead(|| {
            for (p, b) in paged.iter().zip(&bodies) {
                assert_eq!(&p.read().unwrap().body[..], &b[..]);
            }
            assert_eq!(&theirs.read().unwrap().body[..], b"late");
            let after = s.write(&late).unwrap();
            assert_eq!(&after.read().unwrap().body[..], b"late");
            for (p, b) in paged.iter().zip(&bodies).rev().step_by(7) {
                assert_eq!(&p.read().unwrap().body[..], &b[..]);
            }
        });
        AHEAD.with(|a| {
            let a = a.borrow();
            assert!(!a.on && a.chunk.is_none());
        });
        assert_eq!(&paged[5].read().unwrap().body[..], &bodies[5][..]);
        drop(other);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
