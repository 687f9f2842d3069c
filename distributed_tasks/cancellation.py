"""Cancelling a RUNNING run: asked in the row and in Redis, seen by the run, forced by its node.

``cancel(name)`` on a RUNNING run records the request in the row (who asked, when,
and for a forced cancel the deadline) with a conditional update on the attempt,
then in Redis: in the name's hash, which the run reads through
``cancel_requested()`` (at most every ``CHECK_INTERVAL``), and, when forced, in its
node's cancel hash. The row is the source of truth: the run reads it when Redis has
no status for the name (flushed), and each node's ``Watcher`` reads its runs' rows
every ``ROW_INTERVAL`` and publishes again what Redis lost.

A run that saw the request ends FAILED(``cancelled``) whether it then returns or
raises (``finish_cancelled``); an ``async def`` task is cancelled (``CancelledError``)
in its event loop. A forced request that the run has not honoured by its deadline is
carried out by the ``Watcher`` in the node's main process: it records
FAILED(``cancelled``) first (fenced like any outcome, so no retry and no watchdog
follows), then kills that pool process only (SIGKILL: a C-level wait ignores
anything gentler), and calls the task's ``on_failure`` with ``Cancelled``; the pool
replaces the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from django.utils import timezone
from redis.exceptions import RedisError

from distributed_tasks import claims, keys, progress, signals
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import as_dict, get_redis, text
from distributed_tasks.exceptions import Cancelled
from distributed_tasks.messages import MalformedMessage, RunMessage, storable
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import Outage
from distributed_tasks.resilience import close_broken_connections
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason, State

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
    try:
        publish(msg, _from_row(row))
    except RedisError as exc:
        logger.warning("Cancel of %s not sent through Redis (%s): its node reads the row",
                       msg.name, exc)  # fmt: skip
    signals.run_cancel_requested.send(
        sender=TaskRun, message=msg, by=row.cancel_requested_by, force=force,
        requested_at=row.cancel_requested_at, deadline=row.cancel_deadline,
    )  # fmt: skip
    return True


def publish(msg: RunMessage, req: CancelRequest) -> None:
    """The request in the name's status (the run reads it) and, when forced, its node's hash."""
    claims.set_if_attempt(
        msg.task_list, msg.name, msg.run_id, msg.attempt,
        {"cancel_requested_at": req.at.timestamp(), "cancel_requested_by": req.by},
    )  # fmt: skip
    if req.deadline is not None:
        get_redis().hset(keys.node_cancel_key(msg.node), msg.task_id, req.deadline.timestamp())


def _from_row(row: Any) -> CancelRequest:
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
    except (RedisError, OSError, ValueError):
        pass
    # Redis has no status of this attempt (lost its data, or is away): ask the row.
    if now - current.cancel_row_checked_at < ROW_INTERVAL:
        return None
    current.cancel_row_checked_at = now
    try:
        row = get_store().runs.filter(id=msg.run_id, attempt=msg.attempt).first()
    except DatabaseError:
        return None
    return _from_row(row) if row is not None and row.cancel_requested_at else None


def check() -> None:
    """Raise ``Cancelled`` if the current run was asked to stop (for tasks that prefer
    an exception to a flag)."""
    if cancel_requested():
        raise Cancelled(progress.scope().cancel.describe())


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


# -- forcing it (in the node's main process) ------------------------------------------

_killed: set[str] = set()  # task ids whose pool process the Watcher killed


def was_killed(task_id: str) -> bool:
    """Whether the Watcher ended this attempt (its pool process's death is no loss)."""
    if task_id in _killed:
        _killed.discard(task_id)
        return True
    return False


def _active_requests() -> dict[str, Any]:
    from celery.worker import state as worker_state

    for _ in range(10):
        try:
            return {r.id: r for r in worker_state.active_requests}
        except RuntimeError:  # the consumer changed the set meanwhile
            continue
    return {}


class Watcher(threading.Thread):
    """Carries out forced cancels of one node's runs when their deadline passes."""

    def __init__(self, node: str, incarnation: str) -> None:
        super().__init__(name=f"dt-cancel-{node}", daemon=True)
        self.node, self.incarnation = node, incarnation
        self.deadlines: dict[str, float] = {}  # task id -> deadline (epoch seconds)
        self.unforceable: set[str] = set()  # runs in the node's own process: said once
        self.row_at = -float("inf")
        self._stop_event = threading.Event()
        self.outage = Outage(f"Cancel requests of node {node}", logger)
        # Rows are read every ROW_INTERVAL only: their own outage, or every poll between
        # two failed reads would log "works again".
        self.rows_outage = Outage(f"Cancel requests of node {node} (rows)", logger)

    def run(self) -> None:
        poll = min(0.5, get_settings().HEARTBEAT_INTERVAL)
        while not self._stop_event.is_set():
            try:
                self.poll()
            except Exception as exc:  # the thread must outlive any fault
                self.outage.failed(exc)
            else:
                self.outage.ok()
            soonest = min(self.deadlines.values(), default=float("inf")) - time.time()
            self._stop_event.wait(max(0.01, min(poll, soonest)))

    def stop(self) -> None:
        self._stop_event.set()

    def poll(self) -> None:
        close_broken_connections()  # this thread's own connection, after a database outage
        key = keys.node_cancel_key(self.node)
        self.deadlines.update({k: float(v) for k, v in as_dict(get_redis().hgetall(key)).items()})
        if time.monotonic() - self.row_at >= ROW_INTERVAL:
            self.row_at = time.monotonic()
            try:
                self._from_rows()
            except DatabaseError as exc:
                close_broken_connections()  # this thread's own: reconnect on the next read
                self.rows_outage.failed(exc)
            else:
                self.rows_outage.ok()
        active = _active_requests()
        for task_id in self.unforceable & set(self.deadlines):
            del self.deadlines[task_id]
        self.unforceable &= set(active)
        gone = [task_id for task_id in self.deadlines if task_id not in active]
        for task_id in gone:
            del self.deadlines[task_id]
        if gone:
            get_redis().hdel(key, *gone)
        now = time.time()
        for task_id, deadline in list(self.deadlines.items()):
            # worker_pid is known once the pool reported it took the run: wait until then
            if deadline <= now and active[task_id].worker_pid:
                del self.deadlines[task_id]
                get_redis().hdel(key, task_id)
                self.kill(active[task_id])

    def _from_rows(self) -> None:
        """Publish again what Redis lost: the rows are the truth."""
        rows = TaskRun.objects.using(get_store().alias).filter(
            node=self.node, state=State.RUNNING, incarnation=self.incarnation,
            cancel_requested_at__isnull=False,
        )  # fmt: skip
        for row in rows:
            msg, req = message_for(row), _from_row(row)
            if req.deadline is not None:
                self.deadlines.setdefault(msg.task_id, req.deadline.timestamp())
            with contextlib.suppress(RedisError):
                publish(msg, req)

    def kill(self, request: Any) -> None:
        from distributed_tasks import outcomes, runner

        pid = request.worker_pid
        try:
            msg = runner._trusted(RunMessage.from_body(request.args[0]))
        except (MalformedMessage, IndexError, TypeError):
            return
        if msg is None:
            return
        if pid == os.getpid():
            self.unforceable.add(msg.task_id)
            logger.error(
                "Cannot force the cancel of %s: it runs in the node's own process (pool %r); "
                "only a prefork pool process can be ended alone. It stops when it checks "
                "cancel_requested().", msg.name, type(request).__name__,
                extra={"action": "cancel_not_forced"},
            )  # fmt: skip
            return
        row = get_store().get(msg.run_id)
        req = _from_row(row) if row is not None and row.cancel_requested_at else None
        if req is None:
            return
        grace = (req.deadline - req.at).total_seconds() if req.deadline else 0.0
        message = f"{req.describe()}; its pool process was killed after a grace of {grace:g} s"
        exc = Cancelled(message)
        _killed.add(msg.task_id)
        if not outcomes.record(msg, Outcome.failed(Reason.CANCELLED, exc, message), lost=True,
                               patience=runner.LOST_PATIENCE):  # fmt: skip
            _killed.discard(msg.task_id)  # it ended meanwhile: nothing to kill
            return
        current = _active_requests().get(msg.task_id)
        if current is not None and current.worker_pid == pid:
            logger.warning(
                "Forced cancel of %s (run %s attempt %s): killing its pool process %s; the "
                "pool starts a new one (Celery reports the loss as WorkerLostError)",
                msg.name, msg.run_id, msg.attempt, pid, extra={"action": "cancel_forced"},
            )  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        runner.call_hook(msg, "on_failure", exc)
