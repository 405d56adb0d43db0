//! Counters and the registry the management API reads.
//!
//! The hot path only bumps relaxed atomics that already sit next to state it touches: a
//! queue's [`Counters`] (under that queue's lock anyway) and a connection's [`ConnShared`]
//! (written by its own task only). Nothing here allocates per message. Rates are computed
//! by the [`sampler`] task, which snapshots every counter once per [`SAMPLE_INTERVAL`] and
//! keeps a short history; the management API reads snapshots, never the hot structures'
//! locks for long.

pub mod messages;

use crate::queue::consumer::ChannelShared;
use crate::queue::Queue;
use dashmap::DashMap;
use messages::{MsgCounters, MsgSnap};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the sampler snapshots counters.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Rates are averaged over this window (RabbitMQ's default sample interval is 5 s).
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Overview samples kept for charts (seconds at one sample per second).
const HISTORY: usize = 600;

/// Message counters of one queue or connection, in RabbitMQ's `message_stats` names.
#[derive(Debug, Default)]
pub struct Counters {
    pub publish: AtomicU64,
    pub deliver: AtomicU64,
    pub deliver_no_ack: AtomicU64,
    pub get: AtomicU64,
    pub get_no_ack: AtomicU64,
    pub ack: AtomicU64,
    pub redeliver: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snap {
    pub publish: u64,
    pub deliver: u64,
    pub deliver_no_ack: u64,
    pub get: u64,
    pub get_no_ack: u64,
    pub ack: u64,
    pub redeliver: u64,
}

/// `message_stats` field names, in the order they are reported.
pub const FIELDS: [&str; 7] = [
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "ack",
    "redeliver",
];

impl Counters {
    #[inline]
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn snap(&self) -> Snap {
        Snap {
            publish: self.publish.load(Relaxed),
            deliver: self.deliver.load(Relaxed),
            deliver_no_ack: self.deliver_no_ack.load(Relaxed),
            get: self.get.load(Relaxed),
            get_no_ack: self.get_no_ack.load(Relaxed),
            ack: self.ack.load(Relaxed),
            redeliver: self.redeliver.load(Relaxed),
        }
    }

    pub fn add(&self, s: &Snap) {
        for (c, v) in [
            (&self.publish, s.publish),
            (&self.deliver, s.deliver),
            (&self.deliver_no_ack, s.deliver_no_ack),
            (&self.get, s.get),
            (&self.get_no_ack, s.get_no_ack),
            (&self.ack, s.ack),
            (&self.redeliver, s.redeliver),
        ] {
            c.fetch_add(v, Relaxed);
        }
    }
}

impl Snap {
    pub fn values(&self) -> [u64; 7] {
        [
            self.publish,
            self.deliver,
            self.deliver_no_ack,
            self.get,
            self.get_no_ack,
            self.ack,
            self.redeliver,
        ]
    }

    pub fn plus(mut self, o: &Snap) -> Snap {
        self.publish += o.publish;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.ack += o.ack;
        self.redeliver += o.redeliver;
        self
    }

    /// deliver + deliver_no_ack + get + get_no_ack (RabbitMQ's `deliver_get`).
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

/// What management knows about one open connection. Created by the connection task after
/// the handshake; the task updates the byte counters and watches `close`.
#[derive(Debug)]
pub struct ConnShared {
    pub id: u64,
    /// RabbitMQ's connection name: "peer -> local".
    pub name: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub user: String,
    pub vhost: String,
    /// Milliseconds since the Unix epoch.
    pub connected_at: u64,
    pub client_properties: serde_json::Value,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    pub counters: Counters,
    /// Routed / unroutable / confirmed messages, sizes (see [`messages`]).
    pub msgs: MsgCounters,
    pub recv_oct: AtomicU64,
    pub send_oct: AtomicU64,
    pub recv_cnt: AtomicU64,
    pub send_cnt: AtomicU64,
    /// Open channels (weak: the connection task owns them). Short lock, on open and on read.
    pub channels: Mutex<Vec<Weak<ChannelShared>>>,
    /// Served over TLS (amqps).
    pub tls: bool,
    /// Held by internal flow control (management `state: flow`); see [`crate::flow`].
    pub flow: AtomicBool,
    /// Times the connection entered flow.
    pub flow_episodes: AtomicU64,
}

impl ConnShared {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr) -> ConnShared {
        ConnShared {
            id,
            name: format!("{peer} -> {local}"),
            peer,
            local,
            user: String::new(),
            vhost: String::new(),
            connected_at: now_ms(),
            client_properties: serde_json::json!({}),
            frame_max: 0,
            channel_max: 0,
            heartbeat: 0,
            counters: Counters::default(),
            msgs: MsgCounters::default(),
            recv_oct: AtomicU64::new(0),
            send_oct: AtomicU64::new(0),
            recv_cnt: AtomicU64::new(0),
            send_cnt: AtomicU64::new(0),
            channels: Mutex::new(Vec::new()),
            tls: false,
            flow: AtomicBool::new(false),
            flow_episodes: AtomicU64::new(0),
        }
    }

    /// Internal flow control holds (or no longer holds) the connection.
    pub fn set_flow(&self, on: bool) {
        if self.flow.swap(on, Relaxed) != on && on {
            self.flow_episodes.fetch_add(1, Relaxed);
        }
    }

    /// RabbitMQ's connection `state`: `flow` while internal flow control holds it.
    pub fn state(&self) -> &'static str {
        if self.flow.load(Relaxed) {
            "flow"
        } else {
            "running"
        }
    }

    pub fn channel_opened(&self, ch: &Arc<ChannelShared>) {
        MsgCounters::bump(&self.msgs.channels_opened, 1);
        let mut chans = self.channels.lock();
        chans.retain(|w| w.strong_count() > 0);
        chans.push(Arc::downgrade(ch));
    }

    pub fn open_channels(&self) -> Vec<Arc<ChannelShared>> {
        let mut v: Vec<_> = self
            .channels
            .lock()
            .iter()
            .filter_map(|w| w.upgrade())
            .collect();
        v.sort_by_key(|c| c.id);
        v.dedup_by_key(|c| c.id);
        v
    }

    pub fn add_octets(&self, recv: u64, send: u64) {
        if recv > 0 {
            self.recv_oct.fetch_add(recv, Relaxed);
            self.recv_cnt.fetch_add(1, Relaxed);
        }
        if send > 0 {
            self.send_oct.fetch_add(send, Relaxed);
            self.send_cnt.fetch_add(1, Relaxed);
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One overview sample, kept for charts and rates.
#[derive(Debug, Clone, Copy, Default)]
pub struct OverviewSample {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub totals: Snap,
    pub ready: u64,
    pub unacked: u64,
    pub recv_oct: u64,
    pub send_oct: u64,
}

fn window_samples() -> usize {
    (RATE_WINDOW.as_millis() / SAMPLE_INTERVAL.as_millis()) as usize
}

/// Samples of one object, newest last, covering at least [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct Series {
    samples: VecDeque<(u64, Snap)>,
}

impl Series {
    fn push(&mut self, at: u64, s: Snap) {
        self.samples.push_back((at, s));
        while self.samples.len() > window_samples() + 1 {
            self.samples.pop_front();
        }
    }

    fn rates(&self) -> [f64; 7] {
        rates_between(self.samples.front(), self.samples.back())
    }
}

fn rates_between(a: Option<&(u64, Snap)>, b: Option<&(u64, Snap)>) -> [f64; 7] {
    let mut out = [0.0; 7];
    if let (Some((t0, s0)), Some((t1, s1))) = (a, b) {
        if t1 > t0 {
            let dt = (t1 - t0) as f64 / 1000.0;
            let (v0, v1) = (s0.values(), s1.values());
            for i in 0..7 {
                out[i] = v1[i].saturating_sub(v0[i]) as f64 / dt;
            }
        }
    }
    out
}

/// Broker-wide statistics: open connections, totals of closed ones, sample history.
#[derive(Debug, Default)]
pub struct Registry {
    pub connections: DashMap<u64, Arc<ConnShared>>,
    /// Counters of connections and queues that are gone (so totals never go down).
    pub retired: Counters,
    /// Message counters of closed connections.
    pub retired_msgs: MsgCounters,
    /// Connections opened and closed since the start (`rabbitmq_connections_*_total`).
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    history: Mutex<History>,
    pub started_at: u64,
}

#[derive(Debug, Default)]
struct History {
    overview: VecDeque<OverviewSample>,
    /// Keyed by the queue's address; the name is kept to answer lookups.
    queues: HashMap<usize, (Weak<Queue>, Snap, Series)>,
    /// Per connection: (at, recv_oct, send_oct), newest last.
    conns: HashMap<u64, VecDeque<(u64, u64, u64)>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            started_at: now_ms(),
            ..Default::default()
        }
    }

    pub fn register(&self, c: Arc<ConnShared>) {
        self.connections_opened.fetch_add(1, Relaxed);
        self.connections.insert(c.id, c);
    }

    /// Message counters of every connection, open or closed.
    pub fn msg_totals(&self) -> MsgSnap {
        self.connections
            .iter()
            .fold(self.retired_msgs.snap(), |acc, c| acc.plus(&c.msgs.snap()))
    }

    /// The connection is gone: its counters join the retired totals.
    pub fn unregister(&self, id: u64) {
        if let Some((_, c)) = self.connections.remove(&id) {
            self.connections_closed.fetch_add(1, Relaxed);
            self.retired_msgs.add(&c.msgs.snap());
            let mut s = c.counters.snap();
            // Queue-side counters are counted by queues; connections add publishes only.
            s = Snap {
                publish: s.publish,
                ..Snap::default()
            };
            self.retired.add(&s);
        }
    }

    /// Finds a connection by its name; `+` also stands for a space (rabbitmqadmin sends
    /// names encoded with Python's `quote_plus`).
    pub fn connection_by_name(&self, name: &str) -> Option<Arc<ConnShared>> {
        let plus = name.replace('+', " ");
        self.connections
            .iter()
            .find(|c| c.name == name)
            .or_else(|| self.connections.iter().find(|c| c.name == plus))
            .map(|c| c.clone())
    }

    /// Broker-wide totals: publishes counted by connections, deliveries and acks by queues.
    pub fn totals(&self, queues: &[Arc<Queue>]) -> Snap {
        let mut t = self.retired.snap();
        for c in self.connections.iter() {
            t.publish += c.counters.publish.load(Relaxed);
        }
        for q in queues {
            let s = q.counters.snap();
            t = t.plus(&Snap { publish: 0, ..s });
        }
        t
    }

    /// Rates (per second) of a queue's counters, in [`FIELDS`] order.
    pub fn queue_rates(&self, q: &Arc<Queue>) -> [f64; 7] {
        let h = self.history.lock();
        h.queues
            .get(&(Arc::as_ptr(q) as usize))
            .map(|(_, _, s)| s.rates())
            .unwrap_or_default()
    }

    /// Bytes per second received and sent by a connection.
    pub fn connection_rates(&self, id: u64) -> (f64, f64) {
        let h = self.history.lock();
        match h.conns.get(&id) {
            Some(s) => match (s.front(), s.back()) {
                (Some(a), Some(b)) if b.0 > a.0 => {
                    let dt = (b.0 - a.0) as f64 / 1000.0;
                    ((b.1 - a.1) as f64 / dt, (b.2 - a.2) as f64 / dt)
                }
                _ => (0.0, 0.0),
            },
            None => (0.0, 0.0),
        }
    }

    /// Overview rates over the last window, in [`FIELDS`] order, plus the newest sample.
    pub fn overview(&self) -> ([f64; 7], OverviewSample) {
        let h = self.history.lock();
        let n = h.overview.len();
        let keep = window_samples();
        let first = h.overview.get(n.saturating_sub(keep + 1));
        let last = h.overview.back();
        let rates = rates_between(
            first.map(|s| (s.at, s.totals)).as_ref(),
            last.map(|s| (s.at, s.totals)).as_ref(),
        );
        (rates, last.copied().unwrap_or_default())
    }

    /// The last `n` overview samples, oldest first.
    pub fn overview_history(&self, n: usize) -> Vec<OverviewSample> {
        let h = self.history.lock();
        let skip = h.overview.len().saturating_sub(n);
        h.overview.iter().skip(skip).copied().collect()
    }

    /// Takes one sample of everything: the open connections and `queues` (every queue of
    /// the node).
    pub fn sample(&self, queues: &[Arc<Queue>]) {
        let at = now_ms();
        let mut ready = 0;
        let mut unacked = 0;
        let mut h = self.history.lock();
        let mut seen = std::collections::HashSet::new();
        for q in queues {
            let (r, _, _) = q.stats();
            ready += r as u64;
            unacked += q.unacked_count();
            let key = Arc::as_ptr(q) as usize;
            seen.insert(key);
            let s = q.counters.snap();
            let e = h.queues.entry(key).or_insert_with(|| {
                // A queue new since the last sample counted up from zero during it.
                let mut series = Series::default();
                series.push(
                    at.saturating_sub(SAMPLE_INTERVAL.as_millis() as u64),
                    Snap::default(),
                );
                (Arc::downgrade(q), s, series)
            });
            e.1 = s;
            e.2.push(at, s);
        }
        // Queues gone since the last sample: their last counts join the retired totals.
        let gone: Vec<usize> = h
            .queues
            .iter()
            .filter(|(k, (w, _, _))| !seen.contains(k) || w.strong_count() == 0)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some((_, last, _)) = h.queues.remove(&k) {
                self.retired.add(&Snap { publish: 0, ..last });
            }
        }
        let mut recv_oct = 0;
        let mut send_oct = 0;
        let mut live = std::collections::HashSet::new();
        for c in self.connections.iter() {
            live.insert(c.id);
            let (r, s) = (c.recv_oct.load(Relaxed), c.send_oct.load(Relaxed));
            recv_oct += r;
            send_oct += s;
            let series = h.conns.entry(c.id).or_insert_with(|| {
                VecDeque::from([(at.saturating_sub(SAMPLE_INTERVAL.as_millis() as u64), 0, 0)])
            });
            series.push_back((at, r, s));
            if series.len() > window_samples() + 1 {
                series.pop_front();
            }
        }
        h.conns.retain(|id, _| live.contains(id));
        drop(h);
        let totals = self.totals(queues);
        let mut h = self.history.lock();
        h.overview.push_back(OverviewSample {
            at,
            totals,
            ready,
            unacked,
            recv_oct,
            send_oct,
        });
        while h.overview.len() > HISTORY {
            h.overview.pop_front();
        }
    }
}

/// What the [`sampler`] reads: the registry it fills and the queues it samples (the broker
/// implements it over its vhosts).
pub trait Sampled: Send + Sync + 'static {
    fn registry(&self) -> &Registry;
    /// Every queue of the node.
    fn queues(&self) -> Vec<Arc<Queue>>;
}

/// Samples the counters of `source` until it is dropped.
pub async fn sampler<S: Sampled>(source: Weak<S>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = source.upgrade() else { return };
        s.registry().sample(&s.queues());
    }
}
