//! The delay store's files: `<data-dir>/delayed/NNNNNNNN.seg`, append-only segments of
//! records framed as the message log's are (`len: u32 BE | crc32: u32 BE | payload`).
//!
//! Two kinds of record: a *put* (a delayed message: its sequence number, due time, delay,
//! vhost, exchange, routing key, raw properties and body) and a *del* (sequence numbers
//! that were routed or dropped). The owner assigns each record its place (segment and
//! offset) when it is appended; the message log's writer thread writes the records there
//! with `pwrite` and syncs them in its group commit ([`SideLog`]), so a publisher confirm
//! waiting for the batch means the delayed message is on disk. Recovery scans every
//! segment: the puts without a del are pending; a torn or corrupt record ends its
//! segment, and new records always go to a fresh segment after a start.

use crate::store::log::SideLog;
use bytes::{Buf, BufMut, Bytes};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

const HEADER: usize = 8;
const KIND_PUT: u8 = 1;
const KIND_DEL: u8 = 2;
/// Largest record accepted when reading (a message is at most 128 MiB plus its names).
const MAX_RECORD: u32 = 256 << 20;

/// A delayed message as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub seq: u64,
    pub due: u64,
    pub delay: u64,
    pub vhost: String,
    pub exchange: String,
    pub routing_key: String,
    pub properties: Bytes,
    pub body: Bytes,
}

pub fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

fn frame(payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![0u8; HEADER];
    payload(&mut out);
    let len = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out
}

pub fn encode_put(p: &Put) -> Vec<u8> {
    frame(|out| {
        out.put_u8(KIND_PUT);
        out.put_u64(p.seq);
        out.put_u64(p.due);
        out.put_u64(p.delay);
        for s in [&p.vhost, &p.exchange, &p.routing_key] {
            out.put_u16(s.len() as u16);
            out.extend_from_slice(s.as_bytes());
        }
        out.put_u32(p.properties.len() as u32);
        out.extend_from_slice(&p.properties);
        out.put_u32(p.body.len() as u32);
        out.extend_from_slice(&p.body);
    })
}

pub fn encode_del(seqs: &[u64]) -> Vec<u8> {
    frame(|out| {
        out.put_u8(KIND_DEL);
        out.put_u32(seqs.len() as u32);
        for s in seqs {
            out.put_u64(*s);
        }
    })
}

/// A record's payload, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Rec {
    Put(Put),
    Del(Vec<u64>),
}

fn take_str(p: &mut Bytes) -> Option<String> {
    if p.remaining() < 2 {
        return None;
    }
    let n = p.get_u16() as usize;
    if p.remaining() < n {
        return None;
    }
    String::from_utf8(p.split_to(n).to_vec()).ok()
}

fn take_bytes(p: &mut Bytes) -> Option<Bytes> {
    if p.remaining() < 4 {
        return None;
    }
    let n = p.get_u32() as usize;
    (p.remaining() >= n).then(|| p.split_to(n))
}

/// Decodes a payload (after the frame header); `None` if malformed.
pub fn decode(mut p: Bytes) -> Option<Rec> {
    if p.remaining() < 1 {
        return None;
    }
    match p.get_u8() {
        KIND_PUT => {
            if p.remaining() < 24 {
                return None;
            }
            let (seq, due, delay) = (p.get_u64(), p.get_u64(), p.get_u64());
            Some(Rec::Put(Put {
                seq,
                due,
                delay,
                vhost: take_str(&mut p)?,
                exchange: take_str(&mut p)?,
                routing_key: take_str(&mut p)?,
                properties: take_bytes(&mut p)?,
                body: take_bytes(&mut p)?,
            }))
        }
        KIND_DEL => {
            if p.remaining() < 4 {
                return None;
            }
            let n = p.get_u32() as usize;
            if p.remaining() < n.checked_mul(8)? {
                return None;
            }
            Some(Rec::Del((0..n).map(|_| p.get_u64()).collect()))
        }
        _ => None,
    }
}

/// Checks the frame at the start of `data`: the payload and the frame's total size.
/// `None` at a clean end (no data, or a zero header), `Some(Err)` when torn or corrupt.
fn frame_at(data: &Bytes) -> Option<Result<(Bytes, usize), &'static str>> {
    if data.is_empty() {
        return None;
    }
    if data.len() < HEADER {
        return Some(Err("torn record header"));
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let crc = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    if len == 0 && crc == 0 {
        return None;
    }
    if len > MAX_RECORD || len as usize > data.len() - HEADER {
        return Some(Err("torn record"));
    }
    let payload = data.slice(HEADER..HEADER + len as usize);
    if crc32fast::hash(&payload) != crc {
        return Some(Err("checksum mismatch"));
    }
    Some(Ok((payload, HEADER + len as usize)))
}

/// A pending put found at start: the record's header fields and place (not its body).
#[derive(Debug)]
pub struct Found {
    pub seq: u64,
    pub due: u64,
    /// Index into [`Scan::exchanges`].
    pub exchange: u32,
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// What recovery found in the files.
#[derive(Debug, Default)]
pub struct Scan {
    /// Puts that no del removed.
    pub pending: Vec<Found>,
    /// (vhost, exchange) of the puts, each once.
    pub exchanges: Vec<(String, String)>,
    /// Every segment present, with the segments its dels name puts in (for reclaiming).
    pub segments: Vec<(u32, HashSet<u32>)>,
    pub max_seq: u64,
    /// (segment, offset, why) for each segment cut short by damage.
    pub damage: Vec<(u32, u64, &'static str)>,
}

/// Reads every segment under `dir` (created when missing).
pub fn scan(dir: &Path) -> std::io::Result<Scan> {
    std::fs::create_dir_all(dir)?;
    let mut numbers: Vec<u32> = std::fs::read_dir(dir)?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    let mut puts: HashMap<u64, Found> = HashMap::new();
    let mut s = Scan::default();
    let mut ids: HashMap<(String, String), u32> = HashMap::new();
    for n in numbers {
        let data = Bytes::from(std::fs::read(segment_path(dir, n))?);
        let mut at = 0usize;
        let mut refs = HashSet::new();
        while let Some(f) = frame_at(&data.slice(at..)) {
            let (payload, size) = match f {
                Ok(x) => x,
                Err(why) => {
                    s.damage.push((n, at as u64, why));
                    break;
                }
            };
            match decode(payload) {
                Some(Rec::Put(p)) => {
                    s.max_seq = s.max_seq.max(p.seq);
                    let next = ids.len() as u32;
                    let exchange = *ids.entry((p.vhost, p.exchange)).or_insert(next);
                    puts.insert(
                        p.seq,
                        Found {
                            seq: p.seq,
                            due: p.due,
                            exchange,
                            segment: n,
                            offset: at as u32,
                            len: size as u32,
                        },
                    );
                }
                Some(Rec::Del(seqs)) => {
                    for q in seqs {
                        if let Some(f) = puts.remove(&q) {
                            if f.segment != n {
                                refs.insert(f.segment);
                            }
                        }
                    }
                }
                None => {
                    s.damage.push((n, at as u64, "malformed record"));
                    break;
                }
            }
            at += size;
        }
        s.segments.push((n, refs));
    }
    s.pending = puts.into_values().collect();
    s.exchanges = vec![Default::default(); ids.len()];
    for (names, id) in ids {
        s.exchanges[id as usize] = names;
    }
    Ok(s)
}

/// The segment files, written by the message log's writer thread and read by the timer.
#[derive(Debug)]
pub struct Files {
    dir: PathBuf,
    /// The segment being written and its handle (writer thread only; a lock for Sync).
    head: Mutex<Option<(u32, File)>>,
    /// Read handles by segment (the timer task; dropped when a segment is deleted).
    readers: Mutex<HashMap<u32, Arc<File>>>,
    /// The highest segment a record has been written to: lower ones are complete.
    written: AtomicU32,
}

impl Files {
    pub fn new(dir: PathBuf, first_head: u32) -> Files {
        Files {
            dir,
            head: Mutex::new(None),
            readers: Mutex::new(HashMap::new()),
            written: AtomicU32::new(first_head),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Segments below this one receive no more writes.
    pub fn written_segment(&self) -> u32 {
        self.written.load(Ordering::Acquire)
    }

    /// Reads and decodes the put at `loc` (segment, offset, framed length).
    pub fn read_put(&self, segment: u32, offset: u32, len: u32) -> std::io::Result<Put> {
        let file = {
            let mut r = self.readers.lock();
            match r.get(&segment) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(File::open(segment_path(&self.dir, segment))?);
                    r.insert(segment, f.clone());
                    f
                }
            }
        };
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset as u64)?;
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
        let (payload, _) = frame_at(&Bytes::from(buf))
            .ok_or_else(|| bad("no record"))?
            .map_err(bad)?;
        match decode(payload) {
            Some(Rec::Put(p)) => Ok(p),
            _ => Err(bad("not a delayed message")),
        }
    }

    /// Deletes a segment whose records are all dead.
    pub fn delete(&self, segment: u32) -> std::io::Result<()> {
        self.readers.lock().remove(&segment);
        std::fs::remove_file(segment_path(&self.dir, segment))
    }

    pub fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

/// Splits a record place into (segment, offset).
pub fn unplace(at: u64) -> (u32, u32) {
    ((at >> 32) as u32, at as u32)
}

pub fn place(segment: u32, offset: u32) -> u64 {
    ((segment as u64) << 32) | offset as u64
}

/// Joins records that follow each other in one segment into one write: (segment,
/// offset, bytes) runs, in order.
fn runs(records: &[(u64, Vec<u8>)]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut out: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    for (at, bytes) in records {
        let (seg, off) = unplace(*at);
        match out.last_mut() {
            Some((s, o, buf)) if *s == seg && *o as usize + buf.len() == off as usize => {
                buf.extend_from_slice(bytes)
            }
            _ => out.push((seg, off, bytes.clone())),
        }
    }
    out
}

impl SideLog for Files {
    fn write_synced(&self, records: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        let mut head = self.head.lock();
        let mut dirty: Option<u32> = None;
        for (seg, off, bytes) in runs(records) {
            if head.as_ref().is_none_or(|(n, _)| *n != seg) {
                if let (Some(_), Some((_, f))) = (dirty.take(), head.as_ref()) {
                    f.sync_data()?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(segment_path(&self.dir, seg))?;
                self.sync_dir()?;
                *head = Some((seg, f));
            }
            let (_, f) = head.as_ref().expect("opened above");
            f.write_all_at(&bytes, off as u64)?;
            dirty = Some(seg);
            self.written.fetch_max(seg, Ordering::AcqRel);
        }
        if let (Some(_), Some((_, f))) = (dirty, head.as_ref()) {
            f.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "warren-delayed-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn put(seq: u64, seg: u32) -> Put {
        Put {
            seq,
            due: 1000 + seq,
            delay: 10,
            vhost: "/".into(),
            exchange: format!("x{seg}"),
            routing_key: "rk".into(),
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(format!("body {seq}")),
        }
    }

    #[test]
    fn adjacent_records_are_written_together() {
        let r = runs(&[
            (place(0, 0), vec![1, 2]),
            (place(0, 2), vec![3]),
            (place(0, 9), vec![4]),
            (place(1, 0), vec![5]),
        ]);
        assert_eq!(
            r,
            vec![(0, 0, vec![1, 2, 3]), (0, 9, vec![4]), (1, 0, vec![5])]
        );
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let p = put(7, 0);
        let f = encode_put(&p);
        let (payload, size) = frame_at(&Bytes::from(f.clone())).unwrap().unwrap();
        assert_eq!(size, f.len());
        assert_eq!(decode(payload), Some(Rec::Put(p)));
        let d = encode_del(&[1, 2, 3]);
        let (payload, _) = frame_at(&Bytes::from(d)).unwrap().unwrap();
        assert_eq!(decode(payload), Some(Rec::Del(vec![1, 2, 3])));
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(frame_at(&Bytes::from(bad)).unwrap().is_err());
        assert!(frame_at(&Bytes::from(f[..5].to_vec())).unwrap().is_err());
        assert!(decode(Bytes::from_static(&[KIND_DEL, 0, 0, 0, 9])).is_none());
        assert!(decode(Bytes::from_static(&[9])).is_none());
    }

    #[test]
    fn written_records_are_read_back_and_dels_hide_puts_on_scan() {
        let d = TempDir::new("scan");
        let files = Files::new(d.0.clone(), 0);
        let mut recs = Vec::new();
        let mut off = 0u32;
        let mut locs = Vec::new();
        for seq in 1..=3 {
            let b = encode_put(&put(seq, 0));
            locs.push((off, b.len() as u32));
            recs.push((place(0, off), b.clone()));
            off += b.len() as u32;
        }
        files.write_synced(&recs).unwrap();
        // Segment 1: a put and a del of seq 2 (in segment 0).
        let b = encode_put(&put(4, 1));
        let del = encode_del(&[2]);
        let n = b.len() as u32;
        files
            .write_synced(&[(place(1, 0), b), (place(1, n), del)])
            .unwrap();
        assert_eq!(files.written_segment(), 1);
        let got = files.read_put(0, locs[1].0, locs[1].1).unwrap();
        assert_eq!(got.body, Bytes::from("body 2"));
        let s = scan(&d.0).unwrap();
        let mut seqs: Vec<u64> = s.pending.iter().map(|f| f.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, vec![1, 3, 4]);
        assert_eq!(s.max_seq, 4);
        assert!(s.damage.is_empty());
        assert_eq!(s.segments[1], (1, HashSet::from([0])));
        // A torn tail ends the segment and is reported; what came before stays.
        let path = segment_path(&d.0, 1);
        let mut data = std::fs::read(&path).unwrap();
        data.truncate(data.len() - 3);
        std::fs::write(&path, data).unwrap();
        let s = scan(&d.0).unwrap();
        assert_eq!(
            s.pending.len(),
            4,
            "the del was torn: seq 2 is pending again"
        );
        assert_eq!(s.damage.len(), 1);
    }
}
