"""What every benchmark shares: setup on its own data, timing, tables, JSON results, processes.

A benchmark script calls :func:`setup` first (services up, database ``dt_bench`` created
and migrated, Redis database 9 and the benchmark tables emptied), measures, prints
tables with :func:`print_table`, and ends with :func:`write_result`, which also prints
its checks against the targets. Subprocesses are started through :func:`cluster`,
which always stops them, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distributed_tasks.localcluster import LocalCluster, poll_until

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
LOG_ROOT = Path(tempfile.gettempdir()) / f"dt-bench-logs-{os.getuid()}"
SETTINGS_MODULE = "benchmarks.settings"
CELERY_APP = "benchmarks.celeryapp"
NODE_PREFIX = "bench-"
# Redis databases of the demo (0) and of the test suite (15): never flushed here.
FORBIDDEN_REDIS_DBS = frozenset({0, 15})


# -- command line ---------------------------------------------------------------------


def parse_args(
    description: str, configure: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """``--quick`` (a smoke run in seconds) plus the script's own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run, numbers are indicative"
    )
    if configure:
        configure(parser)
    return parser.parse_args()


def sized(args: argparse.Namespace, name: str, full: int, quick: int) -> int:
    """An explicit ``--<name>`` wins; else the full or the quick default."""
    value = getattr(args, name, None)
    return value if value else (quick if args.quick else full)


# -- setup ----------------------------------------------------------------------------


def _exit_on_sigterm() -> None:
    # run_all stops a script that overruns with SIGTERM: unwind so `finally` stops children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _ensure_database() -> None:
    """Create the benchmark database when it is missing (trust auth, as in the tests)."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')


def _check_isolation() -> None:
    """Refuse to run anywhere but on the benchmarks' own database and Redis database."""
    from django.conf import settings

    from distributed_tasks.connection import get_redis

    name = settings.DATABASES["default"]["NAME"]
    redis_db = int(get_redis().connection_pool.connection_kwargs.get("db", 0))
    if "bench" not in name or redis_db in FORBIDDEN_REDIS_DBS:
        raise SystemExit(
            f"refusing to run: database {name!r} / Redis db {redis_db} are not benchmark data "
            "(DT_BENCH_PG_NAME must contain 'bench'; DT_BENCH_REDIS_URL must not use db 0 or 15)"
        )


def setup(**env: str) -> None:
    """Services up, Django configured on the benchmark data, and that data emptied."""
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    _exit_on_sigterm()
    from tests import services

    services.ensure()
    _ensure_database()
    import django
    from django.core.management import call_command

    django.setup()
    _check_isolation()
    call_command("migrate", verbosity=0, interactive=False)
    reset_state()


def reset_state() -> None:
    """Empty Redis database 9 and the app's tables; forget cached clients and rings."""
    from django.apps import apps
    from django.db import connection

    from distributed_tasks.conf import reset_caches
    from distributed_tasks.connection import get_redis

    _check_isolation()
    get_redis().flushdb()
    tables = [m._meta.db_table for m in apps.get_app_config("distributed_tasks").get_models()]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)}")
    reset_caches()


def node_name(role: str, index: int | str = 1) -> str:
    """A node name no test or demo uses."""
    return f"{NODE_PREFIX}{role}-{index}@{socket.gethostname()}"


@contextlib.contextmanager
def idle_node(role: str = "idle") -> Iterator[Any]:
    """A live node that heartbeats but consumes nothing: placement works, runs stay QUEUED."""
    from distributed_tasks.nodes import Heartbeat, NodeInfo

    beat = Heartbeat(NodeInfo(name=node_name(role)))
    beat.start()
    try:
        poll_until(lambda: beat.beats > 0, timeout=10, message="the first heartbeat")
        yield beat.info
    finally:
        beat.stop(leave=True)


# -- processes ------------------------------------------------------------------------


class BenchCluster(LocalCluster):
    """``dt_worker``/``dt_beat`` subprocesses plus plain ``celery`` ones, on benchmark data."""

    def spawn_celery(self, key: str, argv: list[str], **env: str) -> subprocess.Popen:
        """``python -m celery -A benchmarks.celeryapp <argv>``, kept and stopped like the others."""
        program = [sys.executable, "-m", "celery", "-A", CELERY_APP]
        return self.spawn(key, argv, program=program, **env)

    def start_plain_worker(self, key: str, queue: str, *, concurrency: int) -> subprocess.Popen:
        """A plain Celery worker configured as ``dt_worker`` configures its own."""
        argv = ["worker", "-n", key, "-Q", queue, "-c", str(concurrency), "-P", "prefork"]
        argv += ["-O", "fair", "--prefetch-multiplier", "1", "-l", "INFO"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        return self.spawn_celery(key, argv)

    def wait_log(self, key: str, text: str, *, timeout: float = 60.0) -> None:
        """Wait until ``text`` appears in the log of ``key`` (fails fast if it exited)."""

        def seen() -> bool:
            proc = self.procs.get(key)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{key} exited with {proc.returncode}:\n{self.log(key)}")
            return text in self.log(key, tail=1_000_000)

        poll_until(seen, timeout=timeout, interval=0.1, message=f"{text!r} in {key}'s log")

    def signal_group(self, key: str, sig: int) -> None:
        """Send ``sig`` to the process group of ``key`` (SIGSTOP/SIGCONT pause the pool too)."""
        os.killpg(self.procs[key].pid, sig)


@contextlib.contextmanager
def cluster(bench: str, **env: str) -> Iterator[BenchCluster]:
    """Processes on the benchmark settings; all stopped on the way out, logs kept on failure."""
    log_dir = LOG_ROOT / bench
    for old in log_dir.glob("*.log"):
        old.unlink()
    procs = BenchCluster(
        ROOT / "manage.py",
        log_dir,
        env={"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "DT_LOG_LEVEL": "INFO", **env},
    )
    try:
        yield procs
    except BaseException:
        print(f"[{bench}] failed; process logs are in {log_dir}", file=sys.stderr)
        raise
    finally:
        procs.stop_all()


# -- measuring ------------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.inf


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def summarize_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/max/mean of nanosecond samples, in microseconds."""
    ordered = sorted(samples_ns)
    us = [v / 1000 for v in ordered]
    return {
        "n": len(us),
        "p50_us": percentile(us, 50),
        "p90_us": percentile(us, 90),
        "p99_us": percentile(us, 99),
        "max_us": us[-1] if us else math.nan,
        "mean_us": sum(us) / len(us) if us else math.nan,
    }


def latencies_ns(call: Callable[[], Any], count: int, before: Callable[[], Any] | None = None):
    """Time ``count`` calls one by one; ``before`` runs untimed ahead of each call."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        if before:
            before()
        start = clock()
        call()
        samples.append(clock() - start)
    return samples


@dataclass(frozen=True, slots=True)
class Timed:
    """A call to time, and what to do untimed before each call."""

    call: Callable[[], Any]
    before: Callable[[], Any] | None = None


def interleaved(calls: dict[str, Timed], count: int, rounds: int) -> dict[str, list[int]]:
    """Latency samples of each call, ``count`` in all, taken in interleaved rounds."""
    samples: dict[str, list[int]] = {label: [] for label in calls}
    per_round = max(1, count // rounds)
    for _ in range(rounds):
        for label, timed in calls.items():
            samples[label] += latencies_ns(timed.call, per_round, timed.before)
    return samples


# -- reporting ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One measured number against its target (``ok`` None: informative, no target)."""

    metric: str
    value: float | str
    target: str = ""
    ok: bool | None = None

    @classmethod
    def at_least(cls, metric: str, value: float, floor: float, unit: str = "x") -> Check:
        return cls(metric, value, f">= {floor:g}{unit}", value >= floor)

    @classmethod
    def at_most(cls, metric: str, value: float, ceiling: float, unit: str = "") -> Check:
        return cls(metric, value, f"<= {ceiling:g}{unit}", value <= ceiling)

    @property
    def verdict(self) -> str:
        return {True: "ok", False: "MISS", None: ""}[self.ok]


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Text columns aligned left, numbers right."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(headers))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        out = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        print("  ".join(out).rstrip())


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return ""


def environment() -> dict[str, Any]:
    import celery
    import django

    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "commit": _git_commit(),
    }


def result_path(name: str) -> Path:
    return RESULTS_DIR / f"{name}.json"


def write_result(
    name: str, *, args: argparse.Namespace, data: dict[str, Any], checks: Sequence[Check]
) -> Path:
    """Print the checks and write ``results/<name>.json``."""
    print_table(
        f"{name}: targets",
        ["metric", "value", "target", ""],
        [(c.metric, c.value, c.target, c.verdict) for c in checks],
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    path = result_path(name)
    payload = {
        "benchmark": name,
        "quick": bool(args.quick),
        "environment": environment(),
        "checks": [asdict(c) for c in checks],
        "data": data,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path
