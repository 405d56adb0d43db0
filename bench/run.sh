#!/usr/bin/env bash
# Benchmark Warren against a reference RabbitMQ with warren-perf, interleaved
# (Warren, RabbitMQ, Warren, RabbitMQ, ...), and regenerate BENCHMARKS.md.
#
#   bench/run.sh                 # 10 s per run, 3 repetitions
#   DURATION=5 REPS=1 bench/run.sh
#   SCENARIOS="s1 s5" bench/run.sh   # a subset (ids below)
#   bench/run.sh --report-only   # only regenerate BENCHMARKS.md from bench/results.jsonl
#
# Warren is started here on 127.0.0.1:$WARREN_PORT (fresh data dir); RabbitMQ is the
# reference node from ../shared/rabbitmq-reference.sh on $RABBIT_PORT (started if not
# listening). Each run appends one JSON line to bench/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
REPS=${REPS:-3}
DRAIN=${DRAIN:-15}
WARREN_PORT=${WARREN_PORT:-5690}
RABBIT_PORT=${RABBIT_PORT:-5682}
RESULTS=$ROOT/bench/results.jsonl
PERF=$ROOT/target/release/warren-perf
WARREN=$ROOT/target/release/warren
WORK=$(mktemp -d /tmp/warren-bench.XXXXXX)

# id | description | warren-perf arguments
SCENARIO_TABLE=(
  "s1|1p1c 16 B, auto-ack|-x 1 -y 1 -s 16 -a"
  "u1|1p1c 16 B, auto-ack, one write per message (as pika, amqplib, lapin)|-x 1 -y 1 -s 16 -a --unbatched"
  "s2|1p1c 1 KiB, confirms (window 100), manual ack (qos 100)|-x 1 -y 1 -s 1024 -c 100 -q 100"
  "u2|1p1c 1 KiB, confirms (window 100), manual ack (qos 100), one write per message|-x 1 -y 1 -s 1024 -c 100 -q 100 --unbatched"
  "s3|1p1c 1 KiB persistent, confirms (window 100), manual ack (qos 100)|-x 1 -y 1 -s 1024 -c 100 -q 100 --persistent"
  "u3|1p1c 1 KiB persistent, confirms (window 100), manual ack (qos 100), one write per message|-x 1 -y 1 -s 1024 -c 100 -q 100 --persistent --unbatched"
  "s4|fanout 1 -> 10 queues, 16 B, auto-ack|-t fanout --queues 10 -x 1 -y 10 -s 16 -a"
  "s5|latency at 1000 msg/s, 16 B, auto-ack|-x 1 -y 1 -s 16 -a -r 1000"
  "s6|topic, 1 binding, 16 B, confirms (window 100), auto-ack|-t topic -x 1 -y 1 -s 16 -c 100 -a"
  "s7|topic, 100 000 extra bindings, 16 B, confirms (window 100), auto-ack|-t topic --bindings 100000 -x 1 -y 1 -s 16 -c 100 -a"
  "s10|1p1c 1 KiB, confirms (window 100), manual ack (qos 100), at 20 000 msg/s|-x 1 -y 1 -s 1024 -c 100 -q 100 -r 20000"
  "o1|overload: 16p16c 1 KiB, confirms (window 1000), manual ack (qos 100), one write per message|-x 16 -y 16 -s 1024 -c 1000 -q 100 --unbatched"
  "q1|quorum queue 1p1c 1 KiB, confirms (window 100), manual ack (qos 100)|-x 1 -y 1 -s 1024 -c 100 -q 100 --queue-type quorum"
  "t1|stream 1p1c 100 B, confirms (window 1000), manual ack (qos 1000), consumer from next|-x 1 -y 1 -s 100 -c 1000 -q 1000 --queue-type stream"
  "t2|stream publish only, 100 B, confirms (window 1000), one write per message (as lapin, pika)|-x 1 -y 0 -s 100 -c 1000 --unbatched --queue-type stream"
  "s8|memory: 500 idle connections (one channel each)|--idle-connections 500"
  "s9|memory: 1 000 000 queued 16 B messages, no consumer|-x 1 -y 0 -s 16 -C 1000000"
)
# Scenarios that measure the broker's memory: Warren is restarted before each, so its
# resident set starts from a fresh process (freed memory of earlier runs would hide growth).
MEMORY_SCENARIOS=" s8 s9 "

log() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_pid() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }

build() {
  log "building warren-perf"
  cargo build --release -p warren-perf >&2
  local i
  for i in 1 2 3; do
    if cargo build --release --bin warren >"$WORK/build.log" 2>&1; then
      log "built warren"; return 0
    fi
    log "warren build failed (attempt $i, others may be editing src/); retrying in 60 s"
    tail -5 "$WORK/build.log" >&2
    sleep 60
  done
  [ -x "$WARREN" ] || { log "no warren binary"; exit 1; }
  log "using the existing $WARREN"
}

WARREN_PID=
start_warren() {
  if listening "$WARREN_PORT"; then
    log "port $WARREN_PORT is busy"; exit 1
  fi
  "$WARREN" --port "$WARREN_PORT" --management-port $((WARREN_PORT + 10000)) \
    --data-dir "$WORK/warren-data" --log-level warn \
    >"$WORK/warren.log" 2>&1 &
  WARREN_PID=$!
  for _ in $(seq 1 50); do listening "$WARREN_PORT" && return 0; sleep 0.1; done
  log "warren did not start"; cat "$WORK/warren.log" >&2; exit 1
}

ensure_warren() {
  if [ -z "$WARREN_PID" ] || ! kill -0 "$WARREN_PID" 2>/dev/null; then
    [ -n "$WARREN_PID" ] && log "warren (pid $WARREN_PID) is gone; log: $(tail -3 "$WORK/warren.log")" \
      && echo "$WARREN_PID" >>"$WORK/warren-deaths"
    start_warren
  fi
}

restart_warren() {
  if [ -n "$WARREN_PID" ] && kill -0 "$WARREN_PID" 2>/dev/null; then
    kill "$WARREN_PID"; wait "$WARREN_PID" 2>/dev/null || true
  fi
  WARREN_PID=
  rm -rf "$WORK/warren-data"
  for _ in $(seq 1 50); do listening "$WARREN_PORT" || break; sleep 0.1; done
  start_warren
}

# RabbitMQ keeps memory it freed (allocated_unused) and reuses it, so its RSS would not
# grow for a memory scenario run after load scenarios: restart it too.
restart_rabbit() {
  bash "$ROOT/../shared/rabbitmq-reference.sh" stop "$RABBIT_PORT" >&2
  for _ in $(seq 1 100); do listening "$RABBIT_PORT" || break; sleep 0.1; done
  bash "$ROOT/../shared/rabbitmq-reference.sh" start "$RABBIT_PORT" >&2
  sleep 5  # let the node finish booting plugins before measuring its baseline
}

cleanup() {
  if [ -n "$WARREN_PID" ] && kill -0 "$WARREN_PID" 2>/dev/null; then kill "$WARREN_PID"; fi
  rm -rf "$WORK/warren-data"
}

rabbit_pid() {
  local pid
  pid=$(pgrep -f "beam.smp.*ref$RABBIT_PORT" | head -1 || true)
  [ -n "$pid" ] || pid=$(port_pid "$RABBIT_PORT")
  echo "$pid"
}

# run BROKER SCENARIO_ID REP ARGS...
run_one() {
  local broker=$1 id=$2 rep=$3; shift 3
  local port pid
  if [ "$broker" = warren ]; then
    case "$MEMORY_SCENARIOS" in *" $id "*) restart_warren ;; esac
    ensure_warren; port=$WARREN_PORT; pid=$WARREN_PID
  else
    case "$MEMORY_SCENARIOS" in *" $id "*) restart_rabbit ;; esac
    port=$RABBIT_PORT; pid=$(rabbit_pid)
  fi
  log "$broker $id rep $rep: warren-perf $*"
  local out=$WORK/out.json rc=0
  timeout $((DURATION + DRAIN + 300)) "$PERF" --uri "amqp://guest:guest@127.0.0.1:$port/%2f" \
    -z "$DURATION" --drain "$DRAIN" --json --broker-pid "$pid" --label "$id" "$@" \
    >"$out" 2>"$WORK/$broker-$id-$rep.log" || rc=$?
  if [ ! -s "$out" ]; then
    echo '{}' >"$out"
    log "$broker $id: no result (exit $rc): $(tail -3 "$WORK/$broker-$id-$rep.log")"
  fi
  jq -c --arg run "$RUN_ID" --arg broker "$broker" --arg id "$id" --argjson rep "$rep" \
    --argjson rc "$rc" --arg args "$*" \
    '. + {run: $run, broker: $broker, scenario: $id, rep: $rep, exit_code: $rc, args: $args}' \
    "$out" >>"$RESULTS"
  jq -r 'if .idle_connections then "  \(.broker_bytes_per_connection) bytes per idle connection" else "  sent \(.send_rate) msg/s, received \(.receive_rate) msg/s, p99 \(.latency_us.p99) µs, lost \(.lost), broker \(.broker_cpu_us_per_msg) µs/msg, client \(.client_cpu_us_per_msg) µs/msg" end' "$out" >&2
  sleep 1
}

report() {
  local meta
  meta="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r)"
  meta="$meta; RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?')"
  meta="$meta; Warren $(git rev-parse --short HEAD)$(git diff --quiet -- src 2>/dev/null || echo '+uncommitted src changes')"
  python3 - "$RESULTS" "$ROOT/BENCHMARKS.md" "$meta" "${SCENARIO_TABLE[@]}" <<'PY'
import json, statistics, sys, os
results, out, meta, table = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rows = [json.loads(l) for l in open(results) if l.strip()]
# Each scenario's figures come from the latest run that measured it (a run may cover a
# subset, SCENARIOS="...").
latest = {}
for r in rows:
    sid = r.get("scenario")
    latest[sid] = max(latest.get(sid, ""), r.get("run", ""))
rows = [r for r in rows if r.get("run") == latest.get(r.get("scenario"))]
run = ", ".join(sorted(set(latest.values())))
scen_all = [t.split("|", 2) for t in table]
memory_ids = {"s8", "s9"}
scen = [t for t in scen_all if t[0] not in memory_ids]

def med(sid, broker, key, sub=None):
    vals = []
    for r in rows:
        if r.get("scenario") == sid and r.get("broker") == broker:
            v = r.get(key)
            if sub is not None and isinstance(v, dict):
                v = v.get(sub)
            if isinstance(v, (int, float)):
                vals.append(v)
    return statistics.median(vals) if vals else None

def total(sid, broker, key):
    return sum(r.get(key) or 0 for r in rows if r.get("scenario") == sid and r.get("broker") == broker)

def n(sid, broker):
    return sum(1 for r in rows if r.get("scenario") == sid and r.get("broker") == broker)

def fmt(v, d=0):
    if v is None:
        return "–"
    return f"{v:,.{d}f}".replace(",", " ")

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"

reps = max((r.get("rep", 1) for r in rows), default=1)
dur = statistics.median([r.get("duration_s", 0) for r in rows] or [0])
L = []
L.append("# Benchmarks: Warren vs RabbitMQ")
L.append("")
L.append("Generated by `bench/run.sh` with `warren-perf` (the PerfTest-like load generator in `perf/`).")
L.append(f"Run `{run}`: {reps} repetition(s) of ~{dur:.0f} s per scenario and broker, interleaved")
L.append(f"Warren / RabbitMQ / Warren / …; figures are medians over the repetitions. Machine: {meta}.")
L.append("Client, broker and anything else running share the same cores, over 127.0.0.1.")
L.append("")
L.append("## Throughput and cost")
L.append("")
L.append("Receive rate = deliveries per second over the run including the drain (for fanout: all 10 queues together).")
L.append("CPU µs/msg = process user+system CPU during the run divided by messages *published*.")
L.append("RSS = largest VmRSS sampled once a second during the run.")
L.append("")
L.append("| # | scenario | Warren send msg/s | RabbitMQ send msg/s | Warren recv msg/s | RabbitMQ recv msg/s | recv ratio W/R | Warren CPU µs/msg | RabbitMQ CPU µs/msg | Warren RSS MiB | RabbitMQ RSS MiB | lost W / R | client CPU µs/msg W / R |")
L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
for sid, desc, args in scen:
    if not n(sid, "warren") and not n(sid, "rabbitmq"):
        continue
    w, r = med(sid, "warren", "receive_rate"), med(sid, "rabbitmq", "receive_rate")
    rss = lambda b: (lambda v: v / 1024 if v else None)(med(sid, b, "broker_rss_max_kb"))
    L.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |".format(
        sid, desc,
        fmt(med(sid, "warren", "send_rate")), fmt(med(sid, "rabbitmq", "send_rate")),
        fmt(w), fmt(r), ratio(w, r),
        fmt(med(sid, "warren", "broker_cpu_us_per_msg"), 2), fmt(med(sid, "rabbitmq", "broker_cpu_us_per_msg"), 2),
        fmt(rss("warren")), fmt(rss("rabbitmq")),
        total(sid, "warren", "lost"), total(sid, "rabbitmq", "lost"),
        fmt(med(sid, "warren", "client_cpu_us_per_msg"), 1), fmt(med(sid, "rabbitmq", "client_cpu_us_per_msg"), 1)))
L.append("")
L.append("## Latency (µs, publish → delivery, from the timestamp in the body)")
L.append("")
L.append("Unlimited-rate scenarios measure queueing (the backlog a fast producer builds), not the broker's")
L.append("intrinsic latency; s5 (fixed 1000 msg/s) and s10 (fixed 20 000 msg/s) are the latency figures.")
L.append("")
L.append("| # | Warren p50 | Warren p99 | Warren p99.9 | Warren max | RabbitMQ p50 | RabbitMQ p99 | RabbitMQ p99.9 | RabbitMQ max | p99 ratio W/R |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for sid, desc, args in scen:
    if not n(sid, "warren") and not n(sid, "rabbitmq"):
        continue
    q = lambda b, p: med(sid, b, "latency_us", p)
    L.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        sid, fmt(q("warren", "p50")), fmt(q("warren", "p99")), fmt(q("warren", "p999")), fmt(q("warren", "max")),
        fmt(q("rabbitmq", "p50")), fmt(q("rabbitmq", "p99")), fmt(q("rabbitmq", "p999")), fmt(q("rabbitmq", "max")),
        ratio(q("warren", "p99"), q("rabbitmq", "p99"))))
L.append("")
def per_msg_bytes(sid, broker):
    vals = []
    for r in rows:
        if r.get("scenario") == sid and r.get("broker") == broker:
            a, b, sent = r.get("broker_rss_start_kb"), r.get("broker_rss_end_kb"), r.get("sent")
            if a is not None and b is not None and sent:
                vals.append((b - a) * 1024 / sent)
    return statistics.median(vals) if vals else None

if any(n(s, b) for s in memory_ids for b in ("warren", "rabbitmq")):
    L.append("## Memory")
    L.append("")
    L.append("Broker resident set (VmRSS) growth, Warren restarted fresh before each run.")
    L.append("")
    L.append("| # | measure | Warren | RabbitMQ | ratio W/R |")
    L.append("|---|---|---:|---:|---:|")
    w, r = med("s8", "warren", "broker_bytes_per_connection"), med("s8", "rabbitmq", "broker_bytes_per_connection")
    if w or r:
        L.append(f"| s8 | bytes per idle connection (500 connections, 5 s idle) | {fmt(w)} | {fmt(r)} | {ratio(w, r)} |")
    w, r = per_msg_bytes("s9", "warren"), per_msg_bytes("s9", "rabbitmq")
    if w or r:
        sw, sr = med("s9", "warren", "sent"), med("s9", "rabbitmq", "sent")
        L.append(f"| s9 | bytes per queued 16 B message ({fmt(sw)} / {fmt(sr)} queued) | {fmt(w)} | {fmt(r)} | {ratio(w, r)} |")
    L.append("")

# Chart: receive rate per scenario, Warren vs RabbitMQ (log scale), as a plain SVG.
import math
bars = [(sid, med(sid, "warren", "receive_rate"), med(sid, "rabbitmq", "receive_rate")) for sid, _, _ in scen]
bars = [b for b in bars if b[1] and b[2]]
if bars:
    W, rowh, left, top = 760, 46, 60, 40
    H = top + rowh * len(bars) + 40
    lo, hi = 3, 7  # 1e3 .. 1e7 msg/s
    x = lambda v: left + (W - left - 120) * (math.log10(max(v, 10 ** lo)) - lo) / (hi - lo)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">Received msg/s (log scale): Warren vs RabbitMQ, {run}</text>']
    for e in range(lo, hi + 1):
        gx = x(10 ** e)
        svg.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{H - 30}" stroke="#ddd"/>')
        svg.append(f'<text x="{gx:.1f}" y="{H - 14}" text-anchor="middle" fill="#555">1e{e}</text>')
    for i, (sid, w, r) in enumerate(bars):
        y = top + i * rowh
        svg.append(f'<text x="{left - 8}" y="{y + 22}" text-anchor="end">{sid}</text>')
        svg.append(f'<rect x="{left}" y="{y}" width="{x(w) - left:.1f}" height="16" fill="#c0392b"/>')
        svg.append(f'<rect x="{left}" y="{y + 18}" width="{x(r) - left:.1f}" height="16" fill="#7f8c8d"/>')
        svg.append(f'<text x="{x(w) + 4:.1f}" y="{y + 13}">{fmt(w)} ({w / r:.1f}×)</text>')
        svg.append(f'<text x="{x(r) + 4:.1f}" y="{y + 31}" fill="#555">{fmt(r)}</text>')
    svg.append(f'<rect x="{W - 150}" y="8" width="12" height="12" fill="#c0392b"/><text x="{W - 134}" y="18">Warren</text>')
    svg.append(f'<rect x="{W - 80}" y="8" width="12" height="12" fill="#7f8c8d"/><text x="{W - 64}" y="18">RabbitMQ</text>')
    svg.append('</svg>')
    open(os.path.join(os.path.dirname(out), "bench", "chart.svg"), "w").write("\n".join(svg) + "\n")
    L.append("![Received msg/s per scenario, Warren vs RabbitMQ](bench/chart.svg)")
    L.append("")

errs = [r for r in rows if r.get("errors") or r.get("exit_code")]
if errs:
    L.append("## Runs with errors or a non-zero exit")
    L.append("")
    for r in errs:
        L.append(f"- {r.get('broker')} {r.get('scenario')} rep {r.get('rep')}: exit {r.get('exit_code')}, lost {r.get('lost')}, errors {r.get('errors')}")
    L.append("")
L.append("## Reproduce")
L.append("")
L.append("```sh")
L.append("bash ../shared/rabbitmq-reference.sh start 5682   # reference RabbitMQ (the script also starts it)")
L.append("bench/run.sh                                    # 10 s x 3 repetitions; DURATION=5 REPS=1 for a quick look")
L.append("bench/run.sh --report-only                      # regenerate this file from bench/results.jsonl")
L.append("bench/profile.sh                                # instructions per message under callgrind (no RabbitMQ)")
L.append("bench/stream_rss.sh                             # streams: RSS with a 5 GiB stream, a tail and a replaying consumer (BROKER=rabbitmq for the reference)")
L.append("MESSAGES=1000000 SIZE=100 TAIL_RATE=0 bench/stream_rss.sh   # streams: replay of 1 M messages from first")
L.append("```")
L.append("")
L.append("Scenario arguments (plus `-z DURATION --drain 15 --json --broker-pid PID`):")
L.append("")
for sid, desc, args in scen_all:
    L.append(f"- {sid}: `warren-perf {args}`")
L.append("")
notes = ""
if os.path.exists(out):
    old = open(out).read()
    if "<!-- notes -->" in old:
        notes = old[old.index("<!-- notes -->"):]
L.append(notes or "<!-- notes -->\n## Notes\n\n(kept across regenerations: write observations below this marker)\n")
open(out, "w").write("\n".join(L).rstrip("\n") + "\n")
PY
  log "wrote BENCHMARKS.md"
}

if [ "${1:-}" = --report-only ]; then rmdir "$WORK"; report; exit 0; fi

trap cleanup EXIT
build
if ! listening "$RABBIT_PORT"; then bash "$ROOT/../shared/rabbitmq-reference.sh" start "$RABBIT_PORT" >&2; fi
[ -n "$(rabbit_pid)" ] || { log "cannot find RabbitMQ's pid"; exit 1; }
start_warren
RUN_ID=$(date -u +%Y-%m-%dT%H:%M:%SZ)
export RUN_ID
log "run $RUN_ID: ${DURATION} s x $REPS, warren pid $WARREN_PID, rabbitmq pid $(rabbit_pid)"
wanted=${SCENARIOS:-s1 u1 s2 u2 s3 u3 s4 s5 s6 s7 s10 o1 s8 s9}
for entry in "${SCENARIO_TABLE[@]}"; do
  IFS='|' read -r id _desc args <<<"$entry"
  case " $wanted " in *" $id "*) ;; *) continue ;; esac
  for rep in $(seq 1 "$REPS"); do
    # shellcheck disable=SC2086
    run_one warren "$id" "$rep" $args
    # shellcheck disable=SC2086
    run_one rabbitmq "$id" "$rep" $args
  done
done
if [ -s "$WORK/warren-deaths" ]; then log "warren had to be restarted $(wc -l <"$WORK/warren-deaths") time(s)"; fi
report
