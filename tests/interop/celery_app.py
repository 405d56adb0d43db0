"""Celery application used by celery_check.py (the worker imports it with `-A celery_app`).

Broker: amqp://guest:guest@127.0.0.1:$WARREN_CELERY_PORT//, result backend rpc://.
Tasks are routed to the queue $WARREN_CELERY_QUEUE so that concurrent or left-over
runs against the same broker never see each other's tasks.

With WARREN_CELERY_QUORUM=1 the task queue is a quorum queue (Celery 5.5's
task_default_queue_type = "quorum") behind a topic exchange, so that the worker sets
up Celery's native delayed delivery (worker_detect_quorum_queues: the celery_delayed_*
exchanges and queues) and countdown/eta tasks are delayed by the broker, not the worker.
"""

import os

from celery import Celery

PORT = int(os.environ.get("WARREN_CELERY_PORT", "5672"))
QUEUE = os.environ.get("WARREN_CELERY_QUEUE", "warren-celery")
QUORUM = os.environ.get("WARREN_CELERY_QUORUM", "") == "1"

app = Celery(
    "celery_app",
    broker="amqp://guest:guest@127.0.0.1:%d//" % PORT,
    backend="rpc://",
)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=3,
    broker_heartbeat=0,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    # the check sends a fixed number of tasks; no broadcast/event traffic needed
    worker_send_task_events=False,
    task_send_sent_event=False,
)
if QUORUM:
    app.conf.update(
        task_default_queue_type="quorum",
        # Native delayed delivery binds topic (or fanout) exchanges only.
        task_default_exchange_type="topic",
        worker_detect_quorum_queues=True,
        broker_native_delayed_delivery_queue_type="quorum",
    )


@app.task(name="celery_app.add")
def add(x, y):
    return x + y


@app.task(name="celery_app.now")
def now():
    """The worker's clock when the task ran (for countdown checks)."""
    import time
    return time.time()


@app.task(name="celery_app.fail")
def fail(text):
    raise ValueError("warren-celery-failure: %s" % text)
