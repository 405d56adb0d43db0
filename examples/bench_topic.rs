//! Topic routing cost with 1 binding versus 100 000 bindings.
//!
//! Run with `cargo run --release --example bench_topic`. Routes the same 1 000 000
//! routing keys through a topic exchange's binding table holding one binding and one
//! holding 100 000 realistic bindings, and prints the cost per routed message. A trie
//! makes the cost depend on how many binding-key prefixes the routing key can reach, not
//! on the number of bindings, so the ratio should stay small.

use std::hint::black_box;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warren::routing::{BindingTable, ExchangeKind, FieldTable};

const ROUTES: usize = 1_000_000;
const QUEUES: u32 = 5_000;

fn main() {
    let none = FieldTable::default();

    let mut one = BindingTable::new(ExchangeKind::Topic);
    one.bind("region.7.service.42.#", &none, 0u32);

    let started = Instant::now();
    let mut many = BindingTable::new(ExchangeKind::Topic);
    let mut n = 0u32;
    let mut bind = |key: String| {
        many.bind(&key, &none, n % QUEUES);
        n += 1;
    };
    for region in 0..200 {
        for service in 0..200 {
            bind(format!("region.{region}.service.{service}.#"));
        }
    }
    for i in 0..30_000 {
        bind(format!("*.x.{i}"));
    }
    for i in 0..30_000 {
        bind(format!("orders.{i}.created"));
    }
    let build = started.elapsed();
    assert_eq!(many.len(), 100_000);

    // The keys sit back to back in one buffer, as a broker's freshly read frames would be
    // in cache, so the figures measure routing rather than a million scattered strings.
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let mut blob = String::new();
    let mut spans = Vec::with_capacity(ROUTES);
    for _ in 0..ROUTES {
        let key = match rng.random_range(0..10) {
            0..=3 => format!(
                "region.{}.service.{}.event.created",
                rng.random_range(0..250),
                rng.random_range(0..200)
            ),
            4..=6 => format!(
                "host{}.x.{}",
                rng.random_range(0..100),
                rng.random_range(0..40_000)
            ),
            7..=8 => format!("orders.{}.created", rng.random_range(0..40_000)),
            _ => format!("misc.{}.a.b.c", rng.random_range(0..1000)),
        };
        spans.push(blob.len()..blob.len() + key.len());
        blob.push_str(&key);
    }
    let keys: Vec<&str> = spans.into_iter().filter_map(|r| blob.get(r)).collect();

    println!(
        "built 100 000 topic bindings in {:.1} ms",
        build.as_secs_f64() * 1e3
    );
    // Best of three runs each: the machine may be busy with other work.
    let (ns_one, hits_one) = best_of_three(&one, &keys);
    let (ns_many, hits_many) = best_of_three(&many, &keys);
    println!(
        "1 binding:        {ns_one:7.1} ns/route  ({hits_one} deliveries for {ROUTES} routes)"
    );
    println!(
        "100 000 bindings: {ns_many:7.1} ns/route  ({hits_many} deliveries for {ROUTES} routes)"
    );
    println!("ratio 100 000 / 1: {:.2}x", ns_many / ns_one);
}

fn best_of_three(table: &BindingTable<u32>, keys: &[&str]) -> (f64, usize) {
    (0..3)
        .map(|_| bench(table, keys))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((f64::NAN, 0))
}

/// Routes every key once (after one warm-up pass); returns ns per route and deliveries.
fn bench(table: &BindingTable<u32>, keys: &[&str]) -> (f64, usize) {
    let mut out = Vec::with_capacity(16);
    let mut deliveries = 0;
    for key in keys.iter().take(100_000) {
        out.clear();
        table.route(key, None, &mut out);
        deliveries += out.len();
    }
    black_box(deliveries);
    deliveries = 0;
    let started = Clock::start();
    for key in keys {
        out.clear();
        table.route(black_box(key), None, &mut out);
        deliveries += out.len();
    }
    (
        started.elapsed_ns() / keys.len() as f64,
        black_box(deliveries),
    )
}

/// This thread's CPU time where Linux reports it (so other work on a busy machine does
/// not count), wall-clock time otherwise.
struct Clock {
    wall: Instant,
    cpu_ns: Option<u64>,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            cpu_ns: thread_cpu_ns(),
            wall: Instant::now(),
        }
    }

    fn elapsed_ns(&self) -> f64 {
        match (self.cpu_ns, thread_cpu_ns()) {
            (Some(start), Some(end)) => end.saturating_sub(start) as f64,
            _ => self.wall.elapsed().as_nanos() as f64,
        }
    }
}

fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}
