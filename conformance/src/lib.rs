//! Broker-independent conformance scenarios for AMQP 0-9-1 as RabbitMQ speaks it.
//!
//! Every scenario drives a real client (lapin) over TCP against the broker at a URI and
//! asserts only on what the client observes: methods, reply codes and texts, bodies,
//! properties, flags, counts and ordering. Scenarios use unique names (see [`Ctx::name`]) and
//! clean up after themselves, so they can run against a shared broker, Warren or RabbitMQ.
//!
//! The same list runs from `cargo run -p conformance -- --uri amqp://...` and from Warren's
//! `cargo test` against an in-process broker.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod raw;
pub mod scenarios;
pub mod support;

/// What a scenario returns when the broker did not behave as expected.
#[derive(Debug, Clone)]
pub struct Failure {
    pub expected: String,
    pub observed: String,
}

impl Failure {
    pub fn new(expected: impl Into<String>, observed: impl Into<String>) -> Self {
        Failure {
            expected: expected.into(),
            observed: observed.into(),
        }
    }
}

impl<E: std::fmt::Debug> From<E> for Failure
where
    E: std::error::Error,
{
    fn from(e: E) -> Self {
        Failure::new("no error", format!("{e:?}"))
    }
}

pub type Outcome = Result<(), Failure>;
pub type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// Context handed to each scenario: where the broker is and how to make unique names.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub uri: String,
    prefix: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Ctx {
    pub fn new(uri: impl Into<String>, scenario: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Ctx {
            uri: uri.into(),
            prefix: format!("conf.{scenario}.{pid}.{nanos}.{n}"),
        }
    }

    /// A name unique to this scenario run, for queues and exchanges.
    pub fn name(&self, what: &str) -> String {
        format!("{}.{what}", self.prefix)
    }
}

/// One scenario: a name, the feature it covers, and the body.
pub struct Scenario {
    /// Unique, stable name, e.g. `queue.declare.passive_missing_404`.
    pub name: &'static str,
    /// Method or feature covered, for the coverage table (e.g. `queue.declare`).
    pub covers: &'static str,
    /// Set when RabbitMQ 3.10 itself is known to differ from what the scenario expects: the
    /// reason. Such a scenario still runs; a failure against RabbitMQ is then reported as
    /// "known difference" rather than a failure.
    pub rabbitmq_differs: Option<&'static str>,
    pub run: fn(Ctx) -> BoxFuture,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish()
    }
}

/// The result of running one scenario.
#[derive(Debug)]
pub struct Report {
    pub name: &'static str,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// Every scenario in the suite.
pub fn all() -> Vec<Scenario> {
    scenarios::all()
}

/// Per-scenario deadline: a hung scenario fails instead of hanging the suite.
pub const SCENARIO_DEADLINE: Duration = Duration::from_secs(20);

/// Runs one scenario with the deadline.
pub async fn run_one(uri: &str, s: &Scenario) -> Report {
    let start = std::time::Instant::now();
    let ctx = Ctx::new(uri, s.name);
    let outcome = match tokio::time::timeout(SCENARIO_DEADLINE, (s.run)(ctx)).await {
        Ok(o) => o,
        Err(_) => Err(Failure::new(
            "scenario finishes",
            format!("timed out after {SCENARIO_DEADLINE:?}"),
        )),
    };
    Report {
        name: s.name,
        outcome,
        elapsed: start.elapsed(),
    }
}

/// Runs every scenario whose name contains `filter` (all when `None`), `parallel` at a time,
/// and returns the reports in suite order.
pub async fn run_all(uri: &str, filter: Option<&str>, parallel: usize) -> Vec<Report> {
    let list: Vec<Scenario> = all()
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect();
    let list = std::sync::Arc::new(list);
    let next = std::sync::Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..parallel.max(1) {
        let list = list.clone();
        let next = next.clone();
        let uri = uri.to_string();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(s) = list.get(i) else { break };
                out.push((i, run_one(&uri, s).await));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            all.extend(v);
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}
