#!/usr/bin/env bash
# Instruction profile of Warren's data path: the release binary under callgrind, driven by
# warren-perf for a fixed count of messages, with instrumentation switched on only for the
# load. Instruction counts do not depend on what else the machine is doing, so unlike CPU
# time they compare across runs and machines; callgrind runs the broker ~50x slower, so
# read batches are small and per-batch costs weigh more than in a throughput run.
#
#   bench/profile.sh                      # 200 000 messages of s1 (1p1c, 16 B, auto-ack)
#   N=50000 ARGS="-s 1024 -c 100 -q 100" bench/profile.sh
#
# Prints instructions per message and the top functions; the callgrind file is kept for
# callgrind_annotate / kcachegrind.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
ARGS=${ARGS:--s 16 -a}
PORT=${PORT:-5695}
WORK=$(mktemp -d /tmp/warren-profile.XXXXXX)
OUT=$WORK/callgrind.out

command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p warren-perf
cargo build --release -q --bin warren

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT" \
  ./target/release/warren --port "$PORT" --management-port 0 --data-dir "$WORK/data" \
  --log-level warn >"$WORK/warren.log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done

callgrind_control -i on "$pid" >/dev/null 2>&1
# shellcheck disable=SC2086 # ARGS is a list of options
./target/release/warren-perf --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" -x 1 -y 1 $ARGS \
  -C "$N" --drain 300 --json >"$WORK/perf.json" 2>"$WORK/perf.log"
callgrind_control -i off "$pid" >/dev/null 2>&1
kill -INT "$pid"
wait "$pid" 2>/dev/null || true
trap - EXIT

total=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "messages: $N (warren-perf -x 1 -y 1 $ARGS), lost: $(jq -r .lost "$WORK/perf.json")"
echo "instructions: $total, per message: $((total / N))"
echo
callgrind_annotate "$OUT" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | sed -n '2,21p'
echo
echo "callgrind file: $OUT"
