"""The bookkeeping the fake and the inline client share.

:class:`RecordingClient` has the real client's interface (``start_async``,
``start_many``, ``get_status``, ``cancel``) and keeps its rules, in memory:

- every start goes through ``validation.prepare``, so a bad input raises the
  error the real client raises and records nothing;
- one active (QUEUED or RUNNING) run per ``(task_list, name)``: a second start
  raises ``AlreadyRunning``, or returns the active handle with
  ``on_conflict="return_existing"``; a batch claims every entry before any runs;
- a finished name reports DONE/FAILED for ``CLEANUP_TIMEOUT``, then NOT_FOUND,
  and the ``reuse`` policy applies inside that window (``advance()`` moves the
  clock instead of sleeping);
- a run executes through the worker's own guard (``runner._guard``): function,
  JSON check of the result, ``callback(name, result)`` and the class hooks, with
  the same outcome a worker would record; a retryable failure runs again while
  ``max_attempts`` allows, at once (``retry_backoff`` is not waited for).

Subclasses decide when queued runs execute: the fake when the test says so
(``drain``), the inline client at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from distributed_tasks import signals
from distributed_tasks.conf import get_settings
from distributed_tasks.exceptions import (
    AlreadyRunning,
    NameReserved,
    NotCancellable,
    TaskNotFound,
)
from distributed_tasks.models import TaskRun
from distributed_tasks.testing.assertions import StartAssertions
from distributed_tasks.testing.execution import Execution
from distributed_tasks.testing.records import Run, Start
from distributed_tasks.types import (
    OnConflict,
    Outcome,
    Reason,
    Reuse,
    State,
    TaskHandle,
    TaskStatus,
)
from distributed_tasks.validation import (
    StartRequest,
    check_name,
    encode_payload,
    prepare,
    prepare_many,
)

Key = tuple[str, str]


class RecordingClient(Execution, StartAssertions):
    """In-memory client with the real one's interface and name rules."""

    default_node = "memory@testing"

    def __init__(self, *, node: str | None = None) -> None:
        self.node = node or self.default_node
        self.starts: list[Start] = []
        self.status_requests: list[tuple[str, str]] = []
        self._runs: dict[Key, list[Run]] = {}
        self._skew = dt.timedelta()
        self._lock = threading.RLock()

    # -- the client interface ------------------------------------------------------

    def start_async(self, func: Any, args: Any = (), kwargs: Any = None, **options: Any):
        """The real client's signature: options go through ``validation.prepare`` as given,
        so an option the real client does not know fails here too."""
        (outcome,) = self._start([prepare(func, args, kwargs, **options)])
        if isinstance(outcome, AlreadyRunning):
            raise outcome
        return outcome

    def start_many(self, calls: Iterable[Mapping[str, Any]]) -> list[TaskHandle | AlreadyRunning]:
        """Every entry is validated before any is recorded, as in the real client."""
        requests = prepare_many(calls)
        return self._start(requests) if requests else []

    def get_status(self, name: str, task_list: str = "default") -> TaskStatus:
        check_name(name)
        check_name(task_list, "task list")
        with self._lock:
            self.status_requests.append((name, task_list))
        scripted = self._scripted_status(name, task_list)
        if scripted is not None:
            return scripted
        with self._lock:
            run = self._latest((task_list, name))
            return run.status() if run else TaskStatus.not_found(name, task_list)

    def cancel(self, name: str, task_list: str = "default", **how: Any) -> TaskStatus:
        """End a QUEUED run as FAILED(cancelled), as the real client does; a RUNNING run
        (scripted) records the request (``how``: ``by``, ``force``, ``grace``) and keeps
        running. A finished run raises ``NotCancellable``; a name never started,
        ``TaskNotFound``.
        """
        from distributed_tasks.lifecycle import check_grace

        check_name(name)
        check_name(task_list, "task list")
        check_grace(how.get("grace"))
        with self._lock:
            run = self._newest((task_list, name))
            if run is None:
                raise TaskNotFound(name, task_list)
            if run.state == State.RUNNING:
                if run.cancel_requested_at is None:
                    run.cancel_requested_at = self.now()
                    run.cancel_requested_by = str(how.get("by") or "")
                return run.status()
            if run.state != State.QUEUED:
                raise NotCancellable(
                    name,
                    task_list=task_list,
                    run_id=run.run_id,
                    node=run.node,
                    state=run.state.value,
                    finished_at=run.finished_at,
                )
            outcome = Outcome.failed(Reason.CANCELLED, message="cancelled before it started")
            run.finish(outcome, self.now())
        signals.run_finished.send(sender=TaskRun, message=run.message(), outcome=outcome)
        return run.status()

    def retry(self, name: str, task_list: str = "default") -> TaskHandle:
        """Run the newest FAILED run again as its next attempt, as the real client does."""
        from distributed_tasks.lifecycle import not_retryable

        check_name(name)
        check_name(task_list, "task list")
        self._check_available()
        with self._lock:
            run = self._newest((task_list, name))
            if run is None:
                raise TaskNotFound(name, task_list)
            if run.state.is_active:
                raise run.refusal(AlreadyRunning)
            if run.state != State.FAILED:
                raise not_retryable(name, run.state.value)
            run.state = State.QUEUED
            run.attempt += 1
            run.max_attempts = max(run.max_attempts, run.executions + 1)
            run.started_at = run.finished_at = None
        self._dispatch([run])
        return run.handle()

    # -- inspection and time -------------------------------------------------------

    def runs(self, name: str, task_list: str = "default") -> list[Run]:
        """Every run of a name still remembered, oldest first (tracebacks included)."""
        with self._lock:
            return list(self._runs.get((task_list, name), []))

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self._skew

    def advance(self, seconds: float) -> None:
        """Move this client's clock, e.g. past ``CLEANUP_TIMEOUT`` to let a name expire."""
        self._skew += dt.timedelta(seconds=seconds)

    # -- hooks for subclasses ------------------------------------------------------

    def _check_available(self) -> None:
        """Raise to refuse every start after validation (the fake's ``refuse_starts``)."""

    def _scripted_status(self, name: str, task_list: str) -> TaskStatus | None:
        """A status the test scripted, or None to answer from the recorded runs."""
        return None

    def _dispatch(self, runs: list[Run]) -> None:
        """Called with the runs a start created, after every entry was claimed."""

    # -- the walk --------------------------------------------------------------------

    def _start(self, requests: list[StartRequest]) -> list[TaskHandle | AlreadyRunning]:
        self._check_available()
        requests = [_as_stored(r) for r in requests]
        with self._lock:
            outcomes = [self._claim(r) for r in requests]
        created = [o for o in outcomes if isinstance(o, Run)]
        for run in created:
            signals.run_queued.send(sender=TaskRun, handle=run.handle())
        self._dispatch(created)
        return [o.handle() if isinstance(o, Run) else o for o in outcomes]

    def _claim(self, request: StartRequest) -> Run | TaskHandle | AlreadyRunning:
        key = (request.task_list, request.name)
        last = self._latest(key)
        if last is not None and last.state.is_active:
            if request.on_conflict == OnConflict.RETURN_EXISTING:
                return last.handle(existing=True)
            return last.refusal(AlreadyRunning)
        # ``last`` is finished and inside CLEANUP_TIMEOUT (``_latest`` drops older ones).
        if last is not None and (
            request.reuse == Reuse.REJECT
            or (request.reuse == Reuse.ALLOW_FAILED_ONLY and last.state == State.DONE)
        ):
            return last.refusal(NameReserved)
        run = Run(
            run_id=uuid.uuid4().hex,
            name=request.name,
            task_list=request.task_list,
            node=self.node,
            state=State.QUEUED,
            queued_at=self.now(),
            function=request.function,
            args=request.args,
            kwargs=request.kwargs,
            callback=request.callback,
            timeout=request.timeout,
            data=request.data,
            priority=request.priority,
            max_attempts=request.max_attempts,
        )
        self._runs.setdefault(key, []).append(run)
        self.starts.append(Start.of(request, run.handle()))
        return run

    def _latest(self, key: Key) -> Run | None:
        """The newest run of a name, or None once a finished one is past CLEANUP_TIMEOUT."""
        runs = self._runs.get(key)
        if not runs:
            return None
        run = runs[-1]
        if run.finished_at is not None:
            age = (self.now() - run.finished_at).total_seconds()
            if age > get_settings().CLEANUP_TIMEOUT:
                return None
        return run

    def _newest(self, key: Key) -> Run | None:
        """The newest run of a name, finished long ago too: cancel and retry read the
        history (the database keeps it for HISTORY_RETENTION), not the status."""
        runs = self._runs.get(key)
        return runs[-1] if runs else None

    def _add_run(self, run: Run) -> None:
        with self._lock:
            self._runs.setdefault((run.task_list, run.name), []).append(run)

    def _forget(self, key: Key) -> None:
        with self._lock:
            self._runs.pop(key, None)


def _as_stored(request: StartRequest) -> StartRequest:
    """``request`` with its values as a worker gets them back from the database: through
    JSON, so tuples are lists and a nested key 5 is "5" in a test as in production."""
    stored = json.loads(encode_payload([request.args, request.kwargs, request.data], request.name))
    return dataclasses.replace(request, args=stored[0], kwargs=stored[1], data=stored[2])
