//! State shared by producers, consumers and the reporter: counters only (atomics)
//! and one latency histogram per consumer behind an uncontended mutex (the reporter
//! takes it once a second).

use crate::hist::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct Shared {
    /// Time zero for the timestamps embedded in bodies.
    pub epoch: Instant,
    /// Set when producers must stop (time limit or Ctrl-C).
    pub stop: AtomicBool,
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub received: AtomicU64,
    /// Deliveries per queue (index as in `Args::queue_names`), for the drain check.
    pub per_queue: Vec<AtomicU64>,
    /// Latencies (ns) since the reporter last took them, one per consumer.
    pub latency: Vec<Mutex<Histogram>>,
    pub last_receive_ns: AtomicU64,
    /// Largest broker VmRSS (KiB) seen by the reporter, with --broker-pid.
    pub broker_rss_max_kb: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(queues: usize, consumers: usize) -> Self {
        Shared {
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            received: AtomicU64::new(0),
            per_queue: (0..queues).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..consumers)
                .map(|_| Mutex::new(Histogram::default()))
                .collect(),
            last_receive_ns: AtomicU64::new(0),
            broker_rss_max_kb: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    pub fn error(&self, who: &str, e: impl std::fmt::Display) {
        let msg = format!("{who}: {e}");
        eprintln!("error: {msg}");
        self.errors.lock().unwrap().push(msg);
    }

    /// Takes and clears every consumer's interval histogram, adding them into one.
    pub fn take_latency(&self) -> Histogram {
        let mut sum = Histogram::default();
        for h in &self.latency {
            let mut h = h.lock().unwrap();
            sum.add(&h);
            h.reset();
        }
        sum
    }
}
