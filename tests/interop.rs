//! Other client ecosystems against an in-process Warren: Python pika scenarios, a
//! rabbitmq-c `amqp-tools` round trip and a real Celery worker (scripts in tests/interop/).

use crate::common;

use std::time::Duration;
use tokio::process::Command;

async fn run_script(program: &str, args: &[&str]) {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        Command::new(program).args(args).output(),
    )
    .await
    .expect("script finished in time")
    .unwrap_or_else(|e| {
        panic!("cannot run {program} (install python3-pika and amqp-tools: see tests/run.sh): {e}")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} failed");
    assert!(
        stdout.lines().any(|l| l.ends_with(" 0 failed")),
        "no closing count line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_scenarios_pass() {
    let broker = common::start_broker().await;
    let port = broker.addr.port().to_string();
    run_script(
        "/usr/bin/python3",
        &["tests/interop/pika_scenarios.py", "--port", &port],
    )
    .await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_tools_round_trip() {
    let broker = common::start_broker().await;
    let port = broker.addr.port().to_string();
    run_script("bash", &["tests/interop/amqp_tools.sh", &port]).await;
    broker.shutdown().await;
}

/// The virtualenv with Celery (>= 5.5) that tests/run.sh creates.
const CELERY_PYTHON: &str = "/tmp/warren-celery-venv/bin/python";

/// Runs tests/interop/celery_check.py (a real worker, tasks, results) against a fresh
/// in-process Warren, with `extra` arguments.
async fn celery_check(extra: &[&str]) {
    let broker = common::start_broker().await;
    let port = broker.addr.port().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(CELERY_PYTHON)
            .args(["tests/interop/celery_check.py", "--port", &port])
            .args(extra)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("celery_check.py finished within 120 s")
    .unwrap_or_else(|e| {
        panic!("cannot run {CELERY_PYTHON} (create the Celery venv: see tests/run.sh): {e}")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "celery_check.py {extra:?} failed");
    assert!(
        stdout.lines().any(|l| l.ends_with(" 0 failed")),
        "no closing count line"
    );
    broker.shutdown().await;
}

/// Classic task queue: 20 tasks with results over rpc://, a failing task's exception.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_worker_runs_tasks() {
    celery_check(&[]).await;
}

/// Quorum task queue (Celery 5.5's `task_default_queue_type = "quorum"`): the same tasks,
/// plus native delayed delivery (the worker declares the celery_delayed_27..0 topic
/// exchanges and quorum queues with x-message-ttl, x-dead-letter-exchange,
/// x-overflow reject-publish and x-dead-letter-strategy at-least-once), through which a
/// countdown and an eta task must wait in the broker and run no earlier than asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_quorum_worker_runs_tasks() {
    celery_check(&["--quorum"]).await;
}
