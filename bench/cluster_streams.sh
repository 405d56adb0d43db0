#!/usr/bin/env bash
# Replicated stream publish with confirms: a stream on a node alone, then a stream on a
# three-node loopback cluster (every node a member; a confirm waits for the leader's and a
# follower's fdatasync), published on the leader and on a follower (forwarded).
# Usage: bench/cluster_streams.sh [SECONDS] [CONFIRM_WINDOW]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
WINDOW=${2:-1000}
B=${PORT_BASE:-47300}   # ports B+0..3 (AMQP), B+10.. (management), B+20.. (cluster)
cargo build --release --bin warren -q
cargo build --release -p warren-perf -q
W=target/release/warren
P=target/release/warren-perf
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; exit 1; }
perf() { # URI QUEUE
  $P --uri "$1" -x 1 -y 0 -s 100 -c "$WINDOW" --queue-type stream -u "$2" -z "$SECS" --keep 2>&1 | grep -Ei "sent|confirm|msg/s" | tail -${TAIL:-3}
}

$W --port $B --management-port 0 --data-dir "$TMP/alone" --log-level error & PIDS+=($!)
wait_port $B
echo "alone:"; perf "amqp://guest:guest@127.0.0.1:$B/%2f" s-alone

NODES="n1@127.0.0.1:$((B+21)),n2@127.0.0.1:$((B+22)),n3@127.0.0.1:$((B+23))"
for i in 1 2 3; do
  $W --node-name n$i --port $((B+i)) --management-port $((B+10+i)) --cluster-port $((B+20+i)) \
     --cluster-nodes "$NODES" --data-dir "$TMP/n$i" --log-level error & PIDS+=($!)
done
for i in 1 2 3; do wait_port $((B+10+i)); done
for _ in $(seq 1 100); do
  curl -s -u guest:guest http://127.0.0.1:$((B+11))/api/cluster-status | grep -q '"leader":"n1"' && break
  sleep 0.1
done
echo "3 nodes, on the leader:"; perf "amqp://guest:guest@127.0.0.1:$((B+1))/%2f" s-leader
# s-leader's leader is n1; publishing on n2 forwards to it.
echo "3 nodes, on a follower (forwarded to the leader):"; perf "amqp://guest:guest@127.0.0.1:$((B+2))/%2f" s-leader
# What each member holds (committed) once the publishers are done: the same on every node.
for i in 1 2 3; do
  echo -n "n$i: "; curl -s -u guest:guest "http://127.0.0.1:$((B+10+i))/api/queues/%2F/s-leader?disable_stats=false" |
    python3 -c 'import json,sys; q=json.load(sys.stdin); print("messages", q.get("messages"), "committed_offset", q.get("committed_offset"), "leader", q["leader"], "members", q["members"], "online", q["online"])'
done
