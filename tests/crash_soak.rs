//! A short crash soak in the normal suite: 5 cycles of `kill -9` of the warren binary
//! under confirmed, transactional and acking clients on classic and quorum queues; after
//! each restart every confirmed message is acknowledged or back, nothing is duplicated and
//! nothing appears that was never published. The long run is `bench/crash_soak.sh`
//! (tests/soak/mod.rs has the model).

mod soak;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_cycles_lose_no_confirmed_message() {
    let dir = soak::temp_dir("test");
    let o = soak::Options {
        warren: env!("CARGO_BIN_EXE_warren").into(),
        data_dir: dir.clone(),
        cycles: 5,
        load_min: Duration::from_millis(700),
        load_max: Duration::from_millis(1500),
        seed: 17,
        // Small segments, so reclaiming and recovering several segments is exercised.
        extra: vec!["--segment-size".into(), "1048576".into()],
    };
    let report = tokio::time::timeout(Duration::from_secs(240), soak::run(&o, |_, _| {}))
        .await
        .expect("the soak finishes within 240 s")
        .expect("the soak runs");
    eprintln!("{}", report.table());
    soak::remove(&dir);
    let t = report.total();
    assert_eq!(report.cycles.len(), 5);
    assert!(
        t.confirmed > 0 && t.acked > 0 && t.tx_committed > 0,
        "{t:?}"
    );
    assert!(
        t.expected > 0,
        "some confirmed messages were outstanding at a kill: {t:?}"
    );
    assert_eq!(t.lost, 0, "confirmed messages lost:\n{}", report.table());
    assert_eq!(
        t.phantom,
        0,
        "messages never published:\n{}",
        report.table()
    );
    assert_eq!(t.duplicate, 0, "duplicates:\n{}", report.table());
    assert!(t.recovered >= t.expected);
}
