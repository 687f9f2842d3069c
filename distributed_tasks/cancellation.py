"""Cancelling a RUNNING run: asked in the row and in Redis, seen by the run, forced by its node.

``cancel(name)`` on a RUNNING run records the request in the row (who asked, when,
and for a forced cancel the deadline) with a conditional update on the attempt,
then in Redis: in the name's hash, which the run reads through
``cancel_requested()`` (at most every ``CHECK_INTERVAL``), and, when forced, in its
node's cancel hash. The row is the source of truth: the run reads it when Redis has
no status for the name (flushed), and each node's ``Watcher`` reads its runs' rows
every ``ROW_INTERVAL`` and publishes again what Redis lost (``forcing.Watcher``).

A run that saw the request ends FAILED(``cancelled``) whether it then returns or
raises (``finish_cancelled``); an ``async def`` task is cancelled (``CancelledError``)
in its event loop. A forced request that the run has not honoured by its deadline is
carried out by the node's main process (``forcing.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from distributed_tasks import claims, keys, progress, signals
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import get_redis, text
from distributed_tasks.exceptions import Cancelled
from distributed_tasks.messages import RunMessage, storable
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.resilience import DB_ERRORS
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason

logger = logging.getLogger("distributed_tasks.cancellation")

CHECK_INTERVAL = 0.2  # seconds between two reads of Redis by cancel_requested()
ROW_INTERVAL = 2.0  # seconds between two reads of the rows (the run's, the node's runs)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    at: dt.datetime
    by: str = ""
    deadline: dt.datetime | None = None

    def describe(self) -> str:
        who = f" by {self.by}" if self.by else ""
        return f"cancelled while running (asked{who} at {self.at:%Y-%m-%d %H:%M:%S %Z})"


# -- asking (lifecycle.cancel) --------------------------------------------------------


def request(run: TaskRun, *, force: bool, by: str, grace: float | None) -> bool:
    """Ask the RUNNING ``run`` to stop; False when it is no longer RUNNING."""
    now = timezone.now()
    grace = get_settings().CANCEL_GRACE if grace is None else grace
    deadline = now + dt.timedelta(seconds=grace) if force else None
    row = get_store().request_cancel(run, at=now, by=storable(by, 255), deadline=deadline)
    if row is None:
        return False
    msg = message_for(row)

    def announce() -> None:
        try:
            publish(msg, from_row(row))
        except REDIS_ERRORS as exc:
            logger.warning("Cancel of %s not sent through Redis (%s): its node reads the row",
                           msg.name, exc)  # fmt: skip
        signals.run_cancel_requested.send(
            sender=TaskRun, message=msg, by=row.cancel_requested_by, force=force,
            requested_at=row.cancel_requested_at, deadline=row.cancel_deadline,
        )  # fmt: skip

    # In a caller's transaction, once it commits: the run must not stop for a request
    # that was rolled back (it reads Redis first).
    transaction.on_commit(announce, using=get_store().alias, robust=True)
    return True


def publish(msg: RunMessage, req: CancelRequest) -> None:
    """The request in the name's status (the run reads it) and, when forced, its node's hash."""
    claims.set_if_attempt(
        msg.task_list, msg.name, msg.run_id, msg.attempt,
        {"cancel_requested_at": req.at.timestamp(), "cancel_requested_by": req.by},
    )  # fmt: skip
    if req.deadline is not None:
        get_redis().hset(keys.node_cancel_key(msg.node), msg.task_id, req.deadline.timestamp())


def from_row(row: Any) -> CancelRequest:
    """The request a row holds (``cancel_requested_at`` set)."""
    return CancelRequest(row.cancel_requested_at, row.cancel_requested_by, row.cancel_deadline)


# -- seeing it (in the run) -----------------------------------------------------------


def cancel_requested() -> bool:
    """Whether ``cancel()`` asked the current run to stop. Cheap to call often: Redis is
    read at most every CHECK_INTERVAL. Once it returned True, the run ends
    FAILED(cancelled) however it ends; False outside a run."""
    current = progress.scope()
    if current is None:
        return False
    if current.cancel is None:
        now = time.monotonic()
        if now - current.cancel_checked_at < CHECK_INTERVAL:
            return False
        current.cancel_checked_at = now
        current.cancel = _read(current, now)
    return current.cancel is not None


def _read(current: progress.RunScope, now: float) -> CancelRequest | None:
    msg = current.msg
    try:
        run_id, attempt, at, by = text(
            get_redis().hmget(
                keys.run_key(msg.task_list, msg.name),
                ["run_id", "attempt", "cancel_requested_at", "cancel_requested_by"],
            )
        )
        if run_id == msg.run_id and attempt == str(msg.attempt):
            if not at:
                return None
            return CancelRequest(dt.datetime.fromtimestamp(float(at), tz=dt.UTC), by or "")
    except (*REDIS_ERRORS, OSError, ValueError):
        pass
    # Redis has no status of this attempt (lost its data, or is away): ask the row.
    if now - current.cancel_row_checked_at < ROW_INTERVAL:
        return None
    current.cancel_row_checked_at = now
    try:
        row = current.on_row(get_store().runs.filter(id=msg.run_id, attempt=msg.attempt).first)
    except DB_ERRORS:
        return None
    return from_row(row) if row is not None and row.cancel_requested_at else None


def observed() -> CancelRequest | None:
    """The request the current run saw, if it saw one."""
    current = progress.scope()
    return current.cancel if current is not None else None


def finish_cancelled() -> None:
    """After ``run`` returned: a run that saw the request ends cancelled, not DONE."""
    req = observed()
    if req is not None:
        raise Cancelled(req.describe())


def outcome_for(exc: BaseException) -> Outcome | None:
    """FAILED(cancelled) for whatever a run that saw the request raised; else None."""
    req = observed()
    return None if req is None else Outcome.failed(Reason.CANCELLED, exc, req.describe())


async def watched(coro: Coroutine[Any, Any, Any]) -> Any:
    """Await ``coro`` as a task that is cancelled (``CancelledError``) once the run is asked
    to stop."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        await asyncio.wait({task}, timeout=CHECK_INTERVAL)
        if not task.done() and cancel_requested():
            task.cancel()
            break
    return await task
