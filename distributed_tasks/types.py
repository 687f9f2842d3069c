"""Values the API hands back: run states, handles and statuses.

They are frozen so a status read once cannot be mistaken for a live view; call
``get_status`` again to see a newer state.
"""

from __future__ import annotations

import datetime as dt
import traceback as tb
from dataclasses import dataclass
from typing import Any

from django.db import models

ERROR_LIMIT = 2000
TRACEBACK_LIMIT = 32 * 1024
# Longest countdown, timeout or retry backoff: ten years, far inside datetime's range.
MAX_SECONDS = 10 * 365 * 24 * 3600.0


class State(models.TextChoices):
    """Where a run is in its life. ``NOT_FOUND`` is never stored, only reported."""

    QUEUED = "QUEUED", "Queued"
    RUNNING = "RUNNING", "Running"
    DONE = "DONE", "Done"
    FAILED = "FAILED", "Failed"
    NOT_FOUND = "NOT_FOUND", "Not found"

    @property
    def is_active(self) -> bool:
        return self in (State.QUEUED, State.RUNNING)

    @property
    def is_finished(self) -> bool:
        return self in (State.DONE, State.FAILED)


ACTIVE_STATES = (State.QUEUED, State.RUNNING)
FINISHED_STATES = (State.DONE, State.FAILED)
STORED_STATES = [(s.value, s.label) for s in State if s is not State.NOT_FOUND]


class Reason(models.TextChoices):
    """Why a run ended FAILED (empty for DONE runs)."""

    EXCEPTION = "exception", "The function raised"
    CALLBACK = "callback", "The callback raised"
    TIMEOUT = "timeout", "The run exceeded its timeout"
    WORKER_LOST = "worker_lost", "The process running it died or stopped running it"
    NODE_LOST = "node_lost", "The node running it stopped heartbeating"
    NOT_REGISTERED = "not_registered", "The worker does not know the function"
    CANCELLED = "cancelled", "Cancelled"


class MoveReason(models.TextChoices):
    """Why a QUEUED run moved to another node before it started (``run_moved``'s ``why``)."""

    NODE_LOST = "node_lost", "Its node stopped heartbeating or restarted"
    REBALANCED = "rebalanced", "The leader moved it off a node with no free slot"
    STOLEN = "stolen", "A node with a free slot took it over"


class OnConflict(models.TextChoices):
    FAIL = "fail"
    RETURN_EXISTING = "return_existing"


class Reuse(models.TextChoices):
    """What a finished name still inside CLEANUP_TIMEOUT allows."""

    ALLOW = "allow"
    ALLOW_FAILED_ONLY = "allow_failed_only"
    REJECT = "reject"


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, which is user code and may raise (or return something not a str):
    the run must end all the same, with an error that says so."""
    try:
        return str(exc)
    except Exception:
        return f"<str() of {type(exc).__name__} raised>"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskHandle:
    """What ``start_async`` returns: the name to poll and where the run went."""

    name: str
    run_id: str
    node: str | None
    task_list: str = "default"
    attempt: int = 1
    existing: bool = False  # True when on_conflict="return_existing" returned a running run
    queued_at: dt.datetime | None = None  # the run's queued_at as stored (None for an existing run)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStatus:
    """What ``get_status`` returns: a snapshot of the newest run of a name."""

    name: str
    state: State
    task_list: str = "default"
    run_id: str | None = None
    node: str | None = None
    attempt: int | None = None
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    reason: str | None = None
    queued_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    # How far the run is, as it last reported (report_progress); kept once it ended.
    progress: float | None = None
    progress_message: str | None = None
    progress_data: Any = None
    # A cancel asked of the running run (cancel()), and by whom.
    cancel_requested_at: dt.datetime | None = None
    cancel_requested_by: str | None = None

    @property
    def is_active(self) -> bool:
        return self.state.is_active

    @property
    def is_finished(self) -> bool:
        return self.state.is_finished

    @classmethod
    def not_found(cls, name: str, task_list: str = "default") -> TaskStatus:
        return cls(name=name, task_list=task_list, state=State.NOT_FOUND)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How an attempt ended, as the worker (or the orchestrator) records it."""

    state: State
    result: Any = None
    reason: str = ""
    error_type: str = ""
    error: str = ""
    traceback: str = ""

    @classmethod
    def done(cls, result: Any) -> Outcome:
        return cls(state=State.DONE, result=result)

    @classmethod
    def failed(cls, reason: Reason, exc: BaseException | None = None, message: str = "") -> Outcome:
        error_type = ""
        trace = ""
        if exc is not None:
            kind = type(exc)
            error_type = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
            message = message or exception_text(exc) or kind.__name__
            trace = "".join(tb.format_exception(exc))[-TRACEBACK_LIMIT:]
        return cls(
            state=State.FAILED,
            reason=reason.value,
            error_type=error_type,
            error=message[:ERROR_LIMIT],
            traceback=trace,
        )

    def row_fields(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "result": self.result,
            "reason": self.reason,
            "error_type": self.error_type,
            "error": self.error,
            "traceback": self.traceback,
        }
