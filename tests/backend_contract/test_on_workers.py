"""Django's task framework contract, on two real nodes.

Each test makes the calls of Django's own backend tests (``tests/tasks`` in Django:
ImmediateBackend, DummyBackend) and asserts what they assert, adapted only where a
real worker runs the task later: the result is READY first, and ``refresh()`` shows
RUNNING, SUCCESSFUL or FAILED as the worker gets there.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.utils import timezone

from distributed_tasks import AlreadyRunning
from distributed_tasks.compat import (
    TASKS_MODULE,
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    task_enqueued,
)
from distributed_tasks.models import TaskRun
from tests.backend_contract import tasks as t
from tests.backend_contract.conftest import NODES, wait_finished, worker_logs
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def assert_ready(result, task, args, kwargs) -> None:
    """What Django's DummyBackend asserts of a result that has not run yet."""
    assert result.status == TaskResultStatus.READY
    assert (result.started_at, result.finished_at, result.last_attempted_at) == (None, None, None)
    assert result.enqueued_at is not None
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018
    assert (result.task, result.args, result.kwargs) == (task, args, kwargs)
    assert (result.is_finished, result.attempts, result.errors) == (False, 0, [])


def assert_ran(result, status) -> None:
    """What Django's ImmediateBackend asserts of the times of a finished result."""
    assert result.status == status
    assert result.is_finished is True
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert result.last_attempted_at >= result.started_at
    assert set(result.worker_ids) <= set(NODES)


def backend_status(result):
    result.refresh()
    return result.status


def signals_of(redis, result) -> list[tuple[str, str, int]]:
    notes = [json.loads(raw) for raw in redis.lrange(t.signal_key(result.id), 0, -1)]
    return [(n["signal"], n["status"], n["attempts"]) for n in notes]


@pytest.mark.parametrize("task", [t.noop_task, t.noop_task_async], ids=["sync", "async"])
def test_enqueue_task(nodes, backend, task):
    with transaction.atomic():  # published on commit: READY for as long as we look
        result = task.enqueue(1, two=3)
        assert_ready(result, task, [1], {"two": 3})
        assert backend.get_result(result.id) == result
    wait_finished(result)
    assert_ran(result, TaskResultStatus.SUCCESSFUL)
    assert (result.return_value, result.attempts, result.errors) == (None, 1, [])
    assert (result.task, result.args, result.kwargs) == (task, [1], {"two": 3})
    assert backend.get_result(result.id) == result


def test_enqueue_returns_ready_even_when_a_worker_is_faster(nodes):
    results = [t.noop_task.enqueue() for _ in range(20)]
    assert {r.status for r in results} == {TaskResultStatus.READY}
    for result in results:
        wait_finished(result)


@pytest.mark.parametrize("task", [t.noop_task, t.noop_task_async], ids=["sync", "async"])
def test_aenqueue_aget_result_arefresh(nodes, backend, task):
    result = async_to_sync(task.aenqueue)()
    assert_ready(result, task, [], {})
    got = async_to_sync(task.aget_result)(result.id)
    assert got.id == result.id and got.task == task
    assert async_to_sync(backend.aget_result)(result.id).id == result.id

    def finished():
        async_to_sync(result.arefresh)()
        return result.is_finished

    poll_until(finished, timeout=30, message="arefresh() to show the run finished")
    assert_ran(result, TaskResultStatus.SUCCESSFUL)
    assert result.attempts == 1


def test_result(nodes, backend):
    result = wait_finished(backend.enqueue(t.calculate_meaning_of_life, [], {}))
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 42)
    assert TaskRun.objects.get(id=result.id).node in NODES


@pytest.mark.parametrize(
    ("task", "exception"),
    [
        (t.failing_task_value_error, ValueError),
        (t.failing_task_system_exit, SystemExit),  # Django's ImmediateBackend: FAILED too
        (t.failing_task_keyboard_interrupt, KeyboardInterrupt),  # a worker never dies of it
    ],
    ids=["ValueError", "SystemExit", "KeyboardInterrupt"],
)
def test_catches_exception(nodes, task, exception):
    message = f"This Task failed due to {exception.__name__}"
    result = wait_finished(task.enqueue())
    assert_ran(result, TaskResultStatus.FAILED)
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    (error,) = result.errors
    assert error.exception_class is exception
    assert error.traceback.endswith(f"{exception.__name__}: {message}\n"), error.traceback
    assert (result.task, result.args, result.kwargs) == (task, [], {})
    # Django's log line for the failure, with the exception, in the worker's log.
    poll_until(
        lambda: f"ERROR {TASKS_MODULE} Task id={result.id}" in worker_logs(nodes),
        message="the failure's log line",
    )
    logs = worker_logs(nodes)
    failure = logs[logs.index(f"ERROR {TASKS_MODULE} Task id={result.id}") :]
    assert f"path={task.module_path} state=FAILED\nTraceback" in failure
    assert f"{exception.__name__}: {message}" in failure


@pytest.mark.parametrize(
    ("task", "exception", "text"),
    [
        (t.complex_exception, ValueError, 'ValueError(ValueError("This task failed"))'),
        (t.complex_return_value, TypeError, "Unsupported type: <class 'set'>"),
    ],
    ids=["complex_exception", "complex_return_value"],
)
def test_complex_failures(nodes, task, exception, text):
    result = wait_finished(task.enqueue())
    assert_ran(result, TaskResultStatus.FAILED)
    assert result._return_value is None
    assert result.errors[0].exception_class is exception
    assert text in result.errors[0].traceback


def test_takes_context(nodes):
    result = wait_finished(t.get_task_id.enqueue())
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, result.id)


def test_context_counts_attempts_across_retries(nodes):
    result = wait_finished(t.context_until_attempt.using(max_attempts=2).enqueue(2))
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value == {"id": result.id, "attempt": 2, "status": "RUNNING"}
    assert result.attempts == 2
    (error,) = result.errors  # the failed first attempt's, kept after the success
    assert error.exception_class is ConnectionError
    assert error.traceback.endswith("ConnectionError: attempt 1 fails\n")


def test_errors_of_every_failed_attempt(nodes):
    result = wait_finished(t.failing_task_value_error.using(max_attempts=2).enqueue())
    assert_ran(result, TaskResultStatus.FAILED)
    assert (result.attempts, len(result.errors)) == (2, 2)
    for error in result.errors:
        assert error.exception_class is ValueError
        assert error.traceback.endswith("ValueError: This Task failed due to ValueError\n")


def test_async_task_returns_its_value(nodes):
    result = wait_finished(t.async_add.enqueue(2, b=3))
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 5)


def test_async_task_is_stopped_by_its_timeout(nodes):
    result = wait_finished(t.async_sleep.using(timeout=1).enqueue(30))
    assert_ran(result, TaskResultStatus.FAILED)
    assert result.errors[0].exception_class is SoftTimeLimitExceeded
    assert (result.finished_at - result.started_at) < timedelta(seconds=10)


def test_signals_and_logs(nodes, redis, caplog):
    enqueued = []

    def receiver(sender, task_result, **kwargs):
        enqueued.append((sender, task_result.id, task_result.status))

    task_enqueued.connect(receiver)
    try:
        with caplog.at_level("DEBUG", logger=TASKS_MODULE):
            result = t.calculate_meaning_of_life.enqueue()
    finally:
        task_enqueued.disconnect(receiver)
    backend = type(result.task.get_backend())
    assert enqueued == [(backend, result.id, TaskResultStatus.READY)]
    assert f"Task id={result.id} path={result.task.module_path} enqueued" in caplog.text
    wait_finished(result)
    # Sent by the worker: started while RUNNING, finished once the outcome is stored.
    poll_until(lambda: len(signals_of(redis, result)) == 2, message="the worker's signals")
    assert signals_of(redis, result) == [
        ("task_started", "RUNNING", 1),
        ("task_finished", "SUCCESSFUL", 1),
    ]
    logs = worker_logs(nodes)
    path = result.task.module_path
    assert f"INFO {TASKS_MODULE} Task id={result.id} path={path} state=RUNNING" in logs
    success = f"INFO {TASKS_MODULE} Task id={result.id} path={path} state=SUCCESSFUL\n"
    assert success in logs
    after = logs[logs.index(success) + len(success) :]
    assert not after.startswith("Traceback") and "NoneType" not in success  # no exc_info


def test_failed_run_signals(nodes, redis):
    result = wait_finished(t.failing_task_value_error.enqueue())
    poll_until(lambda: len(signals_of(redis, result)) == 2, message="the worker's signals")
    assert signals_of(redis, result) == [
        ("task_started", "RUNNING", 1),
        ("task_finished", "FAILED", 1),
    ]


def test_run_after(nodes, backend):
    run_after = timezone.now() + timedelta(seconds=2)
    task = t.calculate_meaning_of_life.using(run_after=run_after)
    result = task.enqueue()
    assert (result.status, result.task.run_after) == (TaskResultStatus.READY, run_after)
    assert backend.get_result(result.id).task == task
    wait_finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.started_at >= run_after


def test_queue_name(nodes, backend):
    task = t.noop_task.using(queue_name="builds")
    result = wait_finished(task.enqueue())
    assert (result.status, result.task.queue_name) == (TaskResultStatus.SUCCESSFUL, "builds")
    assert result.worker_ids == [NODES[0]]  # the only node serving task list "builds"
    assert backend.get_result(result.id).task == task


def test_priority_orders_the_runs_waiting_on_a_node(nodes, redis, release):
    """dj2 (one pool process) is busy; the runs queued behind it start highest first."""
    key, journal = release("release:priority-blocker"), "journal:priority"
    blocker = t.wait.using(queue_name="priority").enqueue(key)
    poll_until(lambda: backend_status(blocker) == TaskResultStatus.RUNNING, message="the block")
    queued = t.note.using(queue_name="priority")
    order = [("low-1", -50), ("high-1", 50), ("low-2", -50), ("high-2", 50), ("mid", 0)]
    results = [queued.using(priority=p).enqueue(journal, label) for label, p in order]
    assert [r.task.priority for r in results] == [p for _label, p in order]
    redis.set(key, 1)
    for result in results:
        wait_finished(result)
        assert result.worker_ids == [NODES[1]]
    # Higher first; equal priorities in the order they were enqueued.
    assert redis.lrange(journal, 0, -1) == [b"high-1", b"high-2", b"mid", b"low-1", b"low-2"]


def test_get_missing_result(nodes, backend):
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("123")
    with pytest.raises(TaskResultDoesNotExist):
        async_to_sync(backend.aget_result)("123")


def test_status_moves_ready_running_successful_and_names_are_unique(nodes, redis, release):
    key = release("release:backend-walk")
    walk = t.wait.using(run_name="backend-walk")
    result = walk.enqueue(key)
    assert result.status == TaskResultStatus.READY
    poll_until(lambda: backend_status(result) == TaskResultStatus.RUNNING, message="the start")
    assert (result.attempts, result.finished_at, result.is_finished) == (1, None, False)
    assert result.started_at == result.last_attempted_at >= result.enqueued_at
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018
    with pytest.raises(AlreadyRunning) as info:
        walk.enqueue(key)
    assert info.value.run_id == result.id
    existing = walk.using(on_conflict="return_existing").enqueue(key)
    assert (existing.id, existing.status, existing.task) == (
        result.id,
        TaskResultStatus.RUNNING,
        walk,
    )
    redis.set(key, 1)
    wait_finished(result)
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, "released")
    again = wait_finished(walk.enqueue(key))  # a finished name may run again (reuse="allow")
    assert again.id != result.id


def test_get_result_of_another_task(nodes):
    result = t.noop_task.enqueue()
    with pytest.raises(TaskResultMismatch):
        t.calculate_meaning_of_life.get_result(result.id)
    wait_finished(result)
