#!/bin/bash
# Usage: OLD=/path/to/old/warren [NEW=target/release/warren] bench/before_after.sh
# before/after: old (36bef99) vs new (HEAD) warren, batched and unbatched 1p1c 16 B auto-ack, 8 s each, interleaved
PERF=${PERF:-target/release/warren-perf}
for rep in 1 2; do
 for b in old new; do
  bin=${OLD:?OLD=path of the old warren binary}; [ $b = new ] && bin=${NEW:-target/release/warren}
  d=$(mktemp -d); $bin --port 5790 --management-port 0 --data-dir $d --log-level warn & pid=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/5790) 2>/dev/null && break; sleep 0.1; done
  for mode in batched unbatched; do
   extra=""; [ $mode = unbatched ] && extra=--unbatched
   t0=$(awk '{print $14+$15}' /proc/$pid/stat)
   out=$($PERF --uri amqp://guest:guest@127.0.0.1:5790/%2f -x 1 -y 1 -s 16 -a $extra -z 8 2>&1 | grep -iE 'receiv|recv' | tail -1)
   t1=$(awk '{print $14+$15}' /proc/$pid/stat)
   echo "rep$rep $b $mode cpu_ticks=$((t1-t0)) | $out"
  done
  kill $pid; wait $pid 2>/dev/null; rm -rf $d
 done
done
