//! Runs the whole conformance suite (the `conformance` crate) against an in-process Warren.

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_against_warren() {
    let broker = common::start_broker().await;
    let uri = broker.uri();
    let filter = std::env::var("CONFORMANCE_FILTER").ok();
    let reports = conformance::run_all(&uri, filter.as_deref(), 4).await;
    let mut failed = Vec::new();
    for r in &reports {
        match &r.outcome {
            Ok(()) => println!("pass  {}", r.name),
            Err(f) => {
                println!(
                    "FAIL  {}: expected {}, observed {}",
                    r.name, f.expected, f.observed
                );
                failed.push(r.name);
            }
        }
    }
    println!(
        "conformance: {} passed, {} failed",
        reports.len() - failed.len(),
        failed.len()
    );
    assert!(!reports.is_empty(), "no scenario ran");
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
    broker.shutdown().await;
}
