"""Forced cancels, carried out by a node's main process.

``cancel(name, force=True)`` gives a RUNNING run a deadline (cancellation.py). Each
node's ``Watcher`` thread reads the deadlines of its runs from the node's Redis hash
every half second, and from the rows every ``ROW_INTERVAL`` (the truth, after Redis
lost its copy), and at a deadline the run still holds: records FAILED(``cancelled``)
first (fenced like any outcome, so no retry and no watchdog follows), then kills
that pool process only (SIGKILL: a C-level wait ignores anything gentler), and calls
the task's ``on_failure`` with ``Cancelled``; the pool replaces the process. The
node's main process knows which pool process runs which attempt from Celery's
requests (``worker_pid``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

from distributed_tasks import keys
from distributed_tasks.cancellation import ROW_INTERVAL, from_row, publish
from distributed_tasks.claims import finite_number
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import as_dict, get_redis
from distributed_tasks.exceptions import Cancelled
from distributed_tasks.messages import MalformedMessage, RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import REDIS_ERRORS, Outage
from distributed_tasks.resilience import DB_ERRORS, close_broken_connections
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason, State

logger = logging.getLogger("distributed_tasks.cancellation")

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
        for task_id, raw in as_dict(get_redis().hgetall(key)).items():
            # A deadline in epoch seconds. Anything else is not a request of ours: it
            # would stop every other one ("nan" is a float no clock reaches, and would
            # make the watcher's wait NaN).
            if (seconds := finite_number(raw, float)) is not None:
                self.deadlines[task_id] = seconds
            else:
                logger.warning(
                    "Dropping the forced cancel %r of %s: its deadline %r is not a time",
                    task_id, key, raw,
                )  # fmt: skip
                get_redis().hdel(key, task_id)
        if time.monotonic() - self.row_at >= ROW_INTERVAL:
            self.row_at = time.monotonic()
            try:
                self._from_rows()
            except DB_ERRORS as exc:
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
            msg, req = message_for(row), from_row(row)
            if req.deadline is not None:
                self.deadlines.setdefault(msg.task_id, req.deadline.timestamp())
            with contextlib.suppress(*REDIS_ERRORS):
                publish(msg, req)

    def kill(self, request: Any) -> None:
        from distributed_tasks import lost, outcomes

        pid = request.worker_pid
        try:
            sent = RunMessage.from_body(request.args[0])
        except (MalformedMessage, IndexError, TypeError):
            return
        trusted = lost.trusted(sent, getattr(request, "sent_limits", None), request.id)
        if trusted is None:
            return
        msg, row = trusted
        if pid == os.getpid():
            self.unforceable.add(msg.task_id)
            logger.error(
                "Cannot force the cancel of %s: it runs in the node's own process (pool %r); "
                "only a prefork pool process can be ended alone. It stops when it checks "
                "cancel_requested().", msg.name, type(request).__name__,
                extra={"action": "cancel_not_forced"},
            )  # fmt: skip
            return
        req = from_row(row) if row.cancel_requested_at else None
        if req is None:
            return
        grace = (req.deadline - req.at).total_seconds() if req.deadline else 0.0
        message = f"{req.describe()}; its pool process was killed after a grace of {grace:g} s"
        exc = Cancelled(message)
        _killed.add(msg.task_id)
        outcome = Outcome.failed(Reason.CANCELLED, exc, message)
        if not outcomes.record(
            msg, outcome, lost=True, patience=lost.LOST_PATIENCE, **outcomes.since(row, msg)
        ):
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
        lost.call_hook(msg, "on_failure", exc)
