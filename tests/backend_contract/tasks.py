"""Django tasks of the backend contract, after Django's own ``tests/tasks/tasks.py``.

Declared the documented way (``@task`` over ``@distributed_task``) and imported by
``tests.tasks``, so worker processes register them at start-up. Worker-side events
(Django's ``task_started`` / ``task_finished``, a task's context) are noted in Redis,
where the test process reads them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from distributed_tasks import distributed_task
from distributed_tasks.compat import task, task_finished, task_started
from distributed_tasks.connection import get_redis


def signal_key(result_id: str) -> str:
    return f"django-signals:{result_id}"


def _note(signal: str):
    def receiver(sender, task_result, **kwargs):
        get_redis().rpush(
            signal_key(task_result.id),
            json.dumps(
                {
                    "signal": signal,
                    "sender": sender.__name__,
                    "status": str(task_result.status),
                    "attempts": task_result.attempts,
                }
            ),
        )

    return receiver


_started, _finished = _note("task_started"), _note("task_finished")
task_started.connect(_started)
task_finished.connect(_finished)


@task
@distributed_task
def noop_task(*args: Any, **kwargs: Any) -> None:
    return None


@task
@distributed_task
async def noop_task_async(*args: Any, **kwargs: Any) -> None:
    await asyncio.sleep(0)
    return None


@task
@distributed_task
def calculate_meaning_of_life() -> int:
    return 42


@task
@distributed_task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@task
@distributed_task
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@task
@distributed_task
def failing_task_value_error() -> None:
    raise ValueError("This Task failed due to ValueError")


@task
@distributed_task
def failing_task_system_exit() -> None:
    raise SystemExit("This Task failed due to SystemExit")


@task
@distributed_task
def failing_task_keyboard_interrupt() -> None:
    raise KeyboardInterrupt("This Task failed due to KeyboardInterrupt")


@task
@distributed_task
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


@task
@distributed_task
def complex_return_value() -> Any:
    return {1, 2, 3}  # a set: Django's normalize_json refuses it


@task(takes_context=True)
@distributed_task
def get_task_id(context) -> str:
    return context.task_result.id


@task(takes_context=True)
@distributed_task
def context_until_attempt(context, succeed_at: int) -> dict[str, Any]:
    """Fails until its ``succeed_at``-th attempt; returns what its context said then."""
    if context.attempt < succeed_at:
        raise ConnectionError(f"attempt {context.attempt} fails")
    result = context.task_result
    return {"id": result.id, "attempt": context.attempt, "status": str(result.status)}


@task
@distributed_task
def wait(key: str, limit: float = 60.0) -> str:
    """Runs until the test sets ``key`` in Redis (or ``limit`` passes)."""
    from tests.tasks import wait_for

    return wait_for(key, limit=limit)


@task
@distributed_task
def note(key: str, label: str) -> str:
    """Appends ``label`` to Redis list ``key``: the order in which runs started."""
    get_redis().rpush(key, label)
    return label
