"""Registered functions the benchmarks start (discovered like any installed app's tasks)."""

from __future__ import annotations

import time

from distributed_tasks import distributed_task
from distributed_tasks.connection import get_redis


def count(counter: str | None) -> None:
    """Count one run in Redis when given a counter key (shared with the peers' tasks)."""
    if counter:
        get_redis().incr(counter)


def wait_for_release(release_key: str, started_key: str = "", limit: float = 120.0) -> str:
    """Mark ``started_key``, then wait until ``release_key`` exists (or ``limit`` passes)."""
    redis = get_redis()
    if started_key:
        redis.set(started_key, "1")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if redis.exists(release_key):
            return "released"
        time.sleep(0.05)
    return "limit"


@distributed_task
def noop(counter: str | None = None) -> None:
    """Does nothing but count itself in Redis when given a counter key."""
    count(counter)


@distributed_task
def hold(release_key: str, started_key: str = "", limit: float = 120.0) -> str:
    """Runs until ``release_key`` exists in Redis (or ``limit`` passes): a long unique run."""
    return wait_for_release(release_key, started_key, limit)


@distributed_task
def echo(value: object = None) -> object:
    """Returns its argument: a run whose status carries a small result."""
    return value


def timed_sleep(seconds: float, sent_at: float, journal: str, node: str) -> None:
    """Note how long the run waited since ``sent_at``, sleep, note the end (shared with peers)."""
    started = time.time()
    time.sleep(seconds)
    get_redis().rpush(journal, f"{started - sent_at:.6f} {time.time():.6f} {node}")


@distributed_task
def mixed(seconds: float, sent_at: float, journal: str) -> None:
    """A run of a known duration that journals its queue wait (placement benchmark)."""
    from distributed_tasks.nodes import current_node

    node = current_node()
    timed_sleep(seconds, sent_at, journal, node.name if node else "")


@distributed_task
def paced(seconds: float, hz: float, report: bool) -> int:
    """Loops ``seconds`` at ``hz`` ticks a second, reporting progress at each tick when
    ``report``: the same run with and without progress (bench_progress)."""
    from distributed_tasks import report_progress

    ticks = int(seconds * hz)
    start = time.monotonic()
    for i in range(ticks):
        if report:
            report_progress(i / ticks, f"tick {i} of {ticks}", tick=i)
        delay = start + (i + 1) / hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return ticks
