//! Where a quorum queue keeps the bodies of a backlog beyond its memory budget
//! (`--queue-memory-budget`): page files, written when a message is enqueued past the
//! budget and read back when it is delivered, so a queue of millions of messages costs
//! tens of bytes each in RAM. The state machine only ever sees a [`QMsg`] (its size and
//! expiration); whether the body is in memory or here is the driver's business.
//!
//! Page files are cut into segments; a segment is deleted once none of its messages is
//! still in the queue. They are a cache, never synced (durability is the message log's
//! job) and emptied at start.

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

/// A body in a page file.
#[derive(Debug)]
pub(crate) struct Paged {
    seg: u32,
    off: u64,
    len: u32,
    size: u32,
    expiration: Option<u64>,
    persist_id: u64,
    /// Reading it back failed: the message left the queue's memory, but its record stays
    /// in the message log, so a restart brings it back.
    pub(crate) unreadable: AtomicBool,
}

#[derive(Debug)]
struct Segment {
    file: File,
    len: u64,
    /// Messages in it still held by the queue.
    live: u64,
}

#[derive(Debug)]
pub(crate) struct PageStore {
    cfg: Arc<Paging>,
    name: u64,
    segments: BTreeMap<u32, Segment>,
    head: u32,
    broken: bool,
}

impl PageStore {
    pub(crate) fn new(cfg: Arc<Paging>) -> Self {
        let name = cfg.next_name();
        PageStore {
            cfg,
            name,
            segments: BTreeMap::new(),
            head: 0,
            broken: false,
        }
    }

    /// Body bytes the queue keeps in memory before paging.
    pub(crate) fn budget(&self) -> usize {
        self.cfg.budget
    }

    fn path(&self, seg: u32) -> PathBuf {
        self.cfg.dir.join(format!("q{}-{seg}.page", self.name))
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
            if self.segments.contains_key(&self.head) {
                self.head += 1;
            }
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
                    file,
                    len: 0,
                    live: 0,
                },
            );
        }
        let mut buf = Vec::with_capacity(m.size() + 64);
        record::encode_publish(&mut buf, m.persist_id, 0, &[], m);
        let seg = self.segments.get_mut(&self.head).expect("opened above");
        crate::store::fault::write_all_at("quorum_pages::write", &seg.file, &buf, seg.len)?;
        let p = Paged {
            seg: self.head,
            off: seg.len,
            len: buf.len() as u32,
            size: m.size() as u32,
            expiration: m.expiration,
            persist_id: m.persist_id,
            unreadable: AtomicBool::new(false),
        };
        seg.len += buf.len() as u64;
        seg.live += 1;
        Ok(p)
    }

    /// Reads a body back.
    pub(crate) fn read(&self, p: &Paged) -> std::io::Result<Arc<Message>> {
        let seg = self
            .segments
            .get(&p.seg)
            .ok_or(std::io::ErrorKind::NotFound)?;
        let mut buf = vec![0u8; p.len as usize];
        seg.file.read_exact_at(&mut buf, p.off)?;
        match record::read(&Bytes::from(buf)) {
            Read::Ok(Record::Publish { mut msg, .. }, _) => {
                msg.persist_id = p.persist_id;
                Ok(Arc::new(msg))
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unreadable page record",
            )),
        }
    }

    /// The queue is done with a paged message: its segment goes once it holds none.
    pub(crate) fn release(&mut self, p: &Paged) {
        let Some(seg) = self.segments.get_mut(&p.seg) else {
            return;
        };
        seg.live = seg.live.saturating_sub(1);
        if seg.live == 0 {
            if p.seg == self.head {
                // The head starts over rather than being deleted.
                seg.len = 0;
                let _ = seg.file.set_len(0);
            } else {
                self.segments.remove(&p.seg);
                let _ = std::fs::remove_file(self.path(p.seg));
            }
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

    #[test]
    fn bodies_round_trip_and_segments_go_when_empty() {
        let dir = std::env::temp_dir().join(format!("warren-qpages-{}", std::process::id()));
        let mut s = PageStore::new(Paging::new(dir.clone(), 0));
        let a = s.write(&msg(b"first")).unwrap();
        let b = s.write(&msg(b"second")).unwrap();
        let back = s.read(&b).unwrap();
        assert_eq!(&back.body[..], b"second");
        assert_eq!(back.persist_id, 42);
        assert_eq!(&back.routing_key.as_str(), &"rk");
        s.release(&a);
        assert_eq!(&s.read(&b).unwrap().body[..], b"second");
        s.release(&b);
        // The head segment starts over; nothing else is left.
        assert_eq!(s.segments(), 1);
        let c = s.write(&msg(b"third")).unwrap();
        assert_eq!(c.off, 0);
        drop(s);
        assert!(std::fs::read_dir(&dir).map_or(true, |d| d.count() == 0));
    }
}
