"""What Django's framework refuses, refused with Django's exception and words.

The calls of Django's ``tests/tasks/test_tasks.py`` for validation; nothing here needs
a worker, and nothing refused leaves a run behind. The backend's own rules (registered
functions, names, options) are in ``tests/integration/test_backends.py``.
"""

from __future__ import annotations

import re
from datetime import datetime

import django
import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from distributed_tasks.compat import InvalidTask, task
from distributed_tasks.models import TaskRun
from tests.backend_contract import tasks as t

pytestmark = pytest.mark.django_db(transaction=True)


def refused(message: str):
    """Django's InvalidTask with Django's exact words."""
    return pytest.raises(InvalidTask, match=re.escape(message))


def test_enqueue_with_invalid_argument():
    with pytest.raises(TypeError, match="Unsupported type"):
        t.noop_task.enqueue(datetime.now())
    with pytest.raises(TypeError, match="Unsupported type"):
        async_to_sync(t.noop_task.aenqueue)(datetime.now())
    assert not TaskRun.objects.exists()


def test_naive_datetime():
    with refused("run_after must be an aware datetime."):
        t.noop_task.using(run_after=datetime.now())


@pytest.mark.parametrize("priority", [-101, 101, 3.1])
def test_invalid_priority(priority):
    with refused("priority must be a whole number between -100 and 100."):
        t.noop_task.using(priority=priority)


def test_valid_priorities():
    for priority in (100, -100, 0):
        assert t.noop_task.using(priority=priority).priority == priority
    assert t.noop_task.priority == 0


def test_unknown_queue_name():
    with refused("Queue 'queue-2' is not valid for backend."):
        t.noop_task.using(queue_name="queue-2")


def local_function():
    def inner() -> None:
        return None

    return inner


@pytest.mark.parametrize("function", [any, local_function()], ids=["builtin", "nested"])
def test_invalid_function(function):
    with refused("Task function must be defined at a module level."):
        task()(function)


def test_takes_context_without_taking_context():
    with refused("Task takes context but does not have a first argument of 'context'."):
        task(takes_context=True)(t.calculate_meaning_of_life.func)


@pytest.mark.skipif(django.VERSION < (6, 0), reason="the backport accepts run_after in @task")
def test_run_after_in_decorator():
    # 6.1 says so; 6.0's task() takes no keyword it does not name ("unexpected keyword").
    with pytest.raises(TypeError, match=r"run_after cannot be defined statically|'run_after'"):
        task(run_after=timezone.now())(t.calculate_meaning_of_life.func)


def test_using_creates_new_instance():
    new_task = t.noop_task.using()
    assert new_task == t.noop_task and new_task is not t.noop_task
    now = timezone.now()
    chained = t.noop_task.using(run_after=now).using(priority=10)
    assert (chained.priority, chained.run_after, t.noop_task.priority) == (10, now, 0)
