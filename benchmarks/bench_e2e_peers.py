"""End to end for the durable peers: no-op tasks drained by 2 worker processes.

For each peer and round, N no-op tasks are queued while no worker runs (untimed), then
2 worker processes drain them; the rate is N over the time from the first task's start
to the last one's end, read from the peer's own records (so worker start-up is not
counted), as ``bench_e2e`` times ours and plain Celery from resume to the last run:

- django-tasks-db: two ``db_worker --batch`` processes (``started_at``/``finished_at``);
- Celery + django-celery-results (``task_track_started``): one ``celery worker -c 2``
  (``date_created`` of STARTED, ``date_done``);
- Procrastinate: one worker with concurrency 2 (its ``procrastinate_events``);
- ours, in the same shape: one ``dt_worker -c 2`` node, paused while its runs are queued
  (``started_at``/``finished_at`` of the rows).

Peers run interleaved by round. ``bench_e2e`` has ours (2 nodes x 2 processes) against
plain Celery in the same shape.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import common

NAME = "end_to_end_peers"
WORKERS = 2


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "PYTHONPATH": str(common.ROOT),
    }


def _wait(procs: list[subprocess.Popen], done: Callable[[], bool], limit: float) -> None:
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline and not done():
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def dtdb_round(n: int) -> float:
    from django.db.models import Max, Min
    from django_tasks_db.models import DBTaskResult

    from benchmarks import peers

    DBTaskResult.objects.all().delete()
    for _ in range(n):
        peers.dtdb_noop.enqueue()
    argv = [sys.executable, "manage.py", "db_worker", "--backend", "db", "--batch",
            "--no-startup-delay", "--interval", "0.01"]  # fmt: skip
    procs = [subprocess.Popen(argv, cwd=common.ROOT, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(WORKERS)]  # fmt: skip
    finished = DBTaskResult.objects.filter(status="SUCCESSFUL")
    _wait(procs, lambda: finished.count() >= n, 120)
    span = finished.aggregate(a=Min("started_at"), b=Max("finished_at"))
    return n / (span["b"] - span["a"]).total_seconds()


def dcr_round(n: int) -> float:
    from django.db.models import Max, Min
    from django_celery_results.models import TaskResult

    from benchmarks import peers

    TaskResult.objects.all().delete()
    submit = peers.dcr_submit(peers.DCR_QUEUE)
    for _ in range(n):
        submit([])
    argv = [sys.executable, "-m", "celery", "-A", "benchmarks.peers_workers:dcr_app", "worker",
            "-Q", peers.DCR_QUEUE, "-c", str(WORKERS), "-l", "WARNING"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=common.ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    done = TaskResult.objects.filter(status="SUCCESS")
    _wait([proc], lambda: done.count() >= n, 120)
    span = done.aggregate(a=Min("date_created"), b=Max("date_done"))
    return n / (span["b"] - span["a"]).total_seconds()


def procrastinate_round(app: Any, n: int) -> float:
    import psycopg

    from benchmarks import peers

    conninfo = app.conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
    submit = peers.procrastinate_submit(app)
    for i in range(n):
        submit([f"p-{time.monotonic_ns()}-{i}"])
    argv = [sys.executable, "-m", "benchmarks.peers_workers", "procrastinate", conninfo,
            str(WORKERS)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=common.ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    query = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        _wait([proc], lambda: conn.execute(query).fetchone()[0] >= n, 120)
        a, b = conn.execute(
            "SELECT min(at) FILTER (WHERE type = 'started'), "
            "max(at) FILTER (WHERE type = 'succeeded') FROM procrastinate_events"
        ).fetchone()
    return n / (b - a).total_seconds()


def ours_round(procs: common.BenchCluster, node: str, n: int, batch: int = 500) -> float:
    from django.db.models import Max, Min

    from benchmarks.tasks import noop
    from distributed_tasks import start_many
    from distributed_tasks.models import TaskRun

    tag = f"peers-{time.monotonic_ns()}"
    procs.signal_group(node, signal.SIGSTOP)
    try:
        for i in range(0, n, batch):
            start_many([{"func": noop, "name": f"{tag}-{j}"} for j in range(i, min(n, i + batch))])
    finally:
        procs.signal_group(node, signal.SIGCONT)
    done = TaskRun.objects.filter(name__startswith=f"{tag}-", state="DONE")
    common.poll_until(lambda: done.count() >= n, timeout=120, interval=0.1)
    procs.signal_group(node, signal.SIGSTOP)  # idle while the peers run: no CPU of theirs
    span = done.aggregate(a=Min("started_at"), b=Max("finished_at"))
    return n / (span["b"] - span["a"]).total_seconds()


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="tasks per round (default 1000, quick 200)")
        p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n = common.sized(args, "n", 1000, 200)
    common.setup(DT_BENCH_NODE_TIMEOUT="120")  # a paused node must not look dead
    from benchmarks import peers

    rates: dict[str, list[float]] = {}
    try:
        with (
            contextlib_procrastinate() as app,
            common.cluster(NAME, DT_BENCH_NODE_TIMEOUT="120") as procs,
        ):
            node = common.node_name("peers")
            procs.start_worker(node, concurrency=WORKERS)
            procs.wait_live(node)
            procs.signal_group(node, signal.SIGSTOP)  # resumed for its own rounds only
            rounds: dict[str, Callable[[int], float]] = {
                "distributed_tasks (1 node, -c 2)": lambda n: ours_round(procs, node, n)
            }
            if peers.installed("django_tasks_db"):
                rounds["django-tasks-db"] = dtdb_round
            if peers.installed("django_celery_results"):
                rounds["Celery + django-celery-results"] = dcr_round
            if app is not None:
                rounds["Procrastinate"] = lambda n: procrastinate_round(app, n)
            try:
                for _ in range(args.rounds):
                    for label, run in rounds.items():
                        rates.setdefault(label, []).append(run(n))
            finally:
                procs.signal_group(node, signal.SIGCONT)  # so that it can stop
    finally:
        common.reset_state()
    rows = [(label, n, statistics.median(v), min(v), max(v)) for label, v in rates.items()]
    common.print_table(f"End to end, {n} no-op tasks, {WORKERS} worker processes (medians)",
                       ["peer", "n", "runs/s", "min", "max"], rows)  # fmt: skip
    checks = [common.Check(f"{label} runs/s", statistics.median(v)) for label, v in rates.items()]
    data = {"n": n, "workers": WORKERS, "rates": rates}
    common.write_result(NAME, args=args, data=data, checks=checks)


def contextlib_procrastinate() -> Any:
    from benchmarks.bench_submission import _procrastinate

    return _procrastinate()


if __name__ == "__main__":
    main()
