"""The Celery peer of the jobs benchmark: one no-op task on Redis, acks_late, as the stacks run Celery."""
import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=BROKER)
app.conf.update(task_acks_late=True, task_ignore_result=True, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)
stats = redis.Redis.from_url(BROKER.rsplit("/", 1)[0] + "/1")


@app.task(name="noop")
def noop(t0=None):
    """Counts itself; with `t0` (the enqueuer's clock) records enqueue-to-start latency."""
    started = time.time()
    if t0 is not None:
        stats.rpush("latency", started - t0)
    stats.incr("done")
