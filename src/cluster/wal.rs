//! The node's Raft write-ahead log: one append-only file, `<data-dir>/cluster/wal`, shared
//! by every Raft group on the node (today only the metadata group, group 0; later each
//! quorum queue). Records are `[len u32][crc32 u32][group u64][payload]` (little-endian;
//! `len` counts group and payload); the payload is the group's own encoding.
//!
//! One writer thread owns the file. Callers hand it records with a completion; it takes
//! every record waiting, writes them with one `write` and makes them durable with one
//! `fdatasync`, then completes them all: group commit, so many groups (and many appends
//! of one group) share each sync. At open the file is read back once; a torn or corrupt
//! tail (length or CRC wrong) ends it and is cut off.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Largest record accepted at read-back (a corrupt length must not allocate gigabytes).
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 16;

type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

struct Job {
    bytes: Vec<u8>,
    done: Option<Done>,
}

/// The shared log file's writer. Dropping the last handle ends the writer thread.
#[derive(Debug)]
pub struct Wal {
    tx: parking_lot::Mutex<mpsc::Sender<Job>>,
    path: PathBuf,
}

/// What the file held at open, per group, in order.
pub type Recovered = HashMap<u64, Vec<Vec<u8>>>;

/// Encodes one record (header and payload).
pub fn encode(group: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    let len = (8 + payload.len()) as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&group.to_le_bytes());
    h.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes the records of `buf` in order; returns them and the length of the good prefix
/// (a torn or corrupt record ends the log).
pub fn decode(buf: &[u8]) -> (Vec<(u64, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= HEADER {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
        if !(8..=MAX_RECORD).contains(&len) || buf.len() - at - 8 < len {
            break;
        }
        let body = &buf[at + 8..at + 8 + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let mut g = [0u8; 8];
        g.copy_from_slice(&body[..8]);
        out.push((u64::from_le_bytes(g), &body[8..]));
        at += 8 + len;
    }
    (out, at)
}

impl Wal {
    /// Opens (or creates) `dir/wal`, reads back its records and starts the writer thread.
    pub fn open(dir: &Path) -> io::Result<(Wal, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("wal");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let (records, good) = decode(&buf);
        if good < buf.len() {
            tracing::warn!(
                path = %path.display(),
                offset = good,
                bytes = buf.len() - good,
                "cluster log: torn or corrupt tail cut off"
            );
            file.set_len(good as u64)?;
            file.sync_data()?;
        }
        let mut recovered: Recovered = HashMap::new();
        for (g, payload) in records {
            recovered.entry(g).or_default().push(payload.to_vec());
        }
        file.seek(SeekFrom::End(0))?;
        sync_dir(dir)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("warren-raft-wal".into())
            .spawn(move || writer(file, rx))?;
        Ok((
            Wal {
                tx: parking_lot::Mutex::new(tx),
                path,
            },
            recovered,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a record; `done` runs on the writer thread once it is durable (or failed).
    /// Records are written in the order they are submitted.
    pub fn submit(&self, group: u64, payload: &[u8], done: Option<Done>) {
        let job = Job {
            bytes: encode(group, payload),
            done,
        };
        if let Err(mpsc::SendError(job)) = self.tx.lock().send(job) {
            if let Some(d) = job.done {
                d(Err(io::Error::other("cluster log writer stopped")));
            }
        }
    }

    /// Queues a record and waits until it is durable.
    pub async fn write(&self, group: u64, payload: &[u8]) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            group,
            payload,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("cluster log writer stopped")))
    }
}

/// The writer thread: everything waiting goes out in one write and one fdatasync.
fn writer(mut file: File, rx: mpsc::Receiver<Job>) {
    let mut buf = Vec::new();
    let mut dones: Vec<Done> = Vec::new();
    while let Ok(first) = rx.recv() {
        buf.clear();
        let push = |j: Job, buf: &mut Vec<u8>, dones: &mut Vec<Done>| {
            buf.extend_from_slice(&j.bytes);
            if let Some(d) = j.done {
                dones.push(d);
            }
        };
        push(first, &mut buf, &mut dones);
        while let Ok(j) = rx.try_recv() {
            push(j, &mut buf, &mut dones);
        }
        let r = file.write_all(&buf).and_then(|_| file.sync_data());
        if let Err(e) = &r {
            tracing::error!(error = %e, "cluster log write failed");
        }
        for d in dones.drain(..) {
            d(match &r {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_ends_the_log() {
        let mut buf = encode(0, b"one");
        buf.extend(encode(7, b"two"));
        let full = buf.len();
        buf.extend(&encode(0, b"three")[..10]);
        let (recs, good) = decode(&buf);
        assert_eq!(good, full);
        assert_eq!(recs, vec![(0, &b"one"[..]), (7, &b"two"[..])]);
        // A flipped byte fails the CRC: the log ends before that record.
        let mut bad = encode(0, b"one");
        let first = bad.len();
        bad.extend(encode(0, b"two"));
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let (recs, good) = decode(&bad);
        assert_eq!((recs.len(), good), (1, first));
        // A huge length is not believed.
        let mut huge = vec![0xff, 0xff, 0xff, 0x7f];
        huge.extend([0u8; 20]);
        assert_eq!(decode(&huge).0.len(), 0);
    }

    #[tokio::test]
    async fn writes_are_durable_in_order_and_read_back_by_group() {
        let dir = std::env::temp_dir().join(format!("warren-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (wal, rec) = Wal::open(&dir).unwrap();
            assert!(rec.is_empty());
            wal.submit(0, b"a", None);
            wal.submit(1, b"x", None);
            wal.write(0, b"b").await.unwrap();
        }
        // Append garbage: the next open cuts it off.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("wal"))
            .unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let (_wal, rec) = Wal::open(&dir).unwrap();
        assert_eq!(rec[&0], vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(rec[&1], vec![b"x".to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
