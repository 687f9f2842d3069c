"""How far a running run is: ``report_progress()`` inside the task, written throttled.

A task may report progress as often as it likes (every item of a loop), so a
report only stores the values in memory; what reaches the outside is throttled:
Redis (what ``get_status`` reads) at most every ``REDIS_INTERVAL`` (a timer thread
writes the last value of a burst), the row at most every ``ROW_INTERVAL`` and once
when the run ends, so the final value stays with the finished run. Both writes are
fenced by attempt: a Lua script that checks the run id and attempt the name's hash
holds, and a conditional UPDATE on (run, attempt, RUNNING); a stale attempt's
progress is dropped. A failed write logs and is forgotten: progress never fails a
run. Outside a run (a direct call, the inline test double) a report does nothing.

The run a thread executes is a ``ContextVar`` (``scope()``), so an ``async def``
task sees it too, and ``cancellation.py`` keeps its state there as well.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from distributed_tasks import aside, claims, keys, running_status
from distributed_tasks.connection import get_redis, text
from distributed_tasks.messages import RunMessage, storable, strict_json
from distributed_tasks.models import PROGRESS_MESSAGE_LIMIT
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.resilience import DB_ERRORS
from distributed_tasks.types import State

T = TypeVar("T")

logger = logging.getLogger("distributed_tasks.progress")

REDIS_INTERVAL = 0.25  # seconds between two writes of one run's progress to Redis
ROW_INTERVAL = 5.0  # seconds between two writes of it to the row (and one at the end)
DATA_LIMIT = 16 * 1024  # bytes of JSON ``**data`` a report may carry


@dataclass(slots=True, eq=False)
class RunScope:
    """The run this thread (or event loop) executes, with its unwritten progress."""

    msg: RunMessage
    # As last written (checked); what reports gave since waits in ``pending``.
    fraction: float | None = None
    message: str = ""
    data: Any = None
    data_json: str | None = None
    pending: dict[str, Any] = field(default_factory=dict)
    reported: bool = False  # any report at all (nothing to write at the end otherwise)
    redis_at: float = -math.inf  # monotonic time of the last write to Redis
    row_at: float = field(default_factory=time.monotonic)  # the first after ROW_INTERVAL
    redis_dirty: bool = False
    row_dirty: bool = False
    timer: threading.Timer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    warned: bool = False
    # cancellation.py: the request once seen, and when Redis / the row were last read.
    cancel: Any = None
    cancel_checked_at: float = -math.inf
    cancel_row_checked_at: float = -math.inf
    announced: Any = None  # a RUNNING status not written yet (running_status.py)
    began_in_transaction: bool = False  # executed inside a caller's transaction (aside.py)

    def on_row(self, call: Callable[[], T]) -> T:
        """``call()``, a read or write of the run's row: on the helper thread when this
        thread's connection cannot take it (inside an ``async def`` task's event loop, or
        a transaction the task opened; ``aside.py``)."""
        from distributed_tasks.store import get_store

        alias = get_store().alias
        return aside.call(call, alias, began_in_transaction=self.began_in_transaction)

    def fields(self) -> dict[str, Any]:
        """What to write, once the pending values are checked (called under ``lock``)."""
        if self.pending:
            _settle(self)
        return {
            "progress": self.fraction,
            "progress_message": self.message,
            "progress_data": self.data_json,
        }


_scope: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar(
    "distributed_tasks_run", default=None
)


def scope() -> RunScope | None:
    """The run being executed here, or None outside a run."""
    return _scope.get()


@contextlib.contextmanager
def running(msg: RunMessage, announced: Any = None) -> Iterator[RunScope]:
    """Mark ``msg``'s run as the one this thread executes; write its last progress after.

    ``announced``: its RUNNING status while not written yet (``running_status.announced``), which
    the first progress written to Redis writes first."""
    from distributed_tasks.store import get_store

    began_in_transaction = aside.in_transaction(get_store().alias)
    current = RunScope(msg, announced=announced, began_in_transaction=began_in_transaction)
    token = _scope.set(current)
    try:
        yield current
    finally:
        _scope.reset(token)
        if current.reported:
            finish(current)


def report_progress(fraction: float | None = None, message: str | None = None, **data: Any):
    """Record how far the current run is: ``fraction`` from 0 to 1, a short ``message``,
    and any JSON ``data``. What is not given keeps its last reported value.

    Cheap enough to call for every item: values are kept in memory, and checked and
    written at most a few times a second. Never raises for what it is given: a value it
    cannot use when it writes (a fraction that is not a number, data that is not JSON)
    is logged once and the last written one stays. Does nothing outside a run.
    """
    current = _scope.get()
    if current is None:
        return
    with current.lock:  # values are only kept here: they are checked when written
        if fraction is not None:
            current.pending["fraction"] = fraction
        if message is not None:
            current.pending["message"] = message
        if data:
            current.pending["data"] = data
        current.reported = current.redis_dirty = current.row_dirty = True
    now = time.monotonic()
    if now - current.redis_at >= REDIS_INTERVAL:
        _write_redis(current)
    elif current.timer is None:
        wait = current.redis_at + REDIS_INTERVAL - now
        current.timer = threading.Timer(wait, _trailing, [current])
        current.timer.daemon = True
        current.timer.start()
    if now - current.row_at >= ROW_INTERVAL:
        _write_row(current)


def _settle(current: RunScope) -> None:
    """Check the pending values; one that cannot be used leaves the last written one."""
    pending, current.pending = current.pending, {}
    problem = ""
    if "fraction" in pending:
        try:
            value = float(pending["fraction"])
        except Exception:  # a user object's __float__ may raise anything
            value = math.nan
        if math.isnan(value):
            problem = f"fraction {_shown(pending['fraction'])} is not a number"
        else:
            current.fraction = min(1.0, max(0.0, value))
    if "message" in pending:
        try:
            current.message = storable(str(pending["message"]), PROGRESS_MESSAGE_LIMIT)
        except Exception:  # a user object's __str__ may raise anything: keep the last one
            problem = problem or "the message could not be turned into text"
    if "data" in pending:
        try:
            raw = strict_json(pending["data"])
            if len(raw) > DATA_LIMIT:
                raise ValueError(f"it is over {DATA_LIMIT} bytes as JSON")
            current.data, current.data_json = pending["data"], raw
        except Exception as exc:  # not JSON, too large, or a user object that raised
            problem = problem or f"data was not stored: {type(exc).__name__}: {exc}"
    if problem and not current.warned:
        current.warned = True
        logger.warning(
            "report_progress() of %s: %s (ignored; later problems are not logged)",
            current.msg.name, problem, extra={"action": "progress_ignored"},
        )  # fmt: skip


def _shown(value: object) -> str:
    """``repr`` of a user value for a log line, which must not raise either."""
    try:
        return repr(value)[:100]
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _trailing(current: RunScope) -> None:
    current.timer = None
    if current.redis_dirty:
        _write_redis(current)


def _write_redis(current: RunScope) -> None:
    msg = current.msg
    with current.lock:
        if not current.redis_dirty:
            return
        current.redis_dirty = False
        current.redis_at = time.monotonic()
        fields = current.fields()
        try:
            if current.announced is not None:  # the status says RUNNING before progress
                running_status.write_now(current.announced)
                current.announced = None
            claims.set_if_attempt(msg.task_list, msg.name, msg.run_id, msg.attempt, fields)
        except (*REDIS_ERRORS, OSError) as exc:
            logger.debug("Progress of %s not cached: %s", msg.name, exc)


def _write_row(current: RunScope) -> None:
    from distributed_tasks.store import get_store

    current.row_at = time.monotonic()
    current.row_dirty = False
    with current.lock:
        fields = {**current.fields(), "progress_data": current.data}
    try:
        current.on_row(lambda: get_store().set_progress(current.msg, fields))
    except DB_ERRORS as exc:
        logger.debug("Progress of %s not stored: %s", current.msg.name, exc)


LIVE_FIELDS = ("run_id", "attempt", "progress", "progress_message", "progress_data")


def live(runs: Iterable[Any]) -> None:
    """Set the newer progress Redis holds on the RUNNING ``TaskRun`` objects among ``runs``
    (the admin reads rows, whose progress is written only every ROW_INTERVAL)."""
    running = [run for run in runs if run.state == State.RUNNING]
    if not running:
        return
    try:
        pipe = get_redis().pipeline(transaction=False)
        for run in running:
            pipe.hmget(keys.run_key(run.task_list, run.name), LIVE_FIELDS)
        replies = pipe.execute()
        for run, reply in zip(running, replies, strict=True):
            run_id, attempt, fraction, message, data = text(reply)
            if run_id == run.run_id and attempt == str(run.attempt) and fraction is not None:
                run.progress = float(fraction)
                run.progress_message = message or ""
                run.progress_data = json.loads(data) if data else None
    except (*REDIS_ERRORS, OSError, ValueError):
        return  # the rows' values stand


def finish(current: RunScope) -> None:
    """The run ended: write what was not written yet (before its outcome is stored)."""
    if current.timer is not None:
        current.timer.cancel()
        current.timer = None
    if current.redis_dirty:
        _write_redis(current)
    if current.row_dirty:
        _write_row(current)
