"""The soak test behind ``make soak`` (not part of ``make test``): mixed load with chaos.

For ``SOAK_MINUTES`` (default 8, plus set-up and drain: under 10 minutes) it runs 3
worker nodes and 2 orchestrator beats as real processes, with one periodic task, and
from this process starts unique runs, starts duplicates and polls statuses, while a
schedule SIGKILLs a worker and the leader beat and restarts them. It then lets the
cluster drain and checks the invariants:

1. no name ran twice concurrently (execution intervals of one name never overlap; an
   execution killed with its node ends at the kill);
2. every started run is accounted for: one row per handle, all DONE or FAILED;
3. no periodic slot ran twice;
4. no row is left RUNNING (on a dead node or any other).

It prints a summary table and exits non-zero if an invariant fails. Redis database 8
and PostgreSQL database ``dt_soak`` keep it away from tests and the demo.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = os.environ.get("DT_SOAK_DB", "dt_soak")
REDIS_URL = os.environ.get("DT_SOAK_REDIS_URL", "redis://127.0.0.1:6379/8")
PERIODIC = {"soak-counter": {"task": "tests.tasks.Counter", "interval": 2}}
NODES = ("soak-w1@local", "soak-w2@local", "soak-w3@local")
BEATS = ("soak-beat-1", "soak-beat-2")


def setup_environment() -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DT_TEST_DB_NAME": DB_NAME,
        "DT_TEST_REDIS_URL": REDIS_URL,
        "DT_TEST_PERIODIC": json.dumps(PERIODIC),
        "DT_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    # --force: a soak cut off earlier may have left connections to the old database.
    dropdb = ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", DB_NAME]
    subprocess.run(dropdb, check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DB_NAME], check=True)
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], check=True)
    return env


class Load:
    """Starts, duplicate starts and status polls from this process, in threads."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.handles: dict[str, str] = {}  # name -> run id of the handle we got
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def starter(self) -> None:
        from distributed_tasks import ClusterUnavailable, start_async

        i = 0
        while not self.stop.is_set():
            name = f"soak-{i}"
            try:
                seconds = random.uniform(0.1, 1.0)
                handle = start_async("tests.tasks.timed", [f"journal:{name}", seconds], name=name,
                                     max_attempts=random.choice((1, 2)))  # fmt: skip
                with self.lock:
                    self.handles[name] = handle.run_id
                self.counts["started"] += 1
                i += 1
            except ClusterUnavailable:
                self.counts["unavailable"] += 1
            # ~4 starts/s of ~0.55 s each: about a third of the 6 pool processes, so a
            # node down for 10 s leaves a backlog the others absorb (load, not overload).
            self.stop.wait(0.25)

    def duplicates(self) -> None:
        from distributed_tasks import AlreadyRunning, ClusterUnavailable, start_async

        while not self.stop.is_set():
            with self.lock:
                names = list(self.handles)[-20:]
            if names:
                name = random.choice(names)
                try:
                    start_async("tests.tasks.timed", [f"journal:{name}", 0.1], name=name,
                                reuse="reject")  # fmt: skip
                    self.counts["duplicate_accepted"] += 1  # must never happen with reject
                except AlreadyRunning:
                    self.counts["duplicates_refused"] += 1
                except ClusterUnavailable:
                    self.counts["unavailable"] += 1
            self.stop.wait(0.1)

    def poller(self) -> None:
        from distributed_tasks import get_status

        while not self.stop.is_set():
            with self.lock:
                names = list(self.handles)[-50:]
            if names:
                get_status(random.choice(names))
                self.counts["polls"] += 1
            self.stop.wait(0.01)


class Chaos:
    """SIGKILL a worker every 60 s and the leader every 90 s; restart them 10 s later."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.kills: list[tuple[str, float]] = []  # (node, wall time of the kill)

    def run(self, stop: threading.Event) -> None:
        began = time.monotonic()
        next_worker, next_leader = began + 30, began + 45
        while not stop.wait(0.5):
            now = time.monotonic()
            if now >= next_worker:
                self._kill(random.choice(NODES))
                next_worker = now + 60
            if now >= next_leader:
                from distributed_tasks.lease import current_leader

                leader = current_leader()
                if leader:
                    self._kill(leader.holder)
                next_leader = now + 90

    def _kill(self, key: str) -> None:
        if not self.cluster.running(key):
            return
        self.cluster.kill(key, signal.SIGKILL)
        self.kills.append((key, time.time()))
        print(f"[soak] SIGKILL {key}", flush=True)
        threading.Timer(10, self._restart, args=(key,)).start()

    def _restart(self, key: str) -> None:
        self.cluster.revive(key)
        print(f"[soak] restarted {key}", flush=True)


def executions(redis, name: str, kills: list[tuple[str, float]]) -> list[tuple[float, float]]:
    """(start, end) of each execution of ``name``; a killed one ends when its node died."""
    spans, open_starts = [], {}
    for raw in redis.lrange(f"journal:{name}", 0, -1):
        event = json.loads(raw)
        if event["event"] == "start":
            open_starts[event["node"]] = event["at"]
        elif event["node"] in open_starts:
            spans.append((open_starts.pop(event["node"]), event["at"]))
    for node, started in open_starts.items():
        died = min((at for key, at in kills if key == node and at >= started), default=None)
        spans.append((started, died if died is not None else float("inf")))
    return sorted(spans)


def overlaps(spans: list[tuple[float, float]]) -> bool:
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def check(load: Load, chaos: Chaos) -> list[tuple[str, bool, str]]:
    from distributed_tasks.connection import get_redis
    from distributed_tasks.models import TaskRun

    redis = get_redis()
    rows = {r.name: r for r in TaskRun.objects.filter(name__startswith="soak-")}
    overlapping = [name for name in load.handles if overlaps(executions(redis, name, chaos.kills))]
    missing = [name for name in load.handles if name not in rows]
    unfinished = [name for name, row in rows.items() if row.state not in ("DONE", "FAILED")]
    periodic = list(TaskRun.objects.filter(name="periodic:soak-counter").values_list("args",
                    flat=True))  # fmt: skip
    slots = Counter(args[1] for args in periodic)
    twice = [slot for slot, n in slots.items() if n > 1]
    running = TaskRun.objects.filter(state="RUNNING").count()
    return [
        ("no name ran twice concurrently", not overlapping, f"{len(overlapping)} overlapping"),
        ("every started run has its row", not missing, f"{len(missing)} missing"),
        ("every run ended DONE or FAILED", not unfinished, f"{len(unfinished)} not finished"),
        ("a rejected duplicate never started", load.counts["duplicate_accepted"] == 0,
         f"{load.counts['duplicate_accepted']} accepted"),
        ("no periodic slot ran twice", not twice, f"{len(periodic)} slots, {len(twice)} twice"),
        ("no row left RUNNING", running == 0, f"{running} RUNNING"),
    ]  # fmt: skip


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "8"))
    setup_environment()
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from distributed_tasks.connection import get_redis
    from distributed_tasks.localcluster import LocalCluster, poll_until
    from distributed_tasks.models import TaskRun

    get_redis().flushdb()
    cluster = LocalCluster(ROOT / "manage.py", ROOT / ".soak" / "logs")
    load, chaos = Load(), None
    began = time.monotonic()
    try:
        for node in NODES:
            cluster.start_worker(node, concurrency=2)
        for beat in BEATS:
            cluster.start_beat(beat)
        cluster.wait_live(*NODES)
        cluster.wait_leader()
        chaos = Chaos(cluster)
        threads = [threading.Thread(target=t) for t in (load.starter, load.duplicates,
                                                          load.poller)]  # fmt: skip
        threads.append(threading.Thread(target=chaos.run, args=(load.stop,)))
        for thread in threads:
            thread.start()
        print(f"[soak] load for {minutes:g} min", flush=True)
        load.stop.wait(minutes * 60)
        load.stop.set()
        for thread in threads:
            thread.join()
        poll_until(lambda: len([k for k in NODES + BEATS if cluster.running(k)]) == 5,
                   timeout=30, message="restarted processes")  # fmt: skip
        print("[soak] draining", flush=True)
        poll_until(
            lambda: not TaskRun.objects.filter(name__startswith="soak-").active().exists(),
            timeout=90, interval=1, message="every run to finish",
        )  # fmt: skip
        results = check(load, chaos)
    finally:
        load.stop.set()
        cluster.stop_all()
    print(f"\n{'invariant':<40} {'result':<6} detail")
    for name, ok, detail in results:
        print(f"{name:<40} {'PASS' if ok else 'FAIL':<6} {detail}")
    rows = TaskRun.objects.filter(name__startswith="soak-")
    print(f"\n{'load':<40} count")
    for key, value in [*sorted(load.counts.items()), ("kills", len(chaos.kills)),
                       ("runs DONE", rows.filter(state="DONE").count()),
                       ("runs FAILED", rows.filter(state="FAILED").count()),
                       ("runs retried", rows.filter(executions__gt=1).count()),
                       ("minutes", round((time.monotonic() - began) / 60, 1))]:  # fmt: skip
        print(f"{key:<40} {value}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
