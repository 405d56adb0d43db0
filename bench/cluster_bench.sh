#!/usr/bin/env bash
# Three-node cluster benchmarks on this machine, Warren or RabbitMQ 3.10.8, every node on
# 127.0.0.1 with its own ports inside one network namespace (bench/cluster_lib.sh,
# NET=loopback), quorum queues, 1 KiB persistent messages:
#   (a) throughput with publisher confirms (window 200), 1 and 4 publishers, one consumer
#       acking, all through node 1 (the queue's leader): warren-perf
#   (b) failover: a publisher (window 10) on node 2 while the queue leader's node is
#       killed with kill -9: time from the kill until confirms resume, and until node 2
#       reports a new leader (examples/cluster_chaos failover), REPS times
#   (c) publish -> deliver p50/p99 at a fixed 1 000 msg/s: warren-perf
# plus the client's CPU per message (warren-perf's getrusage) and the nodes' CPU
# (utime + stime of the three broker processes over the run).
#
#   bench/cluster_bench.sh [KIND] [DURATION] [REPS]    # warren | rabbitmq, 20 s, 2
#
# BENCHES (default "throughput latency failover") picks the parts to run; LABEL names the
# run in the output (default KIND). CLUSTER_TLS=1 (Warren): every inter-node connection is
# TLS with mutual verification (a CA and a certificate for the nodes' addresses made here
# with openssl, passed as WARREN_CLUSTER_TLS_*).
# Prints one JSON line per result and appends it to bench/cluster_bench.jsonl. Needs root (ip netns).
set -uo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-warren}
DURATION=${2:-20}
REPS=${3:-2}
NODES=3
NET=loopback
RUN=${RUN_DIR:-/tmp/cluster-bench-$KIND}
W=${WARREN_BIN:-$PWD/target/release/warren}
PERF=$PWD/target/release/warren-perf
CLIENT=$PWD/target/release/examples/cluster_chaos
OUT=bench/cluster_bench.jsonl
LABEL=${LABEL:-$KIND}
case "$KIND" in warren | rabbitmq) ;; *) echo "KIND must be warren or rabbitmq" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)" >&2; exit 2; }
{ cargo build --release --bin warren --example cluster_chaos -q && cargo build --release -p warren-perf -q; } || exit 2
# shellcheck source=bench/cluster_lib.sh
. bench/cluster_lib.sh
cleanup() { cl_cleanup; wait 2>/dev/null; rm -rf "${RUN:?}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$RUN"; mkdir -p "$RUN"

if [ "${CLUSTER_TLS:-0}" = 1 ] && [ "$KIND" = warren ]; then
  t=$RUN/tls; mkdir -p "$t"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null &&
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=node \
    -keyout "$t/node.key" -out "$t/node.csr" 2>/dev/null &&
  printf 'subjectAltName=IP:127.0.0.1,IP:10.77.0.11,IP:10.77.0.12,IP:10.77.0.13,DNS:localhost\n' >"$t/ext" &&
  openssl x509 -req -in "$t/node.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 2 -extfile "$t/ext" -out "$t/node.pem" 2>/dev/null || { echo "openssl failed" >&2; exit 2; }
  export WARREN_CLUSTER_TLS_CERT_FILE=$t/node.pem WARREN_CLUSTER_TLS_KEY_FILE=$t/node.key \
    WARREN_CLUSTER_TLS_CA_FILE=$t/ca.pem WARREN_CLUSTER_TLS_VERIFY_PEER=true \
    WARREN_CLUSTER_TLS_FAIL_IF_NO_PEER_CERT=true
fi
cl_net_up || exit 2
echo "starting three $KIND nodes" >&2
cl_start_all || exit 2

cpu_ticks() { # summed utime+stime (clock ticks) of every node's broker process
  local i p t=0
  for i in $(seq 1 "$NODES"); do
    p=$(cl_pid "$i")
    [ -n "$p" ] && [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)
emit() { echo "$1" | tee -a "$OUT" >/dev/null; }

perf_run() { # name, then warren-perf args
  local name=$1; shift
  local q="bench-$name" c0 c1 j
  c0=$(cpu_ticks)
  j=$(cl_cli "$PERF" --uri "$(cl_uri_plain 1)" --queue-type quorum --persistent -s 1024 -u "$q" \
        -z "$DURATION" --json "$@" 2>"$RUN/$name.err") || { echo "$name failed: $(tail -3 "$RUN/$name.err")" >&2; return 1; }
  c1=$(cpu_ticks)
  echo "$j" | jq -c --arg name "$name" --arg kind "$LABEL" --argjson cpu "$(((c1 - c0) * 1000 / HZ))" \
    '{bench: $name, kind: $kind, date: (now | todate), confirm_rate: ((.confirmed / .duration_s) | round),
      receive_rate, p50_us: .latency_us.p50, p99_us: .latency_us.p99, max_us: .latency_us.max, lost,
      client_cpu_us_per_msg, client_cpu_cores, nodes_cpu_ms: $cpu,
      nodes_cpu_us_per_msg: (if .confirmed > 0 then ($cpu * 1000 / .confirmed | . * 10 | round / 10) else null end)}'
}

BENCHES=${BENCHES:-throughput latency failover}
has() { case " $BENCHES " in *" $1 "*) return 0 ;; esac; return 1; }

if has throughput; then
  for p in 1 4; do
    r=$(perf_run "throughput-${p}p" -x "$p" -y 1 -c 200 -q 500) && emit "$r" && echo "$r"
  done
fi
if has latency; then
  r=$(perf_run latency-1000 -x 1 -y 1 -r 1000 -c 200 -q 500) && emit "$r" && echo "$r"
fi
has failover || exit 0

# (b) failover, REPS times. The queue is declared over AMQP through node 1 (RabbitMQ and
# Warren put the leader on the declaring node; a Warren queue declared through the
# management API is not replicated, so it would not fail over at all); whichever node is
# the leader when the kill comes is killed, and the publisher goes through the other
# nodes first.
for rep in $(seq 1 "$REPS"); do
  q=failover-$rep
  for _ in $(seq 1 100); do
    ADDRS=$(cl_uri 1) QUEUE=$q cl_cli "$CLIENT" declare >/dev/null 2>&1 && cl_leader "$q" >/dev/null && break
    sleep 0.2
  done
  leader=$(cl_leader "$q" 1)
  [ -n "$leader" ] || { echo "no leader for $q" >&2; continue; }
  order=""
  for i in $(seq 1 "$NODES") ; do [ "$i" != "$leader" ] && order="$order${order:+,}$(cl_uri "$i")"; done
  order="$order,$(cl_uri "$leader")"
  asker=$(( leader % NODES + 1 ))
  ADDRS=$order QUEUE=$q DURATION=$((DURATION < 20 ? 20 : DURATION)) WINDOW=10 SIZE=1024 DECLARE=0 \
    KILL_FILE=$RUN/kill.ms ip netns exec "$(cl_cli_ns)" "$CLIENT" failover >"$RUN/failover.json" 2>"$RUN/failover.err" &
  cpid=$!
  sleep 6
  date +%s%3N >"$RUN/kill.ms"
  cl_kill "$leader"
  kill_ms=$(cat "$RUN/kill.ms")
  new=""; new_ms=""
  for _ in $(seq 1 600); do
    l=$(cl_leader "$q" "$asker") && [ "$l" != "$leader" ] && { new=$l; new_ms=$(date +%s%3N); break; }
    sleep 0.05
  done
  wait "$cpid"
  f=$(cat "$RUN/failover.json")
  r=$(jq -nc --arg kind "$LABEL" --argjson f "${f:-null}" --arg killed "n$leader" --arg new "${new:+n$new}" \
      --argjson leader_ms "$([ -n "$new_ms" ] && echo $((new_ms - kill_ms)) || echo null)" \
      '{bench: "failover", kind: $kind, date: (now | todate), killed: $killed, new_leader: $new,
        new_leader_reported_ms: $leader_ms, confirms_resumed_ms: $f.resume_after_kill_ms,
        longest_gap_ms: $f.longest_gap_ms, confirm_rate: $f.rate}')
  emit "$r"; echo "$r"
  cl_start "$leader"
  cl_wait_node "$leader" 120 || echo "n$leader did not come back" >&2
done
