"""The fake: records starts and answers ``get_status`` as the test scripts it.

It is the seed's Mox mock with the real client's rules kept: starts are
validated, names stay unique while their run is active, and nothing executes
unless the test asks (``drain``). Statuses come from what the test set:

    fake.set_status(request_id, State.DONE, result={...})      # one name
    fake.script_status(lambda name, task_list: State.RUNNING)   # every read, like expect()
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from distributed_tasks.exceptions import (
    ClusterUnavailable,
    DistributedTasksError,
    NotSerializable,
)
from distributed_tasks.testing.recording import RecordingClient
from distributed_tasks.testing.records import Run
from distributed_tasks.types import Outcome, Reason, State, TaskStatus
from distributed_tasks.validation import check_name

StatusScript = Callable[[str, str], "TaskStatus | State | str | None"]


class InvalidScript(DistributedTasksError, TypeError):
    """A status script returned something ``get_status`` cannot answer with."""


class FakeClient(RecordingClient):
    """Records starts; runs stay QUEUED until the test sets a status or drains them."""

    default_node = "fake@testing"

    def __init__(self, *, node: str | None = None) -> None:
        super().__init__(node=node)
        self._script: StatusScript | None = None
        self._start_error: Exception | None = None

    # -- scripting -------------------------------------------------------------------

    def set_status(
        self,
        name: str,
        state: State | str,
        *,
        task_list: str = "default",
        result: Any = None,
        error: str | None = None,
        error_type: str | None = None,
        reason: str | None = None,
    ) -> TaskStatus:
        """Put the newest run of ``name`` in ``state``, creating one if none is active.

        Names keep their rules: a QUEUED/RUNNING name refuses starts, a DONE/FAILED
        one frees it (and expires after CLEANUP_TIMEOUT), NOT_FOUND forgets it.
        """
        check_name(name)
        check_name(task_list, "task list")
        state = State(state)
        key = (task_list, name)
        if state == State.NOT_FOUND:
            self._forget(key)
            return TaskStatus.not_found(name, task_list)
        _check_json(name, result)
        now = self.now()
        with self._lock:
            run = self._latest(key)
            if run is None or not run.state.is_active:
                run = Run(
                    run_id=uuid.uuid4().hex,
                    name=name,
                    task_list=task_list,
                    node=self.node,
                    state=State.QUEUED,
                    queued_at=now,
                )
                self._add_run(run)
            if state.is_finished:
                run.finish(_outcome(state, result, error, error_type, reason), now)
            else:
                run.state = state
                run.started_at = now if state == State.RUNNING else None
            return run.status()

    def script_status(self, script: StatusScript | None) -> None:
        """Answer every ``get_status(name, task_list)`` with ``script(name, task_list)``.

        The script returns a ``TaskStatus``, a ``State`` (a status of that state for
        the name), or None to answer from the recorded runs. ``None`` removes it.
        """
        self._script = script

    def refuse_starts(self, error: Exception | None = None) -> None:
        """Make every start raise ``error`` (default ``ClusterUnavailable``) after validation."""
        self._start_error = error or ClusterUnavailable(
            "No live node can take the run (FakeClient.refuse_starts() is in effect); "
            "nothing was started. Call accept_starts() to start runs again."
        )

    def accept_starts(self) -> None:
        self._start_error = None

    def drain(self) -> list[TaskStatus]:
        """Execute the queued runs started so far, oldest first, as a worker would.

        Runs they start in turn stay queued until the next ``drain()``.
        """
        with self._lock:
            queued = [
                run
                for runs in self._runs.values()
                for run in runs
                if run.state == State.QUEUED and run.function
            ]
        queued.sort(key=lambda run: run.queued_at)
        return [self._execute(run) for run in queued]

    # -- hooks -----------------------------------------------------------------------

    def _check_available(self) -> None:
        if self._start_error is not None:
            raise self._start_error

    def _scripted_status(self, name: str, task_list: str) -> TaskStatus | None:
        if self._script is None:
            return None
        answer = self._script(name, task_list)
        if answer is None or isinstance(answer, TaskStatus):
            return answer
        try:
            state = State(answer)
        except ValueError:
            raise InvalidScript(
                f"The status script returned {answer!r} for {name!r}; return a TaskStatus, "
                "a State, or None to answer from the recorded runs."
            ) from None
        return TaskStatus(name=name, task_list=task_list, state=state)


def _check_json(name: str, result: Any) -> None:
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(
            f"The scripted result of {name!r} is not JSON ({exc}); a real run can only "
            "return JSON-compatible values, so script one."
        ) from None


def _outcome(
    state: State, result: Any, error: str | None, error_type: str | None, reason: str | None
) -> Outcome:
    if state == State.DONE:
        return Outcome.done(result)
    return Outcome(
        state=State.FAILED,
        reason=reason or Reason.EXCEPTION.value,
        error_type=error_type or "",
        error=error or "",
    )
