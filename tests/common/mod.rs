//! Test helpers: a broker started in-process on an ephemeral loopback port.

#![allow(dead_code)]

use std::time::Duration;
use warren::{BrokerHandle, Config};

/// A fresh data directory per broker, so tests never see each other's definitions.
pub fn temp_data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "warren-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Starts Warren on 127.0.0.1 with a free port, its own data directory, and the given tweaks.
pub async fn start_broker_with(f: impl FnOnce(&mut Config)) -> BrokerHandle {
    let mut config = Config {
        port: 0,
        management_port: Some(0),
        data_dir: temp_data_dir(),
        ..Config::default()
    };
    f(&mut config);
    warren::start(config).await.expect("broker starts")
}

pub async fn start_broker() -> BrokerHandle {
    start_broker_with(|_| {}).await
}

/// Awaits `fut`, failing the test if it takes longer than `d`.
pub async fn within<T>(d: Duration, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(d, fut).await.expect("timed out")
}
pub mod http;
