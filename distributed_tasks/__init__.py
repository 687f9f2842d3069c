"""django-distributed-tasks: unique, named tasks across a Celery cluster.

The names below are the public API. Those that touch models are loaded on first
use, so importing the package (as INSTALLED_APPS does) needs no app registry.
"""

from __future__ import annotations

from typing import Any

from distributed_tasks.exceptions import (
    AlreadyRunning,
    Cancelled,
    ClusterUnavailable,
    DistributedTasksError,
    InvalidConfiguration,
    InvalidName,
    InvalidOption,
    InvalidState,
    NameReserved,
    NotCancellable,
    NotRegistered,
    NotSerializable,
    PayloadTooLarge,
    TaskNotFound,
)
from distributed_tasks.periodic import PeriodicTask, periodic
from distributed_tasks.registry import DistributedTask, RunInfo, distributed_task
from distributed_tasks.types import State, TaskHandle, TaskStatus

_LAZY = {
    "report_progress": "distributed_tasks.progress",
    "cancel_requested": "distributed_tasks.cancellation",
    "cancel": "distributed_tasks.api",
    "retry": "distributed_tasks.api",
    "start_async": "distributed_tasks.api",
    "start_many": "distributed_tasks.api",
    "get_status": "distributed_tasks.api",
    "astart_async": "distributed_tasks.api",
    "astart_many": "distributed_tasks.api",
    "aget_status": "distributed_tasks.api",
}

__all__ = [
    "AlreadyRunning",
    "Cancelled",
    "ClusterUnavailable",
    "DistributedTask",
    "DistributedTasksError",
    "InvalidConfiguration",
    "InvalidName",
    "InvalidOption",
    "InvalidState",
    "NameReserved",
    "NotCancellable",
    "NotRegistered",
    "NotSerializable",
    "PayloadTooLarge",
    "PeriodicTask",
    "RunInfo",
    "State",
    "TaskHandle",
    "TaskNotFound",
    "TaskStatus",
    "distributed_task",
    "periodic",
    *_LAZY,
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'distributed_tasks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
