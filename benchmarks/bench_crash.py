"""Crash behaviour: after SIGKILL of the worker running a unique task, when can it start again?

Side by side, at the same instant:

- distributed_tasks: a ``hold`` run on one of two ``dt_worker`` nodes, with a ``dt_beat``
  orchestrator; its node's process group is killed. We retry ``start_async`` of the
  name until it succeeds (the leader's lifeline declares the node lost after
  ``NODE_TIMEOUT`` and fails its runs, which frees the name);
- celery-once (``QueueOnce``, default settings) and celery-singleton (``Singleton``,
  default settings): a ``hold`` task on a plain Celery worker, killed the same way; we
  retry ``apply_async`` until it is accepted, up to a bound.

The locks' remaining TTL right after the kill is read from Redis (-1: no expiry), so
"never within X s" comes with what the peers would need.
"""

from __future__ import annotations

import abc
import argparse
import time
from typing import Any

from benchmarks import common

NAME = "crash"
PEER_QUEUE = "bench.peers"
PEER_WORKER = f"{common.NODE_PREFIX}peers@bench"
TASK_NAME = "crash-victim"


class Contender(abc.ABC):
    """One library: start the unique task, tell when it runs, retry it after the crash."""

    label = ""

    def __init__(self) -> None:
        from distributed_tasks.connection import get_redis

        self.redis = get_redis()
        self.release = f"bench:crash:{type(self).__name__}:release"
        self.started = f"bench:crash:{type(self).__name__}:started"
        self.recovered_after: float | None = None

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def victim(self) -> str:
        """The process key to kill: the worker running the task."""

    @abc.abstractmethod
    def retry(self) -> bool:
        """Try to start the name again; True once it is accepted."""

    def running(self) -> bool:
        return bool(self.redis.exists(self.started))

    def lock_ttl(self) -> float | None:
        """Seconds the library's lock has left (-1: no expiry); None when it has none."""
        return None


class Ours(Contender):
    label = "distributed_tasks"

    def start(self) -> None:
        from benchmarks.tasks import hold
        from distributed_tasks import start_async

        self.handle = start_async(hold, args=[self.release, self.started], name=TASK_NAME)

    def victim(self) -> str:
        return self.handle.node

    def retry(self) -> bool:
        from benchmarks.tasks import hold
        from distributed_tasks import AlreadyRunning, ClusterUnavailable, start_async

        try:
            start_async(hold, args=[self.release], name=TASK_NAME)
        except (AlreadyRunning, ClusterUnavailable):
            return False
        return True


class Peer(Contender):
    """A plain Celery task whose base class locks at enqueue."""

    refused: tuple[type[BaseException], ...] = ()

    @abc.abstractmethod
    def task(self) -> Any: ...

    @abc.abstractmethod
    def lock_key(self) -> str: ...

    def args(self) -> list[str]:
        return [TASK_NAME, self.release, self.started]

    def start(self) -> None:
        self.task().apply_async(args=self.args(), queue=PEER_QUEUE)

    def victim(self) -> str:
        return PEER_WORKER

    def retry(self) -> bool:
        try:
            self.task().apply_async(args=self.args(), queue=PEER_QUEUE)
        except self.refused:
            return False
        return True

    def lock_ttl(self) -> float | None:
        ttl = self.redis.pttl(self.lock_key())
        return ttl / 1000 if ttl >= 0 else float(ttl)


class Once(Peer):
    label = "celery-once QueueOnce"

    def __init__(self) -> None:
        super().__init__()
        from celery_once import AlreadyQueued

        self.refused = (AlreadyQueued,)

    def task(self) -> Any:
        from benchmarks.celeryapp import once_hold

        return once_hold

    def lock_key(self) -> str:
        return self.task().get_key(self.args(), {})


class Singleton(Peer):
    label = "celery-singleton Singleton"

    def __init__(self) -> None:
        super().__init__()
        from celery_singleton import DuplicateTaskError

        self.refused = (DuplicateTaskError,)

    def task(self) -> Any:
        from benchmarks.celeryapp import singleton_hold

        return singleton_hold

    def lock_key(self) -> str:
        task = self.task()
        return task.generate_lock(task.name, self.args(), {})


def start_cluster(procs: common.BenchCluster) -> None:
    nodes = [common.node_name("crash", i) for i in ("a", "b")]
    for node in nodes:
        procs.start_worker(node, concurrency=1)
    procs.start_beat(f"{common.NODE_PREFIX}crash-beat")
    procs.start_plain_worker(PEER_WORKER, PEER_QUEUE, concurrency=2)
    procs.wait_live(*nodes)
    procs.wait_leader()
    procs.wait_log(PEER_WORKER, "ready.")


def race(procs: common.BenchCluster, contenders: list[Contender], bound: float) -> dict:
    for c in contenders:
        c.start()
    common.poll_until(lambda: all(c.running() for c in contenders), timeout=60, interval=0.02)
    killed_at = time.monotonic()
    for victim in {c.victim() for c in contenders}:
        procs.kill(victim)
    ttls = {c.label: c.lock_ttl() for c in contenders}
    pending = list(contenders)
    while pending and time.monotonic() - killed_at < bound:
        for c in list(pending):
            if c.retry():
                c.recovered_after = time.monotonic() - killed_at
                pending.remove(c)
        time.sleep(0.05)
    return ttls


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bound", type=float, help="seconds to wait (default 30, quick 15)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    bound = args.bound or (15.0 if args.quick else 30.0)
    common.setup()
    contenders: list[Contender] = [Ours(), Once(), Singleton()]
    try:
        with common.cluster(NAME) as procs:
            start_cluster(procs)
            ttls = race(procs, contenders, bound)
            for c in contenders:
                c.redis.set(c.release, "1")
    finally:
        common.reset_state()
    from django.conf import settings

    node_timeout = settings.DISTRIBUTED_TASKS["NODE_TIMEOUT"]

    def outcome(c: Contender) -> str:
        return f"{c.recovered_after:.2f} s" if c.recovered_after else f"never within {bound:g} s"

    def ttl(c: Contender) -> str:
        value = ttls[c.label]
        if value is None:
            return f"n/a (NODE_TIMEOUT {node_timeout:g} s + a tick)"
        return "no expiry" if value < 0 else f"{value:,.0f} s left"

    common.print_table(
        "After SIGKILL of the worker running the unique task",
        ["library", "name can start again after", "lock after the kill"],
        [(c.label, outcome(c), ttl(c)) for c in contenders],
    )
    ours = contenders[0]
    checks = [
        common.Check.at_most(
            "distributed_tasks: restartable after (s)",
            ours.recovered_after or float("inf"),
            node_timeout + 2.0,
            " s",
        ),
        *(common.Check(f"{c.label}: restartable after", outcome(c)) for c in contenders[1:]),
    ]
    data = {
        "bound_s": bound,
        "node_timeout_s": node_timeout,
        "recovered_after_s": {c.label: c.recovered_after for c in contenders},
        "lock_ttl_after_kill_s": ttls,
    }
    common.write_result(NAME, args=args, data=data, checks=checks)


if __name__ == "__main__":
    main()
