#!/usr/bin/env bash
# Declare latency: a node alone, then the leader and a follower of a three-node cluster
# on loopback (each durable queue.declare committed by the metadata group before its
# declare-ok). Usage: bench/cluster_declare.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-200}
cargo build --release --bin warren --example declare_bench -q
W=target/release/warren
B=target/release/examples/declare_bench
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; exit 1; }

$W --port 5790 --management-port 0 --data-dir "$TMP/alone" --log-level error & PIDS+=($!)
wait_port 5790
echo -n "alone:    "; AMQP_ADDR="amqp://guest:guest@127.0.0.1:5790/%2f" $B "$COUNT"

NODES="n1@127.0.0.1:25791,n2@127.0.0.1:25792,n3@127.0.0.1:25793"
for i in 1 2 3; do
  $W --node-name n$i --port 579$i --management-port 1579$i --cluster-port 2579$i \
     --cluster-nodes "$NODES" --data-dir "$TMP/n$i" --log-level error & PIDS+=($!)
done
for i in 1 2 3; do wait_port 1579$i; done
for _ in $(seq 1 100); do
  curl -s -u guest:guest http://127.0.0.1:15791/api/cluster-status | grep -q '"leader":"n1"' && break
  sleep 0.1
done
echo -n "leader:   "; AMQP_ADDR="amqp://guest:guest@127.0.0.1:5791/%2f" $B "$COUNT"
echo -n "follower: "; AMQP_ADDR="amqp://guest:guest@127.0.0.1:5792/%2f" $B "$COUNT"
