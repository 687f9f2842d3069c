"""A run as Django's ``TaskResult``, and the task it was enqueued as.

Django compares a result read back with ``get_result(id)`` to the one ``enqueue()``
returned, ``task`` included. So the backend keeps, in the run's ``data`` under
``SPEC_KEY``, the fields of the ``Task`` that are not already columns of the row:
its backend alias, priority, ``takes_context``, ``run_after`` and the ``NamedTask``
options that were set (a ``run_name`` only when one was given). Workers read it
too: it is how they know to pass a ``TaskContext`` and to send Django's signals.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from distributed_tasks import registry
from distributed_tasks.compat import TaskError, TaskResult, TaskResultStatus
from distributed_tasks.types import State

SPEC_KEY = "django_task"

STATUSES = {
    State.QUEUED: TaskResultStatus.READY,
    State.RUNNING: TaskResultStatus.RUNNING,
    State.DONE: TaskResultStatus.SUCCESSFUL,
    State.FAILED: TaskResultStatus.FAILED,
}

# A run that failed without an exception (node lost, cancelled) reports this class.
GENERIC_ERROR = "distributed_tasks.exceptions.DistributedTasksError"

# NamedTask fields kept in the spec as they are (JSON values already).
PLAIN_FIELDS = ("run_name", "on_conflict", "reuse", "timeout", "max_attempts", "retry_backoff")


def spec_of(task: Any) -> dict[str, Any]:
    """What ``task`` needs besides the row's columns to be rebuilt equal to itself."""
    spec: dict[str, Any] = {
        "backend": task.backend,
        "priority": task.priority,
        "takes_context": task.takes_context,
    }
    if task.run_after is not None:
        spec["run_after"] = task.run_after.isoformat()
    for field in PLAIN_FIELDS:
        if (value := getattr(task, field, None)) is not None:
            spec[field] = value
    callback = getattr(task, "callback", None)
    if callback is not None:
        # A path stays a path; a callable is found again by its registered path.
        spec["callback"] = (
            {"path": callback}
            if isinstance(callback, str)
            else {"object": registry.resolve(callback).path}
        )
    return spec


def stored_spec(data: Any) -> dict[str, Any] | None:
    """The spec a run's data holds, if the backend enqueued it."""
    spec = data.get(SPEC_KEY) if isinstance(data, dict) else None
    return spec if isinstance(spec, dict) and isinstance(spec.get("backend"), str) else None


def task_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``task_class`` keyword arguments a spec describes (func and queue aside).

    ``priority`` and ``run_after`` are always given: Django 6.0's ``Task`` has no
    default for them (6.1 and the backport have)."""
    fields = {f: spec[f] for f in PLAIN_FIELDS if f in spec}
    fields["priority"] = spec.get("priority", 0)
    fields["takes_context"] = bool(spec.get("takes_context"))
    run_after = spec.get("run_after")
    fields["run_after"] = dt.datetime.fromisoformat(run_after) if run_after else None
    callback = spec.get("callback")
    if isinstance(callback, dict):
        path = callback.get("path") or callback.get("object")
        fields["callback"] = path if "path" in callback else registry.resolve(path).factory
    return fields


def task_error(error_type: str, error: str, reason: str, traceback: str) -> TaskError:
    """Django's TaskError for one failed attempt as stored (row columns or history entry).

    A failure without an exception (node lost, cancelled) names ``GENERIC_ERROR`` and
    has "<reason>: <error>" for a traceback; our rows drop the "builtins." prefix.
    """
    path = error_type or GENERIC_ERROR
    if "." not in path:
        path = f"builtins.{path}"
    summary = f"{reason}: {error}" if reason else error
    return TaskError(exception_class_path=path, traceback=traceback or summary)


def _history(run: Any) -> list[dict[str, Any]]:
    """Earlier attempts of the run, oldest first (``TaskRun.attempts``)."""
    return [a for a in getattr(run, "attempts", None) or [] if isinstance(a, dict)]


def errors_of(run: Any) -> list[TaskError]:
    """One ``TaskError`` per failed attempt, oldest first (the current one last)."""
    errors = [
        task_error(
            a.get("error_type", ""), a.get("error", ""), a.get("reason", ""), a.get("traceback", "")
        )
        for a in _history(run)
        if a.get("state") == State.FAILED
    ]
    if run.error_type or run.error:
        errors.append(task_error(run.error_type, run.error, run.reason, run.traceback))
    return errors


def worker_ids_of(run: Any) -> list[str]:
    """The node of each execution: Django counts ``attempts`` from this list."""
    if not hasattr(run, "attempts"):  # a store without per-attempt history
        return [run.node] * run.executions
    earlier = [a.get("node", "") for a in _history(run) if a.get("started_at")]
    return [*earlier, run.node] if run.started_at else earlier


def result_of(run: Any, task: Any, alias: str) -> TaskResult:
    """A TaskResult for a TaskRun row, as ``task`` enqueued it on backend ``alias``.

    ``started_at`` is the first execution's start and ``last_attempted_at`` the
    latest one's, so both stay set while a retry waits.
    """
    starts = [
        dt.datetime.fromisoformat(a["started_at"]) for a in _history(run) if a.get("started_at")
    ]
    if run.started_at:
        starts.append(run.started_at)
    result = TaskResult(
        task=task,
        id=run.run_id,
        status=STATUSES[State(run.state)],
        enqueued_at=run.queued_at,
        started_at=starts[0] if starts else None,
        finished_at=run.finished_at,
        last_attempted_at=starts[-1] if starts else None,
        args=run.args,
        kwargs=run.kwargs,
        backend=alias,
        errors=errors_of(run),
        worker_ids=worker_ids_of(run),
    )
    if run.state == State.DONE:
        object.__setattr__(result, "_return_value", run.result)
    return result
