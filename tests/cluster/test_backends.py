"""Django tasks enqueued through the backend and executed by real dt_worker processes."""

from datetime import timedelta

import pytest
from django.utils import timezone

from distributed_tasks import AlreadyRunning
from distributed_tasks.compat import TaskResultStatus, task, task_backends
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.cluster.conftest import NODES
from tests.support import assert_backend_fail_result, poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def backend(settings):
    settings.TASKS = {"default": {"BACKEND": "distributed_tasks.backends.DistributedTasksBackend"}}
    return task_backends["default"]


def wait_finished(result, timeout: float = 30.0):
    """Refresh ``result`` until it is SUCCESSFUL or FAILED."""

    def check():
        result.refresh()
        return result.is_finished

    poll_until(check, timeout=timeout, message=f"task result {result.id} to finish")
    return result


def test_enqueued_task_runs_on_a_worker(nodes, backend):
    result = wait_finished(tasks.backend_add.enqueue(2, b=3))
    assert (result.status, result.return_value, result.errors) == (
        TaskResultStatus.SUCCESSFUL,
        5,
        [],
    )
    node = TaskRun.objects.get(id=result.id).node
    assert node in NODES
    assert (result.worker_ids, result.attempts) == ([node], 1)
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at


def test_failure_on_a_worker_reaches_the_result(nodes, backend):
    result = wait_finished(tasks.backend_fail.enqueue("no compiler"))
    assert_backend_fail_result(result)
    assert "ValueError: no compiler" in result.errors[0].traceback


def test_named_run_is_unique_while_it_runs(nodes, backend, redis, release):
    key = release("release:backend-walk")
    walk = task(run_name="backend-walk")(tasks.backend_wait.func)
    result = walk.enqueue(key)

    def running():
        result.refresh()
        return result.status == TaskResultStatus.RUNNING

    poll_until(running, message="the run to start on a worker")
    assert (result.attempts, result.finished_at) == (1, None)
    assert result.started_at is not None
    with pytest.raises(AlreadyRunning) as info:
        walk.enqueue(key)
    assert info.value.run_id == result.id
    existing = walk.using(on_conflict="return_existing").enqueue(key)
    assert (existing.id, existing.status) == (result.id, TaskResultStatus.RUNNING)
    redis.set(key, 1)
    wait_finished(result)
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, "released")
    again = wait_finished(walk.enqueue(key))  # a finished name may run again (reuse="allow")
    assert again.id != result.id


def test_run_after_delays_the_start(nodes, backend):
    run_after = timezone.now() + timedelta(seconds=2)
    result = tasks.backend_add.using(run_after=run_after).enqueue(1, 1)
    assert result.status == TaskResultStatus.READY
    wait_finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.started_at >= run_after
