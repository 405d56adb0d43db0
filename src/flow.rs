//! Internal flow control: publishers slow down when the broker itself is the bottleneck, in
//! the spirit of RabbitMQ's credit flow (`credit_flow.erl`).
//!
//! In RabbitMQ a publishing connection's reader process holds credit with each queue
//! process it feeds; the queue grants more as it works through its mailbox. When a queue
//! process falls behind, its mailbox grows, credit stops coming and the reader stops
//! reading its socket: the connection shows `state: flow`. A queue that is simply long
//! (no consumers, or consumers that ack slowly) has an empty mailbox and never throttles
//! anyone: that backlog is the user's, and pages to disk.
//!
//! Warren has no queue process: a publisher appends under the queue's lock and the queue
//! hands messages to consumers' connection tasks. What corresponds to a queue process
//! being behind is the broker's runtime being saturated while a queue with consumers
//! takes messages faster than it turns them over to those consumers. So the pieces are:
//!
//! - [`Load`], owned by the [`monitor`] task: whether the runtime's worker threads are
//!   saturated (busy time over the last sampling interval at or above a threshold). Read
//!   on the publish path as one relaxed atomic; no lock.
//! - [`QueueFlow`], a pure state machine owned by each queue (under the queue's lock):
//!   while the broker is saturated and the queue has consumers, the queue grants its
//!   publishers `credit` ready messages; at that backlog it is overrun, and it releases
//!   them once it has handed half of it on to consumers (or the broker is no longer
//!   saturated, or it lost its consumers). A queue without consumers never holds anyone.
//!   Classic and quorum queues hold their publishers this way; streams never do (a
//!   stream's consumers read its files at their own pace).
//!
//! A held connection reads nothing, acks included: a client that publishes to a queue and
//! consumes it with manual acks on the same connection waits until saturation ends (the
//! broker goes quiet once that queue stalls, unless other traffic keeps it busy). As with
//! RabbitMQ, publishers and consumers belong on separate connections.
//! - [`Gate`], a pure state machine owned by each connection task: the queues it found
//!   overrun after a publish. While it waits on any, the connection does not read its
//!   socket and management shows `state: "flow"`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Flow-control settings and the broker-wide saturation flag.
#[derive(Debug)]
pub struct Load {
    /// Messages a queue may take beyond what it turned over while the broker is
    /// saturated; 0 turns flow control off.
    pub credit: u32,
    /// Busy fraction of the runtime's workers at which the broker counts as saturated
    /// (0 = always saturated, a test hook; above 1 = never).
    pub busy_threshold: f64,
    saturated: AtomicBool,
    /// Woken when saturation ends, so throttled publishers re-check at once.
    pub released: Notify,
    /// Times the monitor saw saturation begin (management, tests).
    pub episodes: AtomicU64,
}

impl Load {
    pub fn new(credit: u32, busy_threshold: f64) -> Arc<Load> {
        Arc::new(Load {
            credit,
            busy_threshold,
            saturated: AtomicBool::new(busy_threshold <= 0.0),
            released: Notify::new(),
            episodes: AtomicU64::new(0),
        })
    }

    /// Flow control is on (a credit is configured).
    pub fn enabled(&self) -> bool {
        self.credit > 0
    }

    /// The broker's workers are saturated: publishes to queues with consumers are charged.
    pub fn saturated(&self) -> bool {
        self.saturated.load(Relaxed)
    }

    /// Sets the flag from a busy fraction; true when it changed.
    fn observe(&self, busy: f64, judge: &mut Saturation) -> bool {
        let was = self.saturated();
        let now = judge.observe(busy, self.busy_threshold);
        if now != was {
            self.saturated.store(now, Relaxed);
            if now {
                self.episodes.fetch_add(1, Relaxed);
            } else {
                self.released.notify_waiters();
            }
        }
        now != was
    }
}

/// The saturation decision, from one busy fraction per sample. Pure.
///
/// On at `threshold`; off only after [`CALM_SAMPLES`] samples in a row below
/// `threshold - HYSTERESIS`. Under overload the busy fraction swings (the workers report
/// busy time in chunks, and other processes take the cores now and then); without the
/// hold, publishers would be let go at every dip and the backlog would grow between.
#[derive(Debug, Default, Clone)]
pub struct Saturation {
    on: bool,
    calm: u32,
}

impl Saturation {
    pub fn observe(&mut self, busy: f64, threshold: f64) -> bool {
        if threshold <= 0.0 {
            self.on = true;
        } else if busy >= threshold {
            self.on = true;
            self.calm = 0;
        } else if self.on && busy < threshold - HYSTERESIS {
            self.calm += 1;
            if self.calm >= CALM_SAMPLES {
                self.on = false;
                self.calm = 0;
            }
        }
        self.on
    }
}

/// Samples below the threshold (minus the hysteresis) that end saturation: one second.
pub const CALM_SAMPLES: u32 = 50;

const HYSTERESIS: f64 = 0.1;

/// How often the monitor samples the runtime's busy time.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// Samples the tokio runtime's worker busy time every [`SAMPLE_INTERVAL`] and sets
/// [`Load`]'s saturation flag. Ends with the broker (when the `Load` is dropped).
pub async fn monitor(load: Weak<Load>) {
    let Some(l) = load.upgrade() else { return };
    if !l.enabled() || l.busy_threshold <= 0.0 || l.busy_threshold > 1.0 {
        return; // fixed: off, or always saturated
    }
    drop(l);
    let metrics = tokio::runtime::Handle::current().metrics();
    let workers = metrics.num_workers().max(1);
    let busy_total = || {
        (0..workers)
            .map(|w| metrics.worker_total_busy_duration(w))
            .sum::<Duration>()
    };
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Busy time is reported by each worker in chunks (when it parks, and every few dozen
    // polls), so one interval alone is noisy: judge over the last WINDOW samples.
    let mut samples = std::collections::VecDeque::with_capacity(WINDOW + 1);
    let mut judge = Saturation::default();
    samples.push_back((tokio::time::Instant::now(), busy_total()));
    loop {
        ticker.tick().await;
        let Some(l) = load.upgrade() else { return };
        let now = (tokio::time::Instant::now(), busy_total());
        samples.push_back(now);
        if samples.len() > WINDOW + 1 {
            samples.pop_front();
        }
        let first = samples[0];
        let wall = now.0.duration_since(first.0).as_secs_f64() * workers as f64;
        if wall > 0.0 {
            let busy = now.1.saturating_sub(first.1).as_secs_f64() / wall;
            if l.observe(busy, &mut judge) {
                tracing::debug!(busy, saturated = l.saturated(), "runtime load");
            } else {
                tracing::trace!(busy, "runtime load");
            }
        }
    }
}

/// Samples the saturation decision looks back over ([`SAMPLE_INTERVAL`] each).
const WINDOW: usize = 5;

/// A queue's flow state: whether it holds its publishers. Pure; the queue keeps it under
/// its lock and calls [`check`](Self::check) after each enqueue and each hand-over.
///
/// The queue holds its publishers while the broker is saturated, it has consumers and
/// its ready backlog has reached `limit` (the credit it grants its publishers while it
/// cannot turn messages over as fast as they come); it lets them go once the backlog is
/// down to half of that, or the broker is no longer saturated, or it has no consumers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueFlow {
    overrun: bool,
}

/// What a change to a [`QueueFlow`] means for the queue's publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The queue just became overrun: publishers that feed it should wait.
    Overrun,
    /// The queue is no longer overrun: wake the publishers waiting on it.
    Released,
}

impl QueueFlow {
    /// `pressed`: the broker is saturated and the queue has consumers; `backlog`: its
    /// ready messages; `limit`: the credit (0 = off).
    pub fn check(&mut self, pressed: bool, backlog: usize, limit: u32) -> Change {
        let limit = limit as usize;
        if !pressed || limit == 0 {
            return self.release();
        }
        if !self.overrun && backlog >= limit {
            self.overrun = true;
            return Change::Overrun;
        }
        if self.overrun && backlog <= limit / 2 {
            return self.release();
        }
        Change::None
    }

    /// Nothing holds the publishers any more (no consumers, queue deleted).
    pub fn release(&mut self) -> Change {
        if std::mem::take(&mut self.overrun) {
            Change::Released
        } else {
            Change::None
        }
    }

    pub fn is_overrun(&self) -> bool {
        self.overrun
    }
}

/// A connection's view of flow control: the queues it is waiting on. Pure (the
/// connection task owns it and does the waiting).
#[derive(Debug)]
pub struct Gate<Q> {
    waiting: Vec<Q>,
    /// Times this connection entered flow (management, tests).
    pub episodes: u64,
}

impl<Q> Default for Gate<Q> {
    fn default() -> Self {
        Gate {
            waiting: Vec::new(),
            episodes: 0,
        }
    }
}

impl<Q> Gate<Q> {
    /// A publish found `q` overrun (`same` tells whether two handles are one queue).
    pub fn hold(&mut self, q: Q, same: impl Fn(&Q, &Q) -> bool) {
        if self.waiting.is_empty() {
            self.episodes += 1;
        }
        if !self.waiting.iter().any(|w| same(w, &q)) {
            self.waiting.push(q);
        }
    }

    /// Drops the queues `still` no longer holds; true when the connection may read again.
    pub fn release(&mut self, still: impl Fn(&Q) -> bool) -> bool {
        self.waiting.retain(|q| still(q));
        self.waiting.is_empty()
    }

    /// The connection is in flow: it must not read its socket.
    pub fn in_flow(&self) -> bool {
        !self.waiting.is_empty()
    }

    pub fn waiting(&self) -> &[Q] {
        &self.waiting
    }

    pub fn clear(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrun_at_the_limit_released_at_half() {
        let mut f = QueueFlow::default();
        assert_eq!(f.check(true, 9, 10), Change::None);
        assert_eq!(f.check(true, 10, 10), Change::Overrun);
        assert!(f.is_overrun());
        // Announced once; still held above half the limit.
        assert_eq!(f.check(true, 11, 10), Change::None);
        assert_eq!(f.check(true, 6, 10), Change::None);
        assert_eq!(f.check(true, 5, 10), Change::Released);
        assert!(!f.is_overrun());
        assert_eq!(f.check(true, 6, 10), Change::None);
    }

    #[test]
    fn not_saturated_or_no_consumers_releases() {
        let mut f = QueueFlow::default();
        assert_eq!(f.check(true, 10, 10), Change::Overrun);
        // The broker keeps up again (or the queue lost its consumers): let them go.
        assert_eq!(f.check(false, 1_000_000, 10), Change::Released);
        assert_eq!(f.check(false, 1_000_000, 10), Change::None);
        assert_eq!(f.check(true, 10, 10), Change::Overrun);
        assert_eq!(f.release(), Change::Released);
    }

    #[test]
    fn a_queue_without_consumers_never_holds() {
        // A backlog with no consumers (or slow ones while the broker is idle) is the
        // user's: however long, it never holds a publisher.
        let mut f = QueueFlow::default();
        for backlog in 0..100_000 {
            assert_eq!(f.check(false, backlog, 10), Change::None);
        }
        assert!(!f.is_overrun());
        // Credit 0 turns flow control off.
        assert_eq!(f.check(true, 100_000, 0), Change::None);
    }

    #[test]
    fn saturation_holds_through_dips() {
        let mut s = Saturation::default();
        assert!(!s.observe(0.85, 0.9));
        assert!(s.observe(0.9, 0.9));
        // Dips (even far below) do not end it before CALM_SAMPLES calm samples in a row.
        for _ in 0..CALM_SAMPLES - 1 {
            assert!(s.observe(0.1, 0.9));
        }
        assert!(s.observe(0.95, 0.9));
        for _ in 0..CALM_SAMPLES - 1 {
            assert!(s.observe(0.1, 0.9));
        }
        assert!(!s.observe(0.1, 0.9));
        // Between threshold - hysteresis and threshold: stays as it was.
        assert!(!s.observe(0.85, 0.9));
        // Threshold 0: always saturated (the test hook).
        assert!(Saturation::default().observe(0.0, 0.0));
    }

    #[test]
    fn load_counts_episodes_and_releases() {
        let l = Load::new(10, 0.9);
        let mut s = Saturation::default();
        assert!(!l.saturated());
        assert!(l.observe(0.95, &mut s));
        assert!(l.saturated());
        for _ in 0..CALM_SAMPLES - 1 {
            assert!(!l.observe(0.5, &mut s));
        }
        assert!(l.observe(0.5, &mut s));
        assert!(!l.saturated());
        assert_eq!(l.episodes.load(Relaxed), 1);
        assert!(Load::new(10, 0.0).saturated());
    }

    #[test]
    fn gate_waits_on_each_queue_once() {
        let mut g: Gate<u32> = Gate::default();
        assert!(!g.in_flow());
        g.hold(1, |a, b| a == b);
        g.hold(1, |a, b| a == b);
        g.hold(2, |a, b| a == b);
        assert_eq!(g.waiting(), &[1, 2]);
        assert_eq!(g.episodes, 1);
        assert!(!g.release(|q| *q == 2));
        assert!(g.in_flow());
        assert!(g.release(|_| false));
        assert!(!g.in_flow());
        g.hold(3, |a, b| a == b);
        assert_eq!(g.episodes, 2);
    }
}
