"""``DistributedTasksBackend``: Django's task framework on top of the cluster.

    TASKS = {"default": {"BACKEND": "distributed_tasks.backends.DistributedTasksBackend"}}

``Task.enqueue()`` is ``start_async()``, and a ``TaskResult`` is a view of the run's
``TaskRun`` row, readable from any process. Django's tasks so gain unique names,
retries and a cluster that survives a dead node.

Only registered functions run (workers look paths up in the registry, never import
them), and the backend registers nothing itself: a registration made while validating
a task would exist only in the process that validated it, and the worker would refuse
the run. So ``validate_task`` requires ``@distributed_task`` under ``@task``, which
registers the function the same way in every process that imports its module.

``NamedTask`` (the ``task_class``) adds ``start_async``'s options to ``Task``:
``@task(run_name=...)`` or ``.using(run_name=..., on_conflict=...)``. ``queue_name``
is the task list, ``run_after`` a countdown, ``priority`` orders the runs waiting on a
node (higher first), and ``OPTIONS`` holds backend-wide defaults (``options``).

The package: this module enqueues and reads results; ``results`` maps a run to a
``TaskResult`` (and keeps the task's spec with the run); ``execution`` is the worker
side (context, ``async def``, Django's signals); ``options`` checks the settings.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, cast

from django.core import checks
from django.utils import timezone

from distributed_tasks import registry
from distributed_tasks.backends import execution
from distributed_tasks.backends.options import (
    E101,
    E102,
    E103,
    START_FIELDS,
    W101,
    check_backend,
    start_options,
)
from distributed_tasks.backends.results import (
    GENERIC_ERROR,
    SPEC_KEY,
    STATUSES,
    result_of,
    spec_of,
    stored_spec,
    task_fields,
)
from distributed_tasks.compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_enqueued,
)
from distributed_tasks.exceptions import (
    DistributedTasksError,
    NotRegistered,
    NotSerializable,
)
from distributed_tasks.types import TaskHandle

__all__ = [
    "E101",
    "E102",
    "E103",
    "GENERIC_ERROR",
    "STATUSES",
    "W101",
    "DistributedTasksBackend",
    "NamedTask",
]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NamedTask(Task):
    """A Django ``Task`` that also carries ``start_async``'s options.

    ``None`` means "the backend's OPTIONS, else ``start_async``'s default";
    ``run_name=None`` names each run with a uuid4 hex. ``callback`` is a
    registered function or its dotted path.
    """

    run_name: str | None = None
    on_conflict: str | None = None
    reuse: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    retry_backoff: float | None = None
    callback: Any = None

    def using(self, **changes: Any) -> NamedTask:  # type: ignore[override]
        """Django's ``using()`` (priority, queue_name, run_after, backend) plus the fields above."""
        ours = {f: v for f in START_FIELDS if (v := changes.pop(f, None)) is not None}
        # Task.using, not super(): slots dataclasses break zero-argument super().
        task = Task.using(self, **changes)
        return cast(NamedTask, dataclasses.replace(task, **ours) if ours else task)


class DistributedTasksBackend(BaseTaskBackend):
    """Runs Django tasks as unique, named runs on the cluster's workers."""

    task_class = NamedTask
    supports_defer = True  # run_after becomes start_async's countdown
    supports_async_task = True  # workers run async def functions with asyncio.run
    supports_get_result = True  # results are TaskRun rows, readable from any process
    supports_priority = True  # message priorities on each node's queue (brokers.py)

    def validate_task(self, task: Task) -> None:
        """Django's rules, then ours: registered function, valid names and options."""
        super().validate_task(task)
        from distributed_tasks.validation import prepare  # needs the app registry

        try:  # every value enqueue() passes, so that a bad one is an InvalidTask here
            prepare(task.func, countdown=self._countdown(task), priority=int(task.priority),
                    **start_options(task, {}))  # fmt: skip
        except NotRegistered as exc:
            raise InvalidTask(
                f"{task.module_path} is not registered with distributed_tasks, and workers "
                "only run registered functions. Decorate it with @distributed_task below "
                "@task:\n\n    @task\n    @distributed_task\n    def "
                f"{task.func.__name__}(...): ...\n\n({exc})"
            ) from exc
        except DistributedTasksError as exc:
            raise InvalidTask(f"{task.module_path}: {exc}") from exc

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Start a run; its id is the result id. Raises ``AlreadyRunning`` for a busy name.

        The result is built from what was sent, not read back: a fast worker may have
        started the run already, and Django's contract is a READY result. With
        ``on_conflict="return_existing"`` the result of the active run of the name is
        returned instead (read from its row: its own task and arguments, no new run).
        """
        self.validate_task(task)
        args, kwargs = _json_arguments(task, args, kwargs)
        from distributed_tasks import api

        handle = api.start_async(
            task.func,
            args,
            kwargs,
            countdown=self._countdown(task),
            priority=int(task.priority),  # Django allows 5.0 and True: whole numbers
            data={SPEC_KEY: spec_of(task)},
            **start_options(task, self.options if isinstance(self.options, Mapping) else {}),
        )
        if handle.existing:
            return self.get_result(handle.run_id)
        result = self._ready(task, handle, args, kwargs)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The run with this id, read from the database (the source of truth)."""
        from distributed_tasks.store import get_store

        try:
            run = get_store().get(uuid.UUID(str(result_id)))
        except ValueError:
            run = None
        if run is None:
            raise TaskResultDoesNotExist(
                f"No run has the id {result_id!r}: it was never enqueued, its transaction "
                "rolled back, or its record is older than HISTORY_RETENTION."
            )
        task = self._task_for(run)
        return result_of(run, task, task.backend)

    def check(self, **kwargs: Any) -> Iterator[checks.CheckMessage]:
        yield from super().check(**kwargs)
        yield from check_backend(self)

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _countdown(task: Task) -> float | None:
        if task.run_after is None:
            return None
        seconds = (task.run_after - timezone.now()).total_seconds()
        return seconds if seconds > 0 else None

    def _task_for(self, run: Any) -> Task:
        """The task of a run read back: the registered function, never an import.

        A run the backend enqueued is rebuilt from its stored spec, equal to the task
        it was enqueued as (on the alias it was enqueued through, while that alias is
        configured); another run (``start_async``) reads as a task named after it.
        """
        try:
            entry = registry.resolve(run.function)
        except NotRegistered:
            entry = None
        if entry is None or not entry.is_function:
            raise TaskResultDoesNotExist(
                f"Run {run.run_id} runs {run.function}, which is not a registered function in "
                "this process, so it is no task result; read it with get_status(name) instead."
            )
        spec = stored_spec(run.data)
        fields = task_fields(spec or {"run_name": run.name})
        alias = spec["backend"] if spec and spec["backend"] in task_backends.settings else None
        try:
            return self.task_class(
                func=entry.factory, backend=alias or self.alias, queue_name=run.task_list, **fields
            )
        except (InvalidTask, DistributedTasksError, TypeError, ValueError) as exc:
            raise TaskResultDoesNotExist(
                f"Run {run.run_id} cannot be a task of backend {self.alias!r}: {exc}"
            ) from exc

    def _ready(self, task: Task, handle: TaskHandle, args: Any, kwargs: Any) -> TaskResult:
        """The READY result of a run just started (a testing double has no queued_at)."""
        never = dict.fromkeys(("started_at", "finished_at", "last_attempted_at"))
        return TaskResult(
            task=task,
            id=handle.run_id,
            status=TaskResultStatus.READY,
            enqueued_at=handle.queued_at or timezone.now(),
            **never,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )


def _json_arguments(task: Task, args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """Arguments as Django normalises them (tuples to lists, bytes to str).

    What Django cannot normalise raises ``NotSerializable``, a ``TypeError`` that
    starts with Django's own words ("Unsupported type: ...").
    """
    try:
        return cast(list, normalize_json(list(args))), cast(dict, normalize_json(dict(kwargs)))
    except TypeError as exc:
        raise NotSerializable(
            f"{exc}. The arguments of {task.module_path} are stored as JSON: pass "
            "JSON-compatible values (str, numbers, bools, None, lists, dicts) such as ids, "
            "not objects."
        ) from None


execution.install()
