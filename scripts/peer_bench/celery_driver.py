"""Measures the Celery baseline of scripts/peer_bench.sh the way jobs_bench measures this platform,
and prints one JSON object on stdout.

  celery_driver.py ping --node NAME [--timeout S]   wait until the worker NAME answers a ping
  celery_driver.py run [--sequential N] [--tasks M] run the two phases, print JSON
  celery_driver.py delete-queue                     drop the run's queue and exchange

`run`, after 10 warm-up tasks:
1. round trip: N no-op tasks one at a time; each is timed from just before `apply_async` to
   `get()` returning its result (jobs_bench: before the submit call → `succeeded` seen);
2. throughput: M tasks sent at once from this process, then all results collected; tasks/s =
   M / (first send → the last task's own end time, which the no-op returns), as jobs_bench takes
   first submit → last `finished_at`. The rate up to the last result seen by the client is given
   too.
Percentiles are nearest-rank, as in jobs_bench.

Broker and queue come from PEER_BENCH_BROKER and PEER_BENCH_QUEUE (see celery_app.py).
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import celery  # noqa: E402
import kombu  # noqa: E402

from celery_app import QUEUE, app, noop  # noqa: E402


def pct(sorted_values, p):
    """Nearest rank, as jobs_bench's `pct`."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def ping(args):
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            replies = app.control.ping(destination=[args.node], timeout=1.0)
        except Exception as e:  # the broker may refuse for a moment; try again
            replies, err = [], e
        else:
            err = None
        if any(args.node in r for r in replies):
            return 0
        time.sleep(0.2)
    print(f"worker {args.node} did not answer a ping in {args.timeout:.0f} s" + (f" ({err})" if err else ""), file=sys.stderr)
    return 1


def delete_queue(_args):
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_delete(QUEUE)
        channel.exchange_delete(QUEUE)
    return 0


def run(args):
    timeout = args.task_timeout
    for _ in range(10):
        noop.apply_async().get(timeout=timeout)

    # 1. Round trip, one task at a time.
    rt = []
    failed = 0
    for _ in range(args.sequential):
        t0 = time.perf_counter()
        try:
            noop.apply_async().get(timeout=timeout)
        except Exception:
            failed += 1
            continue
        rt.append((time.perf_counter() - t0) * 1000.0)
    rt.sort()

    # 2. Throughput: all tasks sent at once, then every result collected.
    first = time.time()
    t0 = time.perf_counter()
    results = [noop.apply_async() for _ in range(args.tasks)]
    submit_s = time.perf_counter() - t0
    last_finished = first
    t_failed = 0
    for r in results:
        try:
            last_finished = max(last_finished, r.get(timeout=timeout))
        except Exception:
            t_failed += 1
    seen_s = time.perf_counter() - t0
    done = args.tasks - t_failed
    elapsed_s = last_finished - first

    print(
        json.dumps(
            {
                "celery": celery.__version__,
                "kombu": kombu.__version__,
                "python": sys.version.split()[0],
                "queue": QUEUE,
                "sequential": len(rt),
                "rt_p50_ms": round(pct(rt, 50), 3),
                "rt_p95_ms": round(pct(rt, 95), 3),
                "rt_p99_ms": round(pct(rt, 99), 3),
                "rt_max_ms": round(rt[-1], 3) if rt else None,
                "tasks": args.tasks,
                "jobs_per_s": round(done / elapsed_s, 1) if elapsed_s > 0 else None,
                "elapsed_s": round(elapsed_s, 3),
                "submit_s": round(submit_s, 3),
                "jobs_per_s_client_seen": round(done / seen_s, 1),
                "failed": failed + t_failed,
            }
        )
    )
    return 0 if failed + t_failed == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("ping")
    pp.add_argument("--node", required=True)
    pp.add_argument("--timeout", type=float, default=60.0)
    pr = sub.add_parser("run")
    pr.add_argument("--sequential", type=int, default=300)
    pr.add_argument("--tasks", type=int, default=3000)
    pr.add_argument("--task-timeout", type=float, default=60.0)
    sub.add_parser("delete-queue")
    args = p.parse_args()
    return {"ping": ping, "run": run, "delete-queue": delete_queue}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
