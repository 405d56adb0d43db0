#!/usr/bin/env bash
# Nodes' memory with a replicated quorum queue's backlog: three Warren nodes on loopback
# (ports from BASE), a three-member quorum queue declared on node 1, MESSAGES x SIZE
# persistent messages published to it with confirms (warren-perf, window 200, no
# consumer), then the backlog left alone for SETTLE seconds (the queue groups' snapshots
# are built meanwhile). Each node's VmRSS is sampled every 0.5 s; printed: after the
# fill, at the end, and the maximum over the run, in MiB, and the page files' size.
#
#   bench/qpage_rss.sh                                   # target/release/warren
#   WARREN_BIN=/tmp/warren-main bench/qpage_rss.sh       # another build (e.g. main's)
#   MESSAGES=200000 SIZE=1024 BUDGET=33554432 SETTLE=20 BASE=5900 bench/qpage_rss.sh
#
# Needs target/release/warren-perf (PERF=...), curl and jq. The nodes' data dirs (in
# /tmp) are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WARREN_BIN:-$PWD/target/release/warren}
PERF=${PERF:-$PWD/target/release/warren-perf}
MESSAGES=${MESSAGES:-200000}
SIZE=${SIZE:-1024}
BUDGET=${BUDGET:-33554432}
SETTLE=${SETTLE:-20}
BASE=${BASE:-5900}
WORK=$(mktemp -d /tmp/qpage-rss.XXXXXX)
log() { echo "[qpage_rss $(date -u +%H:%M:%S)] $*" >&2; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

PIDS=()
SAMPLER=
cleanup() {
  [ -z "$SAMPLER" ] || kill "$SAMPLER" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

MEMBERS=n1@127.0.0.1:$((BASE + 21)),n2@127.0.0.1:$((BASE + 22)),n3@127.0.0.1:$((BASE + 23))
for i in 1 2 3; do
  "$W" --node-name "n$i" --port $((BASE + i)) --management-port $((BASE + 10 + i)) \
    --cluster-port $((BASE + 20 + i)) --cluster-nodes "$MEMBERS" --data-dir "$WORK/n$i" \
    --queue-memory-budget "$BUDGET" --log-level warn >"$WORK/n$i.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 1 200); do
  up=$(curl -sf -u guest:guest "http://127.0.0.1:$((BASE + 11))/api/nodes" |
    jq '[.[] | select(.running)] | length' 2>/dev/null || echo 0)
  [ "$up" = 3 ] && break
  sleep 0.1
done
[ "$up" = 3 ] || { log "the cluster did not come up"; tail -5 "$WORK"/n*.log >&2; exit 1; }
log "three nodes up ($W), rss KiB: $(for p in "${PIDS[@]}"; do rss_kb "$p"; done | xargs)"

(while :; do
  echo "$(for p in "${PIDS[@]}"; do rss_kb "$p"; done | xargs)"
  sleep 0.5
done) >"$WORK/rss.txt" &
SAMPLER=$!

log "publishing $MESSAGES x $SIZE B to a quorum queue through n1 (budget $BUDGET B)"
"$PERF" --uri "amqp://guest:guest@127.0.0.1:$((BASE + 1))/%2f" --queue-type quorum -u qpage-rss \
  -e '' -k qpage-rss --keep -x 1 -y 0 -s "$SIZE" -c 200 -C "$MESSAGES" --persistent --json \
  >"$WORK/fill.json" 2>"$WORK/fill.log" || { log "fill failed: $(tail -3 "$WORK/fill.log")"; }
jq -c '{confirmed, send_rate}' "$WORK/fill.json" >&2 || true
FILLED=$(for p in "${PIDS[@]}"; do rss_kb "$p"; done | xargs)
log "filled: rss KiB $FILLED; waiting $SETTLE s"
sleep "$SETTLE"
END=$(for p in "${PIDS[@]}"; do rss_kb "$p"; done | xargs)
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
READY=$(curl -sf -u guest:guest "http://127.0.0.1:$((BASE + 11))/api/queues/%2F/qpage-rss" | jq .messages_ready)
MAX=$(awk '{for (i = 1; i <= NF; i++) if ($i > m[i]) m[i] = $i} END {print m[1], m[2], m[3]}' "$WORK/rss.txt")
PAGES=$(for i in 1 2 3; do du -sm "$WORK/n$i/pages" 2>/dev/null | cut -f1 || echo 0; done | xargs)
mib() { for k in "$@"; do printf '%d ' $((k / 1024)); done; }
# shellcheck disable=SC2086
echo "{\"messages\": $MESSAGES, \"size\": $SIZE, \"budget\": $BUDGET, \"ready\": $READY, \"rss_filled_mib\": \"$(mib $FILLED)\", \"rss_end_mib\": \"$(mib $END)\", \"rss_max_mib\": \"$(mib $MAX)\", \"pages_mib\": \"$PAGES\"}"
