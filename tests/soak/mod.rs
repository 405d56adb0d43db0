//! Crash soak: cycles of `kill -9` of the warren binary under load, each followed by a
//! restart and a check that every confirmed message is either acknowledged or back.
//!
//! Used by `tests/crash_soak.rs` (3 cycles, in the normal suite) and by
//! `examples/crash_soak.rs` (`bench/crash_soak.sh`, 20 cycles by default).
//!
//! Each cycle: start warren on the same data directory; take every message out of every
//! queue with `basic.get` and compare with the model; then load it (per queue, a publisher
//! of persistent messages with confirms and an acking consumer; one transactional
//! publisher over a classic and a quorum queue), for a seeded time; then `kill -9`.
//!
//! The model records, per message id, what the client knows:
//! - `Sent`: handed to the client library, no confirm seen: may be back or not;
//! - `Confirmed`: confirmed (or its `tx.commit-ok` seen) and not acknowledged: must be back;
//! - `Acked`: acknowledged (counted from the moment the ack is handed to the client library,
//!   the broker may apply it or not before it dies), or taken by a previous recovery: may
//!   come back (an ack is not synced before it is applied), counted as `reappeared`.
//!
//! A message that is back but was never sent to that queue is a `phantom`; one that comes
//! back twice in the same recovery is a `duplicate`. The verdict is `lost == 0 &&
//! phantom == 0 && duplicate == 0`, whatever the timing; every wait is bounded.

#![allow(dead_code)]

use futures_lite::StreamExt;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The queues: two classic, two quorum, all durable.
pub const QUEUES: &[(&str, &str)] = &[
    ("soak.classic.0", "classic"),
    ("soak.classic.1", "classic"),
    ("soak.quorum.0", "quorum"),
    ("soak.quorum.1", "quorum"),
];
/// Queues (by index) the transactional publisher alternates between.
const TX_QUEUES: [usize; 2] = [0, 2];
const TX_BATCH: u64 = 20;
/// Confirms a publisher keeps outstanding.
const WINDOW: usize = 200;
const BODY: usize = 128;
/// Bound on every single client operation.
const OP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Options {
    pub warren: PathBuf,
    pub data_dir: PathBuf,
    pub cycles: u32,
    /// Load time before the kill, drawn per cycle from [min, max] with `seed`.
    pub load_min: Duration,
    pub load_max: Duration,
    pub seed: u64,
    /// Extra options for warren (e.g. a small `--segment-size`).
    pub extra: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum St {
    #[default]
    Sent,
    Confirmed,
    Acked,
    Lost,
}

/// What one cycle saw: the load before its kill, and the recovery after the restart.
#[derive(Debug, Default, Clone)]
pub struct Cycle {
    pub load_ms: u64,
    /// Messages handed to the client library / confirmed / acknowledged during the load.
    pub sent: u64,
    pub confirmed: u64,
    pub tx_committed: u64,
    pub acked: u64,
    /// Confirmed and unacknowledged at the kill (all queues): what must come back.
    pub expected: u64,
    /// Messages back after the restart, and how they split.
    pub recovered: u64,
    pub recovered_confirmed: u64,
    pub recovered_unconfirmed: u64,
    pub reappeared: u64,
    pub lost: u64,
    pub phantom: u64,
    pub duplicate: u64,
    pub not_redelivered: u64,
    pub restart_ms: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub cycles: Vec<Cycle>,
}

impl Report {
    pub fn total(&self) -> Cycle {
        let mut t = Cycle::default();
        for c in &self.cycles {
            t.load_ms += c.load_ms;
            t.sent += c.sent;
            t.confirmed += c.confirmed;
            t.tx_committed += c.tx_committed;
            t.acked += c.acked;
            t.expected += c.expected;
            t.recovered += c.recovered;
            t.recovered_confirmed += c.recovered_confirmed;
            t.recovered_unconfirmed += c.recovered_unconfirmed;
            t.reappeared += c.reappeared;
            t.lost += c.lost;
            t.phantom += c.phantom;
            t.duplicate += c.duplicate;
            t.not_redelivered += c.not_redelivered;
            t.restart_ms = t.restart_ms.max(c.restart_ms);
        }
        t
    }

    pub fn ok(&self) -> bool {
        let t = self.total();
        t.lost == 0 && t.phantom == 0 && t.duplicate == 0
    }

    pub fn table(&self) -> String {
        let mut s = String::from(
            "cycle load_ms    sent confirmed tx_msgs   acked expected recovered  lost phantom dup reappeared restart_ms\n",
        );
        let row = |s: &mut String, name: &str, c: &Cycle| {
            s.push_str(&format!(
                "{name:>5} {:>7} {:>7} {:>9} {:>7} {:>7} {:>8} {:>9} {:>5} {:>7} {:>3} {:>10} {:>10}\n",
                c.load_ms,
                c.sent,
                c.confirmed,
                c.tx_committed,
                c.acked,
                c.expected,
                c.recovered,
                c.lost,
                c.phantom,
                c.duplicate,
                c.reappeared,
                c.restart_ms
            ))
        };
        for (i, c) in self.cycles.iter().enumerate() {
            row(&mut s, &(i + 1).to_string(), c);
        }
        row(&mut s, "total", &self.total());
        s
    }
}

/// Per queue: message id → state. Ids are unique over the whole soak.
type Model = Vec<HashMap<u64, St>>;

struct Broker {
    child: std::process::Child,
    uri: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(o: &Options) -> Result<Broker, String> {
    let mut child = std::process::Command::new(&o.warren)
        .args([
            "--port",
            "0",
            "--management-port",
            "0",
            "--log-level",
            "warn",
        ])
        .args(&o.extra)
        .arg("--data-dir")
        .arg(&o.data_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", o.warren.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let mut b = Broker {
        child,
        uri: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "warren printed no address within 60 s".to_string())?;
    let addr = line.rsplit(' ').next().unwrap_or_default().to_string();
    b.uri = format!("amqp://guest:guest@{addr}/%2f");
    Ok(b)
}

async fn connect(uri: &str) -> Result<Connection, String> {
    tokio::time::timeout(
        OP,
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    tokio::time::timeout(OP, f)
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what}: {e}"))
}

fn queue_args(kind: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    t
}

async fn declare_all(ch: &Channel) -> Result<(), String> {
    for (name, kind) in QUEUES {
        bounded(
            "queue.declare",
            ch.queue_declare(
                (*name).into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                queue_args(kind),
            ),
        )
        .await?;
    }
    Ok(())
}

fn body(id: u64) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.resize(BODY, b'.');
    b
}

fn id_of(body: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(body.get(..8)?.try_into().ok()?))
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Takes every message out of every queue and checks them against the model.
async fn recover(uri: &str, model: &mut Model, c: &mut Cycle) -> Result<(), String> {
    let conn = connect(uri).await?;
    let ch = bounded("channel", conn.create_channel()).await?;
    declare_all(&ch).await?;
    for (qi, (name, _)) in QUEUES.iter().enumerate() {
        let mut back: HashMap<u64, u32> = HashMap::new();
        let mut drained = false;
        for _ in 0..10_000_000u64 {
            let got = bounded(
                "basic.get",
                ch.basic_get((*name).into(), BasicGetOptions { no_ack: true }),
            )
            .await?;
            let Some(m) = got else {
                drained = true;
                break;
            };
            c.recovered += 1;
            if !m.delivery.redelivered {
                c.not_redelivered += 1;
            }
            let Some(id) = id_of(&m.delivery.data) else {
                c.phantom += 1;
                continue;
            };
            *back.entry(id).or_default() += 1;
        }
        if !drained {
            return Err(format!("{name} never ran dry"));
        }
        let m = &mut model[qi];
        for (id, n) in &back {
            if *n > 1 {
                c.duplicate += u64::from(n - 1);
            }
            match m.get(id) {
                None => c.phantom += 1,
                Some(St::Confirmed) => c.recovered_confirmed += 1,
                Some(St::Sent) => c.recovered_unconfirmed += 1,
                Some(St::Acked) | Some(St::Lost) => c.reappeared += 1,
            }
            if let Some(s) = m.get_mut(id) {
                *s = St::Acked; // taken now (no-ack get)
            }
        }
        for (id, s) in m.iter_mut() {
            if *s == St::Confirmed && !back.contains_key(id) {
                c.lost += 1;
                *s = St::Lost;
                eprintln!("lost: queue {name} message {id}");
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "bye".into())).await;
    Ok(())
}

/// Shared between the load tasks and the driver: the model and this cycle's counters.
#[derive(Default)]
struct Live {
    model: Model,
    sent: u64,
    confirmed: u64,
    tx_committed: u64,
    acked: u64,
}

impl Live {
    fn set(&mut self, q: usize, id: u64, s: St) {
        let e = self.model[q].entry(id).or_default();
        // Acked is final for this cycle; a late confirm does not undo it.
        if *e != St::Acked {
            *e = s;
        }
        match s {
            St::Sent => self.sent += 1,
            St::Confirmed => self.confirmed += 1,
            St::Acked => self.acked += 1,
            St::Lost => {}
        }
    }
}

/// Publishes persistent messages with confirms to queue `q` until an error (the kill).
async fn confirm_publisher(
    uri: String,
    q: usize,
    mut next: u64,
    live: Arc<Mutex<Live>>,
) -> Result<(), String> {
    let conn = connect(&uri).await?;
    let ch = bounded("channel", conn.create_channel()).await?;
    bounded(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..100_000_000u64 {
        let id = next;
        next += 1;
        live.lock().unwrap().set(q, id, St::Sent);
        let c = ch
            .basic_publish(
                "".into(),
                QUEUES[q].0.into(),
                BasicPublishOptions::default(),
                &body(id),
                persistent(),
            )
            .await
            .map_err(|e| e.to_string())?;
        pending.push_back((id, c));
        while pending.len() >= WINDOW {
            let (id, c) = pending.pop_front().expect("non-empty");
            match c.await {
                Ok(Confirmation::Ack(_)) => live.lock().unwrap().set(q, id, St::Confirmed),
                Ok(_) => {} // nacked: stays Sent (uncertain)
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(())
}

/// Publishes batches of `TX_BATCH` persistent messages in transactions, alternating between
/// a classic and a quorum queue; a batch is confirmed by its `tx.commit-ok`.
async fn tx_publisher(uri: String, mut next: u64, live: Arc<Mutex<Live>>) -> Result<(), String> {
    let conn = connect(&uri).await?;
    let ch = bounded("channel", conn.create_channel()).await?;
    bounded("tx.select", ch.tx_select()).await?;
    for round in 0..100_000_000u64 {
        let q = TX_QUEUES[(round % 2) as usize];
        let first = next;
        for _ in 0..TX_BATCH {
            let id = next;
            next += 1;
            live.lock().unwrap().set(q, id, St::Sent);
            ch.basic_publish(
                "".into(),
                QUEUES[q].0.into(),
                BasicPublishOptions::default(),
                &body(id),
                persistent(),
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        ch.tx_commit().await.map_err(|e| e.to_string())?;
        let mut l = live.lock().unwrap();
        for id in first..next {
            l.set(q, id, St::Confirmed);
        }
        l.tx_committed += TX_BATCH;
    }
    Ok(())
}

/// Consumes queue `q` with manual acks until an error (the kill).
async fn consumer(uri: String, q: usize, live: Arc<Mutex<Live>>) -> Result<(), String> {
    let conn = connect(&uri).await?;
    let ch = bounded("channel", conn.create_channel()).await?;
    bounded("basic.qos", ch.basic_qos(50, BasicQosOptions::default())).await?;
    let mut deliveries = bounded(
        "basic.consume",
        ch.basic_consume(
            QUEUES[q].0.into(),
            "soak".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    while let Some(Ok(d)) = deliveries.next().await {
        if let Some(id) = id_of(&d.data) {
            live.lock().unwrap().set(q, id, St::Acked);
        }
        d.ack(BasicAckOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// splitmix64, for the seeded load times.
fn next_rand(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs the soak; `progress` gets each cycle's row as it ends.
pub async fn run(o: &Options, mut progress: impl FnMut(usize, &Cycle)) -> Result<Report, String> {
    let _ = std::fs::remove_dir_all(&o.data_dir);
    let mut report = Report::default();
    let mut model: Model = vec![HashMap::new(); QUEUES.len()];
    let mut rng = o.seed;
    // Ids: the cycle in the high bits, then the publisher, then a counter.
    for cycle in 0..o.cycles {
        let t0 = Instant::now();
        let broker = spawn(o)?;
        let mut c = Cycle::default();
        if cycle > 0 {
            let n = report.cycles.len();
            let prev = report.cycles.last_mut().expect("previous cycle");
            recover(&broker.uri, &mut model, prev).await?;
            prev.restart_ms = t0.elapsed().as_millis() as u64;
            progress(n, prev);
        } else {
            let conn = connect(&broker.uri).await?;
            let ch = bounded("channel", conn.create_channel()).await?;
            declare_all(&ch).await?;
            let _ = conn.close(200, "bye".into()).await;
        }
        let live = Arc::new(Mutex::new(Live {
            model: std::mem::take(&mut model),
            ..Default::default()
        }));
        let base = u64::from(cycle + 1) << 40;
        let mut tasks = Vec::new();
        for q in 0..QUEUES.len() {
            let id0 = base | ((q as u64) << 32);
            tasks.push(tokio::spawn(confirm_publisher(
                broker.uri.clone(),
                q,
                id0,
                live.clone(),
            )));
            tasks.push(tokio::spawn(consumer(broker.uri.clone(), q, live.clone())));
        }
        tasks.push(tokio::spawn(tx_publisher(
            broker.uri.clone(),
            base | (99u64 << 32),
            live.clone(),
        )));
        let span = o.load_max.saturating_sub(o.load_min).as_millis() as u64;
        let load = o.load_min + Duration::from_millis(next_rand(&mut rng) % (span + 1));
        let started = Instant::now();
        tokio::time::sleep(load).await; // the load's duration, not a synchronisation
                                        // Kill only once something was confirmed and acknowledged (bounded wait), so no
                                        // cycle is empty on a slow machine.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ready = {
                let l = live.lock().unwrap();
                l.confirmed > 0 && l.acked > 0 && l.tx_committed > 0
            };
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The kill: the model is frozen at this instant (what the client knew).
        let mut broker = broker;
        let snapshot = {
            let l = live.lock().unwrap();
            broker.child.kill().map_err(|e| format!("kill -9: {e}"))?;
            c.sent = l.sent;
            c.confirmed = l.confirmed;
            c.tx_committed = l.tx_committed;
            c.acked = l.acked;
            l.model.clone()
        };
        let _ = broker.child.wait();
        c.load_ms = started.elapsed().as_millis() as u64;
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Confirms or acks that the client saw after the kill instant do not count: the
        // snapshot taken under the lock at the kill is the model.
        model = snapshot;
        c.expected = model
            .iter()
            .map(|m| m.values().filter(|s| **s == St::Confirmed).count() as u64)
            .sum();
        report.cycles.push(c);
        drop(broker);
    }
    // The last recovery.
    let t0 = Instant::now();
    let broker = spawn(o)?;
    let n = report.cycles.len();
    let prev = report.cycles.last_mut().expect("a cycle");
    recover(&broker.uri, &mut model, prev).await?;
    prev.restart_ms = t0.elapsed().as_millis() as u64;
    progress(n, prev);
    drop(broker);
    Ok(report)
}

/// A data directory under the system's temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("warren-soak-{tag}-{}", std::process::id()))
}

pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
