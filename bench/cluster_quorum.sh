#!/usr/bin/env bash
# Quorum queue publish with confirms: one node alone, then a three-node cluster on
# loopback (one process per node, this machine), publishing on the queue's leader and
# on a follower (forwarded). warren-perf, 1 producer, no consumer, confirm window
# WINDOW, SIZE-byte bodies, SECS seconds each.
# Usage: bench/cluster_quorum.sh [SECS] [WINDOW] [SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
WINDOW=${2:-100}
SIZE=${3:-1024}
cargo build --release --bin warren -p warren -q
cargo build --release -p warren-perf -q
W=target/release/warren
P=target/release/warren-perf
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; exit 1; }
run() { # label uri
  $P --uri "$2" --queue-type quorum -u "bench-$1" -x 1 -y 0 -c "$WINDOW" -s "$SIZE" -z "$SECS" --json --label "$1" 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], json.dumps({k: r[k] for k in r if k in ("sent","send_rate","confirmed","nacked","duration_s")}))' "$1" \
    || echo "$1: failed"
}

$W --port 5890 --management-port 0 --data-dir "$TMP/alone" --log-level error & PIDS+=($!)
wait_port 5890
run alone "amqp://guest:guest@127.0.0.1:5890/%2f"

NODES="n1@127.0.0.1:25891,n2@127.0.0.1:25892,n3@127.0.0.1:25893"
for i in 1 2 3; do
  $W --node-name n$i --port 589$i --management-port 1589$i --cluster-port 2589$i \
     --cluster-nodes "$NODES" --data-dir "$TMP/n$i" --log-level error & PIDS+=($!)
done
for i in 1 2 3; do wait_port 1589$i; done
for _ in $(seq 1 100); do
  curl -s -u guest:guest http://127.0.0.1:15891/api/cluster-status | grep -q '"leader":"n1"' && break
  sleep 0.1
done
# Declared by the node the producer is on (client-local: that node proposes itself as
# the queue's leader).
run cluster-leader "amqp://guest:guest@127.0.0.1:5892/%2f"
# Declared through n3 first, so that n3 leads it; then published to from n1.
$P --uri "amqp://guest:guest@127.0.0.1:5893/%2f" --queue-type quorum -u bench-follower -x 0 -y 0 -C 0 -z 1 --keep >/dev/null 2>&1 || true
run cluster-follower "amqp://guest:guest@127.0.0.1:5891/%2f"
