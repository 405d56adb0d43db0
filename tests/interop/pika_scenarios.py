#!/usr/bin/python3
"""AMQP 0-9-1 interop scenarios driven by pika's BlockingConnection.

Usage: /usr/bin/python3 tests/interop/pika_scenarios.py --port PORT [--only NAME ...]

Every scenario runs against 127.0.0.1:PORT (guest/guest, vhost "/"), prints
`pass NAME` or `FAIL NAME: expected ..., observed ...`, and the run ends with
the line `N passed, N failed`.  Exit status is 1 if anything failed.

The expected values (reply codes, reply texts, counts, flags) were checked
against RabbitMQ 3.10; a broker that claims RabbitMQ compatibility must
produce exactly the same observable results.

Rules followed by every scenario:
  * unique queue / exchange names (uuid based), cleaned up afterwards;
  * no sleeps used for synchronisation -- only pika blocking calls,
    bounded `process_data_events(time_limit=...)` loops and bounded
    `basic_get` polling;
  * socket timeouts plus a per-scenario SIGALRM so that a hung broker fails
    the scenario instead of hanging the run.
"""

import argparse
import datetime
import decimal
import signal
import sys
import time
import traceback
import uuid

import pika
import pika.exceptions as pex

HOST = "127.0.0.1"
PORT = 5672
SCENARIO_ALARM_SECONDS = 10
CLEANUP_ALARM_SECONDS = 5
GLOBAL_BUDGET_SECONDS = 90  # a hung broker must not stall the run for minutes
WAIT = 3.0  # upper bound for waiting on deliveries that must arrive


class Failure(Exception):
    def __init__(self, expected, observed):
        Exception.__init__(self, "expected %s, observed %s" % (expected, observed))
        self.expected = expected
        self.observed = observed


class ScenarioTimeout(Exception):
    pass


def check(what, expected, observed):
    if expected != observed:
        raise Failure("%s == %r" % (what, expected), repr(observed))


def check_true(what, cond, observed):
    if not cond:
        raise Failure(what, repr(observed))


def params(user="guest", password="guest"):
    return pika.ConnectionParameters(
        host=HOST,
        port=PORT,
        virtual_host="/",
        credentials=pika.PlainCredentials(user, password),
        socket_timeout=5,
        blocked_connection_timeout=5,
        stack_timeout=8,
        connection_attempts=1,
        retry_delay=0,
        heartbeat=0,
    )


class Ctx:
    """Per-scenario resources: connections, unique names, cleanup."""

    def __init__(self, name):
        self.name = name
        self.conns = []
        self.queues = []
        self.exchanges = []

    def conn(self):
        c = pika.BlockingConnection(params())
        self.conns.append(c)
        return c

    def channel(self):
        return self.conn().channel()

    def qname(self, tag="q"):
        n = "warren-interop-%s-%s-%s" % (self.name, tag, uuid.uuid4().hex[:12])
        self.queues.append(n)
        return n

    def xname(self, tag="x"):
        n = "warren-interop-%s-%s-%s" % (self.name, tag, uuid.uuid4().hex[:12])
        self.exchanges.append(n)
        return n

    def track_queue(self, n):
        self.queues.append(n)

    def cleanup(self):
        for c in self.conns:
            try:
                if c.is_open:
                    c.close()
            except Exception:
                pass
        if not self.queues and not self.exchanges:
            return
        try:
            c = pika.BlockingConnection(params())
        except Exception:
            return
        try:
            ch = None
            for kind, names in (("q", self.queues), ("x", self.exchanges)):
                for n in names:
                    try:
                        if ch is None or not ch.is_open:
                            ch = c.channel()
                        if kind == "q":
                            ch.queue_delete(n)
                        else:
                            ch.exchange_delete(n)
                    except Exception:
                        ch = None
        finally:
            try:
                c.close()
            except Exception:
                pass


# ---------------------------------------------------------------------------
# helpers


def confirmed_channel(ctx):
    ch = ctx.channel()
    ch.confirm_delivery()
    return ch


def publish(ch, rk, body, exchange="", props=None, mandatory=False):
    ch.basic_publish(exchange=exchange, routing_key=rk, body=body,
                     properties=props, mandatory=mandatory)


def get_within(ch, queue, deadline_s=WAIT, auto_ack=True):
    """Poll basic_get until a message arrives or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=auto_ack)
        if m is not None:
            return m, p, b
        if time.monotonic() >= deadline:
            return None, None, None
        ch.connection.process_data_events(time_limit=0.02)


def drain_bodies(ch, queue, limit=100):
    """basic_get (auto-ack) until get-empty; bounded."""
    out = []
    for _ in range(limit):
        m, _p, b = ch.basic_get(queue, auto_ack=True)
        if m is None:
            break
        out.append(b)
    return out


def collect(conn, box, n, deadline_s=WAIT):
    """Run the I/O loop until len(box) >= n or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while len(box) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    return box


def reply_text(text):
    """RabbitMQ's rule for reply-text (a shortstr): if the full text is longer
    than 255 bytes it is cut to its first 252 bytes followed by '...'."""
    raw = text.encode("utf-8")
    if len(raw) > 255:
        return (raw[:252] + b"...").decode("utf-8")
    return text


def expect_channel_close(fn, code, text):
    try:
        fn()
    except pex.ChannelClosedByBroker as e:
        if text is None:
            check("channel close code", code, e.reply_code)
        else:
            check("channel close (code, text)", (code, text), (e.reply_code, e.reply_text))
        return
    raise Failure("ChannelClosedByBroker(%d, %r)" % (code, text), "no exception")


def message_count(ctx, queue):
    ch = ctx.channel()
    ok = ch.queue_declare(queue, passive=True)
    n = ok.method.message_count
    ch.close()
    return n


# ---------------------------------------------------------------------------
# scenarios

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


@scenario
def queue_declare_server_named(ctx):
    ch = ctx.channel()
    ok = ch.queue_declare("", exclusive=True)
    q = ok.method.queue
    ctx.track_queue(q)
    check_true("server-named queue starts with 'amq.gen-'", q.startswith("amq.gen-"), q)
    check("declare-ok message_count", 0, ok.method.message_count)
    check("declare-ok consumer_count", 0, ok.method.consumer_count)
    # the name is usable for publish/get on the default exchange
    ch.confirm_delivery()
    publish(ch, q, b"hello")
    m, _p, b = get_within(ch, q)
    check("body via server-named queue", b"hello", b)


@scenario
def queue_declare_ok_counts(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ok = ch.queue_declare(q)
    check("declare-ok queue name", q, ok.method.queue)
    check("fresh declare-ok counts", (0, 0), (ok.method.message_count, ok.method.consumer_count))
    for i in range(3):
        publish(ch, q, b"m%d" % i)
    ok = ch.queue_declare(q)
    check("redeclare counts after 3 publishes", (3, 0),
          (ok.method.message_count, ok.method.consumer_count))
    # a consumer on another channel, prefetch 1 -> 1 unacked, 2 ready
    ch2 = ctx.channel()
    ch2.basic_qos(prefetch_count=1)
    got = []
    ch2.basic_consume(q, lambda c, m, p, b: got.append(b))
    collect(ch2.connection, got, 1)
    check("consumer got first message", [b"m0"], got)
    ok = ch.queue_declare(q, passive=True)
    check("passive counts with 1 consumer, 1 unacked", (2, 1),
          (ok.method.message_count, ok.method.consumer_count))


@scenario
def queue_declare_passive_existing(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q, durable=True)
    publish(ch, q, b"x")
    ok = ch.queue_declare(q, passive=True)
    check("passive declare-ok", (q, 1, 0),
          (ok.method.queue, ok.method.message_count, ok.method.consumer_count))
    # passive declare ignores the other flags
    ok = ch.queue_declare(q, passive=True, durable=False, auto_delete=True)
    check("passive declare with mismatching flags", (q, 1), (ok.method.queue, ok.method.message_count))
    check("channel still open", True, ch.is_open)


@scenario
def queue_declare_passive_missing(ctx):
    ch = ctx.channel()
    q = "warren-interop-missing-" + uuid.uuid4().hex
    expect_channel_close(lambda: ch.queue_declare(q, passive=True),
                         404, "NOT_FOUND - no queue '%s' in vhost '/'" % q)
    check("channel closed", True, ch.is_closed)
    check("connection still open", True, ch.connection.is_open)
    # connection still usable
    ch2 = ch.connection.channel()
    ok = ch2.queue_declare("", exclusive=True)
    check_true("new channel works", ok.method.queue.startswith("amq.gen-"), ok.method.queue)


@scenario
def queue_redeclare_inequivalent(ctx):
    ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, durable=False)
    expect_channel_close(
        lambda: ch.queue_declare(q, durable=True), 406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '%s' in vhost '/': "
        "received 'true' but current is 'false'" % q)


@scenario
def exchange_declare_types(ctx):
    ch = ctx.channel()
    for t in ("direct", "fanout", "topic", "headers"):
        x = ctx.xname(t)
        ok = ch.exchange_declare(x, exchange_type=t)
        check("exchange.declare-ok for %s" % t, "Exchange.DeclareOk", ok.method.NAME)
        ok = ch.exchange_declare(x, exchange_type=t)  # idempotent redeclare
        check("redeclare %s" % t, "Exchange.DeclareOk", ok.method.NAME)
        ok = ch.exchange_declare(x, passive=True)
        check("passive %s" % t, "Exchange.DeclareOk", ok.method.NAME)
    # built-in exchanges exist
    for x in ("amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"):
        ok = ch.exchange_declare(x, passive=True)
        check("passive %s" % x, "Exchange.DeclareOk", ok.method.NAME)


@scenario
def exchange_declare_errors(ctx):
    ch = ctx.channel()
    x = "warren-interop-nox-" + uuid.uuid4().hex
    expect_channel_close(lambda: ch.exchange_declare(x, passive=True),
                         404, "NOT_FOUND - no exchange '%s' in vhost '/'" % x)
    ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, exchange_type="direct")
    expect_channel_close(
        lambda: ch.exchange_declare(x, exchange_type="fanout"), 406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '%s' in vhost '/': "
        "received 'fanout' but current is 'direct'" % x)
    ch = ctx.channel()
    bad = "amq.warren-" + uuid.uuid4().hex[:8]
    expect_channel_close(
        lambda: ch.exchange_declare(bad, exchange_type="direct"), 403,
        "ACCESS_REFUSED - exchange name '%s' contains reserved prefix 'amq.*'" % bad)


@scenario
def publish_to_missing_exchange(ctx):
    ch = ctx.channel()
    x = "warren-interop-nox-" + uuid.uuid4().hex
    # basic.publish is async; the error shows up on the next synchronous call
    def go():
        ch.basic_publish(exchange=x, routing_key="k", body=b"b")
        ch.queue_declare("", exclusive=True)
    expect_channel_close(go, 404, "NOT_FOUND - no exchange '%s' in vhost '/'" % x)


@scenario
def default_exchange_routing(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    publish(ch, q, b"via-default")
    ch.basic_publish(exchange="", routing_key=q, body=b"second")
    check("bodies", [b"via-default", b"second"], drain_bodies(ch, q))
    # binding to the default exchange is forbidden
    expect_channel_close(
        lambda: ch.queue_bind(q, "", routing_key="k"), 403,
        "ACCESS_REFUSED - operation not permitted on the default exchange")


@scenario
def direct_exchange_routing(ctx):
    ch = confirmed_channel(ctx)
    x = ctx.xname()
    ch.exchange_declare(x, exchange_type="direct")
    qa, qb, qc = ctx.qname("a"), ctx.qname("b"), ctx.qname("c")
    for q in (qa, qb, qc):
        ch.queue_declare(q)
    ch.queue_bind(qa, x, routing_key="red")
    ch.queue_bind(qb, x, routing_key="red")
    ch.queue_bind(qb, x, routing_key="green")
    ch.queue_bind(qc, x, routing_key="blue")
    publish(ch, "red", b"r1", exchange=x)
    publish(ch, "green", b"g1", exchange=x)
    publish(ch, "yellow", b"y1", exchange=x)  # unroutable, not mandatory -> dropped
    publish(ch, "blue", b"b1", exchange=x)
    check("queue a", [b"r1"], drain_bodies(ch, qa))
    check("queue b", [b"r1", b"g1"], drain_bodies(ch, qb))
    check("queue c", [b"b1"], drain_bodies(ch, qc))
    # unbind stops routing
    ch.queue_unbind(qb, x, routing_key="red")
    publish(ch, "red", b"r2", exchange=x)
    check("queue a after unbind of b", [b"r2"], drain_bodies(ch, qa))
    check("queue b after unbind", [], drain_bodies(ch, qb))


@scenario
def fanout_exchange_routing(ctx):
    ch = confirmed_channel(ctx)
    x = ctx.xname()
    ch.exchange_declare(x, exchange_type="fanout")
    qs = [ctx.qname(str(i)) for i in range(3)]
    for i, q in enumerate(qs):
        ch.queue_declare(q)
        ch.queue_bind(q, x, routing_key="ignored-%d" % i)
    publish(ch, "anything", b"f1", exchange=x)
    publish(ch, "", b"f2", exchange=x)
    for q in qs:
        check("fanout queue %s" % q[-12:], [b"f1", b"f2"], drain_bodies(ch, q))


@scenario
def topic_exchange_routing(ctx):
    ch = confirmed_channel(ctx)
    x = ctx.xname()
    ch.exchange_declare(x, exchange_type="topic")
    patterns = {
        "star": "*.orange.*",
        "hash_tail": "lazy.#",
        "star_tail": "*.*.rabbit",
        "hash_only": "#",
        "exact": "quick.orange.fox",
        "hash_mid": "a.#.z",
    }
    qs = {}
    for tag, pat in patterns.items():
        q = ctx.qname(tag)
        ch.queue_declare(q)
        ch.queue_bind(q, x, routing_key=pat)
        qs[tag] = q
    keys = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
            "lazy.brown.fox", "lazy", "quick.brown.fox", "orange",
            "quick.orange.male.rabbit", "a.z", "a.b.c.z", "a.b.c", ""]
    for k in keys:
        publish(ch, k, k.encode() or b"<empty>", exchange=x)
    expected = {
        "star": [b"quick.orange.rabbit", b"lazy.orange.elephant", b"quick.orange.fox"],
        "hash_tail": [b"lazy.orange.elephant", b"lazy.brown.fox", b"lazy"],
        "star_tail": [b"quick.orange.rabbit"],
        "hash_only": [k.encode() or b"<empty>" for k in keys],
        "exact": [b"quick.orange.fox"],
        "hash_mid": [b"a.z", b"a.b.c.z"],
    }
    for tag, q in qs.items():
        check("topic %s (%s)" % (tag, patterns[tag]), expected[tag], drain_bodies(ch, q))


@scenario
def headers_exchange_routing(ctx):
    ch = confirmed_channel(ctx)
    x = ctx.xname()
    ch.exchange_declare(x, exchange_type="headers")
    q_all, q_any, q_empty = ctx.qname("all"), ctx.qname("any"), ctx.qname("empty")
    for q in (q_all, q_any, q_empty):
        ch.queue_declare(q)
    ch.queue_bind(q_all, x, arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(q_any, x, arguments={"x-match": "any", "format": "zip", "type": "log"})
    ch.queue_bind(q_empty, x, arguments={})  # x-match defaults to all; no keys -> matches all
    msgs = [
        (b"m1", {"format": "pdf", "type": "report"}),
        (b"m2", {"format": "pdf", "type": "report", "extra": 1}),
        (b"m3", {"format": "pdf"}),
        (b"m4", {"format": "zip", "type": "report"}),
        (b"m5", {"type": "log"}),
        (b"m6", None),
        (b"m7", {"format": "ZIP"}),
    ]
    for body, hdrs in msgs:
        publish(ch, "rk-ignored", body, exchange=x, props=pika.BasicProperties(headers=hdrs))
    check("x-match all", [b"m1", b"m2"], drain_bodies(ch, q_all))
    check("x-match any", [b"m4", b"m5"], drain_bodies(ch, q_any))
    check("no binding args", [b"m1", b"m2", b"m3", b"m4", b"m5", b"m6", b"m7"],
          drain_bodies(ch, q_empty))


@scenario
def consume_manual_ack(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(5):
        publish(ch, q, b"c%d" % i)
    got = []

    def on_msg(c, m, p, b):
        got.append((m.delivery_tag, m.redelivered, m.routing_key, m.exchange, b))
        c.basic_ack(m.delivery_tag)

    tag = ch.basic_consume(q, on_msg)
    check_true("consumer tag non-empty", bool(tag), tag)
    collect(ch.connection, got, 5)
    check("deliveries (tag, redelivered, rk, exchange, body)",
          [(i + 1, False, q, "", b"c%d" % i) for i in range(5)], got)
    ok = ch.queue_declare(q, passive=True)
    check("after acks (messages, consumers)", (0, 1),
          (ok.method.message_count, ok.method.consumer_count))
    ch.basic_cancel(tag)
    ok = ch.queue_declare(q, passive=True)
    check("after cancel consumers", 0, ok.method.consumer_count)


@scenario
def consume_no_ack_and_cancel(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True,
                           consumer_tag="warren-ctag-" + uuid.uuid4().hex[:6])
    check_true("explicit consumer tag echoed", tag.startswith("warren-ctag-"), tag)
    publish(ch, q, b"a1")
    publish(ch, q, b"a2")
    collect(ch.connection, got, 2)
    check("auto-ack deliveries", [b"a1", b"a2"], got)
    ch.basic_cancel(tag)
    publish(ch, q, b"after-cancel")
    check("message stays queued after cancel", 1, ch.queue_declare(q, passive=True).method.message_count)
    check("body", [b"after-cancel"], drain_bodies(ch, q))
    # closing the channel of an auto-ack consumer loses nothing further: queue empty
    check("queue empty", 0, ch.queue_declare(q, passive=True).method.message_count)


@scenario
def consume_unacked_requeued_on_channel_close(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(3):
        publish(ch, q, b"u%d" % i)
    ch2 = ctx.channel()
    got = []
    ch2.basic_consume(q, lambda c, m, p, b: got.append(b))
    collect(ch2.connection, got, 3)
    check("delivered unacked", [b"u0", b"u1", b"u2"], got)
    check("ready while unacked", 0, ch.queue_declare(q, passive=True).method.message_count)
    ch2.close()
    check("ready after channel close", 3, ch.queue_declare(q, passive=True).method.message_count)
    res = []
    for _ in range(3):
        m, _p, b = ch.basic_get(q, auto_ack=True)
        res.append((m.redelivered, b))
    check("requeued order and redelivered flag", [(True, b"u0"), (True, b"u1"), (True, b"u2")], res)


@scenario
def round_robin_two_consumers(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    conn = ctx.conn()
    c1, c2 = conn.channel(), conn.channel()
    got = []
    c1.basic_consume(q, lambda c, m, p, b: (got.append(("c1", b)), c.basic_ack(m.delivery_tag)))
    c2.basic_consume(q, lambda c, m, p, b: (got.append(("c2", b)), c.basic_ack(m.delivery_tag)))
    check("consumer_count", 2, ch.queue_declare(q, passive=True).method.consumer_count)
    for i in range(6):
        publish(ch, q, b"r%d" % i)
    collect(conn, got, 6)
    check("all bodies in order", [b"r%d" % i for i in range(6)], sorted([b for _, b in got]))
    by = {"c1": [b for who, b in got if who == "c1"], "c2": [b for who, b in got if who == "c2"]}
    check("per-consumer counts", (3, 3), (len(by["c1"]), len(by["c2"])))
    # strict alternation: consecutive messages go to different consumers
    order = {b: who for who, b in got}
    seq = [order[b"r%d" % i] for i in range(6)]
    check_true("alternating consumers", all(seq[i] != seq[i + 1] for i in range(5)), seq)


@scenario
def prefetch_bounds_unacked(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(5):
        publish(ch, q, b"p%d" % i)
    cch = ctx.channel()
    cch.basic_qos(prefetch_count=2)
    got = []
    cch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    collect(cch.connection, got, 2)
    # ready count is stable at 3 because the limit holds the rest back
    check("ready with prefetch 2", 3, ch.queue_declare(q, passive=True).method.message_count)
    cch.connection.process_data_events(time_limit=0.2)
    check("delivered with prefetch 2", [(1, b"p0"), (2, b"p1")], got)
    cch.basic_ack(1)
    collect(cch.connection, got, 3)
    check("ready after one ack", 2, ch.queue_declare(q, passive=True).method.message_count)
    cch.connection.process_data_events(time_limit=0.2)
    check("delivered after one ack", [(1, b"p0"), (2, b"p1"), (3, b"p2")], got)
    cch.basic_ack(3, multiple=True)
    collect(cch.connection, got, 5)
    check("rest delivered", [b"p3", b"p4"], [b for _, b in got[3:]])


@scenario
def basic_get_message_count(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(3):
        publish(ch, q, b"g%d" % i)
    seen = []
    for _ in range(3):
        m, _p, b = ch.basic_get(q, auto_ack=True)
        seen.append((m.message_count, m.delivery_tag, m.redelivered, m.exchange, m.routing_key, b))
    check("get-ok fields (message_count, tag, redelivered, exchange, rk, body)",
          [(2, 1, False, "", q, b"g0"), (1, 2, False, "", q, b"g1"), (0, 3, False, "", q, b"g2")],
          seen)


@scenario
def basic_get_empty(ctx):
    ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    res = ch.basic_get(q, auto_ack=False)
    check("get-empty", (None, None, None), res)
    res = ch.basic_get(q, auto_ack=True)
    check("get-empty (auto_ack)", (None, None, None), res)
    missing = "warren-interop-missing-" + uuid.uuid4().hex
    expect_channel_close(lambda: ch.basic_get(missing),
                         404, "NOT_FOUND - no queue '%s' in vhost '/'" % missing)


@scenario
def nack_requeue_redelivered(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    publish(ch, q, b"n1")
    publish(ch, q, b"n2")
    m, _p, b = ch.basic_get(q)
    check("first get", (False, b"n1", 1), (m.redelivered, b, m.message_count))
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, _p, b = get_within(ch, q, auto_ack=False)
    check("requeued message back at head, redelivered",
          (True, b"n1", 1, 2), (m.redelivered, b, m.message_count, m.delivery_tag))
    ch.basic_ack(m.delivery_tag)
    m, _p, b = ch.basic_get(q)
    check("next message not redelivered", (False, b"n2"), (m.redelivered, b))
    ch.basic_ack(m.delivery_tag)
    check("queue empty", (None, None, None), ch.basic_get(q))


@scenario
def nack_multiple_requeue(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(3):
        publish(ch, q, b"nm%d" % i)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    check("tags", [1, 2, 3], tags)
    ch.basic_nack(3, multiple=True, requeue=True)
    res = []
    for _ in range(3):
        m, _p, b = get_within(ch, q, auto_ack=True)
        res.append((m.redelivered, b) if m else None)
    check("all requeued in original order", [(True, b"nm0"), (True, b"nm1"), (True, b"nm2")], res)


@scenario
def reject_without_requeue(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    publish(ch, q, b"rj")
    m, _p, b = ch.basic_get(q)
    check("got", b"rj", b)
    ch.basic_reject(m.delivery_tag, requeue=False)
    check("gone after reject(requeue=False)", (None, None, None), ch.basic_get(q))
    check("message_count", 0, ch.queue_declare(q, passive=True).method.message_count)
    # reject with requeue brings it back
    publish(ch, q, b"rj2")
    m, _p, b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, _p, b = get_within(ch, q)
    check("reject(requeue=True) -> redelivered", (True, b"rj2"), (m.redelivered, b))


@scenario
def multiple_ack(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(4):
        publish(ch, q, b"ma%d" % i)
    conn = ctx.conn()
    c2 = conn.channel()
    tags = [c2.basic_get(q)[0].delivery_tag for _ in range(4)]
    check("tags", [1, 2, 3, 4], tags)
    c2.basic_ack(3, multiple=True)   # acks 1,2,3
    c2.close()                       # tag 4 is requeued
    res = drain_bodies(ch, q)
    check("only the unacked message is requeued", [b"ma3"], res)


@scenario
def unknown_delivery_tag_ack(ctx):
    ch = ctx.channel()
    def go():
        ch.basic_ack(99)
        ch.queue_declare("", exclusive=True)  # synchronous round trip surfaces the close
    expect_channel_close(go, 406, "PRECONDITION_FAILED - unknown delivery tag 99")
    check("connection still open", True, ch.connection.is_open)


@scenario
def double_ack(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    publish(ch, q, b"d")
    m, _p, _b = ch.basic_get(q)
    def go():
        ch.basic_ack(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)
        ch.queue_declare(q, passive=True)
    expect_channel_close(go, 406, "PRECONDITION_FAILED - unknown delivery tag %d" % m.delivery_tag)


@scenario
def confirm_publish_ok(ctx):
    ch = ctx.channel()
    ok = ch.confirm_delivery()
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(10):
        r = ch.basic_publish("", q, b"cf%d" % i)
        check("basic_publish return with confirms", None, r)
    # unroutable but not mandatory: still acked, no exception
    ch.basic_publish("", "warren-interop-nowhere-" + uuid.uuid4().hex, b"lost")
    check("message_count", 10, ch.queue_declare(q, passive=True).method.message_count)


@scenario
def confirm_mandatory_unroutable(ctx):
    ch = ctx.channel()
    ch.confirm_delivery()
    rk = "warren-interop-nowhere-" + uuid.uuid4().hex
    try:
        ch.basic_publish("", rk, b"bounce", mandatory=True,
                         properties=pika.BasicProperties(message_id="mid-1"))
    except pex.UnroutableError as e:
        check("returned message count", 1, len(e.messages))
        rm = e.messages[0]
        check("basic.return (code, text, exchange, rk)", (312, "NO_ROUTE", "", rk),
              (rm.method.reply_code, rm.method.reply_text, rm.method.exchange, rm.method.routing_key))
        check("returned body/props", (b"bounce", "mid-1"), (rm.body, rm.properties.message_id))
    else:
        raise Failure("UnroutableError", "no exception")
    # channel remains usable
    check("channel open", True, ch.is_open)
    q = ctx.qname()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"routable", mandatory=True)
    check("routable mandatory publish delivered", [b"routable"], drain_bodies(ch, q))


@scenario
def mandatory_return_without_confirms(ctx):
    ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, exchange_type="direct")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(
        (m.reply_code, m.reply_text, m.exchange, m.routing_key, b)))
    ch.basic_publish(x, "nokey", b"ret", mandatory=True)
    # a synchronous round trip; the return precedes the reply on the channel
    ch.exchange_declare(x, passive=True)
    collect(ch.connection, returned, 1)
    check("basic.return", [(312, "NO_ROUTE", x, "nokey", b"ret")], returned)


@scenario
def properties_round_trip(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    ts = 1700000000
    headers = {
        "str": "héllo wörld",
        "int": 42,
        "neg": -7,
        "big": 2 ** 40,
        "true": True,
        "false": False,
        "bytes": b"\x00\x01\xfe\xff",
        "decimal": decimal.Decimal("3.14"),
        "datetime": datetime.datetime(2023, 11, 14, 22, 13, 20),
        "nested": {"a": 1, "b": {"c": "deep", "l": [1, "two", False]}},
        "list": [1, "x", True, {"k": "v"}, [2, 3], b"bin"],
        "none": None,
        "empty_str": "",
        "empty_list": [],
        "empty_table": {},
    }
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        headers=headers,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-123",
        reply_to="reply.queue",
        expiration="60000",
        message_id="msg-456",
        timestamp=ts,
        type="order.created",
        user_id="guest",
        app_id="warren-interop",
    )
    body = b'{"k": 1}'
    publish(ch, q, body, props=props)
    # via basic_get
    m, p, b = ch.basic_get(q, auto_ack=True)
    check("body", body, b)
    fields = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
              "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id")
    for f in fields:
        check("property %s (get)" % f, getattr(props, f), getattr(p, f))
    check("cluster_id absent", None, p.cluster_id)
    for k, v in headers.items():
        check("header %s (get)" % k, v, p.headers.get(k, "<missing>"))
    check("header keys (get)", sorted(headers), sorted(p.headers))
    # and via basic_consume
    publish(ch, q, body, props=props)
    got = []
    ch.basic_consume(q, lambda c, m, pp, bb: got.append((pp, bb)), auto_ack=True)
    collect(ch.connection, got, 1)
    check_true("consumed one", len(got) == 1, got)
    p, b = got[0]
    check("body (consume)", body, b)
    for f in fields:
        check("property %s (consume)" % f, getattr(props, f), getattr(p, f))
    check("headers (consume)", headers, p.headers)


@scenario
def minimal_properties(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    publish(ch, q, b"plain")
    m, p, b = ch.basic_get(q, auto_ack=True)
    vals = {f: getattr(p, f) for f in ("content_type", "content_encoding", "headers", "delivery_mode",
                                      "priority", "correlation_id", "reply_to", "expiration",
                                      "message_id", "timestamp", "type", "user_id", "app_id",
                                      "cluster_id")}
    check("no properties added by broker", {k: None for k in vals}, vals)


@scenario
def user_id_mismatch(ctx):
    ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    def go():
        ch.basic_publish("", q, b"x", properties=pika.BasicProperties(user_id="mallory"))
        ch.queue_declare(q, passive=True)
    expect_channel_close(go, 406,
                         "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'")


@scenario
def tx_commit_visibility(ctx):
    ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ok = ch.tx_select()
    check("tx.select-ok", "Tx.SelectOk", ok.method.NAME)
    ch.basic_publish("", q, b"t1")
    ch.basic_publish("", q, b"t2")
    other = ctx.channel()
    check("uncommitted invisible (count)", 0, other.queue_declare(q, passive=True).method.message_count)
    check("uncommitted invisible (get)", (None, None, None), other.basic_get(q))
    ok = ch.tx_commit()
    check("tx.commit-ok", "Tx.CommitOk", ok.method.NAME)
    check("committed visible", 2, other.queue_declare(q, passive=True).method.message_count)
    check("bodies", [b"t1", b"t2"], drain_bodies(other, q))


@scenario
def tx_rollback_visibility(ctx):
    ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.tx_select()
    ch.basic_publish("", q, b"rb1")
    ok = ch.tx_rollback()
    check("tx.rollback-ok", "Tx.RollbackOk", ok.method.NAME)
    other = ctx.channel()
    check("rolled back publish not visible", (None, None, None), other.basic_get(q))
    # acks are transactional too
    ch.basic_publish("", q, b"rb2")
    ch.tx_commit()
    m, _p, b = ch.basic_get(q)
    check("got committed msg", b"rb2", b)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    # the ack was rolled back: message still unacked; closing the channel requeues it
    ch.close()
    m, _p, b = get_within(other, q)
    check("ack rolled back -> message requeued", (True, b"rb2"),
          (m.redelivered if m else None, b))


@scenario
def tx_commit_without_select(ctx):
    ch = ctx.channel()
    expect_channel_close(lambda: ch.tx_commit(), 406,
                         "PRECONDITION_FAILED - channel is not transactional")


@scenario
def queue_purge_count(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(4):
        publish(ch, q, b"pu%d" % i)
    ok = ch.queue_purge(q)
    check("purge-ok message_count", 4, ok.method.message_count)
    check("after purge", 0, ch.queue_declare(q, passive=True).method.message_count)
    ok = ch.queue_purge(q)
    check("purge-ok of empty queue", 0, ok.method.message_count)


@scenario
def queue_delete_count(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(2):
        publish(ch, q, b"de%d" % i)
    ok = ch.queue_delete(q)
    check("delete-ok message_count", 2, ok.method.message_count)
    expect_channel_close(lambda: ch.queue_declare(q, passive=True),
                         404, "NOT_FOUND - no queue '%s' in vhost '/'" % q)


@scenario
def queue_delete_if_empty_if_unused(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    publish(ch, q, b"x")
    expect_channel_close(lambda: ch.queue_delete(q, if_empty=True), 406,
                         "PRECONDITION_FAILED - queue '%s' in vhost '/' not empty" % q)
    ch = ctx.channel()
    ch.basic_consume(q, lambda *a: None)
    ch2 = ctx.channel()
    expect_channel_close(lambda: ch2.queue_delete(q, if_unused=True), 406,
                         "PRECONDITION_FAILED - queue '%s' in vhost '/' in use" % q)
    # deleting a missing queue is not an error
    ch3 = ctx.channel()
    ok = ch3.queue_delete("warren-interop-missing-" + uuid.uuid4().hex)
    check("delete of missing queue", 0, ok.method.message_count)


LOCKED = ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' in vhost '/'. "
          "It could be originally declared on another connection or the exclusive property "
          "value does not match that of the original declaration.")


@scenario
def exclusive_queue_other_connection(ctx):
    ch = ctx.channel()
    q = "wi-excl-" + uuid.uuid4().hex[:12]  # short: the full 405 text fits in 255 bytes
    ctx.track_queue(q)
    ch.queue_declare(q, exclusive=True)
    other = ctx.channel()  # a second connection
    msg = LOCKED % q
    check("full text length", True, len(msg.encode()) <= 255)
    expect_channel_close(lambda: other.queue_declare(q, passive=True), 405, msg)
    other = ctx.channel()
    expect_channel_close(lambda: other.queue_declare(q), 405, msg)
    other = ctx.channel()
    expect_channel_close(lambda: other.basic_consume(q, lambda *a: None), 405, msg)
    other = ctx.channel()
    expect_channel_close(lambda: other.basic_get(q), 405, msg)
    # same connection, other channel: fine
    ch2 = ch.connection.channel()
    ok = ch2.queue_declare(q, passive=True)
    check("same-connection passive", q, ok.method.queue)
    # exclusive queue goes away with its connection
    ch.connection.close()
    other = ctx.channel()
    expect_channel_close(lambda: other.queue_declare(q, passive=True),
                         404, "NOT_FOUND - no queue '%s' in vhost '/'" % q)


@scenario
def reply_text_truncated_to_255(ctx):
    # long names push reply-text past 255 bytes: RabbitMQ keeps 252 bytes + "..."
    ch = ctx.channel()
    q = ctx.qname("long-excl")
    ch.queue_declare(q, exclusive=True)
    other = ctx.channel()
    expected = reply_text(LOCKED % q)
    check("expected text is truncated", (255, True), (len(expected), expected.endswith("...")))
    expect_channel_close(lambda: other.queue_declare(q, passive=True), 405, expected)
    missing = "wi-missing-" + "m" * 230 + uuid.uuid4().hex[:8]   # 249 chars (max 255)
    full = "NOT_FOUND - no queue '%s' in vhost '/'" % missing
    expected = reply_text(full)
    check("expected 404 text is truncated", (255, True), (len(expected), len(full) > 255))
    other = ctx.channel()
    expect_channel_close(lambda: other.queue_declare(missing, passive=True), 404, expected)


@scenario
def exclusive_consumer(ctx):
    ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = ctx.channel()
    expect_channel_close(lambda: other.basic_consume(q, lambda *a: None), 403,
                         "ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use" % q)


@scenario
def large_and_empty_body(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    big = bytes((i * 7 + 3) % 256 for i in range(1024 * 1024))
    publish(ch, q, big)
    publish(ch, q, b"")
    m, _p, b = ch.basic_get(q, auto_ack=True)
    check("1 MiB body length", len(big), len(b))
    check_true("1 MiB body identical", b == big, "differs")
    m, _p, b = ch.basic_get(q, auto_ack=True)
    check("empty body", b"", b)
    # and through a consumer
    publish(ch, q, big)
    publish(ch, q, b"")
    got = []
    ch.basic_consume(q, lambda c, m, p, bb: got.append(bb), auto_ack=True)
    collect(ch.connection, got, 2, deadline_s=5)
    check("consumed lengths", [len(big), 0], [len(x) for x in got])
    check_true("consumed big identical", got and got[0] == big, "differs")


@scenario
def frame_boundary_bodies(ctx):
    ch = confirmed_channel(ctx)
    q = ctx.qname()
    ch.queue_declare(q)
    fm = ch.connection._impl.params.frame_max
    sizes = [1, fm - 9, fm - 8, fm - 7, fm, 2 * (fm - 8), 2 * (fm - 8) + 1]
    bodies = [bytes([65 + (i % 26)]) * n for i, n in enumerate(sizes)]
    for body in bodies:
        publish(ch, q, body)
    got = drain_bodies(ch, q)
    check("sizes", sizes, [len(x) for x in got])
    check_true("bodies identical", got == bodies, "differs")


AUTH_REFUSED = ("(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
                "For details see the broker logfile.'")


@scenario
def wrong_password(ctx):
    for user, pw in (("guest", "definitely-wrong"), ("warren-no-such-user", "guest")):
        try:
            c = pika.BlockingConnection(params(user=user, password=pw))
        except (pex.ProbableAuthenticationError, pex.AuthenticationError) as e:
            # RabbitMQ sends connection.close 403 before dropping the socket;
            # pika wraps it in ProbableAuthenticationError.
            check_true("connection.close %s in error (user %s)" % (AUTH_REFUSED, user),
                       AUTH_REFUSED in str(e), str(e))
            continue
        except Exception as e:
            raise Failure("ProbableAuthenticationError/AuthenticationError",
                          "%s: %s" % (type(e).__name__, e))
        c.close()
        raise Failure("authentication failure for %s/%s" % (user, pw), "connection opened")


@scenario
def wrong_vhost(ctx):
    p = params()
    p.virtual_host = "warren-no-such-vhost-" + uuid.uuid4().hex[:6]
    try:
        c = pika.BlockingConnection(p)
    except pex.ProbableAccessDeniedError as e:
        want = "(530) 'NOT_ALLOWED - vhost %s not found'" % p.virtual_host
        check_true("connection.close %s in error" % want, want in str(e), str(e))
        return
    except Exception as e:
        raise Failure("ProbableAccessDeniedError (530)", "%s: %s" % (type(e).__name__, e))
    c.close()
    raise Failure("access denied", "connection opened")


@scenario
def channel_reuse_and_multiple_channels(ctx):
    conn = ctx.conn()
    chans = [conn.channel() for _ in range(5)]
    nums = [c.channel_number for c in chans]
    check("distinct channel numbers", 5, len(set(nums)))
    q = ctx.qname()
    chans[0].queue_declare(q)
    for i, c in enumerate(chans):
        c.basic_publish("", q, b"ch%d" % i)
    chans[0].confirm_delivery()
    chans[0].basic_publish("", q, b"last")
    # per-channel ordering holds; all 6 arrive
    res = []
    deadline = time.monotonic() + WAIT
    while len(res) < 6 and time.monotonic() < deadline:
        m, _p, b = chans[1].basic_get(q, auto_ack=True)
        if m is None:
            conn.process_data_events(time_limit=0.02)
            continue
        res.append(b)
    check("all messages", sorted([b"ch%d" % i for i in range(5)] + [b"last"]), sorted(res))


@scenario
def exchange_delete_and_bindings(ctx):
    ch = confirmed_channel(ctx)
    x = ctx.xname()
    ch.exchange_declare(x, exchange_type="fanout")
    q = ctx.qname()
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    ok = ch.exchange_delete(x, if_unused=False)
    check("exchange.delete-ok", "Exchange.DeleteOk", ok.method.NAME)
    expect_channel_close(lambda: ch.exchange_declare(x, passive=True),
                         404, "NOT_FOUND - no exchange '%s' in vhost '/'" % x)
    ch = ctx.channel()
    expect_channel_close(lambda: ch.queue_bind(q, x), 404,
                         "NOT_FOUND - no exchange '%s' in vhost '/'" % x)
    ch = ctx.channel()
    ch.exchange_declare(x, exchange_type="fanout")
    expect_channel_close(lambda: ch.queue_bind("warren-interop-missing-q", x), 404,
                         "NOT_FOUND - no queue 'warren-interop-missing-q' in vhost '/'")


# ---------------------------------------------------------------------------
# RabbitMQ extensions: direct reply-to, dead lettering


REPLY_TO = "amq.rabbitmq.reply-to"


@scenario
def direct_reply_to_rpc(ctx):
    server_q = ctx.qname("rpc")
    # requester: consume the pseudo-queue (auto-ack is mandatory) before publishing
    req_conn = ctx.conn()
    req = req_conn.channel()
    replies = []
    ok = req.basic_consume(REPLY_TO, lambda c, m, p, b: replies.append((m, p, b)),
                           auto_ack=True)
    check_true("consume-ok returned a consumer tag", bool(ok), ok)
    req.queue_declare(server_q)
    corr = "corr-" + uuid.uuid4().hex[:8]
    req.basic_publish("", server_q, b"2+2?",
                      pika.BasicProperties(reply_to=REPLY_TO, correlation_id=corr))
    # server: a separate connection fetches the request and answers it
    srv = ctx.channel()
    m, p, b = get_within(srv, server_q)
    check_true("server got the request", m is not None, m)
    check("request body", b"2+2?", b)
    check("request correlation_id", corr, p.correlation_id)
    check_true("reply_to rewritten to 'amq.rabbitmq.reply-to.<id>'",
               p.reply_to is not None and p.reply_to.startswith(REPLY_TO + ".")
               and len(p.reply_to) > len(REPLY_TO) + 1, p.reply_to)
    srv.basic_publish("", p.reply_to, b"4", pika.BasicProperties(correlation_id=corr))
    collect(req_conn, replies, 1)
    check("replies received", 1, len(replies))
    rm, rp, rb = replies[0]
    check("reply body", b"4", rb)
    check("reply correlation_id", corr, rp.correlation_id)
    check("reply delivery (exchange, routing_key)", ("", p.reply_to),
          (rm.exchange, rm.routing_key))
    # the requester's channel is still usable and the server queue is empty
    check("server queue empty", 0,
          req.queue_declare(server_q, passive=True).method.message_count)


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def check_death(headers, reason, queue, exchange, routing_keys):
    """x-death / x-first-death-* exactly as RabbitMQ 3.10 sets them on the first death."""
    check_true("headers present", isinstance(headers, dict), headers)
    deaths = headers.get("x-death")
    check_true("x-death is a one-element list", isinstance(deaths, list) and len(deaths) == 1,
               deaths)
    d = deaths[0]
    check("x-death[0] keys in RabbitMQ's wire order",
          ["count", "reason", "queue", "time", "exchange", "routing-keys"], list(d.keys()))
    check("x-death[0] (reason, queue, exchange, routing-keys, count)",
          (reason, queue, exchange, routing_keys, 1),
          (d["reason"], d["queue"], d["exchange"], d["routing-keys"], d["count"]))
    t = d["time"]
    check_true("x-death[0].time is a recent timestamp",
               isinstance(t, datetime.datetime) and abs((_utcnow() - t).total_seconds()) < 120,
               t)
    check("x-first-death-(reason, queue, exchange)", (reason, queue, exchange),
          (headers.get("x-first-death-reason"), headers.get("x-first-death-queue"),
           headers.get("x-first-death-exchange")))


@scenario
def dead_letter_rejected(ctx):
    ch = confirmed_channel(ctx)
    dlx = ctx.xname("dlx")
    ch.exchange_declare(dlx, exchange_type="fanout")
    dlq, src = ctx.qname("dlq"), ctx.qname("src")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx})
    props = pika.BasicProperties(content_type="text/plain", correlation_id="c-1",
                                 headers={"app": "warren"})
    publish(ch, src, b"rejected-body", props=props)
    m, _p, b = ch.basic_get(src)
    check("got from source queue", b"rejected-body", b)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_within(ch, dlq)
    check_true("dead-lettered message arrived", m is not None, m)
    check("dead-lettered body", b"rejected-body", b)
    # dead-lettered via the DLX with the original routing key
    check("delivery (exchange, routing_key)", (dlx, src), (m.exchange, m.routing_key))
    check("properties kept", ("text/plain", "c-1", "warren"),
          (p.content_type, p.correlation_id, (p.headers or {}).get("app")))
    check_death(p.headers, "rejected", src, "", [src])
    check("source queue empty", 0, ch.queue_declare(src, passive=True).method.message_count)


@scenario
def dead_letter_expired(ctx):
    ch = confirmed_channel(ctx)
    x, dlx = ctx.xname("x"), ctx.xname("dlx")
    ch.exchange_declare(x, exchange_type="direct")
    ch.exchange_declare(dlx, exchange_type="direct")
    dlq, src = ctx.qname("dlq"), ctx.qname("src")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx, routing_key="dead")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx,
                                     "x-dead-letter-routing-key": "dead",
                                     "x-message-ttl": 50})
    ch.queue_bind(src, x, routing_key="rk-a")
    ch.queue_bind(src, x, routing_key="rk-b")
    publish(ch, "rk-a", b"expired-body", exchange=x,
            props=pika.BasicProperties(message_id="m-1"))
    # nobody consumes src: the message expires after 50 ms and is dead-lettered
    m, p, b = get_within(ch, dlq)
    check_true("dead-lettered message arrived", m is not None, m)
    check("dead-lettered body", b"expired-body", b)
    # x-dead-letter-routing-key replaces the routing key; x-death keeps the original
    check("delivery (exchange, routing_key)", (dlx, "dead"), (m.exchange, m.routing_key))
    check("message_id kept", "m-1", p.message_id)
    check_death(p.headers, "expired", src, x, ["rk-a"])
    check("no expiration property set", None, p.expiration)
    check("source queue empty", 0, ch.queue_declare(src, passive=True).method.message_count)


@scenario
def quorum_queue_basics(ctx):
    """A quorum queue as pika sees it: declare rules, confirms, redelivery count."""
    ch = confirmed_channel(ctx)
    q = ctx.qname("qq")
    ok = ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    check("declare-ok counts", (0, 0), (ok.method.message_count, ok.method.consumer_count))
    publish(ch, q, b"job", props=pika.BasicProperties(delivery_mode=1))
    m, p, b = get_within(ch, q, auto_ack=False)
    check("body", b"job", b)
    check("first delivery not redelivered", False, m.redelivered)
    # basic.get from a quorum queue always carries the count, 0 the first time.
    check("x-delivery-count on a first get", 0, (p.headers or {}).get("x-delivery-count"))
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, p, b = get_within(ch, q, auto_ack=False)
    check("redelivered", True, m.redelivered)
    check("x-delivery-count", 1, (p.headers or {}).get("x-delivery-count"))
    ch.basic_ack(m.delivery_tag)
    ch2 = ctx.channel()
    expect_channel_close(
        lambda: ch2.queue_declare(q, durable=True),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '%s' in vhost '/': "
        "received none but current is the value 'quorum' of type 'longstr'" % q)
    ch3 = ctx.channel()
    expect_channel_close(
        lambda: ch3.queue_declare(ctx.qname("bad"), durable=True,
                                  arguments={"x-queue-type": "quorum", "x-max-priority": 5}),
        406,
        None)


@scenario
def quorum_queue_delivery_limit(ctx):
    """x-delivery-limit 1: the second return dead-letters the message (reason delivery_limit)."""
    ch = ctx.channel()
    dlx = ctx.xname("dlx")
    dlq = ctx.qname("dlq")
    q = ctx.qname("qq")
    ch.exchange_declare(dlx, exchange_type="fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 1, "x-dead-letter-exchange": dlx})
    publish(ch, q, b"poison")
    for _ in range(2):
        m, _p, _b = get_within(ch, q, auto_ack=False)
        check_true("delivered", m is not None, m)
        ch.basic_nack(m.delivery_tag, requeue=True)
    m, p, b = get_within(ch, dlq)
    check("dead-lettered body", b"poison", b)
    check("x-death reason", "delivery_limit", p.headers["x-death"][0]["reason"])


@scenario
def stream_basics(ctx):
    """A stream as pika sees it: replay from an offset, the x-stream-offset header, acks
    as credit, and basic.get refused (540 closes the connection)."""
    ch = confirmed_channel(ctx)
    q = ctx.qname("stream")
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "stream"})
    for i in range(5):
        publish(ch, q, b"e%d" % i)
    got = []

    def on_message(c, m, p, b):
        got.append((b, (p.headers or {}).get("x-stream-offset")))
        c.basic_ack(m.delivery_tag)

    rd = ctx.channel()
    rd.basic_qos(prefetch_count=2)  # a stream consumer needs a prefetch
    rd.basic_consume(q, on_message, arguments={"x-stream-offset": 3})
    deadline = time.monotonic() + WAIT
    while len(got) < 2 and time.monotonic() < deadline:
        rd.connection.process_data_events(time_limit=0.05)
    check("replay from offset 3", [(b"e3", 3), (b"e4", 4)], got)
    # A second reader from "first" sees every event again: nothing was removed.
    got.clear()
    rd2 = ctx.channel()
    rd2.basic_qos(prefetch_count=10)
    rd2.basic_consume(q, on_message, arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + WAIT
    while len(got) < 5 and time.monotonic() < deadline:
        rd2.connection.process_data_events(time_limit=0.05)
    check("replay from first", [b"e%d" % i for i in range(5)], [b for b, _ in got])
    conn = ctx.conn()
    try:
        conn.channel().basic_get(q)
    except pex.ConnectionClosedByBroker as e:
        check("basic.get close code", 540, e.reply_code)
        return
    raise Failure("ConnectionClosedByBroker(540)", "no exception")


# ---------------------------------------------------------------------------
# runner


def _alarm(signum, frame):
    raise ScenarioTimeout("scenario exceeded %d s" % SCENARIO_ALARM_SECONDS)


def run_one(fn):
    name = fn.__name__
    ctx = Ctx(name)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SCENARIO_ALARM_SECONDS)
    try:
        fn(ctx)
        result = None
    except Failure as f:
        result = "expected %s, observed %s" % (f.expected, f.observed)
    except ScenarioTimeout as t:
        result = "expected completion within %d s, observed timeout" % SCENARIO_ALARM_SECONDS
    except Exception as e:
        tb = traceback.extract_tb(sys.exc_info()[2])
        where = ""
        for fr in reversed(tb):
            if fr.filename == __file__:
                where = " at line %d" % fr.lineno
                break
        result = "expected no exception, observed %r%s" % (e, where)
    finally:
        signal.alarm(0)
    signal.alarm(CLEANUP_ALARM_SECONDS)
    try:
        ctx.cleanup()
    except ScenarioTimeout:
        pass
    except Exception:
        pass
    finally:
        signal.alarm(0)
    return result


def main():
    global PORT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--only", nargs="*", help="run only these scenarios")
    args = ap.parse_args()
    PORT = args.port
    passed = failed = 0
    start = time.monotonic()
    for fn in SCENARIOS:
        if args.only and fn.__name__ not in args.only:
            continue
        if time.monotonic() - start > GLOBAL_BUDGET_SECONDS:
            res = ("expected to run, observed not run: global budget of %d s exhausted"
                   % GLOBAL_BUDGET_SECONDS)
        else:
            res = run_one(fn)
        if res is None:
            passed += 1
            print("pass %s" % fn.__name__, flush=True)
        else:
            failed += 1
            print("FAIL %s: %s" % (fn.__name__, res), flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
