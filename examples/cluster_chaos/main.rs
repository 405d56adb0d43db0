//! The client of `bench/cluster_faults.sh` and `bench/cluster_bench.sh` (failover): an
//! application that publishes persistent messages with confirms to one quorum queue
//! through every node of a cluster and consumes them with manual acks, reconnecting to
//! another node whenever its connection breaks, as a real application would.
//!
//! ```text
//! cluster_chaos run        # publishers + consumers for DURATION s, drain, check
//! cluster_chaos check FILE # re-run the checker on a saved history
//! cluster_chaos failover   # one publisher; how long confirms stop around a kill
//! cluster_chaos declare    # declares QUEUE over AMQP through the first node that answers
//! ```
//!
//! Configuration is environment variables (the scripts set them):
//! `ADDRS` (comma-separated AMQP URIs, one per node, in node order), `QUEUE`, `DURATION`
//! (s of publishing), `RATE` (msg/s per publisher), `WINDOW` (publishes in flight per
//! publisher), `SIZE` (body bytes), `HISTORY` (the history file), `HEALED_FILE` (the
//! nemesis creates it once every fault is healed; the drain starts then), `DRAIN_MAX` (s),
//! `QUIET` (s without a delivery that end the drain), `REPORT` (the checker's JSON),
//! `KILL_FILE` (failover: epoch ms of the kill, written by the script), `DECLARE` (1:
//! declare the queue, `x-queue-type` quorum, through the first node that answers).
//!
//! Every message has a unique id (`p<publisher>-<seq>`) as its message-id and body
//! prefix. A publish whose confirm does not come within 5 s, or whose connection breaks
//! first, has an unknown outcome and is retried (same id) on the next connection, at most
//! five attempts; a nacked one is retried too. Every attempt, confirm, nack, unknown
//! outcome and delivery is a line of the history, which `check.rs` turns into the report.

mod check;

use check::Event;
use futures_lite::StreamExt;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, Confirmation, Connection, ConnectionProperties,
};
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const OP: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: u32 = 5;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Config {
    addrs: Vec<String>,
    queue: String,
    duration: Duration,
    rate: f64,
    window: usize,
    size: usize,
}

impl Config {
    fn from_env() -> Config {
        let addrs: Vec<String> =
            env::<String>("ADDRS", "amqp://guest:guest@127.0.0.1:5672/%2f".into())
                .split(',')
                .map(str::to_string)
                .collect();
        Config {
            addrs,
            queue: env("QUEUE", "chaos".to_string()),
            duration: Duration::from_secs(env("DURATION", 30)),
            rate: env("RATE", 100.0),
            window: env::<usize>("WINDOW", 10).max(1),
            size: env::<usize>("SIZE", 64).max(16),
        }
    }
}

/// What the run shares between tasks: the history sink and live counts.
struct Shared {
    history: Mutex<std::io::BufWriter<std::fs::File>>,
    confirmed: Mutex<HashSet<String>>,
    delivered: Mutex<HashSet<String>>,
    last_delivery: Mutex<Instant>,
    published: AtomicU64,
    acks: AtomicU64,
    deliveries: AtomicU64,
    reconnects: AtomicU64,
    stop_publishing: AtomicBool,
    stop_consuming: AtomicBool,
}

impl Shared {
    fn record(&self, ev: &Event) {
        if let Ok(mut h) = self.history.lock() {
            let _ = writeln!(h, "{}", ev.line());
        }
    }
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

/// Closes without waiting long for a broker that may be gone.
async fn close(conn: Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "bye".into())).await;
}

fn quorum_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t
}

/// Declares the queue once, through the first node that answers.
async fn declare(cfg: &Config) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        for uri in &cfg.addrs {
            let r = async {
                let conn = connect(uri).await?;
                let ch = bounded("channel", conn.create_channel()).await?;
                let opts = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                let r = bounded(
                    "queue.declare",
                    ch.queue_declare(cfg.queue.as_str().into(), opts, quorum_args()),
                )
                .await;
                close(conn).await;
                r.map(|_| ())
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("could not declare {}: {last}", cfg.queue))
}

fn body(id: &str, size: usize) -> Vec<u8> {
    let mut b = id.as_bytes().to_vec();
    b.push(b' ');
    b.resize(size.max(b.len()), b'.');
    b
}

fn id_of(d: &lapin::message::Delivery) -> String {
    if let Some(id) = d.properties.message_id() {
        return id.to_string();
    }
    let end = d
        .data
        .iter()
        .position(|&c| c == b' ')
        .unwrap_or(d.data.len());
    String::from_utf8_lossy(&d.data[..end]).into_owned()
}

/// One publisher: `home` is the node it connects to first; on any failure it moves on to
/// the next node.
async fn publisher(cfg: Arc<Config>, sh: Arc<Shared>, p: usize, home: usize) {
    let n = cfg.addrs.len();
    let mut node = home;
    let mut seq = 0u64;
    let mut retry: VecDeque<(String, u32)> = VecDeque::new();
    let props = BasicProperties::default().with_delivery_mode(2);
    let batch_period = Duration::from_secs_f64(cfg.window as f64 / cfg.rate.max(0.001));
    let mut next_batch = Instant::now();
    while !sh.stop_publishing.load(Relaxed) {
        let conn = match connect(&cfg.addrs[node]).await {
            Ok(c) => c,
            Err(_) => {
                node = (node + 1) % n;
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let setup = async {
            let ch = bounded("channel", conn.create_channel()).await?;
            bounded(
                "confirm.select",
                ch.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
            Ok::<_, String>(ch)
        }
        .await;
        let ch = match setup {
            Ok(ch) => ch,
            Err(_) => {
                close(conn).await;
                node = (node + 1) % n;
                continue;
            }
        };
        let mut broken = false;
        while !broken && !sh.stop_publishing.load(Relaxed) {
            let wait = next_batch.saturating_duration_since(Instant::now());
            tokio::time::sleep(wait).await;
            let now = Instant::now();
            next_batch =
                next_batch.max(now.checked_sub(batch_period).unwrap_or(now)) + batch_period;
            // A batch: retries first, then fresh ids.
            let mut batch: Vec<(String, u32)> = Vec::with_capacity(cfg.window);
            while batch.len() < cfg.window {
                match retry.pop_front() {
                    Some(r) => batch.push(r),
                    None => {
                        seq += 1;
                        batch.push((format!("p{p}-{seq}"), 0));
                    }
                }
            }
            let mut confirms = Vec::with_capacity(batch.len());
            for (id, attempts) in batch {
                if broken {
                    retry.push_back((id, attempts));
                    continue;
                }
                sh.record(&Event::Publish {
                    id: id.clone(),
                    node: node + 1,
                });
                sh.published.fetch_add(1, Relaxed);
                let r = bounded(
                    "basic.publish",
                    ch.basic_publish(
                        "".into(),
                        cfg.queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body(&id, cfg.size),
                        props.clone().with_message_id(id.as_str().into()),
                    ),
                )
                .await;
                match r {
                    Ok(c) => confirms.push((id, attempts + 1, c)),
                    Err(_) => {
                        sh.record(&Event::Unknown { id: id.clone() });
                        requeue(&mut retry, id, attempts + 1);
                        broken = true;
                    }
                }
            }
            for (id, attempts, c) in confirms {
                match tokio::time::timeout(OP, c).await {
                    Ok(Ok(Confirmation::Ack(_))) => {
                        sh.record(&Event::Ack { id: id.clone() });
                        sh.acks.fetch_add(1, Relaxed);
                        if let Ok(mut s) = sh.confirmed.lock() {
                            s.insert(id);
                        }
                    }
                    Ok(Ok(Confirmation::Nack(_))) => {
                        sh.record(&Event::Nack { id: id.clone() });
                        requeue(&mut retry, id, attempts);
                    }
                    Ok(Ok(Confirmation::NotRequested)) | Ok(Err(_)) | Err(_) => {
                        sh.record(&Event::Unknown { id: id.clone() });
                        requeue(&mut retry, id, attempts);
                        broken = true;
                    }
                }
            }
        }
        close(conn).await;
        if broken {
            sh.reconnects.fetch_add(1, Relaxed);
            node = (node + 1) % n;
        }
    }
}

fn requeue(retry: &mut VecDeque<(String, u32)>, id: String, attempts: u32) {
    if attempts < MAX_ATTEMPTS {
        retry.push_back((id, attempts));
    }
}

/// One consumer: manual acks, prefetch 100; on any failure it moves on to the next node.
async fn consumer(cfg: Arc<Config>, sh: Arc<Shared>, c: usize, home: usize) {
    let n = cfg.addrs.len();
    let mut node = home;
    while !sh.stop_consuming.load(Relaxed) {
        let conn = match connect(&cfg.addrs[node]).await {
            Ok(c) => c,
            Err(_) => {
                node = (node + 1) % n;
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let setup = async {
            let ch = bounded("channel", conn.create_channel()).await?;
            bounded("basic.qos", ch.basic_qos(100, BasicQosOptions::default())).await?;
            let consumer = bounded(
                "basic.consume",
                ch.basic_consume(
                    cfg.queue.as_str().into(),
                    format!("chaos-c{c}").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            Ok::<_, String>(consumer)
        }
        .await;
        let mut deliveries = match setup {
            Ok(d) => d,
            Err(_) => {
                close(conn).await;
                node = (node + 1) % n;
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let mut broken = false;
        while !broken && !sh.stop_consuming.load(Relaxed) {
            match tokio::time::timeout(Duration::from_millis(500), deliveries.next()).await {
                Err(_) => {}
                Ok(Some(Ok(d))) => {
                    let id = id_of(&d);
                    sh.record(&Event::Deliver {
                        id: id.clone(),
                        node: node + 1,
                        redelivered: d.redelivered,
                    });
                    sh.deliveries.fetch_add(1, Relaxed);
                    if let Ok(mut s) = sh.delivered.lock() {
                        s.insert(id);
                    }
                    if let Ok(mut t) = sh.last_delivery.lock() {
                        *t = Instant::now();
                    }
                    if bounded("basic.ack", d.ack(BasicAckOptions::default()))
                        .await
                        .is_err()
                    {
                        broken = true;
                    }
                }
                Ok(Some(Err(_))) | Ok(None) => broken = true,
            }
        }
        close(conn).await;
        if broken {
            sh.reconnects.fetch_add(1, Relaxed);
            node = (node + 1) % n;
        }
    }
}

fn read_history(path: &str) -> std::io::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().filter_map(Event::parse).collect())
}

fn report(path: &str) -> i32 {
    let events = match read_history(path) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot read history {path}: {e}");
            return 2;
        }
    };
    let r = check::check(events);
    println!(
        "published {} (attempts {}, retried {}), confirmed {}, nacked {}, unknown outcomes {}",
        r.published, r.attempts, r.retried, r.confirmed, r.nacked, r.unknown
    );
    println!(
        "delivered {} (distinct {}, of unconfirmed publishes {}), duplicates {} (redelivered {}, retried publish {}, unexplained {})",
        r.delivered,
        r.distinct_delivered,
        r.delivered_unconfirmed,
        r.duplicates,
        r.dup_redelivered,
        r.dup_retried,
        r.dup_unexplained
    );
    println!(
        "LOST (confirmed, never delivered) {} {:?}; PHANTOM (delivered, never published) {}",
        r.lost, r.lost_by_node, r.phantom
    );
    if !r.lost_sample.is_empty() {
        println!("lost sample: {}", r.lost_sample.join(" "));
    }
    if let Ok(out) = std::env::var("REPORT") {
        if let Err(e) = std::fs::write(&out, r.json() + "\n") {
            eprintln!("cannot write {out}: {e}");
        }
    }
    if r.ok() {
        println!("verdict: PASS");
        0
    } else {
        println!("verdict: FAIL");
        1
    }
}

async fn run() -> i32 {
    let cfg = Arc::new(Config::from_env());
    let history_path = env("HISTORY", "chaos-history.txt".to_string());
    let healed = std::env::var("HEALED_FILE").ok();
    let drain_max = Duration::from_secs(env("DRAIN_MAX", 90));
    let quiet = Duration::from_secs(env("QUIET", 15));
    if env("DECLARE", 1) == 1 {
        if let Err(e) = declare(&cfg).await {
            eprintln!("{e}");
            return 2;
        }
    }
    let file = match std::fs::File::create(&history_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot create {history_path}: {e}");
            return 2;
        }
    };
    let sh = Arc::new(Shared {
        history: Mutex::new(std::io::BufWriter::new(file)),
        confirmed: Mutex::new(HashSet::new()),
        delivered: Mutex::new(HashSet::new()),
        last_delivery: Mutex::new(Instant::now()),
        published: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        stop_publishing: AtomicBool::new(false),
        stop_consuming: AtomicBool::new(false),
    });
    let n = cfg.addrs.len();
    let mut pubs = Vec::new();
    let mut cons = Vec::new();
    for i in 0..n {
        cons.push(tokio::spawn(consumer(cfg.clone(), sh.clone(), i + 1, i)));
        pubs.push(tokio::spawn(publisher(cfg.clone(), sh.clone(), i + 1, i)));
    }
    let progress = |phase: &str| {
        eprintln!(
            "[{phase}] published {} confirmed {} delivered {} reconnects {}",
            sh.published.load(Relaxed),
            sh.acks.load(Relaxed),
            sh.deliveries.load(Relaxed),
            sh.reconnects.load(Relaxed)
        );
    };
    let start = Instant::now();
    while start.elapsed() < cfg.duration {
        tokio::time::sleep(
            Duration::from_secs(5).min(cfg.duration.saturating_sub(start.elapsed())),
        )
        .await;
        progress("load");
    }
    sh.stop_publishing.store(true, Relaxed);
    for p in pubs {
        // A publisher finishes its batch (confirms bounded by OP each) and stops.
        let _ = tokio::time::timeout(Duration::from_secs(60), p).await;
    }
    progress("published");
    if let Some(f) = healed {
        // The nemesis heals everything, then creates the file.
        for _ in 0..600 {
            if std::path::Path::new(&f).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let drain_start = Instant::now();
    if let Ok(mut t) = sh.last_delivery.lock() {
        *t = Instant::now();
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let missing = match (sh.confirmed.lock(), sh.delivered.lock()) {
            (Ok(c), Ok(d)) => c.iter().filter(|id| !d.contains(*id)).count(),
            _ => 0,
        };
        let idle = sh
            .last_delivery
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if (missing == 0 && idle > Duration::from_secs(2))
            || idle > quiet
            || drain_start.elapsed() > drain_max
        {
            eprintln!(
                "drain ended after {:.1} s: {missing} confirmed not yet delivered, {:.1} s since the last delivery",
                drain_start.elapsed().as_secs_f64(),
                idle.as_secs_f64()
            );
            break;
        }
    }
    sh.stop_consuming.store(true, Relaxed);
    for c in cons {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    progress("end");
    if let Ok(mut h) = sh.history.lock() {
        let _ = h.flush();
    }
    report(&history_path)
}

/// Failover: one publisher (window WINDOW, no rate limit) through the nodes in ADDRS
/// order; every confirm's time is kept. At the end, with the kill's time from KILL_FILE,
/// prints the longest stretch without a confirm after the kill and when confirms resumed.
async fn failover() -> i32 {
    let cfg = Arc::new(Config::from_env());
    let kill_file = env("KILL_FILE", "kill.ms".to_string());
    if env("DECLARE", 1) == 1 {
        if let Err(e) = declare(&cfg).await {
            eprintln!("{e}");
            return 2;
        }
    }
    let times: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let n = cfg.addrs.len();
    let deadline = Instant::now() + cfg.duration;
    let mut node = 0;
    let props = BasicProperties::default().with_delivery_mode(2);
    let payload = body("f", cfg.size);
    while Instant::now() < deadline {
        let Ok(conn) = connect(&cfg.addrs[node]).await else {
            node = (node + 1) % n;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ch = async {
            let ch = bounded("channel", conn.create_channel()).await?;
            bounded(
                "confirm.select",
                ch.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
            Ok::<_, String>(ch)
        }
        .await;
        let Ok(ch) = ch else {
            close(conn).await;
            node = (node + 1) % n;
            continue;
        };
        let mut inflight = VecDeque::new();
        let mut broken = false;
        while !broken && Instant::now() < deadline {
            while inflight.len() < cfg.window {
                match bounded(
                    "basic.publish",
                    ch.basic_publish(
                        "".into(),
                        cfg.queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &payload,
                        props.clone(),
                    ),
                )
                .await
                {
                    Ok(c) => inflight.push_back(c),
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            if let Some(c) = inflight.pop_front() {
                // Long enough for an election; the stretch is measured from the times.
                match tokio::time::timeout(Duration::from_secs(30), c).await {
                    Ok(Ok(Confirmation::Ack(_))) => {
                        if let Ok(mut t) = times.lock() {
                            t.push(now_ms());
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => broken = true,
                }
            }
        }
        close(conn).await;
        if broken {
            node = (node + 1) % n;
        }
    }
    let times = times.lock().map(|t| t.clone()).unwrap_or_default();
    let kill: u64 = std::fs::read_to_string(&kill_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let before = times.iter().filter(|&&t| t <= kill).count();
    let after: Vec<u64> = times.iter().copied().filter(|&t| t > kill).collect();
    // The stall the kill caused: the longest gap between consecutive confirms that began
    // at the last confirm before the kill or within a second after it (confirms already
    // on their way may still arrive just after the kill).
    let mut prev = times
        .iter()
        .copied()
        .filter(|&t| t <= kill)
        .max()
        .unwrap_or(kill);
    let (mut gap, mut resume) = (0u64, None);
    for &t in &after {
        if prev <= kill + 1000 && t.saturating_sub(prev) >= gap {
            gap = t.saturating_sub(prev);
            resume = Some(t);
        }
        prev = t;
    }
    let secs = cfg.duration.as_secs_f64();
    match resume {
        Some(r) if kill > 0 => {
            println!(
                "{{\"confirms\":{},\"before_kill\":{before},\"after_kill\":{},\"rate\":{:.0},\"longest_gap_ms\":{gap},\"resume_after_kill_ms\":{}}}",
                times.len(),
                after.len(),
                times.len() as f64 / secs,
                r - kill
            );
            0
        }
        _ => {
            println!(
                "{{\"confirms\":{},\"before_kill\":{before},\"after_kill\":{},\"rate\":{:.0},\"resume_after_kill_ms\":null}}",
                times.len(),
                after.len(),
                times.len() as f64 / secs
            );
            1
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let code = match args.next().as_deref() {
        Some("run") => run().await,
        Some("failover") => failover().await,
        // Declares the quorum queue over AMQP (a replicated one in a Warren cluster;
        // one declared through the management API is not) through the first node of
        // ADDRS that answers, and exits.
        Some("declare") => match declare(&Config::from_env()).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                2
            }
        },
        Some("check") => match args.next() {
            Some(f) => report(&f),
            None => 2,
        },
        _ => {
            eprintln!("usage: cluster_chaos run | failover | declare | check HISTORY");
            2
        }
    };
    std::process::exit(code);
}
