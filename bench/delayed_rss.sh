#!/usr/bin/env bash
# Memory with a million pending delayed messages: publishes COUNT (default 1 000 000)
# persistent SIZE-byte messages (default 100) with x-delay one hour to an
# x-delayed-message exchange of a fresh Warren, then prints the broker's VmRSS before and
# after, messages_delayed from the management API, the delay store's size on disk, and
# the same after a restart (recovery time, RSS).
#
#   bench/delayed_rss.sh                 # COUNT=200000 SIZE=1000 bench/delayed_rss.sh
#
# Needs target/release/warren and target/release/examples/delayed_load
# (cargo build --release --bins --example delayed_load). Uses ports 5694 / 15694.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COUNT=${COUNT:-1000000}
SIZE=${SIZE:-100}
PORT=${PORT:-5694}
MPORT=${MPORT:-15694}
WORK=$(mktemp -d /tmp/delayed-rss.XXXXXX)
log() { echo "[delayed_rss $(date -u +%H:%M:%S)] $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
WARREN_PID=
cleanup() {
  if [ -n "$WARREN_PID" ]; then kill "$WARREN_PID" 2>/dev/null || true; wait "$WARREN_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
start() {
  "$ROOT/target/release/warren" --port "$PORT" --management-port "$MPORT" --data-dir "$WORK/data" \
    --log-level info >>"$WORK/warren.log" 2>&1 &
  WARREN_PID=$!
  # The AMQP port is bound before recovery; the management API answers after it.
  for _ in $(seq 1 1200); do
    curl -sf -o /dev/null -u guest:guest "http://127.0.0.1:$MPORT/api/overview" && return 0
    sleep 0.1
  done
  log "warren did not start"; tail "$WORK/warren.log" >&2; exit 1
}
delayed() {
  curl -s -u guest:guest "http://127.0.0.1:$MPORT/api/exchanges/%2F/delayed-load" |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("messages_delayed"))'
}
listening "$PORT" && { log "port $PORT is busy"; exit 1; }
start
log "fresh warren: rss $(rss_kb "$WARREN_PID") KiB"
AMQP_ADDR="amqp://guest:guest@127.0.0.1:$PORT/%2f" "$ROOT/target/release/examples/delayed_load" "$COUNT" 3600000 "$SIZE"
log "after $COUNT delayed messages: rss $(rss_kb "$WARREN_PID") KiB, messages_delayed $(delayed), delay store on disk $(du -sm "$WORK/data/delayed" | cut -f1) MiB"
kill "$WARREN_PID"; wait "$WARREN_PID" 2>/dev/null || true; WARREN_PID=
t0=$(date +%s.%N)
start
t1=$(date +%s.%N)
log "restarted (recovery included) in $(python3 -c "print(round($t1 - $t0, 1))") s: rss $(rss_kb "$WARREN_PID") KiB, messages_delayed $(delayed)"
grep "recovered delayed" "$WORK/warren.log" | tail -1 >&2 || true
