#!/usr/bin/env bash
# Overload with and without internal flow control (src/flow.rs), against RabbitMQ, in
# one interleaved run: Warren with flow control (defaults), Warren with --flow-credit 0
# (off, as before it existed), RabbitMQ, Warren, ... Publish -> deliver latency and
# receive rate, broker and client CPU per message.
#
#   bench/overload.sh                      # o1: 16p16c 1 KiB confirms (window 1000), qos 100, unbatched
#   ARGS="-x 16 -y 16 -s 1024 -c 100 -q 100 --unbatched" bench/overload.sh
#   DURATION=10 REPS=3 bench/overload.sh
#   OLD=/path/to/old/warren bench/overload.sh   # before/after: the old binary (flow control
#                                               # on) instead of --flow-credit 0
#
# Appends one JSON line per run to bench/overload.jsonl; prints a Markdown table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
REPS=${REPS:-3}
ARGS=${ARGS:--x 16 -y 16 -s 1024 -c 1000 -q 100 --unbatched}
PORT_ON=${PORT_ON:-5696}
PORT_OFF=${PORT_OFF:-5697}
RABBIT_PORT=${RABBIT_PORT:-5682}
OUT=${OUT:-$ROOT/bench/overload.jsonl}
WARREN=${WARREN:-$ROOT/target/release/warren}
PERF=${PERF:-$ROOT/target/release/warren-perf}
WORK=$(mktemp -d /tmp/warren-overload.XXXXXX)
RUN_ID=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log() { echo "[overload $(date -u +%H:%M:%S)] $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_pid() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }

[ -x "$WARREN" ] && [ -x "$PERF" ] || { cargo build --release --bin warren >&2; cargo build --release -p warren-perf >&2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
OLD=${OLD:-}
SECOND=warren-noflow; [ -n "$OLD" ] && SECOND=warren-old
start() { # BIN PORT DIR ARGS...
  local bin=$1 port=$2 dir=$3; shift 3
  "$bin" --port "$port" --management-port 0 --data-dir "$WORK/$dir" --log-level warn "$@" >"$WORK/$dir.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do listening "$port" && return 0; sleep 0.1; done
  log "warren on $port did not start"; exit 1
}
start "$WARREN" "$PORT_ON" on
if [ -n "$OLD" ]; then start "$OLD" "$PORT_OFF" off; else start "$WARREN" "$PORT_OFF" off --flow-credit 0; fi
listening "$RABBIT_PORT" || bash "$ROOT/../shared/rabbitmq-reference.sh" start "$RABBIT_PORT" >&2
log "run $RUN_ID: ${DURATION} s x $REPS: warren-perf $ARGS"
for rep in $(seq 1 "$REPS"); do
  for b in warren "$SECOND" rabbitmq; do
    case $b in
      warren) port=$PORT_ON ;;
      warren-noflow | warren-old) port=$PORT_OFF ;;
      rabbitmq) port=$RABBIT_PORT ;;
    esac
    pid=$(port_pid "$port")
    # shellcheck disable=SC2086
    timeout $((DURATION + 120)) "$PERF" --uri "amqp://guest:guest@127.0.0.1:$port/%2f" $ARGS \
      -z "$DURATION" --drain 60 --json --broker-pid "$pid" >"$WORK/out.json" 2>"$WORK/perf.log" || true
    [ -s "$WORK/out.json" ] || echo '{}' >"$WORK/out.json"
    jq -c --arg run "$RUN_ID" --arg broker "$b" --argjson rep "$rep" --arg args "$ARGS" \
      '{run: $run, broker: $broker, rep: $rep, args: $args, send_rate, receive_rate, latency_us,
        broker_cpu_us_per_msg, client_cpu_us_per_msg, lost, undrained}' "$WORK/out.json" | tee -a "$OUT" \
      | jq -r '"  \(.broker) rep \(.rep): recv \(.receive_rate) msg/s, p50 \(.latency_us.p50) µs, p99 \(.latency_us.p99) µs, broker \(.broker_cpu_us_per_msg) µs/msg"' >&2
    sleep 1
  done
done
python3 - "$OUT" "$RUN_ID" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["run"] == sys.argv[2]]
def med(b, k, sub=None):
    v = [r[k][sub] if sub else r[k] for r in rows if r["broker"] == b and r.get(k) is not None]
    return statistics.median(v) if v else None
def fmt(v, d=0):
    return "–" if v is None else f"{v:,.{d}f}".replace(",", " ")
print(f"Run {sys.argv[2]}: `warren-perf {rows[0]['args']}`, medians of {max(r['rep'] for r in rows)} interleaved repetition(s).\n")
print("| broker | recv msg/s | p50 ms | p99 ms | broker CPU µs/msg | client CPU µs/msg |")
print("|---|---:|---:|---:|---:|---:|")
for b in ["warren", "warren-noflow", "warren-old", "rabbitmq"]:
    if not any(r["broker"] == b for r in rows):
        continue
    p50, p99 = med(b, "latency_us", "p50"), med(b, "latency_us", "p99")
    print(f"| {b} | {fmt(med(b, 'receive_rate'))} | {fmt(p50 and p50 / 1000, 1)} | {fmt(p99 and p99 / 1000, 1)} | {fmt(med(b, 'broker_cpu_us_per_msg'), 2)} | {fmt(med(b, 'client_cpu_us_per_msg'), 2)} |")
PY
