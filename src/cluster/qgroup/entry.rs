//! A queue group's log entry as openraft holds it ([`LogCmd`]): the [`QEntry`] behind an
//! `Arc`. openraft clones an entry each time it reads it from the log (once per follower
//! it replicates to, once to apply it), and a [`QCmd::Batch`](crate::queue::quorum::wire::QCmd)
//! of a thousand publishes cloned deep cost an allocation or three per message each
//! time; shared, a clone is a reference count. It encodes exactly as the [`QEntry`] it
//! holds (logs and frames of earlier versions read the same).

use crate::queue::quorum::wire::QEntry;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct LogCmd(Arc<QEntry>);

impl LogCmd {
    pub fn new(e: QEntry) -> LogCmd {
        LogCmd(Arc::new(e))
    }
}

impl std::ops::Deref for LogCmd {
    type Target = QEntry;
    fn deref(&self) -> &QEntry {
        &self.0
    }
}

impl std::fmt::Display for LogCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for LogCmd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LogCmd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LogCmd, D::Error> {
        QEntry::deserialize(d).map(LogCmd::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::quorum::wire::{QCmd, WireMsg};

    /// Encodes as the bare entry, both ways; a clone shares the entry.
    #[test]
    fn a_log_command_encodes_as_its_entry_and_clones_shared() {
        let e = QEntry {
            at: 9,
            cmd: QCmd::Batch(vec![
                QCmd::Enqueue(WireMsg {
                    exchange: Default::default(),
                    routing_key: crate::protocol::codec::ShortStr::from_static("q"),
                    properties: Default::default(),
                    body: vec![5; 100].into(),
                    priority: 0,
                    expiration: None,
                    persistent: true,
                }),
                QCmd::Tick,
            ]),
        };
        let c = LogCmd::new(e.clone());
        let bytes = postcard::to_allocvec(&c).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&e).unwrap());
        let back: LogCmd = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(*back, e);
        let c2 = c.clone();
        assert!(Arc::ptr_eq(&c.0, &c2.0));
        assert_eq!(*c2, e);
        assert_eq!(*c, e);
        assert!(postcard::from_bytes::<LogCmd>(&bytes[..bytes.len() - 1]).is_err());
    }
}
