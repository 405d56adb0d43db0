//! Resource alarms (memory, disk) and publisher flow control, as RabbitMQ's
//! `rabbit_alarm` + `rabbit_reader` throttling.
//!
//! While any alarm is set, a connection that publishes is *blocked*: it is sent
//! `connection.blocked` ("low on memory", "low on disk", "low on memory & disk") if the
//! client advertised the `connection.blocked` capability, and the broker stops reading its
//! socket, so the publisher's TCP window closes instead of the broker's memory growing.
//! Connections that only consume keep running (they are what drains the queues). When the
//! last alarm clears, blocked connections get `connection.unblocked` and are read again.
//!
//! [`Alarms`] is the broker-wide state (a `watch` channel every connection subscribes to);
//! [`Throttle`] is the per-connection state machine (running → blocking → blocked), pure
//! and unit-tested; [`memory_monitor`] is the task that sets and clears the memory alarm
//! from the process's resident set size against `--vm-memory-high-watermark`.

use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// A resource that can raise an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memory,
    Disk,
}

impl Resource {
    /// RabbitMQ's name (`/api/health/checks/alarms` reports `memory`, `disk`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Disk => "disk",
        }
    }
}

/// The set alarms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmSet {
    pub memory: bool,
    pub disk: bool,
}

impl AlarmSet {
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    pub fn active(self) -> Vec<Resource> {
        let mut v = Vec::new();
        if self.memory {
            v.push(Resource::Memory);
        }
        if self.disk {
            v.push(Resource::Disk);
        }
        v
    }

    /// The reason text of `connection.blocked`, as RabbitMQ formats it.
    pub fn reason(self) -> String {
        let names: Vec<&str> = self.active().iter().map(|r| r.as_str()).collect();
        format!("low on {}", names.join(" & "))
    }

    fn set(&mut self, r: Resource, on: bool) {
        match r {
            Resource::Memory => self.memory = on,
            Resource::Disk => self.disk = on,
        }
    }
}

/// The memory high watermark: a fraction of total RAM (RabbitMQ's default 0.4) or an
/// absolute number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermark {
    Relative(f64),
    Absolute(u64),
}

impl Default for Watermark {
    fn default() -> Self {
        Watermark::Relative(0.4)
    }
}

impl Watermark {
    /// Parses `0.4` (fraction of RAM) or `1073741824` / `512MB` / `2GiB` (bytes).
    pub fn parse(s: &str) -> Result<Watermark, String> {
        let s = s.trim();
        if s.contains('.') {
            let f: f64 = s
                .parse()
                .map_err(|_| format!("invalid memory watermark '{s}'"))?;
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("memory watermark fraction {f} not in 0..1"));
            }
            return Ok(Watermark::Relative(f));
        }
        let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &s[digits.len()..];
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid memory watermark '{s}'"))?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" => 1,
            "kb" => 1000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            _ => return Err(format!("unknown unit in memory watermark '{s}'")),
        };
        Ok(Watermark::Absolute(n.saturating_mul(mult)))
    }

    /// The limit in bytes for a machine with `total` bytes of RAM.
    pub fn limit(self, total: u64) -> u64 {
        match self {
            Watermark::Relative(f) => (total as f64 * f) as u64,
            Watermark::Absolute(b) => b,
        }
    }
}

impl fmt::Display for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Watermark::Relative(x) => write!(f, "{x}"),
            Watermark::Absolute(b) => write!(f, "{b} bytes"),
        }
    }
}

/// Broker-wide alarm state. `set`/`clear` are what the memory monitor, the message
/// store's disk check and tests call; connections watch [`Alarms::subscribe`].
#[derive(Debug)]
pub struct Alarms {
    state: watch::Sender<AlarmSet>,
    /// Any alarm set: read (one relaxed load) on every publish, so a publish right after
    /// an alarm blocks even before the connection has seen the watch notification.
    any: AtomicBool,
    /// The memory watermark in force; changed at run time by [`Alarms::set_watermark`].
    watermark: Mutex<Watermark>,
    /// Wakes the memory monitor at once after a watermark change.
    recheck: Notify,
}

impl Alarms {
    pub fn new(watermark: Watermark) -> Alarms {
        Alarms {
            state: watch::channel(AlarmSet::default()).0,
            any: AtomicBool::new(false),
            watermark: Mutex::new(watermark),
            recheck: Notify::new(),
        }
    }

    /// Raises the alarm for `r` (idempotent).
    pub fn set(&self, r: Resource) {
        self.update(r, true);
    }

    /// Clears the alarm for `r` (idempotent).
    pub fn clear(&self, r: Resource) {
        self.update(r, false);
    }

    fn update(&self, r: Resource, on: bool) {
        self.state.send_if_modified(|s| {
            let before = *s;
            s.set(r, on);
            self.any.store(s.any(), Ordering::Relaxed);
            if before != *s {
                tracing::warn!(resource = r.as_str(), set = on, "resource alarm");
                true
            } else {
                false
            }
        });
    }

    /// True while any alarm is set (cheap: for the publish path).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// The alarms now set.
    pub fn active(&self) -> Vec<Resource> {
        self.state.borrow().active()
    }

    pub fn current(&self) -> AlarmSet {
        *self.state.borrow()
    }

    /// A receiver that sees every change (connections select on it).
    pub fn subscribe(&self) -> watch::Receiver<AlarmSet> {
        self.state.subscribe()
    }

    pub fn watermark(&self) -> Watermark {
        *self.watermark.lock()
    }

    /// Changes the memory watermark (RabbitMQ's `set_vm_memory_high_watermark`); the
    /// monitor re-checks at once.
    pub fn set_watermark(&self, w: Watermark) {
        *self.watermark.lock() = w;
        self.recheck.notify_one();
    }
}

/// What a connection must tell its client after a throttle transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Blocked(String),
    Unblocked,
}

/// Per-connection flow state, as `rabbit_reader`'s `running | blocking | blocked`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttle {
    alarms: AlarmSet,
    /// An alarm is set and this connection published since: it is not read.
    blocked: bool,
    /// The reason sent with the last `connection.blocked` (RabbitMQ re-sends when it changes).
    sent: Option<String>,
}

impl Throttle {
    /// The alarm set changed.
    pub fn on_alarms(&mut self, alarms: AlarmSet) -> Option<Notice> {
        self.alarms = alarms;
        if !alarms.any() {
            self.blocked = false;
            return self.sent.take().map(|_| Notice::Unblocked);
        }
        if self.blocked {
            return self.notify_blocked();
        }
        None
    }

    /// The connection just handled a publish: block it if an alarm is set. Takes the
    /// broker's alarms (not only the last notified set), so there is no window between an
    /// alarm and the connection hearing of it.
    pub fn on_publish(&mut self, alarms: &Alarms) -> Option<Notice> {
        if !alarms.any() {
            return None;
        }
        self.alarms = alarms.current();
        if !self.alarms.any() {
            return None;
        }
        self.blocked = true;
        self.notify_blocked()
    }

    fn notify_blocked(&mut self) -> Option<Notice> {
        let reason = self.alarms.reason();
        if self.sent.as_deref() == Some(reason.as_str()) {
            return None;
        }
        self.sent = Some(reason.clone());
        Some(Notice::Blocked(reason))
    }

    /// False while blocked: the socket is not read (and heartbeats from the client are not
    /// expected, as RabbitMQ pauses its heartbeat monitor).
    pub fn can_read(&self) -> bool {
        !self.blocked
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }
}

/// Total RAM in bytes (`MemTotal` of /proc/meminfo); `None` where unavailable.
pub fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_kib(&text, "MemTotal:").map(|k| k * 1024)
}

/// This process's resident set size in bytes (`VmRSS` of /proc/self/status).
pub fn process_rss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    meminfo_kib(&text, "VmRSS:").map(|k| k * 1024)
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Sets the memory alarm while RSS is above the watermark, clears it below. Checks every
/// `interval` and at once after a watermark change; ends when the alarms are dropped (with
/// the broker that owns them).
pub async fn memory_monitor(alarms: Weak<Alarms>, interval: Duration) {
    let total = total_memory().unwrap_or(u64::MAX);
    loop {
        let Some(a) = alarms.upgrade() else { return };
        let limit = a.watermark().limit(total);
        if let Some(rss) = process_rss() {
            if rss > limit {
                if !a.current().memory {
                    tracing::warn!(rss, limit, "memory resource limit alarm set");
                }
                a.set(Resource::Memory);
            } else {
                a.clear(Resource::Memory);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = a.recheck.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_sees_an_alarm_before_its_notification() {
        let alarms = Alarms::new(Watermark::default());
        let mut t = Throttle::default();
        alarms.set(Resource::Disk);
        assert_eq!(
            t.on_publish(&alarms),
            Some(Notice::Blocked("low on disk".into()))
        );
        alarms.clear(Resource::Disk);
        assert_eq!(t.on_alarms(alarms.current()), Some(Notice::Unblocked));
    }

    #[test]
    fn reasons() {
        let mut s = AlarmSet {
            memory: true,
            disk: false,
        };
        assert_eq!(s.reason(), "low on memory");
        s.disk = true;
        assert_eq!(s.reason(), "low on memory & disk");
    }

    #[test]
    fn throttle_blocks_publishers_only() {
        let alarms = Alarms::new(Watermark::default());
        let mut t = Throttle::default();
        assert_eq!(t.on_publish(&alarms), None);
        alarms.set(Resource::Memory);
        assert_eq!(
            t.on_alarms(alarms.current()),
            None,
            "a consumer-only connection is not told"
        );
        assert!(t.can_read());
        assert_eq!(
            t.on_publish(&alarms),
            Some(Notice::Blocked("low on memory".into()))
        );
        assert!(!t.can_read());
        assert_eq!(t.on_publish(&alarms), None, "told once");
        alarms.set(Resource::Disk);
        assert_eq!(
            t.on_alarms(alarms.current()),
            Some(Notice::Blocked("low on memory & disk".into()))
        );
        assert_eq!(t.on_alarms(AlarmSet::default()), Some(Notice::Unblocked));
        assert!(t.can_read());
        assert_eq!(t.on_alarms(AlarmSet::default()), None);
    }

    #[test]
    fn watermarks() {
        assert_eq!(Watermark::parse("0.4"), Ok(Watermark::Relative(0.4)));
        assert_eq!(Watermark::parse("1024"), Ok(Watermark::Absolute(1024)));
        assert_eq!(Watermark::parse("2GiB"), Ok(Watermark::Absolute(2 << 30)));
        assert_eq!(
            Watermark::parse("512MB"),
            Ok(Watermark::Absolute(512_000_000))
        );
        assert!(Watermark::parse("1.5").is_err());
        assert!(Watermark::parse("lots").is_err());
        assert_eq!(Watermark::Relative(0.5).limit(1000), 500);
        assert!(process_rss().unwrap() > 0);
        assert!(total_memory().unwrap() > 0);
    }
}
