"""Wiring of the optional observability parts: metrics, tracing and run-bound logs.

``install()`` runs from the app's ``ready()`` and again when ``DISTRIBUTED_TASKS``
changes. Each part connects receivers only when it is on (metrics.py and tracing.py
say when), so a part that is off costs the signals nothing. Run-bound logs need no
extra package: while a pool process executes a run, ``logs.current()`` names it; our
own loggers then copy its fields onto each of their records, and
``logs.RunContextFilter`` on a handler does the same for any logger's (the task's own).
"""

from __future__ import annotations

from typing import Any

from celery import signals as celery_signals
from django.core.signals import setting_changed
from django.dispatch import receiver

from distributed_tasks import logs, metrics, tracing

_bound: dict[str, Any] = {}  # celery task id -> context token of logs.bound


def _bind(task_id: str = "", task: Any = None, args: Any = None, **kwargs: Any) -> None:
    from distributed_tasks.celery import TASK_NAME

    if getattr(task, "name", None) == TASK_NAME and args:
        logs.tag_our_loggers()
        _bound[task_id] = logs.bind(args[0])


def _unbind(task_id: str = "", **kwargs: Any) -> None:
    token = _bound.pop(task_id, None)
    if token is not None:
        logs.unbind(token)


def install() -> dict[str, bool]:
    """Connect what is enabled; returns which parts are on."""
    celery_signals.task_prerun.connect(_bind, weak=False, dispatch_uid="dt-logs-bind")
    celery_signals.task_postrun.connect(_unbind, weak=False, dispatch_uid="dt-logs-unbind")
    return {"metrics": metrics.install(), "tracing": tracing.install(), "logs": True}


@receiver(setting_changed)
def _reinstall(*, setting: str, **kwargs: Any) -> None:
    if setting == "DISTRIBUTED_TASKS":
        install()
