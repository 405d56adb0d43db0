//! Injected disk faults, for tests only: with the cargo feature `failpoints` every write and
//! sync of the stores goes through a named failpoint of the [`fail`] crate; without it
//! (release builds) these functions are the plain calls and carry no failpoint code.
//!
//! A failpoint's action `return(KIND)` injects, instead of the call:
//! - `eio` (also the default): the write or sync fails with EIO and writes nothing;
//! - `enospc`: the write fails with ENOSPC (a full disk) and writes nothing;
//! - `short`: half of the bytes are written, then ENOSPC (a short write: a torn record);
//! - on a sync point, any kind fails the sync with EIO *and* zeroes the bytes written since
//!   the last good sync (what the kernel may do after a failed `fdatasync`: the dirty pages
//!   are dropped and marked clean, and a second `fdatasync` reports success — PostgreSQL's
//!   "fsyncgate"). A store that re-synced the same file and trusted it would lose them.
//!
//! Points: `msglog::write`, `msglog::sync`, `stream::write`, `stream::sync`,
//! `definitions::write`, `definitions::sync`, `pager::write`, `quorum_pages::write`.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// The kind injected at `point`, if its failpoint is on.
#[cfg(feature = "failpoints")]
fn injected(point: &str) -> Option<String> {
    fail::eval(point, |arg| arg.unwrap_or_default())
}

#[cfg(feature = "failpoints")]
fn error(kind: &str) -> io::Error {
    match kind {
        "enospc" | "short" => io::Error::from_raw_os_error(28),
        _ => io::Error::from_raw_os_error(5),
    }
}

/// `f.write_all(buf)`, or the fault injected at `point`.
pub fn write_all(point: &str, f: &mut impl Write, buf: &[u8]) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    if let Some(kind) = injected(point) {
        if kind == "short" {
            f.write_all(&buf[..buf.len() / 2])?;
        }
        return Err(error(&kind));
    }
    let _ = point;
    f.write_all(buf)
}

/// `f.write_all_at(buf, off)`, or the fault injected at `point`.
pub fn write_all_at(point: &str, f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    if let Some(kind) = injected(point) {
        if kind == "short" {
            f.write_all_at(&buf[..buf.len() / 2], off)?;
        }
        return Err(error(&kind));
    }
    let _ = point;
    f.write_all_at(buf, off)
}

/// `f.sync_data()`, or a failed sync injected at `point` that also loses the bytes of the
/// file past `synced_len` (the length at the last good sync).
pub fn sync_data(point: &str, f: &File, synced_len: u64) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    if injected(point).is_some() {
        let len = f.metadata()?.len();
        if len > synced_len {
            f.set_len(synced_len)?;
            f.set_len(len)?;
        }
        return Err(io::Error::from_raw_os_error(5));
    }
    let _ = (point, synced_len);
    f.sync_data()
}

/// `f.sync_all()` (a whole-file sync), or a failed one injected at `point`.
pub fn sync_all(point: &str, f: &File) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    if injected(point).is_some() {
        return Err(io::Error::from_raw_os_error(5));
    }
    let _ = point;
    f.sync_all()
}
