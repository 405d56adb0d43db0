//! A queue group's snapshot on disk: `<data-dir>/cluster/qsnap/<group>.snap`, one file
//! per group, replaced whole (temporary file, fdatasync, rename, fsync of the
//! directory), so a crash leaves the old snapshot or the new one, never half of one.
//!
//! Layout (`WQSNAP02`, written front to back as the state is encoded, never seeking
//! back): `WQSNAP02` (8 bytes), meta length (u32 LE), the meta (postcard: openraft's
//! `SnapshotMeta`), the data (the replica's state, as the group sends it to a member
//! that installs it), then a trailer: the data's length (u64 LE) and the CRC-32 of meta
//! and data (u32 LE). Files of the first layout (`WQSNAP01`: magic, meta length, data
//! length, CRC, meta, data) are still read. A file that is short, too long, or fails
//! its CRC is refused with the reason, never half-read.

use crate::cluster::{Member, Nid};
use openraft::SnapshotMeta;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

const MAGIC_V1: &[u8; 8] = b"WQSNAP01";
const MAGIC: &[u8; 8] = b"WQSNAP02";
/// The first layout's header: magic, meta length, data length, CRC.
const HEADER_V1: usize = 8 + 4 + 8 + 4;
/// The layout's head (magic, meta length) and trailer (data length, CRC).
const HEAD: usize = 8 + 4;
const TRAILER: usize = 8 + 4;

/// A snapshot read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapFile {
    pub meta: SnapshotMeta<Nid, Member>,
    pub data: Vec<u8>,
}

/// Where group `gid`'s snapshot lives under the cluster directory.
pub fn path(dir: &Path, gid: u64) -> PathBuf {
    dir.join("qsnap").join(format!("{gid:016x}.snap"))
}

/// A writer that counts the bytes through it and their CRC-32.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot file to `out`: the head and meta, the data as `data` writes it
/// (streaming), the trailer. Returns the data's length.
pub fn write_to<W: Write>(
    out: W,
    meta: &SnapshotMeta<Nid, Member>,
    data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<u64> {
    let m = postcard::to_allocvec(meta).map_err(io::Error::other)?;
    let mut out = out;
    out.write_all(MAGIC)?;
    out.write_all(&(m.len() as u32).to_le_bytes())?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&m);
    out.write_all(&m)?;
    let mut s = Summed {
        inner: out,
        crc,
        len: 0,
    };
    data(&mut s)?;
    let Summed {
        mut inner,
        crc,
        len,
    } = s;
    inner.write_all(&len.to_le_bytes())?;
    inner.write_all(&crc.finalize().to_le_bytes())?;
    inner.flush()?;
    Ok(len)
}

/// The file's bytes (tests; [`save`] streams the same to the file).
pub fn encode(meta: &SnapshotMeta<Nid, Member>, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEAD + TRAILER + 64 + data.len());
    write_to(&mut out, meta, |w| w.write_all(data))?;
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads a snapshot file's bytes (either layout); the error says what is wrong with
/// them.
pub fn decode(mut bytes: Vec<u8>) -> Result<SnapFile, String> {
    let bad = || format!("not a queue snapshot ({} bytes, bad header)", bytes.len());
    if bytes.len() < 8 {
        return Err(bad());
    }
    let (start, mlen, dlen, crc) = if &bytes[..8] == MAGIC_V1 {
        if bytes.len() < HEADER_V1 {
            return Err(bad());
        }
        let dlen = u64_at(&bytes, 12);
        (
            HEADER_V1,
            u32_at(&bytes, 8) as usize,
            dlen,
            u32_at(&bytes, 20),
        )
    } else if &bytes[..8] == MAGIC {
        if bytes.len() < HEAD + TRAILER {
            return Err(bad());
        }
        let t = bytes.len() - TRAILER;
        (
            HEAD,
            u32_at(&bytes, 8) as usize,
            u64_at(&bytes, t),
            u32_at(&bytes, t + 8),
        )
    } else {
        return Err(bad());
    };
    let trailer = if start == HEAD { TRAILER } else { 0 };
    let want = (start as u64)
        .saturating_add(mlen as u64)
        .saturating_add(dlen)
        .saturating_add(trailer as u64);
    if want != bytes.len() as u64 {
        return Err(format!(
            "truncated or overlong queue snapshot: {} bytes, the header says {want}",
            bytes.len()
        ));
    }
    let end = bytes.len() - trailer;
    if crc32fast::hash(&bytes[start..end]) != crc {
        return Err("queue snapshot fails its CRC check".into());
    }
    let meta = postcard::from_bytes(&bytes[start..start + mlen])
        .map_err(|e| format!("unreadable queue snapshot meta: {e}"))?;
    bytes.truncate(end);
    let data = bytes.split_off(start + mlen);
    Ok(SnapFile { meta, data })
}

/// Writes group `gid`'s snapshot, replacing the last one atomically.
pub fn save(dir: &Path, gid: u64, meta: &SnapshotMeta<Nid, Member>, data: &[u8]) -> io::Result<()> {
    save_with(dir, gid, meta, |w| w.write_all(data)).map(|_| ())
}

/// [`save`] with the data written by `data` straight into the file (the state is
/// encoded as it is written, never whole in memory). Returns the data's length.
pub fn save_with(
    dir: &Path,
    gid: u64,
    meta: &SnapshotMeta<Nid, Member>,
    data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<u64> {
    let path = path(dir, gid);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let tmp = path.with_extension("snap.tmp");
    let f = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let len = write_to(&mut w, meta, data)?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    File::open(parent)?.sync_all()?;
    Ok(len)
}

/// Group `gid`'s snapshot: None when it has none; an error when the file cannot be read
/// or is damaged (with the path and the reason).
pub fn load(dir: &Path, gid: u64) -> Result<Option<SnapFile>, String> {
    let path = path(dir, gid);
    match std::fs::read(&path) {
        Ok(bytes) => decode(bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Removes what a save of group `gid`'s snapshot left when the node stopped before it
/// finished (a temporary file is not a snapshot). Only as the group's member starts:
/// [`load`] runs while the member saves a new snapshot too (openraft reads the current
/// one to send a follower), and removing the file being written then failed the save,
/// which stopped the member's Raft core (seen in the test suite: "No such file or
/// directory" writing a snapshot, the group without a leader from then on).
pub fn clear_unfinished(dir: &Path, gid: u64) {
    let _ = std::fs::remove_file(path(dir, gid).with_extension("snap.tmp"));
}

/// Forgets group `gid`'s snapshot (its member here stopped).
pub fn remove(dir: &Path, gid: u64) {
    let _ = std::fs::remove_file(path(dir, gid));
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    fn meta() -> SnapshotMeta<Nid, Member> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 42)),
            last_membership: StoredMembership::default(),
            snapshot_id: "42-1".into(),
        }
    }

    /// Written and read back whole; every truncation and a flipped byte are refused
    /// with a reason (no panic); a missing file is no snapshot.
    #[test]
    fn files_round_trip_and_damage_is_refused() {
        let data = vec![7u8; 1000];
        let bytes = encode(&meta(), &data).unwrap();
        let back = decode(bytes.clone()).unwrap();
        assert_eq!(back.meta, meta());
        assert_eq!(back.data, data);
        for cut in 0..bytes.len() {
            assert!(decode(bytes[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[HEAD + 3] ^= 0x40;
        assert!(decode(flipped).unwrap_err().contains("CRC"));
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(long).is_err());

        let dir = std::env::temp_dir().join(format!("warren-qsnap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir, 5).unwrap(), None);
        save(&dir, 5, &meta(), &data).unwrap();
        save(&dir, 5, &meta(), &data[..10]).unwrap();
        assert_eq!(load(&dir, 5).unwrap().unwrap().data, data[..10]);
        std::fs::write(path(&dir, 5), &bytes[..bytes.len() / 2]).unwrap();
        let err = load(&dir, 5).unwrap_err();
        assert!(err.contains("truncated") && err.contains(".snap"), "{err}");
        remove(&dir, 5);
        assert_eq!(load(&dir, 5).unwrap(), None);

        // A save under way (its temporary file) is left alone by a read; what a stopped
        // node left is cleared as the member starts.
        let tmp = path(&dir, 5).with_extension("snap.tmp");
        std::fs::write(&tmp, b"half").unwrap();
        assert_eq!(load(&dir, 5).unwrap(), None);
        assert!(tmp.exists(), "a read removed the file a save is writing");
        clear_unfinished(&dir, 5);
        assert!(!tmp.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The first layout, as earlier versions wrote it.
    fn encode_v1(meta: &SnapshotMeta<Nid, Member>, data: &[u8]) -> Vec<u8> {
        let m = postcard::to_allocvec(meta).unwrap();
        let mut h = crc32fast::Hasher::new();
        h.update(&m);
        h.update(data);
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC_V1);
        out.extend_from_slice(&(m.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(&h.finalize().to_le_bytes());
        out.extend_from_slice(&m);
        out.extend_from_slice(data);
        out
    }

    /// `WQSNAP01` files (written before the streaming layout) are still read, and
    /// refused when damaged; a file streamed by [`save_with`] in pieces reads back as
    /// the same data, and its damage (cut anywhere, a flipped byte in the data or the
    /// trailer) is refused.
    #[test]
    fn old_layout_is_read_and_streamed_files_round_trip() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let v1 = encode_v1(&meta(), &data);
        let back = decode(v1.clone()).unwrap();
        assert_eq!((back.meta, back.data), (meta(), data.clone()));
        for cut in 0..v1.len() {
            assert!(decode(v1[..cut].to_vec()).is_err(), "v1 cut at {cut}");
        }
        let mut flipped = v1.clone();
        flipped[HEADER_V1 + 40] ^= 1;
        assert!(decode(flipped).unwrap_err().contains("CRC"));

        let dir = std::env::temp_dir().join(format!("warren-qsnap2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("qsnap")).unwrap();
        std::fs::write(path(&dir, 9), &v1).unwrap();
        assert_eq!(load(&dir, 9).unwrap().unwrap().data, data);

        let n = save_with(&dir, 9, &meta(), |w| {
            for chunk in data.chunks(333) {
                w.write_all(chunk)?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(n, data.len() as u64);
        let bytes = std::fs::read(path(&dir, 9)).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(bytes, encode(&meta(), &data).unwrap());
        assert_eq!(load(&dir, 9).unwrap().unwrap().data, data);
        for cut in 0..bytes.len() {
            assert!(decode(bytes[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        for at in [bytes.len() - 1, bytes.len() - TRAILER, bytes.len() / 2] {
            let mut d = bytes.clone();
            d[at] ^= 0x10;
            assert!(decode(d).is_err(), "flipped byte {at}");
        }
        // A writer's failure is the save's error, and the last snapshot stays.
        let failed = save_with(&dir, 9, &meta(), |w| {
            w.write_all(b"part")?;
            Err(io::Error::other("encoding failed"))
        });
        assert!(failed.is_err());
        assert_eq!(load(&dir, 9).unwrap().unwrap().data, data);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
