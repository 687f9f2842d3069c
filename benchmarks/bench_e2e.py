"""End to end: no-op runs per second through 2 real nodes vs plain Celery on the same pool.

Two ``dt_worker`` nodes and two plain ``celery worker`` processes (same app, broker
and settings: prefork, the same concurrency, prefetch 1, ``acks_late``, JSON) run
side by side; only one side works at a time. For each round the side under test is
paused (SIGSTOP of its process groups), N messages are queued, the side is resumed
(SIGCONT) and timed until all N runs are complete:

- distributed_tasks: N unique named starts (``start_many``) of a function that
  increments a Redis counter; complete = every row recorded DONE;
- plain Celery: N ``apply_async`` of a task that increments the same kind of counter;
  complete = the counter reached N.

Queuing is not timed (the submission benchmark measures it). Nodes heartbeat with a
long ``NODE_TIMEOUT`` here so that a pause never makes them look dead.

Target: distributed_tasks >= 0.5x plain Celery (issue 13; an earlier issue asked 0.8x).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time
from collections.abc import Callable

from benchmarks import common

NAME = "end_to_end"
PLAIN_QUEUE = "bench.plain"
NODES = 2


class Sides:
    """The four worker processes and how to fill and drain each side."""

    def __init__(self, procs: common.BenchCluster, concurrency: int) -> None:
        self.procs = procs
        self.dt_nodes = [common.node_name("e2e", i) for i in range(1, NODES + 1)]
        self.plain = [f"{common.NODE_PREFIX}plain-{i}@bench" for i in range(1, NODES + 1)]
        for node in self.dt_nodes:
            procs.start_worker(node, concurrency=concurrency)
        for key in self.plain:
            procs.start_plain_worker(key, PLAIN_QUEUE, concurrency=concurrency)
        procs.wait_live(*self.dt_nodes)
        for key in self.plain:
            procs.wait_log(key, "ready.")

    def _paused(self, keys: list[str], fill: Callable[[], None]) -> float:
        """Fill while ``keys`` are stopped; returns the monotonic time they resumed."""
        for key in keys:
            self.procs.signal_group(key, signal.SIGSTOP)
        try:
            fill()
        finally:
            resumed = time.perf_counter()
            for key in keys:
                self.procs.signal_group(key, signal.SIGCONT)
        return resumed

    def run_dt(self, n: int, tag: str, batch: int = 500) -> dict[str, float]:
        from benchmarks.tasks import noop
        from distributed_tasks import start_many
        from distributed_tasks.connection import get_redis
        from distributed_tasks.models import TaskRun
        from distributed_tasks.types import State

        counter, redis = f"bench:e2e:{tag}", get_redis()
        done_before = TaskRun.objects.filter(state=State.DONE).count()

        def fill() -> None:
            for i in range(0, n, batch):
                calls = [
                    {"func": noop, "args": [counter], "name": f"{tag}-{j}"}
                    for j in range(i, min(n, i + batch))
                ]
                start_many(calls)

        resumed = self._paused(self.dt_nodes, fill)
        common.poll_until(lambda: int(redis.get(counter) or 0) >= n, timeout=600, interval=0.01)
        ran = time.perf_counter() - resumed

        def recorded() -> bool:
            return TaskRun.objects.filter(state=State.DONE).count() - done_before >= n

        common.poll_until(recorded, timeout=600, interval=0.02)
        done = time.perf_counter() - resumed
        # Runs a node took over from the other (stealing, overtake): each costs a fenced
        # update and a stale message, so a backlog that both nodes drain should move few.
        moved = TaskRun.objects.filter(name__startswith=f"{tag}-", attempt__gt=1).count()
        return {
            "functions_ran_s": ran,
            "seconds": done,
            "per_second": common.rate(n, done),
            "moved": moved,
        }

    def run_plain(self, n: int, tag: str) -> dict[str, float]:
        from benchmarks.celeryapp import app, plain_noop
        from distributed_tasks.connection import get_redis

        counter, redis = f"bench:e2e:{tag}", get_redis()

        def fill() -> None:
            with app.producer_or_acquire() as producer:
                for _ in range(n):
                    plain_noop.apply_async(args=[counter], queue=PLAIN_QUEUE, producer=producer)

        resumed = self._paused(self.plain, fill)
        common.poll_until(lambda: int(redis.get(counter) or 0) >= n, timeout=600, interval=0.01)
        done = time.perf_counter() - resumed
        return {"seconds": done, "per_second": common.rate(n, done)}


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="runs per round (default 3000, quick 300)")
        p.add_argument("--rounds", type=int, help="rounds per side (default 3, quick 1)")
        p.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n, rounds = common.sized(args, "n", 3000, 300), common.sized(args, "rounds", 3, 1)
    env = {"DT_BENCH_NODE_TIMEOUT": "120"}
    common.setup(**env)
    dt_rounds: list[dict[str, float]] = []
    plain_rounds: list[dict[str, float]] = []
    try:
        with common.cluster(NAME, **env) as procs:
            sides = Sides(procs, args.concurrency)
            sides.run_dt(50, "warm-dt")
            sides.run_plain(50, "warm-plain")
            for r in range(rounds):
                dt_rounds.append(sides.run_dt(n, f"dt-{r}"))
                plain_rounds.append(sides.run_plain(n, f"plain-{r}"))
    finally:
        common.reset_state()
    dt_rate = statistics.median(r["per_second"] for r in dt_rounds)
    plain_rate = statistics.median(r["per_second"] for r in plain_rounds)
    common.print_table(
        f"End to end: {n} no-op runs per round, {NODES} workers x {args.concurrency} processes",
        ["round", "distributed_tasks runs/s", "plain Celery runs/s", "ratio"],
        [
            (i + 1, d["per_second"], p["per_second"], d["per_second"] / p["per_second"])
            for i, (d, p) in enumerate(zip(dt_rounds, plain_rounds, strict=True))
        ]
        + [("median", dt_rate, plain_rate, dt_rate / plain_rate)],
    )
    checks = [
        common.Check.at_least("distributed_tasks / plain Celery", dt_rate / plain_rate, 0.5),
        common.Check("distributed_tasks runs/s", dt_rate),
        common.Check("plain Celery runs/s", plain_rate),
    ]
    data = {
        "n": n,
        "workers": NODES,
        "concurrency": args.concurrency,
        "distributed_tasks": dt_rounds,
        "plain_celery": plain_rounds,
    }
    common.write_result(NAME, args=args, data=data, checks=checks)


if __name__ == "__main__":
    main()
