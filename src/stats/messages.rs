//! Per-connection message counters behind RabbitMQ's `rabbitmq_global_*` series that the
//! published Grafana dashboards read: routed / unroutable messages, confirms, basic.get on
//! an empty queue, channels opened, and the `rabbitmq_message_size_bytes` histogram.
//!
//! Each connection owns one [`MsgCounters`] (written by its own task only, read by the
//! metrics endpoint); when the connection closes its counts join the registry's retired
//! totals, so every series only ever grows.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of RabbitMQ's message size buckets (`rabbit_msg_size_metrics`), in bytes;
/// the last bucket is `+Inf`.
pub const SIZE_BUCKETS: [u64; 8] = [
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

/// The `le` label of each bucket as rabbitmq_prometheus prints it (the dashboards match
/// these strings exactly), then `+Inf`.
pub const SIZE_LABELS: [&str; 9] = [
    "100.0", "1000.0", "10000.0", "100000.0", "1e+06", "1e+07", "5e+07", "1e+08", "+Inf",
];

#[derive(Debug, Default)]
pub struct MsgCounters {
    /// Messages per size bucket (not cumulative; the last is above 100 MB).
    pub sizes: [AtomicU64; 9],
    pub size_sum: AtomicU64,
    pub routed: AtomicU64,
    pub unroutable_dropped: AtomicU64,
    pub unroutable_returned: AtomicU64,
    pub received_confirm: AtomicU64,
    pub confirmed: AtomicU64,
    pub get_empty: AtomicU64,
    pub channels_opened: AtomicU64,
}

/// A copy of the counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MsgSnap {
    pub sizes: [u64; 9],
    pub size_sum: u64,
    pub routed: u64,
    pub unroutable_dropped: u64,
    pub unroutable_returned: u64,
    pub received_confirm: u64,
    pub confirmed: u64,
    pub get_empty: u64,
    pub channels_opened: u64,
}

/// The bucket of a message of `size` bytes.
pub fn bucket(size: u64) -> usize {
    SIZE_BUCKETS.partition_point(|b| *b < size)
}

impl MsgCounters {
    /// Counts one received message of `size` bytes.
    #[inline]
    pub fn received(&self, size: u64) {
        self.sizes[bucket(size)].fetch_add(1, Relaxed);
        self.size_sum.fetch_add(size, Relaxed);
    }

    #[inline]
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn snap(&self) -> MsgSnap {
        MsgSnap {
            sizes: std::array::from_fn(|i| self.sizes[i].load(Relaxed)),
            size_sum: self.size_sum.load(Relaxed),
            routed: self.routed.load(Relaxed),
            unroutable_dropped: self.unroutable_dropped.load(Relaxed),
            unroutable_returned: self.unroutable_returned.load(Relaxed),
            received_confirm: self.received_confirm.load(Relaxed),
            confirmed: self.confirmed.load(Relaxed),
            get_empty: self.get_empty.load(Relaxed),
            channels_opened: self.channels_opened.load(Relaxed),
        }
    }

    /// Adds a closed connection's counts.
    pub fn add(&self, s: &MsgSnap) {
        for (c, v) in self.sizes.iter().zip(s.sizes) {
            c.fetch_add(v, Relaxed);
        }
        self.size_sum.fetch_add(s.size_sum, Relaxed);
        self.routed.fetch_add(s.routed, Relaxed);
        self.unroutable_dropped
            .fetch_add(s.unroutable_dropped, Relaxed);
        self.unroutable_returned
            .fetch_add(s.unroutable_returned, Relaxed);
        self.received_confirm.fetch_add(s.received_confirm, Relaxed);
        self.confirmed.fetch_add(s.confirmed, Relaxed);
        self.get_empty.fetch_add(s.get_empty, Relaxed);
        self.channels_opened.fetch_add(s.channels_opened, Relaxed);
    }
}

impl MsgSnap {
    pub fn plus(mut self, o: &MsgSnap) -> MsgSnap {
        for (a, b) in self.sizes.iter_mut().zip(o.sizes) {
            *a += b;
        }
        self.size_sum += o.size_sum;
        self.routed += o.routed;
        self.unroutable_dropped += o.unroutable_dropped;
        self.unroutable_returned += o.unroutable_returned;
        self.received_confirm += o.received_confirm;
        self.confirmed += o.confirmed;
        self.get_empty += o.get_empty;
        self.channels_opened += o.channels_opened;
        self
    }

    pub fn count(&self) -> u64 {
        self.sizes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_in_rabbitmqs_buckets_upper_bound_included() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(100), 0);
        assert_eq!(bucket(101), 1);
        assert_eq!(bucket(1_000_000), 4);
        assert_eq!(bucket(100_000_000), 7);
        assert_eq!(bucket(100_000_001), 8);
        let c = MsgCounters::default();
        c.received(50);
        c.received(5000);
        let s = c.snap();
        assert_eq!((s.count(), s.size_sum), (2, 5050));
        assert_eq!(s.sizes[0] + s.sizes[2], 2);
        let r = MsgCounters::default();
        r.add(&s);
        assert_eq!(r.snap().plus(&s).count(), 4);
    }
}
