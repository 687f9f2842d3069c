"""All database access to runs, behind a small interface.

The store writes ``TaskRun`` rows here and in its two mixins (``new_runs``: the
insert; ``transitions``: the worker's start and outcome). Every transition after
the insert is one conditional ``UPDATE`` whose ``WHERE`` names the run, the
attempt and the state it expects (invariant 2 of the spec): a stale or
duplicate message, or a worker the orchestrator already declared lost, matches
no row and changes nothing.

A different store plugs in by subclassing :class:`BaseStore` (see README).
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
import inspect
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from distributed_tasks import new_runs, transitions
from distributed_tasks.conf import get_settings
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import CLEARED_OUTCOME, TaskRun, attempt_record
from distributed_tasks.types import ACTIVE_STATES, Outcome, State


class BaseStore(abc.ABC):
    """What the client, the worker and the orchestrator need from durable storage."""

    @abc.abstractmethod
    def insert(self, run: TaskRun) -> None:
        """Insert a new QUEUED run; raise ``AlreadyRunning`` if the name is active."""

    @abc.abstractmethod
    def delete(self, run_id: Any) -> bool:
        """Remove a run whose start could not complete, only while it is still the QUEUED
        attempt 1 it was inserted as: False when it is not (a worker already started it:
        its message did reach the broker)."""

    @abc.abstractmethod
    def mark_running(
        self, msg: RunMessage, incarnation: str, *, started_at: dt.datetime | None = None
    ) -> TaskRun | None:
        """QUEUED -> RUNNING for exactly this (run, attempt, node), stamped ``started_at``
        (now): the row as updated, or None if fenced out. The worker executes what this
        row holds."""

    @abc.abstractmethod
    def mark_finished(
        self, msg: RunMessage, outcome: Outcome, *, finished_at: dt.datetime | None = None
    ) -> bool:
        """RUNNING -> DONE/FAILED for this attempt, stamped ``finished_at`` (now); False if
        fenced out."""

    def started_by(
        self, msg: RunMessage, incarnation: str, stamps: Sequence[dt.datetime]
    ) -> TaskRun | None:
        """The attempt of ``msg`` RUNNING as ``mark_running`` by ``incarnation``, stamped
        with one of ``stamps``, left it: a start whose reply was lost. None: not known."""
        return None

    def finished_by(self, msg: RunMessage, outcome: Outcome, stamps: Sequence[dt.datetime]) -> bool:
        """Whether ``mark_finished`` (or ``mark_lost``) stored ``outcome`` for ``msg``
        stamped with one of ``stamps`` (its reply was lost). False: not known here."""
        return False

    def requeued_by(self, msg: RunMessage, stamps: Sequence[dt.datetime]) -> TaskRun | None:
        """The run, moved past ``msg``'s attempt by a ``requeue`` that ended that attempt at
        one of ``stamps`` (its reply was lost). None: not known here."""
        return None

    @abc.abstractmethod
    def mark_lost(self, msg: RunMessage, outcome: Outcome) -> bool:
        """QUEUED/RUNNING -> FAILED for this attempt on this node; False if fenced out."""

    @abc.abstractmethod
    def latest(self, task_list: str, name: str) -> TaskRun | None:
        """The run of a name queued last, by ``queued_at``, active or not."""

    def newest(self, task_list: str, name: str) -> TaskRun | None:
        """The run a status of the name describes: its active run, else its latest.

        ``queued_at`` is read off each producer's clock: with hosts' clocks apart, a run
        that finished may carry a later time than the active run that followed it."""
        return self.active(task_list, name) or self.latest(task_list, name)

    @abc.abstractmethod
    def active(self, task_list: str, name: str) -> TaskRun | None:
        """The active run of a name, if any."""

    @abc.abstractmethod
    def is_active(self, run_id: Any) -> bool:
        """Whether ``run_id`` exists and is QUEUED or RUNNING."""


class OrmStore(new_runs.NewRuns, transitions.WorkerWrites, BaseStore):
    """The Django ORM store, on ``DATABASE_ALIAS``."""

    def __init__(self, alias: str | None = None) -> None:
        self.alias = alias or get_settings().DATABASE_ALIAS

    @property
    def runs(self):
        return TaskRun.objects.using(self.alias)

    def delete(self, run_id: Any) -> bool:
        return bool(self.runs.by_key(run_id, attempt=1, state=State.QUEUED).delete()[0])

    def _attempt(self, msg: RunMessage, **conditions: Any):
        """This attempt of the run, if it meets ``conditions`` (found by key: ``by_key``)."""
        return self.runs.by_key(msg.run_id, attempt=msg.attempt, **conditions)

    def _finish(
        self,
        rows,
        outcome: Outcome,
        epoch: int | None = None,
        finished_at: dt.datetime | None = None,
    ) -> bool:
        extra = {"orchestrator_epoch": epoch} if epoch else {}
        stamp = finished_at or timezone.now()
        return bool(
            rows.update(active_name=None, finished_at=stamp, **outcome.row_fields(), **extra)
        )

    def mark_lost(
        self,
        msg: RunMessage,
        outcome: Outcome,
        *,
        epoch: int | None = None,
        from_states: tuple[str, ...] = ACTIVE_STATES,
        finished_at: dt.datetime | None = None,
    ) -> bool:
        """QUEUED/RUNNING -> FAILED for this attempt on this node, stamped ``finished_at``
        (now); False if fenced out."""
        rows = self._attempt(msg, node=msg.node, state__in=from_states)
        return self._finish(rows, outcome, epoch, finished_at)

    def requeue(
        self,
        msg: RunMessage,
        *,
        node: str,
        run_after: Any,
        from_states: tuple[str, ...] = ACTIVE_STATES,
        only_if_attempts_left: bool = False,
        error: Outcome | None = None,
        epoch: int | None = None,
        ended_at: dt.datetime | None = None,
    ) -> bool:
        """This attempt -> a new QUEUED attempt on ``node``; the old attempt is fenced out.

        The old attempt's outcome (``error``, or none for a run moved before it
        started) goes to the run's ``attempts`` history and its status fields are
        cleared, so the status shows the new attempt only. The history is read
        first, so the update is also conditional on the state that was read.
        ``ended_at`` (now): when the old attempt ended, as its history entry says.

        An attempt asked to stop is never retried: a cancel recorded after the caller
        read the row makes this return False, and the caller ends the run instead.
        """
        fence: dict[str, Any] = {"cancel_requested_at__isnull": True}
        if only_if_attempts_left:
            fence["executions__lt"] = F("max_attempts")
        rows = self._attempt(msg, state__in=from_states, **fence)
        # The leader that moved it, or none: a worker's retry or steal was no leader's
        # (a new leader republishes what earlier leaders queued: resync._inherited).
        extra = {"orchestrator_epoch": epoch or None}
        for _race in range(3):  # the worker may start it between the read and the update
            current = rows.values("state", "started_at", "attempts").first()
            if current is None:
                return False
            ended = attempt_record(
                attempt=msg.attempt,
                node=msg.node,
                started_at=current["started_at"],
                ended_at=ended_at or timezone.now(),
                outcome=error,
            )
            if self._attempt(msg, state=current["state"], **fence).update(
                **CLEARED_OUTCOME,
                attempts=[*current["attempts"], ended],
                state=State.QUEUED,
                attempt=msg.attempt + 1,
                node=node,
                run_after=run_after,
                **extra,
            ):
                return True
        return False

    def reactivate(self, run: TaskRun, *, node: str) -> bool:
        """A FAILED run becomes a new QUEUED attempt (``retry``); the name must be free."""
        ended = attempt_record(attempt=run.attempt, node=run.node, started_at=run.started_at,
                               ended_at=run.finished_at, outcome=run.outcome())  # fmt: skip
        try:
            with transaction.atomic(using=self.alias):
                return bool(
                    self.runs.by_key(run.id, attempt=run.attempt, state=State.FAILED).update(
                        **CLEARED_OUTCOME,
                        attempts=[*run.attempts, ended],
                        state=State.QUEUED,
                        active_name=run.name,
                        attempt=run.attempt + 1,
                        max_attempts=max(run.max_attempts, run.executions + 1),
                        node=node,
                        run_after=timezone.now(),
                        orchestrator_epoch=None,  # a client's retry, no leader's move
                    )
                )
        except IntegrityError:
            raise self._conflict(run.task_list, run.name) from None

    def delete_finished_before(self, before: Any, limit: int) -> int:
        """Delete up to ``limit`` finished rows older than ``before`` (history retention)."""
        ids = list(self.runs.reapable(before).order_by().values_list("id", flat=True)[:limit])
        if not ids:
            return 0
        return self.runs.filter(id__in=ids).delete()[0]

    def set_progress(self, msg: RunMessage, fields: dict[str, Any]) -> bool:
        """The progress of this RUNNING attempt (progress.py); False once it is not."""
        return bool(self._attempt(msg, state=State.RUNNING).update(**fields))

    def request_cancel(
        self, run: TaskRun, *, at: Any, by: str, deadline: Any = None
    ) -> TaskRun | None:
        """Record a cancel asked of this RUNNING attempt (the first asker and time stay; a
        forced one adds a deadline); the row as updated, or None once it is not RUNNING."""
        rows = self.runs.by_key(run.id, attempt=run.attempt, state=State.RUNNING)
        first = Q(cancel_requested_at__isnull=True)
        values: dict[str, Any] = {  # "by" first: MySQL's SET reads the columns set before it
            "cancel_requested_by": Case(
                When(first, then=Value(by)), default=F("cancel_requested_by")
            ),
            "cancel_requested_at": Coalesce(F("cancel_requested_at"), Value(at)),
        }
        if deadline is not None:
            values["cancel_deadline"] = Coalesce(F("cancel_deadline"), Value(deadline))
        return self._update_returning(rows, values, run.id)

    def mark_cancelled(self, run: TaskRun, outcome: Outcome) -> bool:
        rows = self.runs.by_key(run.id, attempt=run.attempt, state=State.QUEUED)
        return self._finish(rows, outcome)

    def latest(self, task_list: str, name: str) -> TaskRun | None:
        return self.runs.named(name, task_list).order_by("-queued_at").first()

    def active(self, task_list: str, name: str) -> TaskRun | None:
        return self.runs.filter(task_list=task_list, active_name=name).first()

    def is_active(self, run_id: Any) -> bool:
        return self.runs.by_key(run_id, active_name__isnull=False).exists()

    def get(self, run_id: Any) -> TaskRun | None:
        return self.runs.filter(id=run_id).first()


def message_for(run: TaskRun) -> RunMessage:
    """The message that executes the current attempt of ``run``."""
    return RunMessage(
        run_id=run.run_id,
        attempt=run.attempt,
        node=run.node,
        task_list=run.task_list,
        name=run.name,
        function=run.function,
        args=run.args,
        kwargs=run.kwargs,
        callback=run.callback,
        queued_at=run.queued_at.timestamp(),
        timeout=run.timeout,
        data=run.data or {},
        priority=run.priority,
    )


def stamped(store: BaseStore, method: str, **stamp: dt.datetime) -> dict[str, dt.datetime]:
    """``stamp`` (``started_at=`` for ``mark_running``, ``finished_at=`` for
    ``mark_finished``/``mark_lost``, ``ended_at=`` for ``requeue``) for the worker's write
    ``method`` on ``store`` when it takes it: a ``STORE`` written before the worker stamped
    its writes is called as it was then (and its lost replies go unrecognised, as they did)."""
    (keyword,) = stamp
    return stamp if _takes(type(store), method, keyword) else {}


@functools.cache
def _takes(cls: type, method: str, keyword: str) -> bool:
    parameters = inspect.signature(getattr(cls, method)).parameters.values()
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in parameters)


@functools.cache
def get_store() -> OrmStore:
    """The configured store (``STORE``), one per process."""
    from django.utils.module_loading import import_string

    return import_string(get_settings().STORE)()
