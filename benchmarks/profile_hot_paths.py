"""Profile the hot paths: round trips and CPU per call, and where wall time goes (py-spy).

    .venv/bin/python -m benchmarks.profile_hot_paths [--quick] [--no-py-spy]

For ``raw apply_async`` (the baseline), ``start_async``, ``start_many`` (batches of
100), ``get_status`` (cache hit and database fallback) and the worker's ``execute``:

1. in-process counters: Redis round trips (socket writes of redis-py, which also
   carries the Celery broker), PostgreSQL round trips (psycopg network exchanges,
   including BEGIN/COMMIT), wall and CPU microseconds per call;
2. py-spy (``--idle``, so time spent waiting on a socket counts) on a child process
   that runs the same loop, summarised as a split of wall time by where it goes
   (waiting on Redis or PostgreSQL, CPU in our code, Celery/kombu, redis-py, the ORM,
   psycopg) and the heaviest functions of ``distributed_tasks``;
3. the same py-spy split for the pool process of a real ``dt_worker`` draining no-op
   runs, which adds what Celery does around ``execute``.

Raw py-spy samples are kept in the log directory (flamegraph-ready).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "profile"
PY_SPY = Path(sys.executable).with_name("py-spy")
RATE = 400  # samples per second
OPS = ["raw apply_async", "start_async", "start_many (100)", "get_status hit",
       "get_status DB fallback", "execute (in-process)"]  # fmt: skip
# Python frames that block in a system call: time there is a round trip, not CPU. A send
# counts too: on a busy machine the kernel often switches to the server right in it.
WAIT_LEAVES = frozenset(
    {"_read_from_socket", "send_packed_command", "_execute_send", "wait", "wait_c", "select",
     "poll", "recv", "_recv", "sleep"}
)  # fmt: skip
PACKAGES = ["psycopg", "redis", "kombu", "celery", "billiard", "django/db", "django",
            "distributed_tasks", "benchmarks"]  # fmt: skip


# -- the loops ------------------------------------------------------------------------


def workload(op: str, n: int) -> Callable[[int], None]:
    """A function doing ``n`` calls of ``op`` (set up here, untimed)."""
    from benchmarks.celeryapp import plain_noop
    from benchmarks.tasks import echo, noop
    from distributed_tasks import get_status, keys, runner, start_async, start_many
    from distributed_tasks.connection import get_redis
    from distributed_tasks.models import TaskRun
    from distributed_tasks.store import message_for

    tag = f"{op.split()[0]}-{time.monotonic_ns()}"
    if op == "raw apply_async":
        return lambda n: [plain_noop.apply_async(args=[None], queue="bench.sink") for _ in range(n)]
    if op == "start_async":
        return lambda n: [start_async(noop, name=f"{tag}-{i}") for i in range(n)]
    if op == "start_many (100)":

        def many(n: int) -> None:
            for b in range(0, n, 100):
                start_many([{"func": noop, "name": f"{tag}-{b}-{i}"} for i in range(100)])

        return many
    if op in ("get_status hit", "get_status DB fallback"):
        handle = start_async(echo, args=[{"a": 1}], name=tag)
        runner.execute(message_for(TaskRun.objects.get(id=handle.run_id)).to_body())
        key = keys.run_key("default", tag)

        def status(n: int) -> None:
            for _ in range(n):
                if op.endswith("fallback"):
                    get_redis().delete(key)
                get_status(tag)

        return status
    if op == "execute (in-process)":
        start_many([{"func": noop, "name": f"{tag}-{i}"} for i in range(n)])
        bodies = [message_for(r).to_body() for r in TaskRun.objects.filter(name__startswith=tag)]

        def execute(n: int) -> None:
            for body in bodies[:n]:
                runner.execute(body)

        return execute
    raise ValueError(op)


# -- round trips ----------------------------------------------------------------------


@contextlib.contextmanager
def _patched(owner: Any, name: str, counts: collections.Counter[str], key: Callable) -> Iterator:
    """Count calls of ``owner.name`` under ``key(*args)`` (a counter name, or None)."""
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        label = key(*args, **kwargs)
        if label:
            counts[label] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def round_trips() -> Iterator[collections.Counter[str]]:
    """Count Redis and PostgreSQL round trips made inside the block.

    Redis: socket writes of redis-py (a pipeline is one). PostgreSQL: statements
    through Django's cursors, plus each COMMIT/ROLLBACK and the BEGIN that psycopg
    sends when a transaction starts (counted where Django turns autocommit off).
    """
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper
    from redis.connection import AbstractConnection

    counts: collections.Counter[str] = collections.Counter()
    patches = [
        (AbstractConnection, "send_packed_command", lambda *a, **k: "redis"),
        (CursorWrapper, "_execute_with_wrappers", lambda *a, **k: "postgres"),
        (BaseDatabaseWrapper, "_commit", lambda *a, **k: "postgres"),
        (BaseDatabaseWrapper, "_rollback", lambda *a, **k: "postgres"),
        (BaseDatabaseWrapper, "set_autocommit", lambda _c, on, *a, **k: None if on else "postgres"),
        (BaseDatabaseWrapper, "connect", lambda *a, **k: "postgres_connects"),
    ]
    with contextlib.ExitStack() as stack:
        for owner, name, key in patches:
            stack.enter_context(_patched(owner, name, counts, key))
        yield counts


def measure_calls(op: str, n: int) -> dict[str, float]:
    """Round trips, wall and CPU per call (per item for batches)."""
    workload(op, 100)(100)  # warm-up
    run = workload(op, n)
    with round_trips() as counts:
        wall, cpu = time.perf_counter(), time.process_time()
        run(n)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "redis_round_trips": counts["redis"] / n,
        "postgres_round_trips": counts["postgres"] / n,
        "wall_us": wall / n * 1e6,
        "cpu_us": cpu / n * 1e6,
    }


# -- py-spy ---------------------------------------------------------------------------


def _func(frame: str) -> str:
    return frame.split(" (", 1)[0].rsplit(".", 1)[-1]


def _package(frame: str) -> str | None:
    path = frame.rsplit("(", 1)[-1]
    return next((p for p in PACKAGES if f"{p}/" in path), None)


def category(stack: list[str]) -> str:
    """Where one sample's time goes: waiting on a server, or CPU in which package."""
    if any("wait_conn" in f or "_connect_gen" in f for f in stack):
        return "PostgreSQL connect"
    leaf = stack[-1]
    if "billiard/" in leaf and _func(leaf) == "_recv":
        return "idle: pool process waits for a job"
    if _func(leaf) in WAIT_LEAVES:
        if any("psycopg/" in f for f in stack):
            return "round trip: PostgreSQL"
        if any("redis/" in f or "kombu/" in f for f in stack):
            return "round trip: Redis"
        return "waiting: other"
    for frame in reversed(stack):
        package = _package(frame)
        if package:
            return f"cpu: {package}"
    return "cpu: other"


def summarize(raw: Path, focus: str | None = None, top: int = 12) -> dict[str, Any]:
    """Shares of wall time by category, and the heaviest frames of distributed_tasks."""
    categories: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or (focus and focus not in stack_text):
            continue
        stack, n = stack_text.split(";"), int(count)
        if focus:  # keep the frames from the focus down
            stack = stack[next(i for i, f in enumerate(stack) if focus in f) :]
        total += n
        categories[category(stack)] += n
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack}:
            if "distributed_tasks/" in frame or _func(frame) in ("apply_async", "load_scripts"):
                inclusive[frame] += n
    share = {k: v / total for k, v in categories.most_common()} if total else {}
    heavy = {k: v / total for k, v in inclusive.most_common(top)} if total else {}
    return {"samples": total, "categories": share, "inclusive": heavy}


def record_child(op: str, n: int, out: Path) -> None:
    """py-spy on a child process that runs ``op`` n times once it is set up."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.profile_hot_paths", "--child", op, "--n", str(n)],
        cwd=common.ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout and child.stdin
        if child.stdout.readline().strip() != "READY":
            raise RuntimeError(f"profiling child for {op} did not start")
        spy = _spy(child.pid, out)
        time.sleep(0.5)  # py-spy attaches
        child.stdin.write("go\n")
        child.stdin.flush()
        child.wait(timeout=600)
        spy.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()


def _spy(pid: int, out: Path, *extra: str) -> subprocess.Popen:
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--idle", "-r", str(RATE), "-f", "raw"]
    return subprocess.Popen(
        [*argv, "-o", str(out), "--nonblocking", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def child_main(op: str, n: int) -> None:
    common.setup()
    with common.idle_node("profile"):
        workload(op, 100)(100)
        run = workload(op, n)
        print("READY", flush=True)
        sys.stdin.readline()
        run(n)
    common.reset_state()


def record_worker(n: int, out: Path) -> None:
    """py-spy on a real dt_worker (one pool process) draining ``n`` queued no-op runs."""
    from benchmarks.tasks import noop
    from distributed_tasks import start_many
    from distributed_tasks.connection import get_redis

    env = {"DT_BENCH_NODE_TIMEOUT": "120"}
    with common.cluster("profile", **env) as procs:
        node = common.node_name("profile-worker")
        procs.start_worker(node, concurrency=1)
        procs.wait_live(node)
        procs.signal_group(node, signal.SIGSTOP)
        for b in range(0, n, 500):
            calls = [
                {"func": noop, "args": ["bench:prof"], "name": f"w-{b + i}"} for i in range(500)
            ]
            start_many(calls[: n - b])
        spy = _spy(procs.procs[node].pid, out, "--subprocesses")
        time.sleep(0.5)
        procs.signal_group(node, signal.SIGCONT)
        common.poll_until(lambda: int(get_redis().get("bench:prof") or 0) >= n, timeout=600)
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


# -- report ---------------------------------------------------------------------------


def report(calls: dict[str, dict], profiles: dict[str, dict]) -> None:
    common.print_table(
        "Per call (per item for start_many; execute without Celery around it; "
        "the DB fallback includes the DEL that loses the cache)",
        ["path", "Redis round trips", "PG round trips", "wall us", "client CPU us"],
        [
            (op, c["redis_round_trips"], c["postgres_round_trips"], c["wall_us"], c["cpu_us"])
            for op, c in calls.items()
        ],
    )
    for op, prof in profiles.items():
        common.print_table(
            f"Where wall time goes: {op} ({prof['samples']} py-spy samples)",
            ["category", "share %"],
            [(k, v * 100) for k, v in prof["categories"].items()],
        )
        common.print_table(
            f"Heaviest frames (inclusive): {op}",
            ["frame", "share %"],
            [(k, v * 100) for k, v in prof["inclusive"].items()],
        )


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="calls per path (default 2000, quick 300)")
        p.add_argument("--no-py-spy", action="store_true", help="counters only")
        p.add_argument("--child", help=argparse.SUPPRESS)

    args = common.parse_args(__doc__.splitlines()[0], options)
    n = common.sized(args, "n", 2000, 300)
    if args.child:
        child_main(args.child, n)
        return
    common.setup()
    spy = not args.no_py_spy and (PY_SPY.exists() or shutil.which("py-spy"))
    raw_dir = common.LOG_ROOT / "profile"
    raw_dir.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, dict] = {}
    try:
        with common.idle_node("profile"):
            calls = {op: measure_calls(op, n) for op in OPS}
        if spy:
            for op in OPS:
                raw = raw_dir / f"{re.sub(r'[^a-z]+', '_', op.lower())}.raw"
                record_child(op, n, raw)
                profiles[op] = summarize(raw, focus="workload.<locals>")
            worker_raw = raw_dir / "dt_worker.raw"
            record_worker(n, worker_raw)
            profiles["dt_worker pool process"] = summarize(worker_raw, focus="workloop")
    finally:
        common.reset_state()
    report(calls, profiles)
    print(f"\npy-spy raw samples: {raw_dir}" if spy else "\npy-spy skipped: counters only")
    checks = [
        common.Check(f"{op}: Redis/PG round trips", f"{c['redis_round_trips']:.2f}/{pg:.2f}")
        for op, c in calls.items()
        for pg in [c["postgres_round_trips"]]
    ]
    common.write_result(NAME, args=args, data={"calls": calls, "profiles": profiles}, checks=checks)


if __name__ == "__main__":
    main()
