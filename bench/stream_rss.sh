#!/usr/bin/env bash
# Broker memory with a large stream: fill a stream to GIB GiB of message bodies, then run
# one consumer at the tail (with a producer at TAIL_RATE msg/s feeding it) and one replaying
# from `first` at the same time for RUN_SECONDS, sampling the broker's VmRSS once a second.
# Prints the RSS before, after the fill, and the maximum during the consumers, and the
# replay's rate (it must have read the whole stream: `received` >= the fill's count).
#
#   bench/stream_rss.sh                       # Warren (started here, fresh data dir)
#   BROKER=rabbitmq bench/stream_rss.sh       # the reference RabbitMQ on $RABBIT_PORT
#   GIB=1 SIZE=1024 RUN_SECONDS=30 bench/stream_rss.sh
#   MESSAGES=1000000 SIZE=100 TAIL_RATE=0 bench/stream_rss.sh   # replay of 1 M, no tail
#
# Needs target/release/{warren,warren-perf}. Warren's data dir (in /tmp) is deleted at
# the end; on RabbitMQ the stream is deleted. Check the free disk space first (GIB + a bit).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BROKER=${BROKER:-warren}
GIB=${GIB:-5}
SIZE=${SIZE:-4096}
SECONDS_RUN=${RUN_SECONDS:-60}
TAIL_RATE=${TAIL_RATE:-1000}
WARREN_PORT=${WARREN_PORT:-5693}
RABBIT_PORT=${RABBIT_PORT:-5682}
PERF=$ROOT/target/release/warren-perf
WARREN=$ROOT/target/release/warren
QUEUE=rss-stream
N=${MESSAGES:-$((GIB * 1024 * 1024 * 1024 / SIZE))}
WORK=$(mktemp -d /tmp/stream-rss.XXXXXX)

log() { echo "[stream_rss $(date -u +%H:%M:%S)] $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

WARREN_PID=
SAMPLER=
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  if [ -n "$WARREN_PID" ]; then kill "$WARREN_PID" 2>/dev/null || true; wait "$WARREN_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$BROKER" = warren ]; then
  listening "$WARREN_PORT" && { log "port $WARREN_PORT is busy"; exit 1; }
  "$WARREN" --port "$WARREN_PORT" --management-port 0 --data-dir "$WORK/warren-data" \
    --log-level warn >"$WORK/warren.log" 2>&1 &
  WARREN_PID=$!
  for _ in $(seq 1 50); do listening "$WARREN_PORT" && break; sleep 0.1; done
  PORT=$WARREN_PORT PID=$WARREN_PID
else
  listening "$RABBIT_PORT" || bash "$ROOT/../shared/rabbitmq-reference.sh" start "$RABBIT_PORT" >&2
  PORT=$RABBIT_PORT
  PID=$(ss -ltnpH "sport = :$RABBIT_PORT" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [ -n "$PID" ] || { log "cannot find the pid listening on $RABBIT_PORT"; exit 1; }
fi
URI="amqp://guest:guest@127.0.0.1:$PORT/%2f"
COMMON=(--uri "$URI" --queue-type stream -u "$QUEUE" -e '' -k "$QUEUE" --broker-pid "$PID" --json)

log "$BROKER (pid $PID, port $PORT): rss $(rss_kb "$PID") KiB; filling $QUEUE with $N x $SIZE B"
"$PERF" "${COMMON[@]}" --keep -x 1 -y 0 -s "$SIZE" -c 1000 -C "$N" --drain 60 \
  >"$WORK/fill.json" 2>"$WORK/fill.log" || { log "fill failed: $(tail -3 "$WORK/fill.log")"; }
jq -c '{sent, confirmed, send_rate, broker_cpu_us_per_msg, client_cpu_us_per_msg, broker_rss_max_kb}' "$WORK/fill.json" >&2
FILL_SENT=$(jq .confirmed "$WORK/fill.json")
RSS_FILLED=$(rss_kb "$PID")
log "filled: rss $RSS_FILLED KiB; disk: $(du -sh "$WORK/warren-data" 2>/dev/null | cut -f1)"

(while kill -0 "$PID" 2>/dev/null; do rss_kb "$PID"; sleep 1; done) >"$WORK/rss.txt" &
SAMPLER=$!
log "a consumer from first (for at most $SECONDS_RUN s), with a tail consumer (+ producer at $TAIL_RATE msg/s, 0 = none) as long"
TAIL=
if [ "$TAIL_RATE" != 0 ]; then
  "$PERF" "${COMMON[@]}" --keep -x 1 -y 1 -s "$SIZE" -c 100 -q 100 -r "$TAIL_RATE" \
    -z "$SECONDS_RUN" --drain 5 --label tail >"$WORK/tail.json" 2>"$WORK/tail.log" &
  TAIL=$!
fi
"$PERF" "${COMMON[@]}" --keep -x 0 -y 1 -q 1000 --stream-offset first -C "$FILL_SENT" \
  -z "$SECONDS_RUN" --label replay >"$WORK/replay.json" 2>"$WORK/replay.log" || true
[ -z "$TAIL" ] || wait "$TAIL" || true
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
[ -z "$TAIL" ] || jq -c '{sent, received, receive_rate, lost, broker_cpu_us_per_msg}' "$WORK/tail.json" >&2 || tail -3 "$WORK/tail.log" >&2
jq -c '{received, receive_rate, broker_rss_max_kb}' "$WORK/replay.json" >&2 || tail -3 "$WORK/replay.log" >&2
REPLAYED=$(jq '.received // 0' "$WORK/replay.json" 2>/dev/null || echo 0)
MAX=$(sort -n "$WORK/rss.txt" | tail -1)
[ "$REPLAYED" -ge "$FILL_SENT" ] || log "warning: the replay read $REPLAYED of $FILL_SENT messages in $SECONDS_RUN s (raise RUN_SECONDS)"
# Delete the stream (Warren's whole data dir goes with the trap).
if [ "$BROKER" != warren ]; then
  "$PERF" --uri "$URI" --queue-type stream -u "$QUEUE" -e '' -k "$QUEUE" -x 0 -y 0 -z 0 --json \
    >/dev/null 2>"$WORK/delete.log" || tail -3 "$WORK/delete.log" >&2
fi
echo "{\"broker\":\"$BROKER\",\"messages\":$FILL_SENT,\"size\":$SIZE,\"replayed\":$REPLAYED,\"replay_rate\":$(jq '.receive_rate // 0' "$WORK/replay.json" 2>/dev/null || echo 0),\"rss_filled_kb\":$RSS_FILLED,\"rss_max_kb\":$MAX,\"samples\":$(wc -l <"$WORK/rss.txt")}"
