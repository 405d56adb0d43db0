#!/usr/bin/env bash
# Hostile load: the normal clients' throughput and latency alone, under hostile clients
# (10 000 connections a minute opened and dropped, slow readers, oversize frames,
# unauthenticated floods, every channel of a connection), and alone again; the broker's
# peak RSS against its memory watermark (examples/hostile_load.rs).
#   bench/hostile_load.sh [SECONDS per phase, 20] [RATE msg/s, 5000; 0 = as fast as 1 000 outstanding confirms allow]
# Environment: CHURN_PER_MIN (10000), SLOW_READERS (20), WATERMARK (1GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin warren --example hostile_load
watermark=${WATERMARK:-1073741824}
dir=$(mktemp -d)
port=${PORT:-5790}
mport=$((port + 10000))
./target/release/warren --port "$port" --management-port "$mport" --data-dir "$dir" \
  --log-level error --vm-memory-high-watermark "$watermark" &
wpid=$!
trap 'kill $wpid 2>/dev/null || true; wait $wpid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
# Many sockets at once: the silent and churned connections.
ulimit -n 65536 2>/dev/null || true
METRICS_ADDR=127.0.0.1:$mport WATERMARK_BYTES=$watermark ./target/release/examples/hostile_load \
  "amqp://guest:guest@127.0.0.1:$port/%2f" "$wpid" "${1:-20}" "${2:-5000}"
echo "broker peak RSS over its life (VmHWM): $(grep VmHWM /proc/$wpid/status | awk '{printf "%.1f MiB", $2/1024}')"
