//! Paging: the tail of a long queue lives in a page file instead of memory.
//!
//! A queue keeps its head in memory up to a byte budget; messages published beyond it are
//! appended to the queue's page file (buffered, never synced: durability is the message
//! log's job) and only a small [`PagedEntry`] stays in memory. When the in-memory head runs
//! dry, a contiguous run of entries is read back with one read. The file is truncated
//! whenever the paged tail empties. This applies to transient and persistent messages
//! alike, so a backlog of millions of messages costs tens of bytes each in RAM.

use super::QueuedMessage;
use crate::store::record::{self, Read, Record};
use bytes::Bytes;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Broker-wide paging settings.
#[derive(Debug)]
pub struct Paging {
    pub dir: PathBuf,
    /// Bytes of message bodies a queue keeps in memory before paging.
    pub budget: usize,
    next_file: AtomicU64,
}

impl Paging {
    /// Page files do not survive restarts: the directory is emptied here.
    pub fn new(dir: PathBuf, budget: usize) -> Arc<Paging> {
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(Paging {
            dir,
            budget,
            next_file: AtomicU64::new(1),
        })
    }

    /// A number for a new page file, unique in this run.
    pub(crate) fn next_name(&self) -> u64 {
        self.next_file.fetch_add(1, Ordering::Relaxed)
    }
}

/// A message whose bytes are in the page file.
#[derive(Debug, Clone)]
struct PagedEntry {
    seq: u64,
    off: u64,
    len: u32,
    size: u32,
    redelivered: bool,
    expires_at: Option<Instant>,
    persist_id: u64,
    delivery_count: u32,
}

/// What a message in memory costs besides its body (queue entry, `Message`, property
/// bytes, allocator slack), for the budget.
pub(crate) const ENTRY_OVERHEAD: usize = 160;

/// Read back at most this much at a time (bounded latency under the queue lock).
const REFILL_MAX: usize = 4 << 20;
/// Buffered page-file writes are flushed at this size.
const WRITE_CHUNK: usize = 256 << 10;

#[derive(Debug)]
pub(crate) struct Pager {
    cfg: Arc<Paging>,
    path: PathBuf,
    file: Option<File>,
    /// Logical end of the file (including `wbuf`).
    end: u64,
    /// Bytes written to the file; the rest is in `wbuf`.
    flushed: u64,
    wbuf: Vec<u8>,
    entries: VecDeque<PagedEntry>,
    bytes: usize,
    broken: bool,
}

impl Pager {
    pub(crate) fn new(cfg: Arc<Paging>) -> Pager {
        let n = cfg.next_file.fetch_add(1, Ordering::Relaxed);
        Pager {
            path: cfg.dir.join(format!("{n}.page")),
            cfg,
            file: None,
            end: 0,
            flushed: 0,
            wbuf: Vec::new(),
            entries: VecDeque::new(),
            bytes: 0,
            broken: false,
        }
    }

    pub(crate) fn budget(&self) -> usize {
        self.cfg.budget
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Body bytes of the paged messages.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn front_expiry(&self) -> Option<Instant> {
        self.entries.front().and_then(|e| e.expires_at)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            std::fs::create_dir_all(&self.cfg.dir)?;
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&self.path)?,
            );
        }
        let f = self.file.as_mut().expect("opened above");
        crate::store::fault::write_all_at("pager::write", f, &self.wbuf, self.flushed)?;
        self.flushed += self.wbuf.len() as u64;
        self.wbuf.clear();
        Ok(())
    }

    /// Appends a message to the page file. After a write error its bytes stay in the write
    /// buffer (in memory, behind the messages already paged, so the order holds; said
    /// once) until a later flush works.
    pub(crate) fn page_out(&mut self, m: QueuedMessage) -> Result<(), QueuedMessage> {
        let at = self.wbuf.len();
        record::encode_publish(&mut self.wbuf, m.msg.persist_id, 0, &[], &m.msg);
        let len = (self.wbuf.len() - at) as u32;
        self.entries.push_back(PagedEntry {
            seq: m.seq,
            off: self.end,
            len,
            size: m.msg.size() as u32,
            redelivered: m.redelivered,
            expires_at: m.expires_at,
            persist_id: m.msg.persist_id,
            delivery_count: m.delivery_count,
        });
        self.end += len as u64;
        self.bytes += m.msg.size();
        if self.wbuf.len() >= WRITE_CHUNK {
            match self.flush() {
                Ok(()) if self.broken => {
                    tracing::warn!(file = %self.path.display(), "paging works again");
                    self.broken = false;
                }
                Ok(()) => {}
                Err(e) => self.fail(&e),
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: &std::io::Error) {
        if !self.broken {
            tracing::error!(file = %self.path.display(), error = %e, "paging failed: messages stay in memory");
        }
        self.broken = true;
    }

    /// Reads back the oldest paged messages (up to about `want` body bytes, at least one).
    pub(crate) fn page_in(&mut self, want: usize, out: &mut impl FnMut(QueuedMessage)) {
        let want = want.clamp(1, REFILL_MAX);
        let Some(first) = self.entries.front() else {
            return;
        };
        let start = first.off;
        let mut n = 0;
        let mut body = 0usize;
        let mut stop = start;
        for e in &self.entries {
            if n > 0 && (body >= want || (e.off + e.len as u64 - start) as usize > REFILL_MAX) {
                break;
            }
            n += 1;
            body += e.size as usize + ENTRY_OVERHEAD;
            stop = e.off + e.len as u64;
        }
        // What was flushed is read from the file, the rest comes from the write buffer
        // (which keeps the bytes a failed write could not store).
        let mut buf = vec![0u8; (stop - start) as usize];
        let on_disk = stop.min(self.flushed);
        if on_disk > start {
            let read = match &self.file {
                Some(f) => f.read_exact_at(&mut buf[..(on_disk - start) as usize], start),
                None => Err(std::io::ErrorKind::NotFound.into()),
            };
            if let Err(e) = read {
                self.fail(&e);
                return;
            }
        }
        if stop > self.flushed {
            let from = start.max(self.flushed);
            buf[(from - start) as usize..].copy_from_slice(
                &self.wbuf[(from - self.flushed) as usize..(stop - self.flushed) as usize],
            );
        }
        let buf = Bytes::from(buf);
        for _ in 0..n {
            let e = self.entries.pop_front().expect("counted above");
            self.bytes -= e.size as usize;
            let at = (e.off - start) as usize;
            match record::read(&buf.slice(at..at + e.len as usize)) {
                Read::Ok(Record::Publish { msg, .. }, _) => out(QueuedMessage {
                    seq: e.seq,
                    msg: Arc::new(msg),
                    redelivered: e.redelivered,
                    expires_at: e.expires_at,
                    delivery_count: e.delivery_count,
                    holder: 0,
                }),
                _ => {
                    tracing::error!(file = %self.path.display(), offset = e.off, "unreadable page record: message lost")
                }
            }
        }
        if self.entries.is_empty() {
            self.reset();
        }
    }

    /// Forgets every paged message; returns their message-log ids.
    pub(crate) fn clear(&mut self) -> (usize, Vec<u64>) {
        let n = self.entries.len();
        let ids = self
            .entries
            .drain(..)
            .map(|e| e.persist_id)
            .filter(|id| *id != 0)
            .collect();
        self.bytes = 0;
        self.reset();
        (n, ids)
    }

    /// The paged tail is empty: the file can start over (and paging is tried again after
    /// a write error).
    fn reset(&mut self) {
        self.broken = false;
        self.wbuf.clear();
        self.end = 0;
        self.flushed = 0;
        if let Some(f) = &self.file {
            let _ = f.set_len(0);
        }
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
