//! Zero-filled preallocation of append-only files (message log and stream segments).
//!
//! A write that extends a file makes its `fdatasync` commit the new file size (and the
//! block allocation) through the file system's journal as well as the data: two device
//! round trips instead of one. So these files are grown ahead of the writes, a step at a
//! time, by writing real zeros (not `fallocate`, whose unwritten extents need the same
//! metadata commit when first written) and syncing them; the writes after that overwrite
//! zeros inside the file and their `fdatasync` only flushes data.
//!
//! The price is a zero-filled tail after the last record. Readers stop there: a record
//! header is never all zeros (every record has a non-empty payload, so its length is not 0),
//! and recovery treats a zero header followed only by zeros as the end of the data, and a
//! zero header followed by anything else as damage, as before.

use std::fs::File;
use std::os::unix::fs::FileExt;

static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];

/// The size to grow a file to when data would end at `end`: `step` further (rounded to
/// 4 KiB), but not past `cap` (the segment size) unless the data itself goes past it.
pub fn grown(end: u64, step: u64, cap: u64) -> u64 {
    if end >= cap {
        return end;
    }
    ((end + step + 4095) & !4095).min(cap)
}

/// Writes `data` at `at` and fdatasyncs it. When the data would end past `alloc` (the file's
/// size), zeros up to [`grown`] follow it in the same sync, and the new size is returned;
/// otherwise `alloc`. The writes and the sync go through the failpoints `points` (write,
/// sync; see [`super::fault`]). On an error (`true` when the sync failed) the file's
/// contents from `at` on are unknown.
pub fn write_synced(
    file: &File,
    at: u64,
    data: &[u8],
    alloc: u64,
    step: u64,
    cap: u64,
    points: (&str, &str),
) -> Result<u64, (bool, std::io::Error)> {
    let end = at + data.len() as u64;
    super::fault::write_all_at(points.0, file, data, at).map_err(|e| (false, e))?;
    let mut size = alloc.max(end);
    if end > alloc {
        let target = grown(end, step, cap);
        let mut pos = end;
        while pos < target {
            let n = (target - pos).min(ZEROS.len() as u64);
            file.write_all_at(&ZEROS[..n as usize], pos)
                .map_err(|e| (false, e))?;
            pos += n;
        }
        size = target;
    }
    super::fault::sync_data(points.1, file, at).map_err(|e| (true, e))?;
    Ok(size)
}

/// True when everything `r` has left is zeros (a preallocated tail).
pub fn rest_is_zeros(r: &mut impl std::io::Read) -> bool {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                if buf[..n].iter().any(|b| *b != 0) {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_steps_up_to_the_cap() {
        assert_eq!(grown(100, 1 << 20, 32 << 20), (1 << 20) + 4096);
        assert_eq!(grown(1 << 20, 1 << 20, 32 << 20), 2 << 20);
        assert_eq!(grown((32 << 20) - 10, 1 << 20, 32 << 20), 32 << 20);
        assert_eq!(grown((32 << 20) + 10, 1 << 20, 32 << 20), (32 << 20) + 10);
    }

    #[test]
    fn writes_then_zero_fills_ahead() {
        let p = std::env::temp_dir().join(format!("warren-prealloc-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let size = write_synced(&f, 0, b"abc", 0, 8192, 1 << 20, ("t::w", "t::s")).unwrap();
        assert_eq!(size, 12288);
        assert_eq!(f.metadata().unwrap().len(), 12288);
        // Inside the allocation: the size stays.
        assert_eq!(
            write_synced(&f, 3, b"def", size, 8192, 1 << 20, ("t::w", "t::s")).unwrap(),
            size
        );
        let data = std::fs::read(&p).unwrap();
        assert_eq!(&data[..6], b"abcdef");
        assert!(rest_is_zeros(&mut &data[6..]));
        assert!(!rest_is_zeros(&mut &data[..]));
        let _ = std::fs::remove_file(&p);
    }
}
