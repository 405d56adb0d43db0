#!/usr/bin/env bash
# Shovel throughput: a backlog of N persistent messages in a RabbitMQ queue moved into
# Warren by a dynamic shovel defined on Warren (ack-mode on-confirm, src-delete-after
# queue-length), timed from the shovel's creation to its self-deletion. Not a test.
#
#   bench/shovel.sh                      # N=50000, 1 KiB, prefetch 1000
#   N=100000 SIZE=100 PREFETCH=200 RABBIT_PORT=5682 bench/shovel.sh
#   SHOVEL_ON=rabbitmq RABBIT_MGMT_PORT=15722 bench/shovel.sh   # RabbitMQ's own shovel
#
# SHOVEL_ON=rabbitmq defines the same shovel on RabbitMQ instead (its rabbitmq_shovel and
# rabbitmq_shovel_management plugins enabled, management on $RABBIT_MGMT_PORT), still
# moving RabbitMQ -> Warren, for comparison.
#
# RabbitMQ is the reference node from ../shared/rabbitmq-reference.sh on $RABBIT_PORT
# (started if not listening); Warren is started here on $WARREN_PORT with a fresh data dir.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50000}
SIZE=${SIZE:-1024}
PREFETCH=${PREFETCH:-1000}
RABBIT_PORT=${RABBIT_PORT:-5682}
WARREN_PORT=${WARREN_PORT:-5697}
MGMT_PORT=$((WARREN_PORT + 10000))
WORK=$(mktemp -d /tmp/warren-shovel-bench.XXXXXX)
if ! (exec 3<>/dev/tcp/127.0.0.1/$RABBIT_PORT) 2>/dev/null; then
  bash ../shared/rabbitmq-reference.sh start "$RABBIT_PORT"
fi
./target/release/warren --port "$WARREN_PORT" --management-port "$MGMT_PORT" \
  --data-dir "$WORK/data" --log-level warn >"$WORK/warren.log" 2>&1 &
WPID=$!
trap 'kill $WPID 2>/dev/null; wait $WPID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$MGMT_PORT) 2>/dev/null && break; sleep 0.1; done
/usr/bin/python3 - "$RABBIT_PORT" "$N" "$SIZE" <<'PY'
import pika, sys
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = pika.BlockingConnection(pika.ConnectionParameters('127.0.0.1', port))
ch = c.channel()
ch.queue_delete('shovel-bench')
ch.queue_declare('shovel-bench', durable=True)
body = b'x' * size
props = pika.BasicProperties(delivery_mode=2)
for i in range(n):
    ch.basic_publish('', 'shovel-bench', body, props)
ch.confirm_delivery()
ch.basic_publish('', 'shovel-bench', body, props)  # one confirmed: all earlier are in
print('backlog', ch.queue_declare('shovel-bench', passive=True).method.message_count)
c.close()
PY
API="http://127.0.0.1:$MGMT_PORT/api"
SRC="amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f"
DEST="amqp://"
SHOVEL_API=$API
if [ "${SHOVEL_ON:-warren}" = rabbitmq ]; then
  SHOVEL_API="http://127.0.0.1:${RABBIT_MGMT_PORT:-15672}/api"
  SRC="amqp://"
  DEST="amqp://guest:guest@127.0.0.1:$WARREN_PORT/%2f"
fi
start=$(date +%s.%N)
curl -sf -u guest:guest -X PUT -H 'content-type: application/json' "$SHOVEL_API/parameters/shovel/%2F/bench" \
  -d "{\"value\": {\"src-uri\": \"$SRC\", \"src-queue\": \"shovel-bench\",
       \"dest-uri\": \"$DEST\", \"dest-queue\": \"shovel-bench\", \"ack-mode\": \"on-confirm\",
       \"src-prefetch-count\": $PREFETCH, \"src-delete-after\": \"queue-length\"}}"
sleep 0.2
for _ in $(seq 1 6000); do
  [ "$(curl -s -u guest:guest "$SHOVEL_API/shovels")" = "[]" ] && break
  sleep 0.05
done
end=$(date +%s.%N)
moved=$(curl -s -u guest:guest "$API/queues/%2F/shovel-bench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"])')
python3 -c "import sys; n=$moved; t=$end-$start; print(f'shovel on ${SHOVEL_ON:-warren}: moved {n} messages of $SIZE B in {t:.2f} s: {n/t:,.0f} msg/s (prefetch $PREFETCH, on-confirm)')"
