#!/bin/bash
# Round trip with Debian's amqp-tools (rabbitmq-c 0.11 CLIs) against 127.0.0.1:PORT.
#
#   bash tests/interop/amqp_tools.sh PORT
#
# Prints `pass NAME` / `FAIL NAME: expected ..., observed ...` per check and
# finally `N passed, N failed`; exits 1 if anything failed.  Every command is
# wrapped in `timeout 10`.  Expected outputs/texts were checked against
# RabbitMQ 3.10.
#
# Notes on the tools (amqp-tools 0.11.0):
#   * amqp-declare-queue prints the (possibly server-generated) queue name;
#   * amqp-get prints the raw body, exits 2 on get-empty and 1 on errors;
#   * amqp-consume pipes each body to a fresh run of <command>; put `--`
#     before the command so its options are not taken as amqp-consume's;
#   * amqp-delete-queue prints the message count from queue.delete-ok;
#   * --url amqp://host:port/ would select vhost "" -- use --server/--port.

set -u
PORT=${1:?usage: amqp_tools.sh PORT}
S=(--server 127.0.0.1 --port "$PORT" --username guest --password guest)
T="timeout 10"
PY=/usr/bin/python3
UNIQ="$(date +%s%N)-$$-$RANDOM"
Q="warren-interop-tools-$UNIQ"
Q2="warren-interop-tools-props-$UNIQ"
Q3="warren-interop-tools-big-$UNIQ"
TMP=$(mktemp -d)
PASSED=0
FAILED=0
GEN_Q=""

cleanup() {
    for q in "$Q" "$Q2" "$Q3" $GEN_Q; do
        $T amqp-delete-queue "${S[@]}" -q "$q" >/dev/null 2>&1
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "pass $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: expected $2, observed $3"; }
# check NAME EXPECTED OBSERVED
check() { if [ "$2" == "$3" ]; then pass "$1"; else fail "$1" "$(printf %q "$2")" "$(printf %q "$3")"; fi; }

# --- declare ---------------------------------------------------------------
out=$($T amqp-declare-queue "${S[@]}" -q "$Q"); rc=$?
check declare_named "0:$Q" "$rc:$out"
if [ "$rc" != 0 ]; then
    # broker unreachable or hung: don't spend 10 s per remaining command
    echo "FAIL remaining_checks: expected a reachable broker, observed first declare failing (rc $rc)"
    echo "$PASSED passed, $((FAILED + 1)) failed"
    exit 1
fi
out=$($T amqp-declare-queue "${S[@]}" -q "$Q"); rc=$?
check redeclare_named "0:$Q" "$rc:$out"
out=$($T amqp-declare-queue "${S[@]}" -q ""); rc=$?
GEN_Q="$out"
if [ "$rc" == 0 ] && [[ "$out" =~ ^amq\.gen-[A-Za-z0-9_-]{22}$ ]]; then pass declare_server_named
else fail declare_server_named "0:amq.gen-<22 chars>" "$rc:$out"; fi
out=$($T amqp-declare-queue "${S[@]}" -d -q "$Q" 2>&1); rc=$?
check redeclare_inequivalent_durable \
    "1:queue.declare: server channel error 406, message: PRECONDITION_FAILED - inequivalent arg 'durable' for queue '$Q' in vhost '/': received 'true' but current is 'false'" \
    "$rc:$out"

# --- publish ---------------------------------------------------------------
rcs=""
for i in 1 2 3; do
    $T amqp-publish "${S[@]}" -r "$Q" -C text/plain -p -H "x-seq: $i" -H "x-note: hello world" \
        -b "body number $i"
    rcs="$rcs$?"
done
check publish_with_properties "000" "$rcs"
printf 'line one\nline two\n' | $T amqp-publish "${S[@]}" -r "$Q" -l -C text/plain
check publish_line_buffered 0 "$?"
out=$($T "$PY" - "$PORT" "$Q" <<'EOF'
import sys, pika
p = pika.ConnectionParameters("127.0.0.1", int(sys.argv[1]), socket_timeout=5,
                              credentials=pika.PlainCredentials("guest", "guest"))
c = pika.BlockingConnection(p)
ok = c.channel().queue_declare(sys.argv[2], passive=True)
print(ok.method.message_count, ok.method.consumer_count)
c.close()
EOF
)
check queue_counts_after_publish "5 0" "$out"

# --- get -------------------------------------------------------------------
for i in 1 2 3; do
    out=$($T amqp-get "${S[@]}" -q "$Q"); rc=$?
    check "get_$i" "0:body number $i" "$rc:$out"
done

# --- consume -c N ------------------------------------------------------------
out=$($T amqp-consume "${S[@]}" -q "$Q" -c 2 -- sh -c 'cat; echo "|"'); rc=$?
# amqp-publish -l keeps each line's trailing newline in the body
check consume_count_2 "0:line one
|
line two
|" "$rc:$out"
$T amqp-get "${S[@]}" -q "$Q" >/dev/null 2>&1; rc=$?
check get_empty_exit_status 2 "$rc"

for b in alpha beta gamma delta; do $T amqp-publish "${S[@]}" -r "$Q" -b "$b"; done
out=$($T amqp-consume "${S[@]}" -q "$Q" -c 4 -p 1 cat); rc=$?
check consume_cat_prefetch_1 "0:alphabetagammadelta" "$rc:$out"
for b in one two three; do $T amqp-publish "${S[@]}" -r "$Q" -b "$b"; done
out=$($T amqp-consume "${S[@]}" -q "$Q" -c 3 -A cat); rc=$?
check consume_no_ack "0:onetwothree" "$rc:$out"

# consume from an exchange via a server-named exclusive queue bound with -e/-r.
# The binding appears asynchronously, so keep publishing (bounded) until the
# consumer has taken one message and exited.
KEY="warren-key-$UNIQ"
$T amqp-consume "${S[@]}" -e amq.direct -r "$KEY" -c 1 cat >"$TMP/ex.out" 2>"$TMP/ex.err" &
CPID=$!
n=0
while kill -0 "$CPID" 2>/dev/null && [ $n -lt 300 ]; do
    $T amqp-publish "${S[@]}" -e amq.direct -r "$KEY" -b "via-exchange"
    n=$((n + 1))
done
wait "$CPID"; rc=$?
check consume_exchange_binding "0:via-exchange" "$rc:$(cat "$TMP/ex.out")"

# --- properties as seen by another client ------------------------------------
$T amqp-declare-queue "${S[@]}" -q "$Q2" >/dev/null
$T amqp-publish "${S[@]}" -r "$Q2" -C application/json -E utf-8 -t reply.here -p \
    -H "x-trace: abc" -H "foo: bar baz" -b '{"a":1}'
out=$($T "$PY" - "$PORT" "$Q2" <<'EOF'
import sys, pika
p = pika.ConnectionParameters("127.0.0.1", int(sys.argv[1]), socket_timeout=5,
                              credentials=pika.PlainCredentials("guest", "guest"))
c = pika.BlockingConnection(p)
m, pr, b = c.channel().basic_get(sys.argv[2], auto_ack=True)
print(b.decode(), pr.content_type, pr.content_encoding, pr.reply_to, pr.delivery_mode,
      sorted(pr.headers.items()), m.redelivered)
c.close()
EOF
)
check properties_seen_by_pika \
    "{\"a\":1} application/json utf-8 reply.here 2 [('foo', 'bar baz'), ('x-trace', 'abc')] False" "$out"

# --- larger body through stdin ---------------------------------------------
$T amqp-declare-queue "${S[@]}" -q "$Q3" >/dev/null
head -c 300000 /dev/urandom | base64 -w 0 >"$TMP/big.in"      # 400000 bytes, > frame_max
$T amqp-publish "${S[@]}" -r "$Q3" <"$TMP/big.in"
$T amqp-get "${S[@]}" -q "$Q3" >"$TMP/big.out"; rc=$?
if [ "$rc" == 0 ] && cmp -s "$TMP/big.in" "$TMP/big.out"; then pass large_body_stdin
else fail large_body_stdin "0:identical 400000 bytes" "$rc:$(stat -c %s "$TMP/big.out") bytes"; fi

# --- delete ----------------------------------------------------------------
$T amqp-publish "${S[@]}" -r "$Q" -b "left-1"
$T amqp-publish "${S[@]}" -r "$Q" -b "left-2"
out=$($T amqp-delete-queue "${S[@]}" -q "$Q" -e 2>&1); rc=$?
check delete_if_empty_refused \
    "1:queue.delete: server channel error 406, message: PRECONDITION_FAILED - queue '$Q' in vhost '/' not empty" \
    "$rc:$out"
out=$($T amqp-delete-queue "${S[@]}" -q "$Q"); rc=$?
check delete_returns_count "0:2" "$rc:$out"
out=$($T amqp-get "${S[@]}" -q "$Q" 2>&1); rc=$?
check get_deleted_queue \
    "1:basic.get: server channel error 404, message: NOT_FOUND - no queue '$Q' in vhost '/'" "$rc:$out"
out=$($T amqp-delete-queue "${S[@]}" -q "$Q2"); rc=$?
check delete_empty_queue "0:0" "$rc:$out"
if [ -n "$GEN_Q" ]; then
    out=$($T amqp-delete-queue "${S[@]}" -q "$GEN_Q"); rc=$?
    check delete_server_named "0:0" "$rc:$out"
fi

# --- authentication ----------------------------------------------------------
out=$($T amqp-declare-queue --server 127.0.0.1 --port "$PORT" --username guest \
    --password "wrong-$UNIQ" -q "$Q" 2>&1); rc=$?
check wrong_password \
    "1:logging in to AMQP server: server connection error 403, message: ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile." \
    "$rc:$out"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" == 0 ]
