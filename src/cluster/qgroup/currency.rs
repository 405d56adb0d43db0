//! Whether this member's replica is current enough to deliver: the gate in front of the
//! deliveries its applied entries gave this node's consumers.
//!
//! A member that was cut off (paused, partitioned) catches up by applying a run of
//! entries. Some check messages out to its consumers; a later entry, committed by the
//! majority while it was away, may declare its consumers down ([`QCmd::Down`]) and give
//! those messages to consumers elsewhere, redelivered. Delivering the first checkouts
//! would show a client an unflagged delivery after the flagged one, which RabbitMQ (its
//! leader sends the deliveries, and a cut-off node's are lost with the connection) never
//! does. So the replica holds what applied entries give this node's consumers, and sends
//! what is still theirs only once the member is current:
//!
//! - a follower: it has applied the commit index the leader sent it at least
//!   [`SETTLE`] ago, and that was at most [`FRESH`] ago. After a pause or a partition its
//!   samples are older than [`FRESH`] (the leader waits 1.5 s before it declares a node
//!   down), so it holds until the leader reaches it again and it has applied everything
//!   committed then, Down included; under load the sample [`SETTLE`] old is one it has
//!   applied already, so deliveries do not wait for the newest commit.
//! - the leader: the last entry it applied was stamped (by itself, when proposing) less
//!   than [`FRESH`] ago, or a quorum confirmed its leadership since ([`Currency::confirmed`]).
//!
//! [`QCmd::Down`]: crate::queue::quorum::wire::QCmd::Down

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long what the leader said stays news. Below the time a leader waits before it
/// declares a silent node's consumers down (`node::ALIVE_FOR`, 1.5 s).
pub const FRESH: Duration = Duration::from_millis(1000);
/// A follower must have applied the commit index it heard this long ago.
pub const SETTLE: Duration = Duration::from_millis(200);
/// An append that took longer than this from the leader to here is not a sample (it
/// waited in a paused member's socket: what it says was overtaken since).
pub const TRANSIT: Duration = Duration::from_millis(150);
/// Samples closer together than this are not kept (at most FRESH / GRAIN of them).
const GRAIN: Duration = Duration::from_millis(20);
/// Appends judged late for this long in a row, while this member runs, mean the clocks
/// moved against each other (a clock was stepped): the transit baseline is taken again.
pub const REBASE: Duration = Duration::from_secs(5);

/// What this member knows of how current its replica is.
#[derive(Debug, Default)]
pub struct Currency {
    /// Commit indexes the leader sent in appends this member accepted, oldest first.
    heard: VecDeque<(Instant, Option<u64>)>,
    /// The last log index applied here.
    applied: Option<u64>,
    /// The leader's clock (ms) on the last entry applied, or when a quorum last
    /// confirmed this member's leadership.
    last_at: Option<u64>,
    /// The smallest (received here − sent there) of the leader's appends, in ms on the
    /// two nodes' wall clocks: their offset plus the quickest transit.
    base: Option<i64>,
    /// Since when every append has been judged late (see [`REBASE`]).
    late_since: Option<Instant>,
}

impl Currency {
    /// An append the leader sent at `sent` (its clock, read on this node's) was
    /// accepted, carrying its commit index. One that waited (in the socket of a paused
    /// member) is older than what was heard since, or than [`FRESH`]: not kept.
    pub fn heard(&mut self, sent: Instant, commit: Option<u64>) {
        // Too close to the last sample (or older): that one stands for both (the next
        // append after GRAIN is kept).
        if self
            .heard
            .back()
            .is_some_and(|(t, _)| sent.saturating_duration_since(*t) < GRAIN)
        {
            return;
        }
        self.heard.push_back((sent, commit));
        self.prune(sent);
    }

    /// How long an append took from the leader to here, from `delta` = its receive time
    /// on this node's wall clock minus its send time on the leader's (ms): the excess of
    /// `delta` over the smallest seen, so the two clocks need not agree, only keep their
    /// offset. Appends read after a pause are late by the pause; if every append stays
    /// late for [`REBASE`] while this member runs, a clock was stepped and the baseline
    /// is taken again.
    pub fn transit(&mut self, delta: i64, now: Instant) -> Duration {
        let base = match self.base {
            Some(b) if delta >= b => b,
            _ => {
                self.base = Some(delta);
                delta
            }
        };
        let late = Duration::from_millis(delta.saturating_sub(base).unsigned_abs());
        if late <= TRANSIT {
            self.late_since = None;
            return late;
        }
        let since = *self.late_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= REBASE {
            self.base = Some(delta);
            self.late_since = None;
            return Duration::ZERO;
        }
        late
    }

    /// Entries up to `index` are applied; the last one was stamped `at` (ms).
    pub fn applied(&mut self, index: Option<u64>, at: Option<u64>) {
        self.applied = self.applied.max(index);
        self.last_at = self.last_at.max(at);
    }

    /// A quorum confirmed this member's leadership at `now_ms`.
    pub fn confirmed(&mut self, now_ms: u64) {
        self.last_at = self.last_at.max(Some(now_ms));
    }

    /// Whether deliveries may go now (see the module doc).
    pub fn current(&mut self, now: Instant, now_ms: u64, leader: bool) -> bool {
        if leader {
            return self
                .last_at
                .is_some_and(|at| now_ms.saturating_sub(at) < FRESH.as_millis() as u64);
        }
        self.prune(now);
        let settled = self
            .heard
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= SETTLE);
        match settled {
            Some((_, commit)) => self.applied >= *commit,
            None => false,
        }
    }

    fn prune(&mut self, now: Instant) {
        while self
            .heard
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > FRESH)
        {
            self.heard.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A follower that hears the leader steadily and keeps up is current; one that has
    /// not applied what was committed SETTLE ago is not.
    #[test]
    fn a_follower_is_current_once_it_applied_what_the_leader_committed_a_while_ago() {
        let t0 = Instant::now();
        let mut c = Currency::default();
        assert!(!c.current(t0, 0, false), "nothing heard yet");
        for i in 0..10u64 {
            c.heard(t0 + ms(100 * i), Some(10 * i));
        }
        // At 950 ms the sample SETTLE old is the one of 700 ms: commit 70.
        let now = t0 + ms(950);
        c.applied(Some(69), None);
        assert!(!c.current(now, 0, false));
        c.applied(Some(70), None);
        assert!(
            c.current(now, 0, false),
            "newer commits need not be applied yet"
        );
    }

    /// After a pause or partition everything heard is old: not current until the leader
    /// reaches it again, SETTLE passes, and what it then said is applied.
    #[test]
    fn a_follower_back_from_a_pause_waits_for_the_leaders_commit_after_it() {
        let t0 = Instant::now();
        let mut c = Currency::default();
        c.heard(t0, Some(5));
        c.applied(Some(5), None);
        assert!(c.current(t0 + SETTLE, 0, false));
        // Paused for 3 s: the old sample no longer counts.
        let back = t0 + ms(3000);
        assert!(!c.current(back, 0, false));
        // The leader's first append after it: commit 90 (a Down among them).
        c.heard(back, Some(90));
        c.applied(Some(40), None);
        assert!(!c.current(back + ms(50), 0, false), "too recent to count");
        assert!(!c.current(back + SETTLE, 0, false), "40 of 90 applied");
        c.applied(Some(90), None);
        assert!(c.current(back + SETTLE, 0, false));
    }

    /// Appends that waited in a paused member's socket are read after the pause: sent
    /// long ago, they do not count, however late they are read.
    #[test]
    fn appends_sent_before_a_pause_are_old_news() {
        let t0 = Instant::now();
        let mut c = Currency::default();
        c.heard(t0, Some(5));
        c.applied(Some(5), None);
        let back = t0 + ms(3000);
        // Read at `back`, sent at t0 + 100 ms with commit 6.
        c.heard(t0 + ms(100), Some(6));
        c.applied(Some(6), None);
        assert!(!c.current(back + SETTLE, 0, false));
        c.heard(back + ms(20), Some(90));
        assert!(!c.current(back + ms(20) + SETTLE, 0, false));
        c.applied(Some(90), None);
        assert!(c.current(back + ms(20) + SETTLE, 0, false));
    }

    /// A leader is current while the entries it applies are fresh, or a quorum
    /// confirmed it.
    #[test]
    fn a_leader_is_current_while_its_entries_are_fresh() {
        let now = Instant::now();
        let mut c = Currency::default();
        assert!(!c.current(now, 10_000, true));
        c.applied(Some(3), Some(9_500));
        assert!(c.current(now, 10_000, true));
        assert!(!c.current(now, 10_600, true), "applied after a pause");
        c.confirmed(10_600);
        assert!(c.current(now, 10_700, true));
    }

    /// The nodes' wall clocks need not agree: transit is judged against the smallest
    /// difference seen. A late append (read after a pause) is late; a clock stepped for
    /// good is taken as the new baseline after REBASE of late appends.
    #[test]
    fn transit_does_not_depend_on_the_clocks_agreeing() {
        let t0 = Instant::now();
        let mut c = Currency::default();
        // This node's clock is 7 s ahead of the leader's: deltas around 7 000 ms.
        assert_eq!(c.transit(7_003, t0), ms(0));
        assert_eq!(c.transit(7_001, t0), ms(0));
        assert_eq!(c.transit(7_050, t0), ms(49));
        // Read after a 3 s pause: late, and not taken as the new baseline.
        assert_eq!(c.transit(10_001, t0 + ms(10)), ms(3_000));
        assert_eq!(c.transit(7_002, t0 + ms(20)), ms(1));
        // The leader's clock is stepped back by 2 s: every append is 2 s late, until
        // REBASE has passed; then the new difference is the baseline.
        assert_eq!(c.transit(9_002, t0 + ms(100)), ms(2_001));
        assert_eq!(c.transit(9_002, t0 + ms(100) + REBASE / 2), ms(2_001));
        assert_eq!(c.transit(9_003, t0 + ms(100) + REBASE), ms(0));
        assert_eq!(c.transit(9_010, t0 + ms(200) + REBASE), ms(7));
    }

    /// Samples are thinned to one per GRAIN and dropped after FRESH.
    #[test]
    fn samples_stay_few() {
        let t0 = Instant::now();
        let mut c = Currency::default();
        for i in 0..10_000u64 {
            c.heard(t0 + Duration::from_micros(500 * i), Some(i));
        }
        assert!(c.heard.len() <= 2 + (FRESH.as_millis() / GRAIN.as_millis()) as usize);
        assert!(c.heard.len() > 10);
    }
}
