"""Worker CPU per run: one ``dt_worker`` vs one plain ``celery worker``, and a profile.

    .venv/bin/python -m benchmarks.bench_worker_cpu [--n 2000] [--rounds 3] [--profile]

Throughput hides where a run's cost goes: the end to end benchmark is bounded by
two cores shared by the workers, Redis, PostgreSQL and the producer. This one counts
what the worker itself spends. One ``dt_worker -c 2`` and one plain Celery worker
(same app and settings) drain N pre-queued no-op runs each, side by side in
interleaved rounds; for each round the CPU seconds (user + system, from the kernel's
accounting) of the worker's main process and of its pool processes are read while
the worker is paused before the runs are queued and again once they are all complete.
The worker's idle CPU over the same time (heartbeat and other threads), measured
before the round, is subtracted from the main process's.

``--profile`` adds a cProfile (top functions by own time) of what a pool process does
per run, in this process: Celery's tracer around ``distributed_tasks.execute`` (its
``task_prerun``/``task_postrun`` receivers included) on QUEUED rows of a heartbeating
node, against the real Redis and PostgreSQL.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import signal
import statistics
import time
from typing import Any

from benchmarks import common

NAME = "worker_cpu"
PLAIN_QUEUE = "bench.plain-cpu"
IDLE_SECONDS = 2.0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(main process, its children) CPU seconds: user + system of the process tree."""
    import psutil

    main = psutil.Process(pid)
    t = main.cpu_times()
    children = 0.0
    for child in main.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        children += c.user + c.system
    return t.user + t.system, children


def worker_pid(procs: common.BenchCluster, key: str) -> int:
    """The pid of the Python process that is the worker (``manage.py`` or ``celery``)."""
    return procs.procs[key].pid


class Side:
    """One worker and how to fill and drain it."""

    def __init__(self, procs: common.BenchCluster, key: str, dt: bool) -> None:
        self.procs, self.key, self.dt = procs, key, dt

    def fill(self, n: int, tag: str) -> None:
        if self.dt:
            from benchmarks.tasks import noop
            from distributed_tasks import start_many

            for i in range(0, n, 500):
                calls = [{"func": noop, "args": [tag], "name": f"{tag}-{j}"}
                         for j in range(i, min(n, i + 500))]  # fmt: skip
                start_many(calls)
        else:
            from benchmarks.celeryapp import app, plain_noop

            with app.producer_or_acquire() as producer:
                for _ in range(n):
                    plain_noop.apply_async(args=[tag], queue=PLAIN_QUEUE, producer=producer)

    def complete(self, n: int, tag: str) -> bool:
        from distributed_tasks.connection import get_redis
        from distributed_tasks.models import TaskRun
        from distributed_tasks.types import State

        if int(get_redis().get(tag) or 0) < n:
            return False
        if not self.dt:
            return True
        return TaskRun.objects.filter(name__startswith=f"{tag}-", state=State.DONE).count() >= n

    def round(self, n: int, tag: str) -> dict[str, float]:
        pid = worker_pid(self.procs, self.key)
        idle_main = cpu_seconds(pid)
        time.sleep(IDLE_SECONDS)
        idle_rate = (cpu_seconds(pid)[0] - idle_main[0]) / IDLE_SECONDS
        self.procs.signal_group(self.key, signal.SIGSTOP)
        try:
            self.fill(n, tag)
            before = cpu_seconds(pid)
        finally:
            began = time.perf_counter()
            self.procs.signal_group(self.key, signal.SIGCONT)
        common.poll_until(lambda: self.complete(n, tag), timeout=600, interval=0.05)
        took = time.perf_counter() - began
        after = cpu_seconds(pid)
        main = after[0] - before[0] - idle_rate * took
        pool = after[1] - before[1]
        return {
            "seconds": took,
            "per_second": common.rate(n, took),
            "main_ms": main / n * 1e3,
            "pool_ms": pool / n * 1e3,
            "total_ms": (main + pool) / n * 1e3,
            "idle_main_ms_per_s": idle_rate * 1e3,
        }


def profile(n: int, top: int = 30) -> str:
    """cProfile of ``n`` runs as a pool process executes them, top functions by tottime."""
    from celery import signals as celery_signals
    from celery.app.trace import build_tracer

    from benchmarks.tasks import noop
    from distributed_tasks import start_many
    from distributed_tasks.celery import TASK_NAME, get_app, header_limits
    from distributed_tasks.models import TaskRun
    from distributed_tasks.nodes import set_current_node
    from distributed_tasks.stealing import after_run
    from distributed_tasks.store import message_for

    app = get_app()
    task = app.tasks[TASK_NAME]
    tracer = build_tracer(TASK_NAME, task, app=app)
    with common.idle_node("profiled") as node:
        set_current_node(node)
        celery_signals.task_postrun.connect(after_run, weak=False)  # as worker.py does
        try:
            tag = f"prof-{time.monotonic_ns()}"
            start_many([{"func": noop, "name": f"{tag}-{i}"} for i in range(2 * n + 50)])
            rows = TaskRun.objects.filter(name__startswith=tag).order_by("queued_at")
            jobs = []
            for row in rows:
                msg = message_for(row)
                request = {"id": msg.task_id, "timelimit": list(header_limits(msg.timeout)),
                           "delivery_info": {}, "hostname": node.name}  # fmt: skip
                jobs.append((msg.task_id, [msg.to_body()], request))
            for task_id, args, request in jobs[:50]:  # warm-up: connections, caches
                tracer(task_id, args, {}, request)
            cpu = time.process_time()
            for task_id, args, request in jobs[50 : 50 + n]:
                tracer(task_id, args, {}, request)
            cpu = time.process_time() - cpu
            profiler = cProfile.Profile(time.process_time)  # CPU only: waits are not counted
            profiler.enable()
            for task_id, args, request in jobs[50 + n :]:
                tracer(task_id, args, {}, request)
            profiler.disable()
        finally:
            celery_signals.task_postrun.disconnect(after_run)
            set_current_node(None)
    out = io.StringIO()
    print(f"{n} runs in process: {cpu / n * 1e6:.0f} µs CPU per run (without cProfile)", file=out)
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top * 2)
    return out.getvalue()


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="runs per round (default 2000, quick 300)")
        p.add_argument("--rounds", type=int, help="rounds per side (default 3, quick 1)")
        p.add_argument("--concurrency", type=int, default=2, help="pool processes")
        p.add_argument("--profile", action="store_true", help="also profile a pool's run path")
        p.add_argument("--only-profile", action="store_true", help="the profile only")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n, rounds = common.sized(args, "n", 2000, 300), common.sized(args, "rounds", 3, 1)
    env = {"DT_BENCH_NODE_TIMEOUT": "120"}
    common.setup(**env)
    if args.only_profile:
        try:
            print(profile(n))
        finally:
            common.reset_state()
        return
    results: dict[str, list[dict[str, float]]] = {"distributed_tasks": [], "plain": []}
    try:
        with common.cluster(NAME, **env) as procs:
            dt_key = common.node_name("cpu")
            plain_key = f"{common.NODE_PREFIX}plain-cpu@bench"
            procs.start_worker(dt_key, concurrency=args.concurrency)
            procs.start_plain_worker(plain_key, PLAIN_QUEUE, concurrency=args.concurrency)
            procs.wait_live(dt_key)
            procs.wait_log(plain_key, "ready.")
            sides = {"distributed_tasks": Side(procs, dt_key, True),
                     "plain": Side(procs, plain_key, False)}  # fmt: skip
            for label, side in sides.items():
                side.round(50, f"warm-{label}")
            for r in range(rounds):
                for label, side in sides.items():
                    results[label].append(side.round(n, f"{label}-{r}"))
        report = profile(n) if args.profile else ""
    finally:
        common.reset_state()
    rows: list[tuple[Any, ...]] = []
    med: dict[str, dict[str, float]] = {}
    for label, rs in results.items():
        for i, r in enumerate(rs):
            rows.append((label, i + 1, r["per_second"], r["main_ms"], r["pool_ms"], r["total_ms"]))
        med[label] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        m = med[label]
        rows.append((label, "median", m["per_second"], m["main_ms"], m["pool_ms"], m["total_ms"]))
    common.print_table(
        f"Worker CPU: {n} no-op runs per round, 1 worker x {args.concurrency} processes",
        ["worker", "round", "runs/s", "main ms/run", "pool ms/run", "total ms/run"],
        rows,
    )
    if report:
        print("\n" + report)
    checks = [
        common.Check.at_most("worker CPU per run (ms)", med["distributed_tasks"]["total_ms"], 1.2),
        common.Check("plain Celery CPU per run (ms)", med["plain"]["total_ms"]),
    ]
    common.write_result(NAME, args=args, data={"n": n, **results}, checks=checks)


if __name__ == "__main__":
    main()
