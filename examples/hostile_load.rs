//! Hostile load (`bench/hostile_load.sh`): normal clients (a publisher with confirms at a
//! fixed rate and an acking consumer) measured alone, then while hostile clients press on
//! the same broker, then alone again:
//!
//! - churn: connections opened (full handshake) and dropped without closing, at
//!   `CHURN_PER_MIN` (default 10 000 a minute);
//! - slow readers: `SLOW_READERS` no-ack consumers that never read their socket, each on its
//!   own queue fed by a flood publisher (4 KiB messages);
//! - oversize frames: handshaken connections that send a frame header past frame_max;
//! - unauthenticated floods: wrong passwords, and sockets that connect and say nothing;
//! - many channels: connections that open every channel up to channel_max and drop.
//!
//! Prints, per phase, the normal clients' throughput (confirmed messages a second) and publish→deliver latency (p50, p99,
//! max), the broker's peak RSS (sampled from /proc every 50 ms) and what the hostile
//! clients did. Every loop stops at its phase's deadline.
//!
//! `hostile_load URI BROKER_PID [SECONDS] [RATE]` (bench/hostile_load.sh starts warren);
//! RATE 0 publishes as fast as 1 000 outstanding confirms allow (throughput rather than
//! latency).

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{connection, AMQPClass};
use conformance::raw::{raw_frame, RawConn};
use futures_lite::StreamExt;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const BODY: usize = 256;

#[derive(Default)]
struct Counters {
    churned: AtomicU64,
    churn_failed: AtomicU64,
    unauth_refused: AtomicU64,
    unauth_failed: AtomicU64,
    idle_closed: AtomicU64,
    oversize_closed: AtomicU64,
    oversize_failed: AtomicU64,
    channels_opened: AtomicU64,
    channel_conns: AtomicU64,
    channel_failed: AtomicU64,
    slow_published: AtomicU64,
}

struct Phase {
    name: &'static str,
    sent: u64,
    confirmed: u64,
    delivered: u64,
    secs: f64,
    lat_us: Vec<u64>,
    confirm_us: Vec<u64>,
    peak_rss: u64,
    cpu_secs: f64,
}

fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The broker's user + system CPU time so far (seconds).
fn cpu_of(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn rss_of(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The normal clients for `secs`: a publisher with confirms at `rate` msg/s and an acking
/// consumer on queue `normal`.
async fn normal(uri: &str, name: &'static str, secs: u64, rate: u64) -> Phase {
    let pc = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("normal publisher connects");
    let cc = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("normal consumer connects");
    let pch = pc.create_channel().await.expect("channel");
    let cch = cc.create_channel().await.expect("channel");
    pch.queue_declare(
        "normal".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    pch.queue_purge("normal".into(), QueuePurgeOptions::default())
        .await
        .expect("purge");
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    cch.basic_qos(500, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = cch
        .basic_consume(
            "normal".into(),
            "normal".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs(secs);
    let lat = Arc::new(Mutex::new(Vec::new()));
    let delivered = Arc::new(AtomicU64::new(0));
    let cons = {
        let (lat, delivered) = (lat.clone(), delivered.clone());
        tokio::spawn(async move {
            let end = stop + Duration::from_secs(10);
            while let Ok(Some(Ok(d))) = tokio::time::timeout_at(end.into(), consumer.next()).await {
                let sent = u64::from_be_bytes(d.data[..8].try_into().expect("8 bytes"));
                let now = t0.elapsed().as_micros() as u64;
                lat.lock().unwrap().push(now.saturating_sub(sent));
                delivered.fetch_add(1, Relaxed);
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
            }
        })
    };
    let (ctx, mut crx) = tokio::sync::mpsc::unbounded_channel::<(u64, lapin::PublisherConfirm)>();
    // Unthrottled (rate 0): at most WINDOW confirms outstanding.
    const WINDOW: usize = 1000;
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let confirms = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut v = Vec::new();
            let mut ok = 0u64;
            while let Some((sent, c)) = crx.recv().await {
                if let Ok(lapin::Confirmation::Ack(_)) = c.await {
                    ok += 1;
                    v.push((t0.elapsed().as_micros() as u64).saturating_sub(sent));
                }
                window.add_permits(1);
            }
            (ok, v)
        })
    };
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while Instant::now() < stop {
        if rate > 0 || window.available_permits() == 0 {
            tick.tick().await;
        }
        // Publish what the schedule says by now (rate per second), or as much as the
        // confirm window allows (rate 0).
        let due = if rate == 0 {
            sent + window.available_permits() as u64
        } else {
            (t0.elapsed().as_micros() as u64 * rate) / 1_000_000
        };
        while sent < due {
            if let Ok(p) = window.try_acquire() {
                p.forget();
            } else if rate == 0 {
                break;
            }
            let now = t0.elapsed().as_micros() as u64;
            let mut body = now.to_be_bytes().to_vec();
            body.resize(BODY, b'n');
            match pch
                .basic_publish(
                    "".into(),
                    "normal".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await
            {
                Ok(c) => {
                    let _ = ctx.send((now, c));
                }
                Err(e) => panic!("normal publish failed: {e}"),
            }
            sent += 1;
        }
    }
    drop(ctx);
    let secs_f = t0.elapsed().as_secs_f64();
    let (confirmed, mut confirm_us) = tokio::time::timeout(Duration::from_secs(20), confirms)
        .await
        .expect("confirms within 20 s")
        .expect("confirm task");
    // Every published message delivered (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered.load(Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cons.abort();
    let mut lat_us = std::mem::take(&mut *lat.lock().unwrap());
    lat_us.sort_unstable();
    confirm_us.sort_unstable();
    let _ = pc.close(200, "bye".into()).await;
    let _ = cc.close(200, "bye".into()).await;
    Phase {
        name,
        sent,
        confirmed,
        delivered: delivered.load(Relaxed),
        secs: secs_f,
        lat_us,
        confirm_us,
        peak_rss: 0,
        cpu_secs: 0.0,
    }
}

/// Runs `f` every `every` until `stop`, each call in its own task (at most `max_live` at
/// once, so a stalled broker cannot pile up tasks without bound).
async fn paced<F, Fut>(stop: Arc<AtomicBool>, every: Duration, max_live: usize, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let live = Arc::new(AtomicUsize::new(0));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Relaxed) {
        tick.tick().await;
        if live.load(Relaxed) >= max_live {
            continue;
        }
        live.fetch_add(1, Relaxed);
        let fut = f();
        let live = live.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(15), fut).await;
            live.fetch_sub(1, Relaxed);
        });
    }
}

async fn hostile(
    uri: String,
    stop: Arc<AtomicBool>,
    c: Arc<Counters>,
    churn_per_min: u64,
    slow: usize,
) {
    let mut tasks = Vec::new();
    // Churn: full handshake, then drop the socket.
    {
        let (uri, stop, c) = (uri.clone(), stop.clone(), c.clone());
        let every = Duration::from_micros(60_000_000 / churn_per_min.max(1));
        tasks.push(tokio::spawn(paced(stop, every, 256, move || {
            let (uri, c) = (uri.clone(), c.clone());
            async move {
                match RawConn::open(&uri, 0).await {
                    Ok(_) => c.churned.fetch_add(1, Relaxed),
                    Err(_) => c.churn_failed.fetch_add(1, Relaxed),
                };
            }
        })));
    }
    // Unauthenticated: wrong password, 50 a second.
    {
        let (uri, stop, c) = (uri.clone(), stop.clone(), c.clone());
        tasks.push(tokio::spawn(paced(
            stop,
            Duration::from_millis(20),
            128,
            move || {
                let (uri, c) = (uri.clone(), c.clone());
                async move {
                    let r = async {
                        let mut r = RawConn::tcp(&uri).await.ok()?;
                        r.start().await.ok()?;
                        r.send_start_ok("guest", "wrong").await.ok()?;
                        // The broker answers 403 (authentication_failure_close) and closes.
                        let _ = r.read_until_eof().await;
                        Some(())
                    }
                    .await;
                    match r {
                        Some(()) => c.unauth_refused.fetch_add(1, Relaxed),
                        None => c.unauth_failed.fetch_add(1, Relaxed),
                    };
                }
            },
        )));
    }
    // Silent sockets: connect, send nothing (or only the header), until the broker's
    // handshake timeout closes them; 20 a second, at most 400 alive.
    {
        let (uri, stop, c) = (uri.clone(), stop.clone(), c.clone());
        let n = Arc::new(AtomicU64::new(0));
        tasks.push(tokio::spawn(paced(
            stop,
            Duration::from_millis(50),
            400,
            move || {
                let (uri, c, n) = (uri.clone(), c.clone(), n.clone());
                async move {
                    let Ok(mut r) = RawConn::tcp(&uri).await else {
                        return;
                    };
                    if n.fetch_add(1, Relaxed) % 2 == 0 {
                        let _ = r.send_bytes(b"AMQP\x00\x00\x09\x01").await;
                    }
                    // The paced task's 15 s bound ends the wait; the broker's handshake timeout
                    // (10 s) should close it first.
                    let (mut rd, _wr, _) = r.into_split();
                    let mut buf = [0u8; 1024];
                    for _ in 0..64 {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                c.idle_closed.fetch_add(1, Relaxed);
                                return;
                            }
                            Ok(_) => {}
                        }
                    }
                }
            },
        )));
    }
    // Oversize frames: a method frame header announcing 16 MiB (frame_max is 128 KiB).
    {
        let (uri, stop, c) = (uri.clone(), stop.clone(), c.clone());
        tasks.push(tokio::spawn(paced(
            stop,
            Duration::from_millis(50),
            64,
            move || {
                let (uri, c) = (uri.clone(), c.clone());
                async move {
                    let r = async {
                        let (mut r, _) = RawConn::open(&uri, 0).await.ok()?;
                        r.open_channel(1).await.ok()?;
                        let mut f = raw_frame(1, 1, &[], 0xCE);
                        f[3..7].copy_from_slice(&(16u32 << 20).to_be_bytes());
                        f.truncate(7);
                        f.extend_from_slice(&[0u8; 4096]);
                        r.send_bytes(&f).await.ok()?;
                        for _ in 0..16 {
                            if let AMQPFrame::Method(
                                0,
                                AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                            ) = r.recv_frame().await.ok()?
                            {
                                return (c.reply_code == 501).then_some(());
                            }
                        }
                        None
                    }
                    .await;
                    match r {
                        Some(()) => c.oversize_closed.fetch_add(1, Relaxed),
                        None => c.oversize_failed.fetch_add(1, Relaxed),
                    };
                }
            },
        )));
    }
    // Many channels: every channel up to channel_max on one connection, kept open; a new
    // such connection every 2 s (the previous one dropped), about 1 000 channel opens a
    // second.
    {
        let (uri, stop, c) = (uri.clone(), stop.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = None;
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            for _ in 0..100_000 {
                tick.tick().await;
                if stop.load(Relaxed) {
                    break;
                }
                let Ok((mut r, hs)) = RawConn::open(&uri, 0).await else {
                    c.channel_failed.fetch_add(1, Relaxed);
                    continue;
                };
                let max = hs.tune.channel_max.max(1);
                for id in 1..=max {
                    if stop.load(Relaxed) || r.open_channel(id).await.is_err() {
                        break;
                    }
                    c.channels_opened.fetch_add(1, Relaxed);
                }
                c.channel_conns.fetch_add(1, Relaxed);
                held = Some(r); // the previous one is dropped here
            }
            drop(held);
        }));
    }
    // Slow readers: no-ack consumers that never read, fed by a flood publisher.
    let mut readers = Vec::new();
    let setup = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .expect("flood publisher connects");
    let fch = setup.create_channel().await.expect("channel");
    for i in 0..slow {
        let q = format!("slow.{i}");
        fch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare slow queue");
        let (mut r, _) = RawConn::open(&uri, 0).await.expect("slow reader connects");
        r.open_channel(1).await.expect("channel");
        use amq_protocol::protocol::basic;
        r.send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: q.as_str().into(),
                consumer_tag: "slow".into(),
                no_local: false,
                no_ack: true,
                exclusive: false,
                nowait: true,
                arguments: FieldTable::default(),
            })),
        )
        .await
        .expect("consume");
        readers.push(r); // never read again
    }
    {
        let (stop, c) = (stop.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let body = vec![b's'; 4096];
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut i = 0usize;
            while !stop.load(Relaxed) && slow > 0 {
                tick.tick().await;
                for _ in 0..2 {
                    // 2 000 msg/s of 4 KiB over the slow readers' queues.
                    let q = format!("slow.{}", i % slow);
                    i += 1;
                    if fch
                        .basic_publish(
                            "".into(),
                            q.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            BasicProperties::default(),
                        )
                        .await
                        .is_err()
                    {
                        return;
                    }
                    c.slow_published.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    while !stop.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        let a = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .is_err()
        {
            a.abort();
        }
    }
    drop(readers);
    let _ = setup.close(200, "bye".into()).await;
}

/// `rabbitmq_connections` and `rabbitmq_channels` from the broker's `/metrics` (plain HTTP
/// on `addr`), or None.
async fn open_counts(addr: &str) -> Option<(u64, u64)> {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    let value = |name: &str| {
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|v| v as u64)
    };
    Some((value("rabbitmq_connections")?, value("rabbitmq_channels")?))
}

fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let mut a = std::env::args().skip(1);
    let uri = a.next().expect("URI");
    let pid: u32 = a.next().and_then(|p| p.parse().ok()).expect("broker PID");
    let secs: u64 = a.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let rate: u64 = a.next().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let churn: u64 = std::env::var("CHURN_PER_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let slow: usize = std::env::var("SLOW_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let watermark: u64 = std::env::var("WATERMARK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    // RSS sampler: the peak per phase.
    let phase = Arc::new(AtomicUsize::new(0));
    let peaks: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (phase, peaks, sampling) = (phase.clone(), peaks.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Relaxed) {
                let r = rss_of(pid);
                peaks[phase.load(Relaxed).min(2)].fetch_max(r, Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    println!("hostile load: {secs} s per phase, normal publisher at {rate} msg/s (confirms, {BODY} B) + acking consumer");
    let mut phases = Vec::new();
    let cpu0 = cpu_of(pid);
    phases.push(normal(&uri, "unloaded", secs, rate).await);
    let cpu1 = cpu_of(pid);

    phase.store(1, Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    // The hostile clients on their own runtime thread, so their tasks never delay the
    // normal clients' in this process (they still share the machine's cores).
    let h = {
        let (uri, stop, counters) = (uri.clone(), stop.clone(), counters.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(hostile(uri, stop, counters, churn, slow))
        })
    };
    // Let the hostile clients reach their pace before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t_hostile = Instant::now();
    let cpu2 = cpu_of(pid);
    phases.push(normal(&uri, "loaded", secs, rate).await);
    let cpu3 = cpu_of(pid);
    let hostile_secs = t_hostile.elapsed().as_secs_f64() + 2.0;
    stop.store(true, Relaxed);
    let _ = tokio::task::spawn_blocking(move || h.join()).await;

    phase.store(2, Relaxed);
    let cpu4 = cpu_of(pid);
    phases.push(normal(&uri, "after", secs, rate).await);
    let cpu5 = cpu_of(pid);
    for (p, (a, b)) in phases
        .iter_mut()
        .zip([(cpu0, cpu1), (cpu2, cpu3), (cpu4, cpu5)])
    {
        p.cpu_secs = b - a;
    }
    sampling.store(false, Relaxed);
    let _ = sampler.join();
    for (i, p) in phases.iter_mut().enumerate() {
        p.peak_rss = peaks[i].load(Relaxed);
    }

    println!(
        "\n{:<9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>11} {:>12} {:>10}",
        "phase",
        "sent",
        "delivered",
        "conf/s",
        "p50 µs",
        "p99 µs",
        "max µs",
        "confirm p99",
        "peak RSS MiB",
        "broker CPU"
    );
    for p in &phases {
        println!(
            "{:<9} {:>9} {:>9} {:>8.0} {:>8} {:>8} {:>8} {:>11} {:>12.1} {:>9.0}%",
            p.name,
            p.sent,
            p.delivered,
            p.confirmed as f64 / p.secs,
            pct(&p.lat_us, 0.5),
            pct(&p.lat_us, 0.99),
            p.lat_us.last().copied().unwrap_or(0),
            pct(&p.confirm_us, 0.99),
            mb(p.peak_rss),
            p.cpu_secs * 100.0 / p.secs
        );
    }
    let c = &counters;
    let per_min = |n: u64| n as f64 * 60.0 / hostile_secs;
    println!("\nhostile clients over {hostile_secs:.1} s:");
    println!(
        "  churn: {} connections opened and dropped ({:.0}/min), {} failed",
        c.churned.load(Relaxed),
        per_min(c.churned.load(Relaxed)),
        c.churn_failed.load(Relaxed)
    );
    println!(
        "  unauthenticated: {} wrong-password logins refused, {} failed otherwise; {} silent sockets closed by the broker",
        c.unauth_refused.load(Relaxed),
        c.unauth_failed.load(Relaxed),
        c.idle_closed.load(Relaxed)
    );
    println!(
        "  oversize frames: {} connections closed with 501, {} otherwise",
        c.oversize_closed.load(Relaxed),
        c.oversize_failed.load(Relaxed)
    );
    println!(
        "  many channels: {} channels opened on {} connections, {} failed",
        c.channels_opened.load(Relaxed),
        c.channel_conns.load(Relaxed),
        c.channel_failed.load(Relaxed)
    );
    println!(
        "  slow readers: {slow} consumers that never read, {} messages of 4 KiB published to their queues",
        c.slow_published.load(Relaxed)
    );
    let (u, l) = (&phases[0], &phases[1]);
    let thr = |p: &Phase| p.confirmed as f64 / p.secs;
    let p99 = |p: &Phase| pct(&p.lat_us, 0.99) as f64;
    println!(
        "\nloaded vs unloaded: throughput {:+.1}%, p99 {:+.1}%",
        (thr(l) / thr(u) - 1.0) * 100.0,
        (p99(l) / p99(u).max(1.0) - 1.0) * 100.0
    );
    let peak = phases.iter().map(|p| p.peak_rss).max().unwrap_or(0);
    if watermark > 0 {
        println!(
            "broker peak RSS {:.1} MiB, memory watermark {:.1} MiB ({:.0}%)",
            mb(peak),
            mb(watermark),
            peak as f64 * 100.0 / watermark as f64
        );
    }
    if let Ok(addr) = std::env::var("METRICS_ADDR") {
        // Every hostile connection is gone once its socket is: nothing leaks in the
        // connection registry (a bounded wait for the last closes to be noticed).
        let mut last = None;
        for _ in 0..100 {
            last = open_counts(&addr).await;
            if last.is_some_and(|(c, _)| c == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match last {
            Some((c, ch)) => {
                println!("after the run: {c} connections, {ch} channels open (expected 0)")
            }
            None => println!("after the run: /metrics unreadable"),
        }
        if last.is_none_or(|(c, _)| c != 0) {
            println!("WARNING: connections left open");
            std::process::exit(1);
        }
    }
    let lost = phases
        .iter()
        .any(|p| p.delivered < p.sent || p.confirmed < p.sent);
    if lost {
        println!("WARNING: a phase did not get every message confirmed and delivered");
        std::process::exit(1);
    }
}
