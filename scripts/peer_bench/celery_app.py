"""The Celery side of scripts/peer_bench.sh: Celery as one would set it up next to this platform.

RabbitMQ as the broker (the same one the platform uses), the `rpc://` result backend (results
come back to the client over the broker, nothing stored), the prefork pool, and one task that
does nothing. Everything else is Celery's default (persistent messages, a durable queue, early
acknowledgement, prefetch multiplier 4), so the baseline is the one a user gets out of the box.

Environment:
  PEER_BENCH_BROKER  broker URL (default amqp://guest:guest@127.0.0.1:5672//)
  PEER_BENCH_QUEUE   the queue the worker consumes and the driver sends to (default peer_bench),
                     one per run so that nothing else's tasks mix in
"""

import os
import time

from celery import Celery

BROKER = os.environ.get("PEER_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("PEER_BENCH_QUEUE", "peer_bench")

app = Celery("peer_bench", broker=BROKER, backend="rpc://")
app.conf.update(
    task_default_queue=QUEUE,
    worker_pool="prefork",
    # Quiet: the benchmark prints JSON on stdout, the worker logs only warnings.
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="peer_bench.noop")
def noop():
    """Does nothing; returns when it ran (epoch seconds), so that the driver can take the
    throughput up to the last task's end, as jobs_bench takes it up to the last `finished_at`."""
    return time.time()
