//! A sparse offset/timestamp index per segment: `<base>.idx`, 24-byte entries
//! `offset u64 | timestamp ms u64 | position u64` (big-endian), one for the segment's first
//! record and then one whenever [`EVERY`] bytes were written since the last entry.
//!
//! The index is written after the records it points to are synced, and is not synced itself:
//! it is a hint. Loading stops at the first entry that is out of order or points past the
//! segment's end, and a reader checks the record it seeks to, falling back to the segment's
//! start when the index lies. A 10 GB stream has about 160,000 entries (under 4 MB).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bytes of records between index entries (a seek scans at most this much, plus a record).
pub const EVERY: u64 = 64 * 1024;
pub const ENTRY: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub ts: u64,
    pub pos: u64,
}

pub fn path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

pub fn encode(out: &mut Vec<u8>, e: &IndexEntry) {
    out.extend_from_slice(&e.offset.to_be_bytes());
    out.extend_from_slice(&e.ts.to_be_bytes());
    out.extend_from_slice(&e.pos.to_be_bytes());
}

/// Decodes entries, keeping the valid prefix: offsets from `base` and positions strictly
/// increasing, timestamps not decreasing, positions inside `seg_len`.
pub fn decode(data: &[u8], base: u64, seg_len: u64) -> Vec<IndexEntry> {
    let mut v: Vec<IndexEntry> = Vec::with_capacity(data.len() / ENTRY);
    for c in data.chunks_exact(ENTRY) {
        let n = |i: usize| u64::from_be_bytes(c[i..i + 8].try_into().unwrap_or_default());
        let e = IndexEntry {
            offset: n(0),
            ts: n(8),
            pos: n(16),
        };
        let ok = match v.last() {
            None => e.offset == base && e.pos == 0,
            Some(p) => e.offset > p.offset && e.pos > p.pos && e.ts >= p.ts,
        };
        if !ok || e.pos >= seg_len {
            break;
        }
        v.push(e);
    }
    v
}

/// Reads a segment's index (empty when missing or unreadable).
pub fn load(dir: &Path, base: u64, seg_len: u64) -> Vec<IndexEntry> {
    let mut data = Vec::new();
    match std::fs::File::open(path(dir, base)).and_then(|mut f| f.read_to_end(&mut data)) {
        Ok(_) => decode(&data, base, seg_len),
        Err(_) => Vec::new(),
    }
}

/// Replaces a segment's index with `entries`.
pub fn rewrite(dir: &Path, base: u64, entries: &[IndexEntry]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for e in entries {
        encode(&mut out, e);
    }
    std::fs::File::create(path(dir, base))?.write_all(&out)
}

/// The entry to start from to reach `offset`: the last one at or before it.
pub fn for_offset(entries: &[IndexEntry], offset: u64) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| e.offset <= offset);
    (i > 0).then(|| entries[i - 1])
}

/// The entry to start from to reach the first record stored at or after `ts`: the last one
/// older than `ts` (records between it and the next entry may be older or newer).
pub fn for_timestamp(entries: &[IndexEntry], ts: u64) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| e.ts < ts);
    entries.get(i.saturating_sub(1)).copied()
}

/// Index entries for records appended at the end of a segment, given where the last
/// entry points (`last`) and the records' (offset, timestamp, position).
pub fn entries_for(
    last: Option<&IndexEntry>,
    records: impl IntoIterator<Item = (u64, u64, u64)>,
) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    let mut last_pos = last.map(|e| e.pos);
    for (offset, ts, pos) in records {
        if last_pos.is_none_or(|p| pos >= p + EVERY) {
            out.push(IndexEntry { offset, ts, pos });
            last_pos = Some(pos);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<IndexEntry> {
        // Records of 1 KiB: an entry every 64 records.
        entries_for(
            None,
            (0..1000u64).map(|i| (100 + i, 5000 + i / 10, i * 1024)),
        )
    }

    #[test]
    fn sparse_and_seekable() {
        let v = sample();
        assert_eq!(v.len(), 16);
        assert_eq!(
            v[0],
            IndexEntry {
                offset: 100,
                ts: 5000,
                pos: 0
            }
        );
        assert_eq!(v[1].offset, 164);
        assert_eq!(for_offset(&v, 99), None);
        assert_eq!(for_offset(&v, 100).unwrap().offset, 100);
        assert_eq!(for_offset(&v, 200).unwrap().offset, 164);
        assert_eq!(for_offset(&v, 10_000).unwrap().offset, v[15].offset);
        // ts of entry k is 5000 + 6.4k (rounded down): for ts 5010 start before it.
        let e = for_timestamp(&v, 5010).unwrap();
        assert!(e.ts < 5010);
        assert_eq!(for_timestamp(&v, 0).unwrap().offset, 100);
        assert_eq!(for_timestamp(&v, u64::MAX).unwrap().offset, v[15].offset);
    }

    #[test]
    fn decode_keeps_the_valid_prefix() {
        let v = sample();
        let mut data = Vec::new();
        for e in &v {
            encode(&mut data, e);
        }
        assert_eq!(decode(&data, 100, u64::MAX), v);
        // A torn last entry, a wrong base, a segment shorter than the entries.
        assert_eq!(decode(&data[..data.len() - 5], 100, u64::MAX).len(), 15);
        assert!(decode(&data, 99, u64::MAX).is_empty());
        assert_eq!(decode(&data, 100, 64 * 1024 * 3).len(), 3);
        // Garbage in the middle stops the load there.
        let mut bad = data.clone();
        bad[ENTRY * 4..ENTRY * 5].fill(0);
        assert_eq!(decode(&bad, 100, u64::MAX).len(), 4);
        let more = entries_for(
            v.last(),
            [(1100, 9999, 15 * 65536 + 100), (1101, 9999, 17 * 65536)],
        );
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].offset, 1101);
    }
}
