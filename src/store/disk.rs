//! The disk alarm: publishers are blocked (connection.blocked) while the data directory's
//! file system has less free space than `--disk-free-limit`, or while the message log
//! cannot write, instead of the disk filling up or confirms piling up unanswered.

use crate::alarm::{Alarms, Resource};
use crate::store::log::MessageLog;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// What the disk monitor watches: the data directory against `--disk-free-limit`, and the
/// message log (once open) for write failures.
#[derive(Debug)]
pub struct DiskWatch {
    pub data_dir: PathBuf,
    /// Bytes of free space below which the alarm is set.
    pub free_limit: u64,
    /// The message log's cell (empty until start-up has opened the log), held weakly so the
    /// monitor never keeps a dropped broker's log open.
    pub log: Weak<OnceLock<Arc<MessageLog>>>,
    pub interval: Duration,
}

/// Samples free space every `interval` and sets or clears the disk alarm; ends when the
/// alarms are dropped (with the broker that owns them).
pub async fn monitor(alarms: Weak<Alarms>, watch: DiskWatch) {
    let mut warned = false;
    let limit = watch.free_limit;
    loop {
        {
            let Some(a) = alarms.upgrade() else { return };
            let failing = watch
                .log
                .upgrade()
                .is_some_and(|c| c.get().is_some_and(|l| l.failing()));
            let low = match free_bytes(&watch.data_dir) {
                Ok(free) => {
                    if free < limit && !warned {
                        tracing::warn!(free, limit, dir = %watch.data_dir.display(), "disk free space below the limit: publishers are blocked");
                    }
                    free < limit
                }
                Err(e) => {
                    if !warned {
                        tracing::error!(error = %e, "cannot read free disk space");
                    }
                    false
                }
            };
            warned = low;
            if low || failing {
                a.set(Resource::Disk);
            } else {
                a.clear(Resource::Disk);
            }
        }
        tokio::time::sleep(watch.interval).await;
    }
}
