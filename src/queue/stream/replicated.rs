//! A stream's files as a replica sees them: the records a leader ships (read raw, byte for
//! byte), written on a follower, the synced tail apart from the committed offset, and the
//! cut of records a new leader never had ([`replica`](super::replica) has the rules).

use super::replica::{Replica, Wait};
use super::{index, segment, Chunk, Stream};
use crate::message::Message;
use crate::store::log::MessageLog;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

/// File name of a stream's placement on this node (next to its segments).
const PLACEMENT_FILE: &str = "placement.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    placement: super::replica::Placement,
    written_epoch: u64,
}

impl Stream {
    /// The stream's replication state, in a cluster.
    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.repl.get()
    }

    /// Turns replication on (once): from now on the writer publishes the synced tail to the
    /// replica, and the committed offset is what the leader says a majority has. What the
    /// files hold is not known to be committed yet (after a restart): readers wait for the
    /// leader to say so.
    pub fn enable_replication(&self, me: String, p: super::replica::Placement) -> &Arc<Replica> {
        if let Some(r) = self.repl.get() {
            return r;
        }
        let _f = self.files.lock();
        let tail = *self.committed.borrow();
        let written = self.saved().map_or(p.epoch, |s| s.written_epoch);
        let r = self
            .repl
            .get_or_init(|| Arc::new(Replica::new(me, p.clone(), tail, written)));
        if r.is_leader() && r.placement().members.len() == 1 {
            return r;
        }
        self.committed.send_replace(self.first_offset_locked());
        r
    }

    fn first_offset_locked(&self) -> u64 {
        self.segs.lock().front().map_or(0, |s| s.base)
    }

    /// The placement saved by [`Stream::save_placement`], if any.
    fn saved(&self) -> Option<Saved> {
        let b = std::fs::read(self.dir.join(PLACEMENT_FILE)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// The placement this node last saved for the stream in `dir` (read at start).
    pub fn saved_placement(&self) -> Option<super::replica::Placement> {
        self.saved().map(|s| s.placement)
    }

    /// Saves the placement and the written epoch (atomic rewrite).
    pub fn save_placement(&self) {
        let Some(r) = self.replica() else { return };
        let s = Saved {
            placement: r.placement(),
            written_epoch: r.written_epoch(),
        };
        let Ok(json) = serde_json::to_vec(&s) else {
            return;
        };
        let tmp = self.dir.join("placement.json.tmp");
        let r = std::fs::write(&tmp, json)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, self.dir.join(PLACEMENT_FILE)));
        if let Err(e) = r {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot save a stream's placement");
        }
    }

    /// The end of what is written and synced here (committed or not).
    pub(super) fn written_end(&self) -> u64 {
        match self.repl.get() {
            Some(r) => r.tail(),
            None => *self.committed.borrow(),
        }
    }

    /// After a sync up to `end`: alone, that is the committed offset; replicated, it is
    /// this member's tail (and, on the leader, may commit more).
    pub(super) fn publish_end(&self, end: u64) {
        match self.repl.get() {
            None => {
                self.committed.send_replace(end);
            }
            Some(r) => {
                r.set_tail(end);
                if r.is_leader() {
                    self.set_committed(r.committed());
                }
            }
        }
    }

    /// Raises the committed offset (never past this node's tail, never back).
    pub fn set_committed(&self, c: u64) {
        let c = c.min(self.written_end());
        self.committed.send_if_modified(|cur| {
            if c > *cur {
                *cur = c;
                true
            } else {
                false
            }
        });
    }

    /// The offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.head.lock().next_offset
    }

    /// Appends a publish made on this node: written here when this node leads (the
    /// confirm waits for the log sync and for a majority), forwarded to the leader
    /// otherwise (the confirm waits for the leader's answer).
    pub fn append_replicated(
        self: &Arc<Self>,
        msg: &Message,
        log: Option<&Arc<MessageLog>>,
    ) -> (Option<u64>, Option<Wait>) {
        let Some(r) = self.repl.get() else {
            return (self.append(msg, log), None);
        };
        if !r.is_leader() {
            return (None, Some(r.forward(msg)));
        }
        let (lsn, offset) = {
            // The offset is the one `append` takes next; both under the head lock's order
            // (another publisher between them only makes the wait longer, never shorter).
            let lsn = self.append(msg, log);
            (lsn, self.next_offset().saturating_sub(1))
        };
        (lsn, Some(r.local_wait(self.subscribe(), offset)))
    }

    /// On a follower: writes records the leader shipped (already numbered and encoded)
    /// and syncs them; the tail moves on.
    pub fn write_replica(&self, chunk: &Chunk) -> std::io::Result<()> {
        self.write_chunk(chunk)?;
        if let Some(&(o, ts, _)) = chunk.records.last() {
            let mut h = self.head.lock();
            h.next_offset = h.next_offset.max(o + 1);
            h.last_ts = h.last_ts.max(ts);
        }
        Ok(())
    }

    /// Reads whole records from `from` on, up to this node's synced tail, about
    /// `max_bytes` of them, as they are in the files (what a follower writes).
    pub fn read_raw(&self, from: u64, max_bytes: usize) -> std::io::Result<Chunk> {
        let mut out = Chunk::default();
        let tail = self.written_end();
        let mut next = from;
        for _ in 0..64 {
            if next >= tail || out.bytes.len() >= max_bytes {
                break;
            }
            let Some((base, e, at)) = self.locate(next) else {
                break;
            };
            if at != next {
                // `from` is gone (retention): the follower cannot continue from there.
                return Err(std::io::Error::other("offset no longer stored"));
            }
            let Some((limit, next_seg)) = self.segment_limit(base) else {
                continue;
            };
            let mut f = std::fs::File::open(segment::path(&self.dir, base))?;
            f.seek(SeekFrom::Start(e.pos))?;
            let mut r = std::io::BufReader::with_capacity(256 * 1024, f);
            let mut pos = e.pos;
            while pos < limit && next < tail && out.bytes.len() < max_bytes {
                let mut h = [0u8; segment::HEADER];
                r.read_exact(&mut h)?;
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                if len == 0 || len > segment::MAX_RECORD || pos + 8 + len as u64 > limit {
                    return Err(std::io::Error::other("damaged record"));
                }
                let mut payload = vec![0u8; len as usize];
                r.read_exact(&mut payload)?;
                if payload.len() < 16 {
                    return Err(std::io::Error::other("damaged record"));
                }
                let offset = u64::from_be_bytes(payload[0..8].try_into().unwrap_or_default());
                let ts = u64::from_be_bytes(payload[8..16].try_into().unwrap_or_default());
                pos += 8 + len as u64;
                if offset < next {
                    continue;
                }
                if offset >= tail {
                    break;
                }
                out.bytes.extend_from_slice(&h);
                out.bytes.extend_from_slice(&payload);
                out.records.push((offset, ts, 8 + len as u64));
                next = offset + 1;
            }
            if pos >= limit {
                match next_seg {
                    Some(b) => next = next.max(b),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Cuts every record at or past `to` (a follower's records the new leader never had),
    /// never below the committed offset.
    pub fn truncate(&self, to: u64) -> std::io::Result<()> {
        let mut f = self.files.lock();
        let to = to.max(*self.committed.borrow());
        if to >= self.written_end() {
            return Ok(());
        }
        let mut segs = self.segs.lock();
        while segs.len() > 1 && segs.back().is_some_and(|s| s.base >= to && s.base > 0) {
            let Some(s) = segs.pop_back() else { break };
            let _ = std::fs::remove_file(segment::path(&self.dir, s.base));
            let _ = std::fs::remove_file(index::path(&self.dir, s.base));
        }
        let Some(seg) = segs.back_mut() else {
            return Ok(());
        };
        let path = segment::path(&self.dir, seg.base);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let from = index::for_offset(&seg.index, seg.base.max(to.saturating_sub(1)))
            .map_or(0, |e| e.pos)
            .min(seg.len);
        let scan = segment::scan(&mut file, from, seg.len, None)?;
        let cut = scan
            .records
            .iter()
            .find(|r| r.offset >= to)
            .map_or(scan.end, |r| r.pos);
        file.set_len(cut)?;
        file.sync_all()?;
        seg.len = cut;
        seg.end = to.max(seg.base);
        seg.index.retain(|e| e.offset < to);
        index::rewrite(&self.dir, seg.base, &seg.index)?;
        let base = seg.base;
        drop(segs);
        let ix = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(index::path(&self.dir, base))?;
        f.active = Some((base, file));
        f.index = Some(ix);
        f.active_len = cut;
        f.active_alloc = cut;
        f.discard = None;
        drop(f);
        {
            let mut h = self.head.lock();
            h.next_offset = to;
        }
        if let Some(r) = self.repl.get() {
            r.set_tail(to);
        }
        tracing::warn!(dir = %self.dir.display(), to, "stream records past the new leader's start cut");
        Ok(())
    }
}
