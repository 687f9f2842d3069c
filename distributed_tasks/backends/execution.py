"""Django's task framework on the worker: context, return values and signals.

A run the backend enqueued carries its task's spec in its data (``results.SPEC_KEY``).
For such a run, the worker's call of the function goes through ``wrap`` (a registry
call wrapper), which does what Django's own backends do around a task:

- sends ``task_started`` with the RUNNING result, just before the call;
- passes a ``TaskContext`` (the result, with ``attempt``) to ``takes_context`` tasks;
- normalises the return value with Django's ``normalize_json``, so a value Django
  refuses fails the run with Django's ``TypeError``.

``task_finished`` follows our ``run_finished``: once the outcome is recorded for good
(a failed attempt that is retried sends neither). Django's receiver logs a failure
with ``sys.exc_info()``, so for a run that failed in this thread the signal is sent
while the task's exception is being handled, as Django's backends do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from distributed_tasks import registry, signals
from distributed_tasks.backends.results import stored_spec, task_fields
from distributed_tasks.compat import (
    InvalidTask,
    TaskContext,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_finished,
    task_started,
)
from distributed_tasks.exceptions import DistributedTasksError
from distributed_tasks.types import State

logger = logging.getLogger("distributed_tasks.backends")

# The exception of the attempt that last failed in this thread: (run id, exception).
_failure = threading.local()


def _result(
    run_id: str, spec: dict[str, Any], info: registry.RunInfo | None = None
) -> tuple[type, Any] | None:
    """(backend class, TaskResult) of a run, or None (logged) when it cannot be had.

    A run with no row (started through a testing double) gets a RUNNING result built
    from ``info``, so its context and signals still work.
    """
    try:
        # Django raises InvalidTaskBackend (an ImproperlyConfigured) for an alias this
        # process's TASKS lacks or a BACKEND path that does not import.
        backend = task_backends[spec["backend"]]
        return type(backend), backend.get_result(run_id)
    except (ImproperlyConfigured, KeyError, ImportError, NotImplementedError) as exc:
        # NotImplementedError: the alias names a backend that cannot read results here.
        logger.warning("Run %s names no usable task backend: %s", run_id, exc)
        return None
    except TaskResultDoesNotExist as exc:
        if info is None:  # e.g. a testing double's run, which has no row
            logger.debug("Run %s has no Django task result here: %s", run_id, exc)
            return None
    now = timezone.now()
    try:
        task = backend.task_class(
            func=registry.resolve(info.function).factory,
            backend=backend.alias,
            queue_name=info.task_list,
            **task_fields(spec),
        )
    except (InvalidTask, DistributedTasksError, TypeError, ValueError) as exc:
        logger.warning("Run %s is no task of backend %r here: %s", run_id, backend.alias, exc)
        return None
    result = TaskResult(
        task=task,
        id=run_id,
        status=TaskResultStatus.RUNNING,
        enqueued_at=None,
        started_at=now,
        finished_at=None,
        last_attempted_at=now,
        args=info.args,
        kwargs=info.kwargs,
        backend=backend.alias,
        errors=[],
        worker_ids=[info.node] * info.attempt,
    )
    return type(backend), result


def wrap(call: Callable[..., Any], info: registry.RunInfo | None) -> Callable[..., Any]:
    """The call of a run the backend enqueued, inside Django's task protocol."""
    spec = stored_spec(info.data) if info is not None else None
    if info is None or spec is None:
        return call
    run_id = info.run_id

    def run(*args: Any, **kwargs: Any) -> Any:
        _failure.value = None
        found = _result(run_id, spec, info)
        if found is not None:
            sender, result = found
            task_started.send(sender=sender, task_result=result)
            if result.task.takes_context:
                args = (TaskContext(task_result=result), *args)
        try:
            return normalize_json(call(*args, **kwargs))
        except BaseException as exc:
            _failure.value = (run_id, exc)
            raise

    return run


def _finished(sender: Any, message: Any, outcome: Any, **kwargs: Any) -> None:
    """Send Django's ``task_finished`` for a run the backend enqueued."""
    spec = stored_spec(getattr(message, "data", None))
    if spec is None:
        return
    failure = getattr(_failure, "value", None)
    _failure.value = None
    found = _result(message.run_id, spec)
    if found is None:
        return
    backend, result = found
    if outcome.state == State.FAILED and failure is not None and failure[0] == message.run_id:
        try:
            raise failure[1]
        except BaseException:  # Django's receiver logs sys.exc_info()
            task_finished.send(sender=backend, task_result=result)
    else:
        task_finished.send(sender=backend, task_result=result)


def install() -> None:
    """Hook into the worker (idempotent): every process that loads the backend runs this."""
    registry.add_call_wrapper(wrap)
    signals.run_finished.connect(_finished, dispatch_uid="distributed_tasks.backends.finished")
