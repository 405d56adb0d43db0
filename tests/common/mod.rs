//! Test helpers: a broker started in-process on an ephemeral loopback port.

#![allow(dead_code)]

use std::time::Duration;
use warren::{BrokerHandle, Config};

/// Starts Warren on 127.0.0.1 with a free port and the given tweaks.
pub async fn start_broker_with(f: impl FnOnce(&mut Config)) -> BrokerHandle {
    let mut config = Config {
        port: 0,
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
