"""The backend's ``OPTIONS`` and ``QUEUES``: what they may hold, and the checks that say so.

``OPTIONS`` gives backend-wide defaults for the ``start_async`` options a ``NamedTask``
leaves at ``None``; each ``QUEUES`` entry is a task list.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from django.core import checks

from distributed_tasks.exceptions import InvalidName
from distributed_tasks.types import OnConflict, Reuse

E101 = "distributed_tasks.E101"  # OPTIONS is not a dict, or has an unknown key
E102 = "distributed_tasks.E102"  # an OPTIONS value is outside its allowed set
E103 = "distributed_tasks.E103"  # a QUEUES entry cannot be a task list name
W101 = "distributed_tasks.W101"  # the Celery app's node queues have too few priority levels


def _choice(choices: Any) -> Callable[[Any], str | None]:
    allowed = [c.value for c in choices]
    return lambda value: None if value in allowed else f"must be one of {allowed}"


def _positive(*, integer: bool = False) -> Callable[[Any], str | None]:
    def validate(value: Any) -> str | None:
        kinds = (int,) if integer else (int, float)
        if value is None or (
            not isinstance(value, bool) and isinstance(value, kinds) and value > 0
        ):
            return None
        return f"must be {'a whole number' if integer else 'a number'} greater than 0 or None"

    return validate


# OPTIONS key -> (NamedTask field it defaults, validator)
OPTIONS: dict[str, tuple[str, Callable[[Any], str | None]]] = {
    "ON_CONFLICT": ("on_conflict", _choice(OnConflict)),
    "REUSE": ("reuse", _choice(Reuse)),
    "TIMEOUT": ("timeout", _positive()),
    "MAX_ATTEMPTS": ("max_attempts", _positive(integer=True)),
    "RETRY_BACKOFF": ("retry_backoff", _positive()),
}
# Every start_async option a NamedTask carries.
START_FIELDS = ("run_name", "callback", *(field for field, _validate in OPTIONS.values()))


def start_options(task: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """start_async's keyword arguments: the task's own value, else the OPTIONS default.

    Unknown keys and a non-dict OPTIONS are left to the checks rather than raised here.
    """
    options: dict[str, Any] = {
        "name": getattr(task, "run_name", None),
        "task_list": task.queue_name,
        "callback": getattr(task, "callback", None),
    }
    for key, (field, _validate) in OPTIONS.items():
        value = getattr(task, field, None)
        options[field] = defaults.get(key) if value is None else value
    options["on_conflict"] = options["on_conflict"] or OnConflict.FAIL
    options["reuse"] = options["reuse"] or Reuse.ALLOW
    return options


def check_backend(backend: Any) -> Iterator[checks.CheckMessage]:
    """E101/E102 for ``OPTIONS``, E103 for ``QUEUES`` of one configured backend."""
    where = f"TASKS[{backend.alias!r}]"
    if not isinstance(backend.options, Mapping):
        yield checks.Error(
            f"{where}['OPTIONS'] must be a dict, got {type(backend.options).__name__}.",
            hint=f"Write it as a dict with keys among {', '.join(OPTIONS)}, or leave it out.",
            id=E101,
        )
    else:
        yield from _check_options(where, backend.options, type(backend).__name__)
    yield from _check_queues(where, backend.queues)
    yield from _check_priorities(where)


def _check_options(
    where: str, options: Mapping[str, Any], reader: str
) -> Iterator[checks.CheckMessage]:
    for key, value in options.items():
        if key not in OPTIONS:
            close = difflib.get_close_matches(str(key), OPTIONS, n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            yield checks.Error(
                f"{where}['OPTIONS'] has an unknown key {key!r}.",
                hint=f"{hint}{reader} reads {', '.join(OPTIONS)}.",
                id=E101,
            )
        elif problem := OPTIONS[key][1](value):
            yield checks.Error(
                f"{where}['OPTIONS'][{key!r}] {problem}, got {value!r}.",
                hint="Fix the value, or remove the key to use start_async()'s default.",
                id=E102,
            )


def _check_queues(where: str, queues: Any) -> Iterator[checks.CheckMessage]:
    from distributed_tasks.validation import check_name  # needs the app registry

    for queue in sorted(queues, key=str):
        try:
            check_name(queue, "task list")
        except InvalidName as exc:
            yield checks.Error(
                f"{where}['QUEUES'] has {queue!r}, which cannot be a task list: {exc}",
                hint="Each queue is a task list: use 1 to 200 printable characters.",
                id=E103,
            )


def _check_priorities(where: str) -> Iterator[checks.CheckMessage]:
    """A project's own Celery app may lack what run priorities need (the built one has it)."""
    from kombu.transport.redis import PRIORITY_STEPS

    from distributed_tasks.brokers import PRIORITY_LEVELS, get_broker
    from distributed_tasks.conf import get_settings

    try:
        broker = get_broker()
    except Exception:  # an app that cannot be imported is E006
        return
    conf = broker.app.conf
    if broker.name == "amqp":
        levels = (conf.task_queue_max_priority or 0) + 1
        setting = f"task_queue_max_priority = {PRIORITY_LEVELS - 1}"
    else:
        options = conf.broker_transport_options or {}
        levels = len(options.get("priority_steps") or PRIORITY_STEPS)
        setting = f'broker_transport_options["priority_steps"] = list(range({PRIORITY_LEVELS}))'
    if levels < PRIORITY_LEVELS:
        yield checks.Warning(
            f"{where}: the Celery app's node queues have {levels} priority level(s) of the "
            f"{PRIORITY_LEVELS} that run priorities use, so runs of different priorities may "
            "start in the order they were enqueued.",
            hint=f"Set {setting} on {get_settings().CELERY_APP or 'the Celery app'}, in web, "
            "worker and beat processes alike (a RabbitMQ queue declared before must be deleted "
            "once: RabbitMQ refuses to redeclare it with x-max-priority).",
            id=W101,
        )
