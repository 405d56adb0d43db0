//! Retried writes applied once. A member's driver numbers the commands it submits to its
//! group ([`Numbers`]) and sends each as [`QCmd::Once`]; a write whose answer was lost
//! (the leader died or was cut off after appending it) is sent again with the same
//! number, and every replica applies it only once ([`Dedup`]), as `rabbit_fifo` does
//! with its enqueuers' sequence numbers. Without it a publish retried after a failover
//! could be enqueued twice and delivered twice, neither copy marked redelivered.
//!
//! Each command also carries how far its origin has *settled*: every command numbered up
//! to there was answered and will not be sent again, so replicas forget those numbers and
//! the table stays as small as the writes in flight.

use crate::queue::quorum::wire::QCmd;
use std::collections::{BTreeSet, HashMap};

/// The submitting side: the numbers of this member's commands not answered yet.
#[derive(Debug, Default)]
pub struct Numbers {
    last: u64,
    open: BTreeSet<u64>,
}

impl Numbers {
    /// Numbers after `start`. A member starts past every number an earlier run of its
    /// node could have used (from its clock: see [`Numbers::from_clock`]), so even an
    /// origin that happens to be named as an earlier run's (the incarnation is 16 random
    /// bits) cannot have its commands taken for that run's.
    pub fn after(start: u64) -> Numbers {
        Numbers {
            last: start,
            open: BTreeSet::new(),
        }
    }

    /// Numbers after the clock's milliseconds × 1024 (a run would have to number over
    /// a million commands a second for a group to catch up with the clock).
    pub fn from_clock() -> Numbers {
        Numbers::after(crate::store::log::now_ms() << 10)
    }

    /// A number for a new command, open until [`finish`](Self::finish).
    pub fn take(&mut self) -> u64 {
        self.last += 1;
        self.open.insert(self.last);
        self.last
    }

    /// The command was answered (committed or failed for good): never sent again.
    pub fn finish(&mut self, seq: u64) {
        self.open.remove(&seq);
    }

    /// Every command numbered up to this was answered.
    pub fn settled(&self) -> u64 {
        self.open.first().map_or(self.last, |f| f - 1)
    }
}

/// The replicated side: which numbered commands of each origin were applied. Part of the
/// replica's state (every member applies the same log, so decides the same).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dedup {
    origins: HashMap<u32, Seen>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Seen {
    /// Every number up to here is settled by the origin.
    settled: u64,
    /// Numbers above `settled` applied already.
    applied: BTreeSet<u64>,
}

impl Dedup {
    /// Whether command `seq` of `origin` is to be applied: false for a copy of one
    /// applied already, or one its origin had settled (answered) before this copy came.
    pub fn admit(&mut self, origin: u32, seq: u64, settled: u64) -> bool {
        let s = self.origins.entry(origin).or_default();
        let fresh = seq > s.settled && s.applied.insert(seq);
        if settled > s.settled {
            s.settled = settled;
            s.applied = s.applied.split_off(&(settled + 1));
        }
        fresh
    }

    /// The command to apply, if any: a numbered one unwrapped when it is new; others as
    /// they are.
    #[cfg(test)]
    pub fn unwrap(&mut self, cmd: QCmd) -> Option<QCmd> {
        self.unwrap_ref(&cmd).cloned()
    }

    /// [`unwrap`](Self::unwrap) of a command read in place (the log keeps it).
    pub fn unwrap_ref<'a>(&mut self, cmd: &'a QCmd) -> Option<&'a QCmd> {
        match cmd {
            QCmd::Once {
                origin,
                seq,
                settled,
                cmd,
            } => self.admit(*origin, *seq, *settled).then_some(&**cmd),
            cmd => Some(cmd),
        }
    }

    /// Numbers remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.origins.values().map(|s| s.applied.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command sent twice (its first answer lost) is applied once; other origins and
    /// later numbers are not affected.
    #[test]
    fn a_retried_command_is_applied_once() {
        let mut d = Dedup::default();
        assert!(d.admit(1, 1, 0));
        assert!(d.admit(1, 2, 0));
        assert!(!d.admit(1, 1, 0), "the retry of 1");
        assert!(d.admit(2, 1, 0), "another origin's 1");
        // Out of order: 4 before 3 (a retry overtaken by a newer batch), then 3.
        assert!(d.admit(1, 4, 0));
        assert!(d.admit(1, 3, 0));
        assert!(!d.admit(1, 4, 0));
    }

    /// Settled numbers are forgotten, and a late copy of one is not applied.
    #[test]
    fn settled_numbers_are_forgotten() {
        let mut d = Dedup::default();
        for seq in 1..=100 {
            assert!(d.admit(7, seq, seq.saturating_sub(10)));
        }
        assert_eq!(d.len(), 10);
        assert!(!d.admit(7, 5, 90), "settled long ago: a late copy");
        assert!(!d.admit(7, 95, 90), "applied, not settled yet");
        assert!(d.admit(7, 101, 100));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn unwrap_passes_plain_commands_and_drops_copies() {
        let mut d = Dedup::default();
        let once = |seq| QCmd::Once {
            origin: 3,
            seq,
            settled: 0,
            cmd: Box::new(QCmd::Purge),
        };
        assert_eq!(d.unwrap(QCmd::Tick), Some(QCmd::Tick));
        assert_eq!(d.unwrap(once(1)), Some(QCmd::Purge));
        assert_eq!(d.unwrap(once(1)), None);
        assert_eq!(d.unwrap_ref(&QCmd::Tick), Some(&QCmd::Tick));
        assert_eq!(d.unwrap_ref(&once(2)), Some(&QCmd::Purge));
        assert_eq!(d.unwrap_ref(&once(2)), None);
        assert_eq!(d.unwrap(once(2)), None);
    }

    /// The submitter's settled mark stays below every open number.
    /// A later run of a node (even one whose origin is drawn the same) numbers above
    /// everything an earlier one settled: its commands are not taken for copies.
    #[test]
    fn a_later_run_numbers_above_an_earlier_one() {
        let mut early = Numbers::after(5_000);
        let last = (0..1000).map(|_| early.take()).last().unwrap_or(0);
        let mut d = Dedup::default();
        assert!(d.admit(1, last, last));
        let mut late = Numbers::after(6_000);
        assert!(d.admit(1, late.take(), 0));
        let before = crate::store::log::now_ms() << 10;
        assert!(Numbers::from_clock().settled() >= before);
    }

    #[test]
    fn numbers_settle_below_the_oldest_open_one() {
        let mut n = Numbers::default();
        assert_eq!(n.settled(), 0);
        assert!(n.open.is_empty());
        let (a, b, c) = (n.take(), n.take(), n.take());
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(n.settled(), 0);
        n.finish(b);
        assert_eq!(n.settled(), 0);
        n.finish(a);
        assert_eq!(n.settled(), 2);
        n.finish(c);
        assert_eq!(n.settled(), 3);
        assert_eq!(n.take(), 4);
        assert_eq!(n.settled(), 3);
    }
}
