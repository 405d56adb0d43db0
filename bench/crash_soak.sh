#!/usr/bin/env bash
# Crash soak: CYCLES (default 20) kill -9s of the warren binary under load (publishers with
# confirms and transactions, acking consumers, two classic and two quorum queues), each
# followed by a restart and a check that every confirmed message was acknowledged before
# the crash or is back (examples/crash_soak.rs; the model is tests/soak/mod.rs).
#   bench/crash_soak.sh [CYCLES] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin warren --example crash_soak
exec ./target/release/examples/crash_soak "${1:-20}" "${2:-1}"
