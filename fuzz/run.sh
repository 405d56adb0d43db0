#!/usr/bin/env bash
# Runs every fuzz target (or those named after the time) for SECONDS each (default 600)
# with cargo-fuzz (nightly, libFuzzer, AddressSanitizer), and prints executions and crashes
# per target. Seeds come from fuzz/corpus/<target>/ (kept in git, read only); what the
# fuzzer finds goes to fuzz/target/corpus/<target>/ and crashes to fuzz/artifacts/<target>/.
# Needs: rustup toolchain nightly, `cargo install cargo-fuzz`.
#   fuzz/run.sh            # 600 s per target
#   fuzz/run.sh 60 frame   # 60 s, frame only
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
printf '%-16s %12s %8s %8s\n' target executions exec/s crashes
status=0
for t in "${targets[@]}"; do
  work=target/corpus/$t
  mkdir -p "$work" "artifacts/$t"
  log=target/fuzz-$t.log
  before=$(find "artifacts/$t" -type f | wc -l)
  # -rss_limit_mb and -timeout make out-of-memory and hangs (1 input > 10 s) crashes too.
  cargo +nightly fuzz run -O "$t" "$work" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1 || true
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
  rate=$(( execs / (secs > 0 ? secs : 1) ))
  crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
  printf '%-16s %12s %8s %8s\n' "$t" "$execs" "$rate" "$crashes"
  [ "$crashes" -eq 0 ] || status=1
done
exit $status
