"""A real Celery worker runs tasks through a broker (RabbitMQ or Warren).

Usage: <python with celery> tests/interop/celery_check.py --port PORT [--quorum]

Starts `celery -A celery_app worker --pool=solo ...` as a subprocess against
amqp://guest:guest@127.0.0.1:PORT// with the rpc:// result backend, waits (bounded)
until it answers a ping, sends 20 add(i, i) tasks and checks every result, checks
that a failing task's exception is reported, then stops the worker (SIGTERM, then
SIGKILL after a bounded grace).  Prints `pass NAME` / `FAIL NAME: ...` lines and
finally `N passed, N failed`; exit status 1 if anything failed.

With --quorum the task queue is a quorum queue (Celery >= 5.5, task_default_queue_type
"quorum", behind a topic exchange): the check also makes sure the broker holds it as a
quorum queue (redeclaring it as classic fails with 406), that the worker set up native
delayed delivery (exchanges celery_delayed_27..0 and celery_delayed_delivery, queues
celery_delayed_27..0), and that a countdown task and an eta task wait in the broker's
delay queues and run no earlier than asked.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
READY_SECONDS = 30
RESULT_SECONDS = 20
GRACE_SECONDS = 10
OVERALL_SECONDS = 100  # the Rust test kills us at 120 s

passed = 0
failed = 0


def report(name, error=None):
    global passed, failed
    if error is None:
        passed += 1
        print("pass %s" % name, flush=True)
    else:
        failed += 1
        print("FAIL %s: %s" % (name, error), flush=True)


def _overall_alarm(signum, frame):
    raise TimeoutError("celery_check exceeded %d s" % OVERALL_SECONDS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--quorum", action="store_true",
                    help="quorum task queue and native delayed delivery")
    args = ap.parse_args()

    queue = "warren-celery-" + uuid.uuid4().hex[:10]
    os.environ["WARREN_CELERY_PORT"] = str(args.port)
    os.environ["WARREN_CELERY_QUEUE"] = queue
    os.environ["WARREN_CELERY_QUORUM"] = "1" if args.quorum else ""
    sys.path.insert(0, HERE)
    from celery_app import add, app, fail, now  # noqa: E402  (needs the env above)

    log = tempfile.NamedTemporaryFile(prefix="warren-celery-worker-", suffix=".log",
                                      delete=False)
    hostname = "warren-check-%s@%%h" % uuid.uuid4().hex[:8]
    cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "worker",
           "--pool=solo", "--concurrency=1", "-l", "warning", "-n", hostname,
           "-Q", queue, "--without-heartbeat", "--without-mingle", "--without-gossip"]
    worker = subprocess.Popen(cmd, cwd=HERE, env=os.environ.copy(), stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    signal.signal(signal.SIGALRM, _overall_alarm)
    signal.alarm(OVERALL_SECONDS)
    try:
        run_checks(app, add, fail, worker, args.tasks)
        if args.quorum:
            run_quorum_checks(app, add, now, queue)
    except Exception as e:
        report("checks completed", "expected no exception, observed %r\n%s"
               % (e, traceback.format_exc()))
    finally:
        signal.alarm(0)
        stop_worker(worker)
        delete_task_queue(app, queue)
        log.close()
        with open(log.name, errors="replace") as f:
            out = f.read()
        if failed:
            print("---- worker output (%s) ----\n%s---- end of worker output ----"
                  % (log.name, out[-8000:]), flush=True)
        os.unlink(log.name)
        try:
            app.close()
        except Exception:
            pass
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


def run_checks(app, add, fail, worker, ntasks):
    # 1. the worker comes up and answers a broadcast ping (bounded wait)
    deadline = time.monotonic() + READY_SECONDS
    replies = []
    while time.monotonic() < deadline and worker.poll() is None:
        replies = app.control.ping(timeout=1.0)
        if replies:
            break
    if worker.poll() is not None:
        report("worker ready", "expected a running worker, observed exit status %r"
               % worker.returncode)
        return
    if replies:
        report("worker ready")
    else:
        report("worker ready", "expected a ping reply within %d s, observed none"
               % READY_SECONDS)
        # go on: the tasks below tell whether task delivery works at all

    # 2. tasks run and their results come back through rpc://
    results = [(i, add.delay(i, i)) for i in range(ntasks)]
    bad = []
    for i, r in results:
        try:
            v = r.get(timeout=RESULT_SECONDS)
        except Exception as e:
            bad.append("add(%d, %d): %r" % (i, i, e))
            if "Timeout" in type(e).__name__:
                break  # do not wait 20 s for each of the rest
            continue
        if v != 2 * i:
            bad.append("add(%d, %d) == %d, observed %r" % (i, i, 2 * i, v))
    if bad:
        report("%d add tasks" % ntasks, "expected every result, observed: %s" % "; ".join(bad))
    else:
        report("%d add tasks" % ntasks)

    # 3. a failing task's exception is reported to the caller
    r = fail.delay("boom")
    try:
        v = r.get(timeout=RESULT_SECONDS)
    except ValueError as e:
        if "warren-celery-failure: boom" in str(e) and r.state == "FAILURE":
            report("failing task reported")
        else:
            report("failing task reported", "expected ValueError('warren-celery-failure: "
                   "boom') and state FAILURE, observed %r, state %r" % (e, r.state))
    except Exception as e:
        report("failing task reported", "expected ValueError, observed %r" % (e,))
    else:
        report("failing task reported", "expected ValueError, observed result %r" % (v,))


COUNTDOWN = 4  # seconds; one delay level (celery_delayed_2, TTL 4 s)
ETA = 3  # seconds; celery_delayed_1 (2 s) for int(2.99...) = 2 s
DELAY_LEVELS = 28  # celery_delayed_27 .. celery_delayed_0


def passive_queue(app, name):
    """(message_count, consumer_count) of queue `name`; raises if it does not exist."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        ch = conn.channel()
        try:
            _, messages, consumers = ch.queue_declare(queue=name, passive=True)
            return messages, consumers
        finally:
            ch.close()


def run_quorum_checks(app, add, now, queue):
    import datetime

    from amqp.exceptions import PreconditionFailed

    # 4. the broker holds the task queue as a quorum queue: the same declare with
    # x-queue-type classic is refused (406 PRECONDITION_FAILED, inequivalent arg)
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        ch = conn.channel()
        try:
            ch.queue_declare(queue=queue, durable=True, auto_delete=False,
                             arguments={"x-queue-type": "classic"})
        except PreconditionFailed as e:
            if "x-queue-type" in str(e):
                report("task queue is a quorum queue")
            else:
                report("task queue is a quorum queue",
                       "expected 406 about x-queue-type, observed %r" % (e,))
        except Exception as e:
            report("task queue is a quorum queue",
                   "expected PreconditionFailed, observed %r" % (e,))
        else:
            report("task queue is a quorum queue",
                   "expected 406 redeclaring it classic, observed declare-ok")
            ch.close()

    # 5. the worker declared native delayed delivery's topology (bounded wait: the
    # DelayedDelivery bootstep runs while the worker starts)
    deadline = time.monotonic() + READY_SECONDS
    missing = None
    while time.monotonic() < deadline:
        missing = None
        for level in range(DELAY_LEVELS):
            try:
                passive_queue(app, "celery_delayed_%d" % level)
            except Exception as e:
                missing = "celery_delayed_%d: %r" % (level, e)
                break
        if missing is None:
            break
        time.sleep(0.2)
    if missing is None:
        report("native delayed delivery queues")
    else:
        report("native delayed delivery queues", "expected celery_delayed_27..0, observed "
               "%s" % missing)

    # 6. a countdown task and an eta task are parked in the broker's delay queues and run
    # no earlier than asked
    sent = time.time()
    delayed = now.apply_async(countdown=COUNTDOWN)
    eta = add.apply_async((40, 2), eta=datetime.datetime.now(datetime.timezone.utc)
                          + datetime.timedelta(seconds=ETA))
    parked = None
    deadline = time.monotonic() + COUNTDOWN - 1
    while time.monotonic() < deadline:
        try:
            parked = passive_queue(app, "celery_delayed_2")[0]
        except Exception as e:
            parked = e
            break
        if parked:
            break
        time.sleep(0.1)
    if parked and not isinstance(parked, Exception):
        report("countdown task waits in celery_delayed_2")
    else:
        report("countdown task waits in celery_delayed_2", "expected a message there "
               "within %d s, observed %r" % (COUNTDOWN - 1, parked))
    try:
        ran = delayed.get(timeout=COUNTDOWN + RESULT_SECONDS)
        if ran - sent >= COUNTDOWN - 0.5:
            report("countdown task runs after %d s" % COUNTDOWN)
        else:
            report("countdown task runs after %d s" % COUNTDOWN,
                   "expected it to run no earlier, observed %.2f s" % (ran - sent))
    except Exception as e:
        report("countdown task runs after %d s" % COUNTDOWN, "expected a result, observed "
               "%r" % (e,))
    try:
        v = eta.get(timeout=ETA + RESULT_SECONDS)
        took = time.time() - sent
        if v == 42 and took >= ETA - 1:
            report("eta task")
        else:
            report("eta task", "expected 42 after >= %d s, observed %r after %.2f s"
                   % (ETA - 1, v, took))
    except Exception as e:
        report("eta task", "expected a result, observed %r" % (e,))


def stop_worker(worker):
    """SIGTERM (Celery's warm shutdown), SIGKILL after GRACE_SECONDS."""
    if worker.poll() is not None:
        return
    try:
        os.killpg(worker.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        worker.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait(timeout=5)
        report("worker warm shutdown", "expected exit within %d s of SIGTERM, observed "
               "none (killed)" % GRACE_SECONDS)
        return
    if worker.returncode == 0:
        report("worker warm shutdown")
    else:
        report("worker warm shutdown", "expected exit status 0 after SIGTERM, observed %r"
               % worker.returncode)


def delete_task_queue(app, queue):
    """The task queue and exchange are durable: remove them (best effort)."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            ch = conn.default_channel
            ch.queue_delete(queue)
            ch.exchange_delete(queue)
    except Exception as e:
        print("note: could not delete task queue %s: %r" % (queue, e), flush=True)


if __name__ == "__main__":
    main()
