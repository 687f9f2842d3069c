"""What the in-memory clients remember: the starts they accepted and the runs they hold.

A :class:`Start` is the call as the code under test made it (after validation,
so paths and defaults are what the real client would send). A :class:`Run` is
the run behind a name, mutable because the in-memory clients move it through
the same states as a ``TaskRun`` row: QUEUED -> RUNNING -> DONE/FAILED.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from distributed_tasks.exceptions import AlreadyRunning
from distributed_tasks.messages import RunMessage
from distributed_tasks.types import Outcome, State, TaskHandle, TaskStatus
from distributed_tasks.validation import StartRequest

# What the call itself is made of; every other field of a StartRequest is an option.
CALL_FIELDS = ("function", "args", "kwargs", "name", "task_list", "callback")


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """One start a client accepted: the function path, the call, and its options."""

    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    name: str
    task_list: str
    callback: str | None
    options: dict[str, Any]
    handle: TaskHandle

    @classmethod
    def of(cls, request: StartRequest, handle: TaskHandle) -> Start:
        """Every ``StartRequest`` field that is not part of the call is an option."""
        options = {
            f.name: getattr(request, f.name) for f in fields(request) if f.name not in CALL_FIELDS
        }
        return cls(
            function=request.function,
            args=request.args,
            kwargs=request.kwargs,
            name=request.name,
            task_list=request.task_list,
            callback=request.callback or None,
            options=options,
            handle=handle,
        )

    @property
    def run_id(self) -> str:
        return self.handle.run_id

    def describe(self) -> str:
        """One line for assertion messages: enough to see why a criterion did not match."""
        parts = [f"name={self.name!r}", f"args={self.args!r}"]
        if self.kwargs:
            parts.append(f"kwargs={self.kwargs!r}")
        if self.callback:
            parts.append(f"callback={self.callback!r}")
        if self.task_list != "default":
            parts.append(f"task_list={self.task_list!r}")
        return f"{self.function}({', '.join(parts)})"


R = TypeVar("R", bound=AlreadyRunning)


def _epoch(value: dt.datetime | None) -> float:
    return value.timestamp() if value else 0.0


@dataclass(slots=True, kw_only=True)
class Run:
    """The run behind a name. ``function`` is empty for runs a test scripted into being."""

    run_id: str
    name: str
    task_list: str
    node: str
    state: State
    queued_at: dt.datetime
    function: str = ""
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    callback: str = ""
    timeout: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 1
    attempt: int = 1
    executions: int = 0
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    reason: str | None = None
    traceback: str = ""
    cancel_requested_at: dt.datetime | None = None
    cancel_requested_by: str = ""

    def handle(self, *, existing: bool = False) -> TaskHandle:
        return dataclasses.replace(self.message().handle(), existing=existing)

    def refusal(self, kind: type[R]) -> R:
        """``AlreadyRunning`` (or ``NameReserved``) naming this run, as the real client raises."""
        return kind(self.name, self.run_id, self.node, task_list=self.task_list,
                    state=self.state.value)  # fmt: skip

    def status(self) -> TaskStatus:
        return TaskStatus(
            name=self.name,
            task_list=self.task_list,
            state=self.state,
            run_id=self.run_id,
            node=self.node,
            attempt=self.attempt,
            result=self.result,
            error=self.error,
            error_type=self.error_type,
            reason=self.reason,
            queued_at=self.queued_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            cancel_requested_at=self.cancel_requested_at,
            cancel_requested_by=self.cancel_requested_by or None,
        )

    def message(self) -> RunMessage:
        """The broker message a worker would get: what the runner's guard executes."""
        return RunMessage(
            run_id=self.run_id,
            attempt=self.attempt,
            node=self.node,
            task_list=self.task_list,
            name=self.name,
            function=self.function,
            args=self.args,
            kwargs=self.kwargs,
            callback=self.callback,
            queued_at=_epoch(self.queued_at),
            timeout=self.timeout,
            data=self.data,
            priority=self.priority,
        )

    def finish(self, outcome: Outcome, now: dt.datetime) -> None:
        """End the run as ``outcome`` says. The result goes through JSON, as a real
        status read returns it (a tuple comes back as a list)."""
        self.state = outcome.state
        self.finished_at = now
        self.started_at = self.started_at or now
        self.result = None if outcome.result is None else json.loads(json.dumps(outcome.result))
        self.error = outcome.error or None
        self.error_type = outcome.error_type or None
        self.reason = outcome.reason or None
        self.traceback = outcome.traceback
