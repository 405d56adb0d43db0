#!/usr/bin/env bash
# CPU per message against the number of independent flows (one producer -> one queue ->
# one consumer each), for the many-core question of issue 16: does Warren's broker CPU per
# message grow with the number of cores or flows? One flow is one warren-perf process
# (`-x 1 -y 1`, its own queue and routing key), so N flows are N processes started
# together; the broker's CPU is read from /proc around the whole batch.
#
#   bench/flows.sh                                  # FLOWS="1 16 64", 10 s, 3 repetitions
#   FLOWS="1 16" DURATION=5 REPS=1 bench/flows.sh
#   MODE="-s 16 -a --unbatched" bench/flows.sh      # the per-flow warren-perf arguments
#   BROKERS=warren bench/flows.sh                   # without the reference RabbitMQ
#
# Prebuilt binaries can be given (a machine without cargo, or a copy carried over):
#   WARREN=/path/warren PERF=/path/warren-perf bench/flows.sh
# RabbitMQ (Debian's rabbitmq-server, through ../shared/rabbitmq-reference.sh) is used
# when BROKERS names it and it is installed or listening on $RABBIT_PORT.
#
# Output: one JSON line per (broker, flows, rep) appended to $OUT (default
# bench/flows.jsonl) and a Markdown table of medians on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FLOWS=${FLOWS:-1 16 64}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
MODE=${MODE:--s 16 -a --unbatched}
BROKERS=${BROKERS:-warren rabbitmq}
WARREN_PORT=${WARREN_PORT:-5695}
RABBIT_PORT=${RABBIT_PORT:-5682}
OUT=${OUT:-$ROOT/bench/flows.jsonl}
WARREN=${WARREN:-$ROOT/target/release/warren}
PERF=${PERF:-$ROOT/target/release/warren-perf}
WORK=$(mktemp -d /tmp/warren-flows.XXXXXX)
RUN_ID=$(date -u +%Y-%m-%dT%H:%M:%SZ)

log() { echo "[flows $(date -u +%H:%M:%S)] $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_pid() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
# utime + stime of a process in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

if [ ! -x "$WARREN" ] || [ ! -x "$PERF" ]; then
  log "building warren and warren-perf"
  cargo build --release --bin warren >&2
  cargo build --release -p warren-perf >&2
fi

WARREN_PID=
cleanup() {
  if [ -n "$WARREN_PID" ] && kill -0 "$WARREN_PID" 2>/dev/null; then kill "$WARREN_PID"; wait "$WARREN_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

start_warren() {
  "$WARREN" --port "$WARREN_PORT" --management-port 0 --data-dir "$WORK/warren-data" \
    --log-level warn >"$WORK/warren.log" 2>&1 &
  WARREN_PID=$!
  for _ in $(seq 1 100); do listening "$WARREN_PORT" && return 0; sleep 0.1; done
  log "warren did not start"; cat "$WORK/warren.log" >&2; exit 1
}

have_rabbit=false
case " $BROKERS " in *" rabbitmq "*)
  if listening "$RABBIT_PORT" || command -v rabbitmq-server >/dev/null; then
    listening "$RABBIT_PORT" || bash "$ROOT/../shared/rabbitmq-reference.sh" start "$RABBIT_PORT" >&2 || true
    listening "$RABBIT_PORT" && have_rabbit=true
  fi
  $have_rabbit || log "no RabbitMQ on $RABBIT_PORT: measuring Warren only" ;;
esac
case " $BROKERS " in *" warren "*) start_warren ;; esac

# run BROKER PORT PID FLOWS REP
run() {
  local broker=$1 port=$2 pid=$3 flows=$4 rep=$5 i
  local tick cpu0 cpu1 t0 t1
  tick=$(getconf CLK_TCK)
  rm -f "$WORK"/flow-*.json
  cpu0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
  local perfs=()
  for i in $(seq 1 "$flows"); do
    # shellcheck disable=SC2086
    timeout $((DURATION + 60)) "$PERF" --uri "amqp://guest:guest@127.0.0.1:$port/%2f" \
      -x 1 -y 1 $MODE -u "flows-$flows-$rep-$i" -k "flows.$flows.$rep.$i" \
      -z "$DURATION" --drain 15 --json >"$WORK/flow-$i.json" 2>"$WORK/flow-$i.log" &
    perfs+=($!)
  done
  # Only the warren-perf processes: a bare `wait` would wait for the broker too.
  for i in "${perfs[@]}"; do wait "$i" || true; done
  cpu1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
  jq -s -c --arg run "$RUN_ID" --arg broker "$broker" --argjson flows "$flows" --argjson rep "$rep" \
    --argjson cpu "$(awk -v a="$cpu0" -v b="$cpu1" -v t="$tick" 'BEGIN { printf "%.3f", (b - a) / t }')" \
    --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
    --arg mode "$MODE" --arg cores "$(nproc)" '
    (map(.sent // 0) | add) as $sent |
    {run: $run, broker: $broker, flows: $flows, rep: $rep, mode: $mode, cores: ($cores | tonumber),
     sent: $sent, received: (map(.received // 0) | add),
     receive_rate: (map(.receive_rate // 0) | add),
     broker_cpu_s: $cpu, wall_s: $wall,
     broker_cpu_us_per_msg: (if $sent > 0 then $cpu * 1e6 / $sent else null end),
     client_cpu_us_per_msg: (if $sent > 0 then (map(.client_cpu_s // 0) | add) * 1e6 / $sent else null end),
     p99_us_max: (map(.latency_us.p99 // 0) | max),
     lost: (map(.lost // 0) | add), failed: (map(select((.sent // 0) == 0)) | length)}' \
    "$WORK"/flow-*.json >>"$OUT"
  tail -1 "$OUT" | jq -r '"  \(.broker) \(.flows) flows: \(.receive_rate | floor) msg/s received, broker \(.broker_cpu_us_per_msg * 100 | floor / 100) µs/msg, client \(.client_cpu_us_per_msg * 100 | floor / 100) µs/msg, lost \(.lost)"' >&2
}

log "run $RUN_ID on $(nproc) cores: flows {$FLOWS}, ${DURATION} s x $REPS, per flow: $MODE"
for flows in $FLOWS; do
  for rep in $(seq 1 "$REPS"); do
    case " $BROKERS " in *" warren "*) run warren "$WARREN_PORT" "$WARREN_PID" "$flows" "$rep" ;; esac
    if $have_rabbit; then run rabbitmq "$RABBIT_PORT" "$(port_pid "$RABBIT_PORT")" "$flows" "$rep"; fi
  done
done

python3 - "$OUT" "$RUN_ID" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["run"] == sys.argv[2]]
if not rows:
    sys.exit(0)
def med(b, f, k):
    v = [r[k] for r in rows if r["broker"] == b and r["flows"] == f and r.get(k) is not None]
    return statistics.median(v) if v else None
def fmt(v, d=0):
    return "–" if v is None else f"{v:,.{d}f}".replace(",", " ")
print(f"Run {sys.argv[2]}, {rows[0]['cores']} cores, per flow `warren-perf -x 1 -y 1 {rows[0]['mode']}`; medians of {max(r['rep'] for r in rows)} repetition(s).\n")
print("| flows | Warren recv msg/s | RabbitMQ recv msg/s | ratio | Warren broker µs/msg | RabbitMQ broker µs/msg | client µs/msg W / R |")
print("|---:|---:|---:|---:|---:|---:|---|")
for f in sorted({r["flows"] for r in rows}):
    w, r = med("warren", f, "receive_rate"), med("rabbitmq", f, "receive_rate")
    print(f"| {f} | {fmt(w)} | {fmt(r)} | {f'{w / r:.1f}×' if w and r else '–'} | {fmt(med('warren', f, 'broker_cpu_us_per_msg'), 2)} | {fmt(med('rabbitmq', f, 'broker_cpu_us_per_msg'), 2)} | {fmt(med('warren', f, 'client_cpu_us_per_msg'), 1)} / {fmt(med('rabbitmq', f, 'client_cpu_us_per_msg'), 1)} |")
PY
