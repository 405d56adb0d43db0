#!/usr/bin/env bash
# Fault injection against a cluster in network namespaces (bench/cluster_lib.sh), with a
# client that publishes persistent messages with confirms to a quorum queue through every
# node and consumes with manual acks (examples/cluster_chaos), a seeded nemesis, and a
# checker that counts lost (confirmed, never delivered) and phantom messages.
#
#   bench/cluster_faults.sh [--short] [DURATION] [SEED] [KIND] [NODES]
#
# DURATION seconds of load and faults (default 300; --short: 60, for CI-like use, the whole
# run within 3 minutes), SEED for the fault schedule (default 1), KIND warren | rabbitmq
# (default warren; rabbitmq starts Debian's RabbitMQ 3.10.8 nodes clustered with
# rabbitmqctl join_cluster), NODES (default 3). RATE (msg/s per publisher, default 50)
# and KEEP=1 (keep the run directory's data) from the environment.
# Output in RUN_DIR (default /tmp/chaos-KIND-SEED): nemesis.log, client.log, history.txt,
# report.json. Exit status: the checker's (1 on lost, phantom or unexplained duplicates).
# Needs root (ip netns). Every namespace and process it makes is removed on exit.
set -uo pipefail
cd "$(dirname "$0")/.."
SHORT=0
if [ "${1:-}" = --short ]; then SHORT=1; shift; fi
DURATION=${1:-300}
[ "$SHORT" = 1 ] && [ $# -lt 1 ] && DURATION=60
SEED=${2:-1}
KIND=${3:-warren}
NODES=${4:-3}
RATE=${RATE:-50}
NET=netns
RUN=${RUN_DIR:-/tmp/chaos-$KIND-$SEED}
W=$PWD/target/release/warren
CLIENT=$PWD/target/release/examples/cluster_chaos
case "$KIND" in warren | rabbitmq) ;; *) echo "KIND must be warren or rabbitmq" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)" >&2; exit 2; }

cargo build --release --bin warren --example cluster_chaos -q || exit 2
# shellcheck source=bench/cluster_lib.sh
. bench/cluster_lib.sh

CLIENT_PID=""
cleanup() {
  [ -n "$CLIENT_PID" ] && kill "$CLIENT_PID" 2>/dev/null
  cl_cleanup
  wait 2>/dev/null
  if [ "${KEEP:-0}" != 1 ]; then
    local i; for i in $(seq 1 "$NODES"); do rm -rf "${RUN:?}/n$i"; done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$RUN"; mkdir -p "$RUN"
T0=$(date +%s.%N)
log() { printf '%6.1f %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*" | tee -a "$RUN/nemesis.log"; }

log "starting $NODES $KIND nodes in namespaces (duration $DURATION s, seed $SEED, $RATE msg/s per publisher)"
cl_net_up || exit 2
cl_start_all || { log "cluster did not start"; exit 2; }
log "cluster up"

ADDRS=$(cl_uris) QUEUE=chaos DURATION=$DURATION RATE=$RATE HISTORY=$RUN/history.txt \
  HEALED_FILE=$RUN/healed REPORT=$RUN/report.json QUIET=${QUIET:-15} DRAIN_MAX=${DRAIN_MAX:-60} \
  ip netns exec "$(cl_cli_ns)" "$CLIENT" run >"$RUN/client.log" 2>&1 &
CLIENT_PID=$!
START=$(date +%s)
for _ in $(seq 1 300); do cl_leader chaos >/dev/null && break; sleep 0.2; done
log "queue declared, leader n$(cl_leader chaos)"

# A small LCG, so the schedule depends on the seed only (not on bash's RANDOM or subshells).
S=$SEED
rnd() { S=$(((S * 1103515245 + 12345) % 2147483648)); R=$(((S / 65536) % $1)); }
OPS=(partition-node partition-leader kill-node kill-leader pause-leader)
FAULTS=0
while :; do
  rnd 4; gap=$((2 + R)); rnd ${#OPS[@]}; op=${OPS[$R]}; rnd 6; hold=$((3 + R)); rnd "$NODES"; node=$((1 + R))
  left=$((START + DURATION - $(date +%s)))
  [ "$left" -le $((gap + 1)) ] && break
  sleep "$gap"
  left=$((left - gap)); [ "$hold" -gt "$left" ] && hold=$left
  case "$op" in *-leader) l=$(cl_leader chaos) && node=$l ;; esac
  FAULTS=$((FAULTS + 1))
  log "fault $FAULTS: $op n$node for $hold s"
  case "$op" in
    partition-*) cl_isolate "$node"; sleep "$hold"; cl_heal "$node" ;;
    kill-*) cl_kill "$node"; sleep "$hold"; cl_start "$node"
      cl_wait_node "$node" 90 || log "n$node did not come back within 90 s" ;;
    pause-*) cl_pause "$node"; sleep "$hold"; cl_resume "$node" ;;
  esac
  log "healed n$node"
done
# Heal everything, restart anything dead, then let the client drain.
cl_heal_all
for i in $(seq 1 "$NODES"); do cl_resume "$i"; cl_alive "$i" || { log "n$i dead: restarting"; cl_start "$i"; }; done
for i in $(seq 1 "$NODES"); do cl_wait_node "$i" 90 || log "n$i not answering after the heal"; done
touch "$RUN/healed"
log "$FAULTS faults injected; all healed; draining"
wait "$CLIENT_PID"; RC=$?
CLIENT_PID=""
log "client exited $RC"
cat "$RUN/client.log" | grep -v '^\[load\]' | tee -a "$RUN/nemesis.log"
echo "report: $RUN/report.json"
exit "$RC"
