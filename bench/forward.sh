#!/usr/bin/env bash
# Forwarded vs local throughput in a three-node cluster on loopback: one publisher with
# confirms (window 1000) and one consumer (prefetch 1000, acks every 100) through a
# durable classic queue homed on n1. "local": publish and consume on n1. "forwarded":
# publish on n2, consume on n3 (every message crosses two forwarding links).
# Usage: bench/forward.sh [COUNT] [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-100000}
SIZE=${2:-1024}
ROUNDS=${3:-3}
cargo build --release --bin warren --example forward_bench -q
W=target/release/warren
B=target/release/examples/forward_bench
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; exit 1; }

NODES="n1@127.0.0.1:25781,n2@127.0.0.1:25782,n3@127.0.0.1:25783"
for i in 1 2 3; do
  $W --node-name n$i --port 578$i --management-port 1578$i --cluster-port 2578$i \
     --cluster-nodes "$NODES" --data-dir "$TMP/n$i" --log-level error & PIDS+=($!)
done
for i in 1 2 3; do wait_port 1578$i; done
for _ in $(seq 1 100); do
  curl -s -u guest:guest http://127.0.0.1:15781/api/cluster-status | grep -q '"leader":"n1"' && break
  sleep 0.1
done
U() { echo "amqp://guest:guest@127.0.0.1:578$1/%2f"; }
for r in $(seq 1 "$ROUNDS"); do
  for mode in "" persistent; do
    echo -n "round $r local     ${mode:-transient}: "
    HOME_ADDR=$(U 1) PUB_ADDR=$(U 1) CON_ADDR=$(U 1) $B "$COUNT" "$SIZE" $mode
    echo -n "round $r forwarded ${mode:-transient}: "
    HOME_ADDR=$(U 1) PUB_ADDR=$(U 2) CON_ADDR=$(U 3) $B "$COUNT" "$SIZE" $mode
  done
done
