//! A stream's segment files: `<base offset, 20 digits>.seg`, append-only records.
//!
//! Every record is `len: u32 BE | crc32: u32 BE | payload[len]` (the framing of the message
//! log, [`crate::store::record`]), the checksum covering the payload:
//!
//! `offset u64 | timestamp ms u64 | filter value (u16 len) | exchange (u8 len) |
//! routing key (u8 len) | properties (u32 len) | body (u32 len)`
//!
//! Offsets within a segment are consecutive, starting at the segment's base; timestamps
//! never decrease. The properties are stored with the `x-stream-offset` header already in
//! them, so a delivery sends them unchanged.

use bytes::{Buf, BufMut, Bytes};
use std::io::Read;
use std::path::{Path, PathBuf};

pub const HEADER: usize = 8;
/// Larger lengths are corruption (the broker refuses messages above 512 MiB).
pub const MAX_RECORD: u32 = 1 << 30;

/// The path of the segment starting at `base`.
pub fn path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The base offset a segment file name says, if it is one.
pub fn base_of(name: &str) -> Option<u64> {
    let n = name.strip_suffix(".seg")?;
    (n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// A stored message as read back.
#[derive(Debug, Clone)]
pub struct Entry {
    pub offset: u64,
    pub ts: u64,
    pub filter: Option<String>,
    pub exchange: Bytes,
    pub routing_key: Bytes,
    pub properties: Bytes,
    pub body: Bytes,
}

/// Appends one record; `patch` writes a big-endian i64 into the properties at a position.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    out: &mut Vec<u8>,
    offset: u64,
    ts: u64,
    filter: Option<&str>,
    exchange: &[u8],
    routing_key: &[u8],
    properties: &[u8],
    patch: Option<(usize, i64)>,
    body: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.put_u64(offset);
    out.put_u64(ts);
    let f = filter.unwrap_or("").as_bytes();
    let f = &f[..f.len().min(u16::MAX as usize)];
    out.put_u16(f.len() as u16);
    out.extend_from_slice(f);
    out.put_u8(exchange.len() as u8);
    out.extend_from_slice(&exchange[..exchange.len().min(255)]);
    out.put_u8(routing_key.len() as u8);
    out.extend_from_slice(&routing_key[..routing_key.len().min(255)]);
    out.put_u32(properties.len() as u32);
    let at = out.len();
    out.extend_from_slice(properties);
    // The x-stream-offset header's value, whose place `prepare` found.
    if let Some((p, v)) = patch.filter(|(p, _)| p + 8 <= properties.len()) {
        out[at + p..at + p + 8].copy_from_slice(&v.to_be_bytes());
    }
    out.put_u32(body.len() as u32);
    out.extend_from_slice(body);
    let payload = &out[start + HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

fn take(p: &mut Bytes, n: usize) -> Option<Bytes> {
    (p.remaining() >= n).then(|| p.split_to(n))
}

/// Decodes a record's payload (checksum already verified).
pub fn decode(mut p: Bytes) -> Option<Entry> {
    if p.remaining() < 18 {
        return None;
    }
    let offset = p.get_u64();
    let ts = p.get_u64();
    let n = p.get_u16() as usize;
    let f = take(&mut p, n)?;
    let filter = if f.is_empty() {
        None
    } else {
        Some(String::from_utf8(f.to_vec()).ok()?)
    };
    let n = *p.first()? as usize;
    p.advance(1);
    let exchange = take(&mut p, n)?;
    let n = *p.first()? as usize;
    p.advance(1);
    let routing_key = take(&mut p, n)?;
    if p.remaining() < 4 {
        return None;
    }
    let n = p.get_u32() as usize;
    let properties = take(&mut p, n)?;
    if p.remaining() < 4 {
        return None;
    }
    let n = p.get_u32() as usize;
    let body = take(&mut p, n)?;
    p.is_empty().then_some(Entry {
        offset,
        ts,
        filter,
        exchange,
        routing_key,
        properties,
        body,
    })
}

/// What reading one record found.
#[derive(Debug)]
pub enum Next {
    /// A record and its size on disk.
    Ok(Entry, u64),
    /// Nothing more (a clean end, or a zero-filled tail).
    End,
    /// A torn or corrupt record.
    Bad(&'static str),
}

/// Reads the next record from `r`, which has exactly `limit` bytes left to give.
pub fn read_next(r: &mut impl Read, limit: u64) -> Next {
    if limit == 0 {
        return Next::End;
    }
    if limit < HEADER as u64 {
        return Next::Bad("torn record header");
    }
    let mut h = [0u8; HEADER];
    if r.read_exact(&mut h).is_err() {
        return Next::Bad("short read");
    }
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if len == 0 && crc == 0 {
        // The preallocated tail of the active segment ([`crate::store::prealloc`]): the end
        // when only zeros follow, damage otherwise.
        let mut rest = r.take(limit - HEADER as u64);
        return if crate::store::prealloc::rest_is_zeros(&mut rest) {
            Next::End
        } else {
            Next::Bad("zeroed record header")
        };
    }
    if len > MAX_RECORD || len as u64 > limit - HEADER as u64 {
        return Next::Bad("torn record (length beyond the end of the segment)");
    }
    let mut payload = vec![0u8; len as usize];
    if r.read_exact(&mut payload).is_err() {
        return Next::Bad("short read");
    }
    if crc32fast::hash(&payload) != crc {
        return Next::Bad("checksum mismatch");
    }
    match decode(Bytes::from(payload)) {
        Some(e) => Next::Ok(e, HEADER as u64 + len as u64),
        None => Next::Bad("malformed record"),
    }
}

/// A record's position, for the index and recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub offset: u64,
    pub ts: u64,
    pub pos: u64,
    pub len: u64,
}

/// What a scan of a segment from some position found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every valid record, in order.
    pub records: Vec<Located>,
    /// Where the valid records end.
    pub end: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<&'static str>,
}

/// Reads `file` from `pos` to its end (`file_len`), checking every record, that offsets
/// are consecutive from `expect` (when given) and timestamps never decrease.
pub fn scan(
    file: &mut std::fs::File,
    pos: u64,
    file_len: u64,
    mut expect: Option<u64>,
) -> std::io::Result<Scan> {
    use std::io::{BufReader, Seek, SeekFrom};
    file.seek(SeekFrom::Start(pos))?;
    let mut r = BufReader::with_capacity(1 << 18, file);
    let mut s = Scan {
        end: pos,
        ..Default::default()
    };
    let mut last_ts = 0;
    loop {
        match read_next(&mut r, file_len - s.end) {
            Next::Ok(e, len) => {
                if expect.is_some_and(|x| x != e.offset) || e.ts < last_ts {
                    s.damage = Some("record out of sequence");
                    break;
                }
                last_ts = e.ts;
                expect = Some(e.offset + 1);
                s.records.push(Located {
                    offset: e.offset,
                    ts: e.ts,
                    pos: s.end,
                    len,
                });
                s.end += len;
            }
            Next::End => break,
            Next::Bad(why) => {
                s.damage = Some(why);
                break;
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names() {
        let mut out = Vec::new();
        encode(
            &mut out,
            7,
            1000,
            Some("eu"),
            b"x",
            b"rk",
            b"\x00\x00",
            None,
            b"body",
        );
        encode(&mut out, 8, 1001, None, b"", b"q", b"", None, b"");
        let mut r = &out[..];
        let n = out.len() as u64;
        let Next::Ok(a, la) = read_next(&mut r, n) else {
            panic!()
        };
        assert_eq!((a.offset, a.ts, a.filter.as_deref()), (7, 1000, Some("eu")));
        assert_eq!(&a.body[..], b"body");
        assert_eq!(&a.routing_key[..], b"rk");
        let Next::Ok(b, lb) = read_next(&mut r, n - la) else {
            panic!()
        };
        assert_eq!((b.offset, b.filter, &b.exchange[..]), (8, None, &b""[..]));
        assert!(matches!(read_next(&mut r, n - la - lb), Next::End));
        assert_eq!(base_of("00000000000000000042.seg"), Some(42));
        assert_eq!(base_of("42.seg"), None);
        assert_eq!(base_of("00000000000000000042.idx"), None);
        assert!(path(Path::new("/d"), 42).ends_with("00000000000000000042.seg"));
    }

    #[test]
    fn bad_input_is_reported_not_panicked() {
        let mut out = Vec::new();
        encode(&mut out, 0, 1, None, b"", b"q", b"", None, b"hello");
        let n = out.len();
        // Every truncation is Bad or End, never a panic.
        for cut in 0..n {
            let mut r = &out[..cut];
            assert!(!matches!(read_next(&mut r, cut as u64), Next::Ok(..)));
        }
        let mut flipped = out.clone();
        flipped[n - 1] ^= 1;
        let mut r = &flipped[..];
        assert!(matches!(
            read_next(&mut r, n as u64),
            Next::Bad("checksum mismatch")
        ));
        let mut huge = out.clone();
        huge[0] = 0xff;
        let mut r = &huge[..];
        assert!(matches!(read_next(&mut r, n as u64), Next::Bad(_)));
    }
}
