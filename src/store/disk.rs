//! The disk alarm: publishers are blocked (connection.blocked) while the data directory's
//! file system has less free space than `--disk-free-limit`, or while the message log
//! cannot write, instead of the disk filling up or confirms piling up unanswered.

use crate::alarm::Resource;
use crate::broker::Broker;
use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Samples free space every `interval` and sets or clears the disk alarm; ends with the
/// broker.
pub async fn monitor(broker: Weak<Broker>, interval: Duration) {
    let mut warned = false;
    loop {
        {
            let Some(b) = broker.upgrade() else { return };
            let limit = b.config.disk_free_limit;
            let failing = b.message_log().is_some_and(|l| l.failing());
            let low = match free_bytes(&b.config.data_dir) {
                Ok(free) => {
                    if free < limit && !warned {
                        tracing::warn!(free, limit, dir = %b.config.data_dir.display(), "disk free space below the limit: publishers are blocked");
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
                b.alarms.set(Resource::Disk);
            } else {
                b.alarms.clear(Resource::Disk);
            }
        }
        tokio::time::sleep(interval).await;
    }
}
