//! A queue group's snapshot on disk: `<data-dir>/cluster/qsnap/<group>.snap`, one file
//! per group, replaced whole (temporary file, fdatasync, rename, fsync of the
//! directory), so a crash leaves the old snapshot or the new one, never half of one.
//!
//! Layout: `WQSNAP01` (8 bytes), meta length (u32 LE), data length (u64 LE), CRC-32 of
//! meta and data (u32 LE), the meta (postcard: openraft's `SnapshotMeta`), the data (the
//! replica's state, as the group sends it to a member that installs it). A file that is
//! short, too long, or fails its CRC is refused with the reason, never half-read.

use crate::cluster::{Member, Nid};
use openraft::SnapshotMeta;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"WQSNAP01";
const HEADER: usize = 8 + 4 + 8 + 4;

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

fn header(meta: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    h.update(meta);
    h.update(data);
    let mut out = Vec::with_capacity(HEADER + meta.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(meta);
    out
}

/// The file's bytes (tests; [`save`] writes the same without joining them).
pub fn encode(meta: &SnapshotMeta<Nid, Member>, data: &[u8]) -> io::Result<Vec<u8>> {
    let m = postcard::to_allocvec(meta).map_err(io::Error::other)?;
    let mut out = header(&m, data);
    out.extend_from_slice(data);
    Ok(out)
}

/// Reads a snapshot file's bytes; the error says what is wrong with them.
pub fn decode(mut bytes: Vec<u8>) -> Result<SnapFile, String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(format!(
            "not a queue snapshot ({} bytes, bad header)",
            bytes.len()
        ));
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mlen = u32_at(8) as usize;
    let mut d = [0u8; 8];
    d.copy_from_slice(&bytes[12..20]);
    let dlen = u64::from_le_bytes(d);
    let crc = u32_at(20);
    let want = (HEADER as u64)
        .saturating_add(mlen as u64)
        .saturating_add(dlen);
    if want != bytes.len() as u64 {
        return Err(format!(
            "truncated or overlong queue snapshot: {} bytes, the header says {want}",
            bytes.len()
        ));
    }
    if crc32fast::hash(&bytes[HEADER..]) != crc {
        return Err("queue snapshot fails its CRC check".into());
    }
    let meta = postcard::from_bytes(&bytes[HEADER..HEADER + mlen])
        .map_err(|e| format!("unreadable queue snapshot meta: {e}"))?;
    let data = bytes.split_off(HEADER + mlen);
    Ok(SnapFile { meta, data })
}

/// Writes group `gid`'s snapshot, replacing the last one atomically.
pub fn save(dir: &Path, gid: u64, meta: &SnapshotMeta<Nid, Member>, data: &[u8]) -> io::Result<()> {
    let path = path(dir, gid);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let m = postcard::to_allocvec(meta).map_err(io::Error::other)?;
    let tmp = path.with_extension("snap.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&header(&m, data))?;
    f.write_all(data)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    File::open(parent)?.sync_all()
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
        flipped[HEADER + 3] ^= 0x40;
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
}
