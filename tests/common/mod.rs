//! Test helpers: a broker started in-process on an ephemeral loopback port.

#![allow(dead_code)]

use std::time::Duration;
use warren::{BrokerHandle, Config};

/// A fresh data directory per broker, so tests never see each other's definitions (every
/// test file is a module of one binary, tests/all.rs, and they share this counter; the
/// module path keeps disk_faults' own binary apart as well).
pub fn temp_data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "warren-test-{}-{}-{}",
        std::process::id(),
        module_path!().replace("::", "-"),
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

/// The warren binary as a child process, on a free port with a data directory; killed
/// when dropped (a failed test leaves no broker behind).
pub struct Process {
    pub child: std::process::Child,
    pub uri: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the warren binary with `--data-dir dir` and `extra` options; returns once it
/// printed its address.
pub fn spawn_warren(dir: &std::path::Path, extra: &[&str]) -> Process {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "--port",
            "0",
            "--management-port",
            "0",
            "--log-level",
            "warn",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn warren");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("warren prints its address");
    let addr = line.rsplit(' ').next().unwrap().to_string();
    Process {
        child,
        uri: format!("amqp://guest:guest@{addr}/%2f"),
    }
}

pub mod cluster;
pub mod http;
