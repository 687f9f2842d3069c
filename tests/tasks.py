"""Registered functions the tests start on real workers.

They report what they did through Redis (database 15), which both the test
process and the worker processes reach, so a test can observe execution counts
and wait for events instead of sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

from distributed_tasks import DistributedTask, RunInfo, distributed_task
from distributed_tasks.connection import get_redis

WAIT_LIMIT = 60.0


@distributed_task
def add(a: int, b: int) -> int:
    return a + b


@distributed_task(timeout=7, max_attempts=3)
def with_options() -> None:
    """Registered with defaults that start_async picks up."""


@distributed_task
def chatty(word: str) -> str:
    """Logs through its own logger: the run's fields come from logs.RunContextFilter."""
    logging.getLogger("tests.tasks").warning("chatty says %s", word)
    return word


@distributed_task
def fail(message: str) -> None:
    raise ValueError(message)


@distributed_task
def count(key: str, result: Any = None) -> Any:
    """Counts its executions in Redis under ``key``."""
    get_redis().incr(key)
    return result


@distributed_task
def wait_for(key: str, counter: str | None = None, limit: float = WAIT_LIMIT) -> str:
    """Runs until the test sets ``key`` in Redis (or ``limit`` passes): a controllable long run."""
    redis = get_redis()
    if counter:
        redis.incr(counter)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if redis.exists(key):
            return "released"
        time.sleep(0.02)
    return "limit"


@distributed_task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@distributed_task
def exit_process(code: int = 1) -> None:
    """Kills its own pool process, as a segfault or an OOM kill would."""
    os._exit(code)


@distributed_task
def not_json() -> Any:
    return {1, 2, 3}


@distributed_task
def record(name: str, result: Any) -> None:
    """A callback: remembers what it was called with."""
    get_redis().rpush(f"callback:{name}", repr(result))


@distributed_task
def spoiling_callback(name: str, result: Any) -> None:
    """A callback that changes the result it was given into something not JSON."""
    result["spoiled"] = {name}


@distributed_task
def failing_callback(name: str, result: Any) -> None:
    raise RuntimeError(f"callback for {name} failed")


class Hooked(DistributedTask):
    """Class form: reports which hook ran into Redis list ``hooks:<name>``."""

    def run(self, mode: str = "ok", seconds: float = 0.0) -> str:
        if seconds:
            time.sleep(seconds)
        if mode == "raise":
            raise KeyError("boom")
        if mode == "exit":
            os._exit(3)
        return mode

    def _note(self, run: RunInfo, what: str) -> None:
        get_redis().rpush(f"hooks:{run.name}", what)

    def on_success(self, run: RunInfo, result: Any) -> None:
        self._note(run, f"success:{result}")

    def on_failure(self, run: RunInfo, exc: BaseException) -> None:
        self._note(run, f"failure:{type(exc).__name__}")

    def on_timeout(self, run: RunInfo) -> None:
        self._note(run, "timeout")


# Opened by the test of hooks.py: until then SlowHook's on_failure waits (at most 10 s).
HOOK_GATE = threading.Event()


class SlowHook(Hooked):
    """Its ``on_failure`` waits for ``HOOK_GATE`` before it notes it ran."""

    def on_failure(self, run: RunInfo, exc: BaseException) -> None:
        HOOK_GATE.wait(10)
        super().on_failure(run, exc)


@distributed_task
def where() -> str | None:
    """The node executing this run, as the worker process knows itself."""
    from distributed_tasks.nodes import current_node

    node = current_node()
    return node.name if node else None


# -- django.tasks fixtures (distributed_tasks.backends) ------------------------------------
# Declared the documented way, Django's @task over @distributed_task, so worker processes
# register the function on import like any other distributed task.

from distributed_tasks.compat import task as django_task  # noqa: E402


@django_task
@distributed_task
def backend_add(a: int, b: int) -> int:
    return a + b


@django_task
@distributed_task
def backend_fail(message: str) -> None:
    raise ValueError(message)


@distributed_task
def journal(key: str, release: str, limit: float = WAIT_LIMIT) -> str:
    """Notes (node, time) of each execution in Redis list ``key``, then waits for ``release``."""
    import json

    from distributed_tasks.nodes import current_node

    node = current_node()
    get_redis().rpush(key, json.dumps({"node": node.name if node else None, "at": time.time()}))
    return wait_for(release, limit=limit)


@distributed_task
def ignore_soft_limit(seconds: float) -> str:
    """Swallows the soft time limit and keeps going: only the hard limit stops it."""
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(0.05)
    return "finished"


@distributed_task
def flaky(key: str) -> str:
    """Fails on its first execution, succeeds on the next (counted in Redis under ``key``)."""
    if get_redis().incr(key) == 1:
        raise ConnectionError("first execution fails")
    return "second time lucky"


# -- periodic tasks (declared per test through DT_TEST_PERIODIC / settings overrides) -------

from distributed_tasks import PeriodicTask  # noqa: E402


class Counter(PeriodicTask):
    """Counts its runs in its state and notes (node, time) of each in Redis."""

    def init(self, args: dict) -> dict:
        return {"count": args.get("start", 0)}

    def execute(self, state: dict) -> dict:
        import json

        from distributed_tasks.nodes import current_node

        node = current_node()
        get_redis().rpush(
            "periodic-log:counter",
            json.dumps({"node": node.name if node else None, "at": time.time()}),
        )
        return {"count": state["count"] + 1}


class Sleepy(PeriodicTask):
    """Takes longer than its timeout."""

    def execute(self, state):
        time.sleep(30)
        return state


class Broken(PeriodicTask):
    def execute(self, state):
        raise RuntimeError("periodic failure")


class NodesRaises(Counter):
    def nodes(self, live_nodes: list[str]) -> list[str]:
        raise KeyError("a bug in nodes()")


class FirstNodeOnly(Counter):
    def nodes(self, live_nodes: list[str]) -> list[str]:
        return live_nodes[:1]


class NodesSeesTransaction(Counter):
    """Records whether the leader called its ``nodes()`` inside a database transaction."""

    calls: list[bool] = []

    def nodes(self, live_nodes: list[str]) -> list[str]:
        from django.db import connection

        NodesSeesTransaction.calls.append(connection.in_atomic_block)
        return live_nodes


# -- task records (seed 004): data key-values read through data_attr ----------------------

from distributed_tasks.records import data_attr  # noqa: E402


class FetchFile(DistributedTask):
    external_host = data_attr("external_host")
    filename = data_attr(default="index.html")

    def run(self) -> str:
        return f"https://{self.external_host}/{self.filename}"


@distributed_task
def timed(key: str, seconds: float) -> float:
    """Notes its start and end (node, time) in Redis list ``key``: the soak test's journal."""
    import json

    from distributed_tasks.nodes import current_node

    node = current_node()
    name = node.name if node else None
    redis = get_redis()
    redis.rpush(key, json.dumps({"event": "start", "node": name, "at": time.time()}))
    time.sleep(seconds)
    redis.rpush(key, json.dumps({"event": "end", "node": name, "at": time.time()}))
    return seconds


# -- Faults (tests/faults): what user code can do to the worker that runs it ----------------


@distributed_task
def interrupt(kind: str) -> None:
    """Raises what is not an ``Exception``: Celery would let it end the pool process."""
    raise {"exit": SystemExit(2), "keyboard": KeyboardInterrupt(), "generator": GeneratorExit()}[
        kind
    ]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this exception")


class UnprintableExit(SystemExit):
    def __str__(self) -> str:
        raise RuntimeError("no text for this exit")


@distributed_task
def unstorable(kind: str) -> Any:
    """Fails, or returns, with text that databases refuse to store as it is, or with an
    exception whose text cannot be had at all."""
    if kind == "unprintable_error":
        raise Unprintable()
    if kind == "unprintable_exit":
        raise UnprintableExit()
    if kind == "nul_error":
        raise ValueError("a NUL \x00 in the message")
    if kind == "surrogate_error":
        raise ValueError("a lone \ud800 surrogate")
    if kind == "surrogate_result":
        return {"text": "\udfff"}
    if kind == "long_class":
        raise type("Long" * 100, (Exception,), {})("its class name does not fit the column")
    return kind


@distributed_task
def soft_limit() -> None:
    """Meets a soft time limit with no timeout of its own (Celery's task_soft_time_limit)."""
    from celery.exceptions import SoftTimeLimitExceeded

    raise SoftTimeLimitExceeded()


@distributed_task
def callback_meets_its_limit(name: str, result: Any) -> None:
    """A callback still running when the run's soft limit strikes."""
    from celery.exceptions import SoftTimeLimitExceeded

    raise SoftTimeLimitExceeded()


@distributed_task
def soft_signal(after: float) -> str:
    """Sends its own process the soft-time-limit signal ``after`` seconds in, as Celery's
    pool does when a job meets its soft limit; returns if the signal did not stop it."""
    import signal

    time.sleep(after)
    os.kill(os.getpid(), signal.SIGUSR1)
    return "not stopped"


class SoftSignalTwice(Hooked):
    """Meets its soft limit ``after`` seconds in, and Celery's second signal for it comes
    while its ``on_timeout`` hook runs; the hook reports whether it ran to its end."""

    def run(self, after: float) -> str:  # type: ignore[override]
        return soft_signal(after)

    def on_timeout(self, run: RunInfo) -> None:
        import signal

        os.kill(os.getpid(), signal.SIGUSR1)
        self._note(run, "timeout handled")


@distributed_task
def megabytes(count: int) -> str:
    """Returns ``count`` MiB of text: more than MariaDB's default max_allowed_packet at 20."""
    return "x" * (count * 1024 * 1024)


# -- Running runs (tests/cluster/test_running_runs.py): progress and cancel ---------------


@distributed_task
def progress_then_wait(key: str) -> str:
    """Reports half way, notes it in Redis list ``key``, waits for ``<key>:go``, reports
    the end and returns."""
    from distributed_tasks import report_progress

    redis = get_redis()
    report_progress(0.5, "half way", items=21)
    redis.rpush(key, time.time())
    deadline = time.monotonic() + WAIT_LIMIT
    while not redis.exists(f"{key}:go") and time.monotonic() < deadline:
        time.sleep(0.02)
    report_progress(1.0, "all done", items=42)
    return "reported"


@distributed_task
def until_cancelled(key: str, gate: str | None = None, interval: float = 0.1) -> str:
    """Notes its start in list ``key``, waits for ``gate`` (if given) to exist, then checks
    ``cancel_requested()`` every ``interval`` and returns when it is asked to stop."""
    from distributed_tasks import cancel_requested

    redis = get_redis()
    redis.rpush(key, "started")
    deadline = time.monotonic() + WAIT_LIMIT
    while gate and not redis.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    while time.monotonic() < deadline:
        if cancel_requested():
            redis.rpush(key, "saw the request")
            return "stopped early"
        time.sleep(interval)
    return "limit"


@distributed_task
async def async_until_cancelled(key: str) -> str:
    """An ``async def`` task that never checks: its node cancels it (CancelledError)."""
    import asyncio

    redis = get_redis()
    redis.rpush(key, "started")
    try:
        await asyncio.sleep(WAIT_LIMIT)
    except asyncio.CancelledError:
        redis.rpush(key, "CancelledError")
        raise
    return "limit"


@distributed_task
def report_many(count: int) -> int:
    """Reports progress ``count`` times as fast as it can."""
    from distributed_tasks import report_progress

    for i in range(1, count + 1):
        report_progress(i / count, f"item {i}", done=i)
    return count


class Hostile:
    """A value whose conversions all raise: user code can hand anything over."""

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@distributed_task
def report_badly() -> str:
    """Reports what report_progress cannot use: none of it may fail the run."""
    from distributed_tasks import report_progress

    report_progress("lots")
    report_progress(0.25, "ok so far", good=1)
    report_progress(2.0, bad=float("nan"))
    report_progress(None, blob=object())
    return "fine"


@distributed_task
def report_hostile() -> str:
    """Reports values whose __float__, __str__ and __repr__ raise: the run still ends DONE."""
    from distributed_tasks import report_progress

    report_progress(Hostile(), Hostile(), blob=Hostile())
    return "fine"


class SelfCancelled(DistributedTask):
    """Cancels its own run, waits until it sees the request, then returns as if done."""

    def run(self, by: str) -> str:
        from distributed_tasks import cancel

        cancel(self.info.name, by=by)
        deadline = time.monotonic() + 10
        while not self.cancel_requested() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "ignored it"

    def on_failure(self, run: RunInfo, exc: BaseException) -> None:
        get_redis().rpush(f"{run.name}:failure", f"{type(exc).__name__}: {exc}")


class Stuck(DistributedTask):
    """Blocks in C (``time.sleep``) and never checks; notes in list ``key`` what
    ``on_failure`` receives."""

    def run(self, key: str, seconds: float) -> str:
        get_redis().rpush(key, "started")
        time.sleep(seconds)
        return "woke up"

    def on_failure(self, run: RunInfo, exc: BaseException) -> None:
        get_redis().rpush(run.args[0], f"on_failure {type(exc).__name__}")


# The backend contract's Django tasks register in every process that imports this module.
from tests.backend_contract import tasks as _backend_contract_tasks  # noqa: E402, F401


@distributed_task
def progress_in_transaction(name: str) -> list:
    """Reports progress inside its own transaction and returns what another connection
    reads of the row meanwhile (the write joined the task's transaction before: nobody
    saw it, and the row stayed locked until the task committed)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections, transaction

    from distributed_tasks import report_progress
    from distributed_tasks.models import TaskRun

    def read() -> list:
        try:
            rows = TaskRun.objects.filter(active_name=name)
            return list(rows.values_list("progress", "progress_message"))
        finally:
            connections.close_all()

    with transaction.atomic():
        report_progress(0.5, "inside")  # progress.ROW_INTERVAL is 0 in the test
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(read).result()


class Unbuildable(DistributedTask):
    """A task class whose constructor raises."""

    def __init__(self) -> None:
        raise RuntimeError("this task cannot be built")

    def run(self) -> None:
        return None


@distributed_task
def cancel_self_in_transaction(name: str) -> str:
    """Cancels its own run inside a transaction (which locks its row until the commit),
    then reports progress: a write on another connection would wait for that lock, and
    the task would wait for the write."""
    from django.db import transaction

    from distributed_tasks import cancel, report_progress

    with transaction.atomic():
        cancel(name, by="itself")
        report_progress(0.5, "behind a lock")  # progress.ROW_INTERVAL is 0 in the test
    return "not stuck"
