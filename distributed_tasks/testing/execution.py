"""How the in-memory clients execute a queued run: as a worker would, in-process.

The run goes through the worker's own guard (``runner._guard``): function, JSON
check of the result, ``callback(name, result)`` and the class hooks, with the
outcome a worker would record. A retryable failure runs again at once while
``max_attempts`` allows (``retry_backoff`` is not waited for). A test may script
an end meanwhile (the fake's ``finish``); the scripted end then stands.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from distributed_tasks import signals
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.outcomes import RETRYABLE
from distributed_tasks.runner import _guard
from distributed_tasks.testing.records import Run
from distributed_tasks.types import Outcome, Reason, State, TaskStatus

logger = logging.getLogger("distributed_tasks.testing")


class Execution:
    """The execute step of ``RecordingClient``: fence, guard, retry, record."""

    _lock: threading.RLock  # the client's lock and clock
    now: Callable[[], dt.datetime]

    def _execute(self, run: Run) -> TaskStatus:
        """Execute a queued run as a worker would: fence it to RUNNING, run it in the guard,
        retry a retryable failure while ``max_attempts`` allows (at once: no backoff),
        then record the outcome."""
        while True:
            with self._lock:
                if run.state != State.QUEUED:  # cancelled or scripted meanwhile: run nothing
                    return run.status()
                run.state = State.RUNNING
                run.started_at = self.now()
                run.executions += 1
            message = run.message()
            signals.run_started.send(sender=TaskRun, message=message)
            try:
                outcome = _guard(message, contain=False)
            except BaseException as exc:  # an interrupt got past the guard: never leave it RUNNING
                self._record(run, message, Outcome.failed(Reason.EXCEPTION, exc))
                raise
            if not self._retry(run, outcome):
                self._record(run, message, outcome)
                return run.status()

    def _retry(self, run: Run, outcome: Outcome) -> bool:
        if outcome.state != State.FAILED or outcome.reason not in RETRYABLE:
            return False
        with self._lock:
            if run.state != State.RUNNING or run.executions >= run.max_attempts:
                return False
            run.state = State.QUEUED
            run.attempt += 1
            run.started_at = None
        logger.info("%s failed (%s); attempt %s follows", run.name, outcome.error, run.attempt)
        return True

    def _record(self, run: Run, message: RunMessage, outcome: Outcome) -> None:
        with self._lock:
            if run.state != State.RUNNING:  # a test scripted an end meanwhile: it stands
                return
            run.finish(outcome, self.now())
        if outcome.state == State.FAILED:
            logger.warning(
                "%s (%s) failed: %s\n%s",
                run.name,
                run.function,
                outcome.error,
                outcome.traceback,
                extra={"action": "failed"},
            )
        signals.run_finished.send(sender=TaskRun, message=message, outcome=outcome)
