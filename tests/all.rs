//! Every integration test but `disk_faults` (which needs the `failpoints` feature), in one
//! test binary. Each file under tests/ stays a module of its own, as it was a binary of its
//! own: one binary links the crate, lapin and tokio once instead of thirty times, which is
//! most of a clean CI build on two cores. Run one file's tests with
//! `cargo test --release --test all <file>::` (e.g. `all cluster::`).
//! A new test file is added here, not as a new binary (Cargo.toml has `autotests = false`),
//! and reaches the shared helpers with `use crate::common;`.

mod common;

#[path = "access_rules.rs"]
mod access_rules;
#[path = "alarms.rs"]
mod alarms;
#[path = "chaos_checker.rs"]
mod chaos_checker;
#[path = "cluster.rs"]
mod cluster;
#[path = "cluster_forward.rs"]
mod cluster_forward;
#[path = "cluster_mgmt.rs"]
mod cluster_mgmt;
#[path = "cluster_qget.rs"]
mod cluster_qget;
#[path = "cluster_qpage.rs"]
mod cluster_qpage;
#[path = "cluster_qsnap.rs"]
mod cluster_qsnap;
#[path = "cluster_quorum.rs"]
mod cluster_quorum;
#[path = "cluster_quorum_catchup.rs"]
mod cluster_quorum_catchup;
#[path = "cluster_quorum_faults.rs"]
mod cluster_quorum_faults;
#[path = "cluster_streams.rs"]
mod cluster_streams;
#[path = "cluster_tls.rs"]
mod cluster_tls;
#[path = "conformance.rs"]
mod conformance;
#[path = "connection.rs"]
mod connection;
#[path = "consumer_timeout.rs"]
mod consumer_timeout;
#[path = "crash_soak.rs"]
mod crash_soak;
#[path = "ctl.rs"]
mod ctl;
#[path = "dashboards.rs"]
mod dashboards;
#[path = "delayed.rs"]
mod delayed;
#[path = "durability.rs"]
mod durability;
#[path = "expiry.rs"]
mod expiry;
#[path = "fairness.rs"]
mod fairness;
#[path = "flow.rs"]
mod flow;
#[path = "fuzz.rs"]
mod fuzz;
#[path = "fuzz_corpus.rs"]
mod fuzz_corpus;
#[path = "hostile.rs"]
mod hostile;
#[path = "interop.rs"]
mod interop;
#[path = "limits.rs"]
mod limits;
#[path = "mgmt_api.rs"]
mod mgmt_api;
#[path = "mgmt_console.rs"]
mod mgmt_console;
#[path = "mgmt_rabbitmqadmin.rs"]
mod mgmt_rabbitmqadmin;
#[path = "mgmt_security.rs"]
mod mgmt_security;
#[path = "permissions.rs"]
mod permissions;
#[path = "policies.rs"]
mod policies;
#[path = "quorum.rs"]
mod quorum;
#[path = "restart.rs"]
mod restart;
#[path = "shovels.rs"]
mod shovels;
#[path = "shutdown.rs"]
mod shutdown;
#[path = "streams.rs"]
mod streams;
#[path = "tls.rs"]
mod tls;
#[path = "vhosts.rs"]
mod vhosts;
