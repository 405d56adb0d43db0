#!/usr/bin/env bash
# Runs every fuzz target (or those named after the time) for SECONDS each (default 600)
# with cargo-fuzz (nightly, libFuzzer, AddressSanitizer), and prints executions and crashes
# per target. Seeds come from fuzz/corpus/<target>/ (kept in git, read only); what the
# fuzzer finds goes to fuzz/target/corpus/<target>/ and crashes to fuzz/artifacts/<target>/.
# Needs: rustup toolchain nightly, `cargo install cargo-fuzz`.
#   fuzz/run.sh            # 600 s per target
#   fuzz/run.sh 60 frame   # 60 s, frame only
#   FUZZ_JOBS=10 nice -n 19 fuzz/run.sh 600   # every target at once, 10 minutes each
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
# FUZZ_JOBS=N runs up to N targets at once (each still gets SECONDS of wall time).
jobs_max=${FUZZ_JOBS:-1}
results=$(mktemp)
run_one() {
  local t=$1 work=target/corpus/$1 log=target/fuzz-$1.log before execs rate crashes
  mkdir -p "$work" "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  # -rss_limit_mb and -timeout make out-of-memory and hangs (1 input > 10 s) crashes too.
  cargo +nightly fuzz run -O "$t" "$work" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1 || true
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
  rate=$(( execs / (secs > 0 ? secs : 1) ))
  crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
  printf '%-16s %12s %8s %8s\n' "$t" "$execs" "$rate" "$crashes" >>"$results"
}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  run_one "$t" &
done
wait
printf '%-16s %12s %8s %8s\n' target executions exec/s crashes
cat "$results"
status=0
awk '$4 != 0 {exit 1}' "$results" || status=1
rm -f "$results"
exit $status
