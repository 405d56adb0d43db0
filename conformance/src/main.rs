//! `cargo run -p conformance -- --uri amqp://guest:guest@127.0.0.1:5672/%2f [--filter S] [--parallel N]`
//!
//! Runs every scenario against the broker at the URI, prints one line per scenario and a
//! closing `N passed, N failed` line; exits non-zero when any scenario failed.

#[tokio::main]
async fn main() {
    let mut uri = "amqp://guest:guest@127.0.0.1:5672/%2f".to_string();
    let mut filter = None;
    let mut parallel = 4usize;
    let mut known_differences_ok = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--uri" => uri = args.next().expect("--uri needs a value"),
            "--filter" => filter = args.next(),
            "--parallel" => parallel = args.next().and_then(|v| v.parse().ok()).unwrap_or(4),
            "--reference" => known_differences_ok = true,
            "--list" => {
                for s in conformance::all() {
                    println!("{}\t{}", s.name, s.covers);
                }
                return;
            }
            "-h" | "--help" => {
                println!("usage: conformance [--uri URI] [--filter SUBSTRING] [--parallel N] [--reference] [--list]\n\
                          --reference: the broker is the reference RabbitMQ; scenarios marked as known\n\
                          differences are reported as such instead of failing");
                return;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let scenarios = conformance::all();
    let reports = conformance::run_all(&uri, filter.as_deref(), parallel).await;
    let (mut passed, mut failed, mut differs) = (0, 0, 0);
    for r in &reports {
        let s = scenarios
            .iter()
            .find(|s| s.name == r.name)
            .expect("scenario");
        match (&r.outcome, s.rabbitmq_differs) {
            (Ok(()), _) => {
                passed += 1;
                println!("pass  {}  ({} ms)", r.name, r.elapsed.as_millis());
            }
            (Err(f), Some(why)) if known_differences_ok => {
                differs += 1;
                println!(
                    "known-difference  {}: {why} (expected {}, observed {})",
                    r.name, f.expected, f.observed
                );
            }
            (Err(f), _) => {
                failed += 1;
                println!(
                    "FAIL  {}: expected {}, observed {}",
                    r.name, f.expected, f.observed
                );
            }
        }
    }
    if differs > 0 {
        println!("{differs} known differences of the reference broker");
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
