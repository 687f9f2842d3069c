"""The django.tasks backend against real Redis and PostgreSQL, with a node that consumes nothing.

Runs stay QUEUED on the idle node; where a test needs a finished run it executes the
message in this process with ``runner.execute``, the worker's own code path.
"""

import base64
import json
import pickle
import uuid
from datetime import timedelta

import django
import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from distributed_tasks import (
    AlreadyRunning,
    DistributedTasksError,
    NotSerializable,
    State,
    cancel,
    get_status,
    runner,
    start_async,
)
from distributed_tasks.backends import (
    GENERIC_ERROR,
    DistributedTasksBackend,
    NamedTask,
)
from distributed_tasks.backends.options import START_FIELDS
from distributed_tasks.compat import (
    TASKS_MODULE,
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    task,
    task_backends,
    task_enqueued,
)
from distributed_tasks.insert_one import FUNCTION
from distributed_tasks.models import TaskRun
from distributed_tasks.store import message_for
from tests import tasks
from tests.support import assert_backend_fail_result, queued

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "distributed_tasks.backends.DistributedTasksBackend"


@pytest.fixture
def backend(settings):
    settings.TASKS = {"default": {"BACKEND": BACKEND, "QUEUES": ["default", "builds"]}}
    return task_backends["default"]


# Django 6.0's task() takes only its own arguments; 6.1 and the backport pass the rest on.
DECORATOR_TAKES_OPTIONS = not (6, 0) <= django.VERSION < (6, 1)


def named(django_task, **options) -> NamedTask:
    """The function of a tests.tasks Django task, declared again for this backend; on
    Django 6.0 our options go through ``using()``, as docs/backends.md says."""
    if DECORATOR_TAKES_OPTIONS:
        return task(**options)(django_task.func)
    ours = {f: options.pop(f) for f in START_FIELDS if f in options}
    declared = task(**options)(django_task.func)
    return declared.using(**ours) if ours else declared


def published(redis, node="idle@test") -> list[str]:
    """The run ids of the messages waiting in the node's queue."""
    out = []
    for raw in queued(redis, node):
        args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        out.append(args[0]["run_id"])
    return out


def execute(result_id: str) -> None:
    """Run the queued attempt in this process exactly as a worker's pool process would."""
    runner.execute(message_for(TaskRun.objects.get(id=result_id)).to_body())


# Module-level so that only the rule under test refuses them.
def unregistered(a: int) -> int:
    return a


def test_backend_declares_what_it_supports(backend):
    assert isinstance(backend, DistributedTasksBackend)
    assert (backend.supports_get_result, backend.supports_defer) == (True, True)
    assert (backend.supports_priority, backend.supports_async_task) == (True, True)
    assert isinstance(task()(tasks.backend_add.func), NamedTask)


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: task()(unregistered), "is not registered with distributed_tasks"),
        (lambda: named(tasks.backend_add, run_name="a\nb"), "contains control or other non-"),
        (lambda: named(tasks.backend_add, run_name="n" * 201), "1 to 200 characters long, got 201"),
        (lambda: named(tasks.backend_add, on_conflict="skip"), "on_conflict='skip' is not one"),
        (lambda: named(tasks.backend_add, max_attempts=0), "max_attempts must be a whole number"),
        (lambda: named(tasks.backend_add, callback=unregistered), "is not a registered distrib"),
    ],
)
def test_invalid_tasks_are_refused_with_the_rule(backend, declare, message):
    with pytest.raises(InvalidTask) as info:
        declare()
    assert message.lower() in str(info.value).lower()


def test_unregistered_function_error_shows_the_way_out(backend):
    with pytest.raises(InvalidTask) as info:
        task()(unregistered)
    assert "@task\n    @distributed_task\n    def unregistered(...)" in str(info.value)


def test_non_json_arguments_are_refused_and_change_nothing(backend, node, redis):
    # Django's TypeError and wording ("Unsupported type: ..."), then the way out.
    with pytest.raises(TypeError, match=r"^Unsupported type: <class 'object'>\. The arg") as info:
        tasks.backend_add.enqueue(object(), 1)
    assert isinstance(info.value, NotSerializable)
    with pytest.raises(TypeError, match="Unsupported type: <class 'set'>"):
        tasks.backend_add.enqueue(1, b={1})
    assert not TaskRun.objects.exists()
    assert published(redis) == []


def test_arguments_are_normalised_as_django_does(backend, node):
    result = tasks.backend_add.enqueue((1, 2), b=b"bytes")
    assert (result.args, result.kwargs) == ([[1, 2]], {"b": "bytes"})
    assert backend.get_result(result.id) == result


@pytest.mark.skipif(
    django.VERSION < (6, 1), reason="Django 6.0's and the backport's tasks cannot be pickled"
)
def test_tasks_and_results_pickle_as_djangos_do(backend, node):
    task = named(tasks.backend_add, run_name="pickled", timeout=3).using(priority=7)
    assert pickle.loads(pickle.dumps(task)) == task
    result = task.enqueue(1, 2)
    assert pickle.loads(pickle.dumps(result)) == result == backend.get_result(result.id)


def test_enqueue_does_not_read_the_run_back(backend, node):
    """The result is built from what was sent: a fast worker cannot make it RUNNING."""
    with CaptureQueriesContext(connection) as queries:
        result = tasks.backend_add.enqueue(1, 2)
    assert result.status == TaskResultStatus.READY
    # The insert function of PostgreSQL is called with a SELECT, and looked up once.
    reads = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT")
             and FUNCTION not in q["sql"]]  # fmt: skip
    assert reads == []


def test_enqueue_returns_a_ready_result_for_the_queued_run(backend, node, redis):
    result = tasks.backend_add.enqueue(1, b=2)
    run = TaskRun.objects.get()
    assert (result.id, len(result.id), result.status) == (run.run_id, 32, TaskResultStatus.READY)
    assert (result.task, result.args, result.kwargs, result.backend) == (
        tasks.backend_add,
        [1],
        {"b": 2},
        "default",
    )
    assert result.enqueued_at == run.queued_at
    assert (result.started_at, result.finished_at, result.last_attempted_at) == (None, None, None)
    assert (result.errors, result.worker_ids, result.attempts, result.is_finished) == (
        [],
        [],
        0,
        False,
    )
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018
    assert (run.function, run.task_list, run.state, run.node) == (
        "tests.tasks.backend_add",
        "default",
        State.QUEUED,
        node.name,
    )
    assert published(redis) == [result.id]


def test_enqueue_sends_and_logs_task_enqueued(backend, node, caplog):
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((sender, task_result.id))

    task_enqueued.connect(receiver)
    try:
        with caplog.at_level("DEBUG", logger=TASKS_MODULE):
            result = tasks.backend_add.enqueue(1, 2)
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [(DistributedTasksBackend, result.id)]
    assert f"Task id={result.id} path=tests.tasks.backend_add enqueued" in caplog.text


def test_run_name_is_unique_while_active(backend, node):
    sums = named(tasks.backend_add, run_name="sum")
    first = sums.enqueue(1, 2)
    with pytest.raises(AlreadyRunning) as info:
        sums.enqueue(3, 4)
    assert (info.value.run_id, info.value.name) == (first.id, "sum")
    existing = sums.using(on_conflict="return_existing").enqueue(5, 6)
    assert (existing.id, existing.args, existing.status) == (first.id, [1, 2], first.status)
    assert existing.task.run_name == "sum"
    assert TaskRun.objects.count() == 1


def test_queue_name_is_the_task_list(backend, node):
    result = named(tasks.backend_add).using(queue_name="builds", run_name="b-1").enqueue(1, 1)
    assert TaskRun.objects.get(id=result.id).task_list == "builds"
    status = get_status("b-1", "builds")
    assert (status.state, status.run_id) == (State.QUEUED, result.id)


def test_options_give_defaults_that_task_values_override(settings, node):
    settings.TASKS = {
        "default": {
            "BACKEND": BACKEND,
            "OPTIONS": {
                "ON_CONFLICT": "return_existing",
                "MAX_ATTEMPTS": 3,
                "RETRY_BACKOFF": 0.5,
                "TIMEOUT": 30,
            },
        }
    }
    first = named(tasks.backend_add, run_name="opt").enqueue(1, 2)
    again = named(tasks.backend_add, run_name="opt").enqueue(1, 2)
    assert again.id == first.id
    row = TaskRun.objects.get(id=first.id)
    assert (row.max_attempts, row.retry_backoff, row.timeout) == (3, 0.5, 30)
    own = named(tasks.backend_add, run_name="own", max_attempts=1, timeout=5, retry_backoff=2)
    row = TaskRun.objects.get(id=own.enqueue(1, 2).id)
    assert (row.max_attempts, row.retry_backoff, row.timeout) == (1, 2, 5)


def test_run_after_becomes_a_countdown(backend, node):
    run_after = timezone.now() + timedelta(seconds=30)
    later = tasks.backend_add.using(run_after=run_after).enqueue(1, 1)
    past = tasks.backend_add.using(run_after=timezone.now() - timedelta(seconds=1)).enqueue(2, 2)
    assert (later.status, past.status) == (TaskResultStatus.READY, TaskResultStatus.READY)
    later_row, past_row = (TaskRun.objects.get(id=r.id) for r in (later, past))
    assert abs((later_row.run_after - run_after).total_seconds()) < 1
    assert past_row.run_after == past_row.queued_at  # a past run_after starts at once


def test_get_result_round_trip(backend, node):
    result = tasks.backend_add.enqueue(1, b=2)
    assert backend.get_result(result.id) == result  # task included: no run name was given
    assert result.task.run_name is None
    named_run = named(tasks.backend_add, run_name="rt", timeout=5).using(priority=0).enqueue(1, 2)
    assert backend.get_result(named_run.id) == named_run
    assert tasks.backend_add.get_result(result.id) == result
    with pytest.raises(TaskResultMismatch):
        tasks.backend_fail.get_result(result.id)


def test_result_follows_the_run_to_success(backend, node):
    result = tasks.backend_add.enqueue(1, b=2)
    execute(result.id)
    result.refresh()
    assert (result.status, result.return_value, result.errors) == (
        TaskResultStatus.SUCCESSFUL,
        3,
        [],
    )
    assert (result.worker_ids, result.attempts) == ([node.name], 1)
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at


def test_failed_run_reports_the_exception_and_traceback(backend, node):
    result = tasks.backend_fail.enqueue("no compiler")
    execute(result.id)
    result.refresh()
    assert_backend_fail_result(result)
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018


def test_run_failed_without_exception_reports_the_reason(backend, node):
    result = named(tasks.backend_add, run_name="doomed").enqueue(1, 1)
    cancel("doomed")
    got = backend.get_result(result.id)
    assert (got.status, got.worker_ids) == (TaskResultStatus.FAILED, [])
    (error,) = got.errors
    assert (error.exception_class_path, error.exception_class) == (
        GENERIC_ERROR,
        DistributedTasksError,
    )
    assert error.traceback == "cancelled: cancelled before it started"


def test_history_of_attempts_gives_errors_workers_and_times(backend, node):
    """Earlier attempts (TaskRun.attempts): one TaskError per failed one, a node per start."""
    from distributed_tasks.models import attempt_record
    from distributed_tasks.types import Outcome, Reason

    result = tasks.backend_fail.enqueue("third time")
    first = timezone.now() - timedelta(seconds=30)
    lost = Outcome.failed(Reason.WORKER_LOST, None, "the pool process running it died")
    history = [
        attempt_record(attempt=1, node="a@x", started_at=first, ended_at=first, outcome=lost),
        attempt_record(attempt=2, node="b@x", started_at=None, ended_at=first, outcome=None),
    ]
    TaskRun.objects.filter(id=result.id).update(attempts=history, attempt=3)
    execute(result.id)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert (result.worker_ids, result.attempts) == (["a@x", node.name], 2)  # b@x never started
    assert (result.started_at, result.last_attempted_at > first) == (first, True)
    lost_error, raised = result.errors
    assert (lost_error.exception_class_path, lost_error.traceback) == (
        GENERIC_ERROR,
        "worker_lost: the pool process running it died",
    )
    assert raised.exception_class is ValueError and "ValueError: third time" in raised.traceback


def test_result_read_through_another_alias_keeps_the_enqueuing_one(settings, node):
    settings.TASKS = {
        "default": {"BACKEND": BACKEND},
        "bulk": {"BACKEND": BACKEND, "QUEUES": ["default", "builds"]},
    }
    bulk = tasks.backend_add.using(backend="bulk", queue_name="builds")
    result = bulk.enqueue(1, 2)
    got = task_backends["default"].get_result(result.id)
    assert (got.backend, got.task) == ("bulk", bulk)
    assert got == result


def test_values_django_allows_are_taken_and_ours_refused_when_validated(backend, node):
    """Django takes a whole-number float (or bool) priority; a run_after beyond our limit
    is an InvalidTask from validation (using()), not an InvalidOption from enqueue()."""
    result = tasks.backend_add.using(priority=5.0).enqueue(1, 2)
    assert TaskRun.objects.get(id=result.id).priority == 5
    with pytest.raises(InvalidTask, match="countdown"):
        tasks.backend_add.using(run_after=timezone.now() + timedelta(days=4000))


def test_a_worker_without_the_enqueuing_alias_still_runs_the_task(settings, node, caplog):
    """Django raises InvalidTaskBackend (not KeyError) for an alias TASKS lacks: the run
    is executed without Django's task protocol, and says why, instead of failing."""
    settings.TASKS = {"default": {"BACKEND": BACKEND}, "bulk": {"BACKEND": BACKEND}}
    result = tasks.backend_add.using(backend="bulk").enqueue(1, 2)
    settings.TASKS = {"default": {"BACKEND": BACKEND}}  # the worker's settings
    execute(result.id)
    got = task_backends["default"].get_result(result.id)
    assert (got.status, got.return_value) == (TaskResultStatus.SUCCESSFUL, 3)
    assert f"Run {result.id} names no usable task backend" in caplog.text


@pytest.mark.parametrize("result_id", [uuid.uuid4().hex, "123", ""])
def test_unknown_result_id_does_not_exist(backend, result_id):
    with pytest.raises(TaskResultDoesNotExist) as info:
        backend.get_result(result_id)
    assert f"No run has the id {result_id!r}" in str(info.value)
    with pytest.raises(TaskResultDoesNotExist):
        async_to_sync(backend.aget_result)(result_id)


def test_run_of_a_class_task_is_no_task_result(backend, node):
    handle = start_async(tasks.Hooked, name="hooked")
    with pytest.raises(TaskResultDoesNotExist) as info:
        backend.get_result(handle.run_id)
    assert "tests.tasks.Hooked, which is not a registered function" in str(info.value)


def test_enqueue_in_a_transaction_publishes_on_commit(backend, node, redis):
    with transaction.atomic():
        result = tasks.backend_add.enqueue(1, 2)
        assert backend.get_result(result.id).status == TaskResultStatus.READY
        assert published(redis) == []
    assert published(redis) == [result.id]


def test_enqueue_in_a_rolled_back_transaction_leaves_no_result(backend, node, redis):
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.backend_add.enqueue(1, 2)
        raise RuntimeError("roll back")
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(result.id)
    assert published(redis) == []


def test_async_twins(backend, node):
    result = async_to_sync(tasks.backend_add.aenqueue)(2, 3)
    assert result.status == TaskResultStatus.READY
    got = async_to_sync(tasks.backend_add.aget_result)(result.id)
    assert (got.id, got.args) == (result.id, [2, 3])


def test_enqueue_through_a_testing_double_writes_no_row(backend):
    from distributed_tasks.testing import FakeClient, install

    with install(FakeClient()):
        result = named(tasks.backend_add, run_name="faked").enqueue(1, 2)
        status = get_status("faked")
    assert (result.status, result.args, result.enqueued_at is not None) == (
        TaskResultStatus.READY,
        [1, 2],
        True,
    )
    assert (status.state, status.run_id) == (State.QUEUED, result.id)
    assert not TaskRun.objects.exists()


def test_inline_double_runs_context_and_async_tasks(backend, dt_inline):
    """No row to read: the context is built from the run the double executes."""
    from tests.backend_contract import tasks as contract

    result = contract.get_task_id.using(run_name="ctx").enqueue()
    status = dt_inline.get_status("ctx")
    assert (status.state, status.result) == (State.DONE, result.id)
    contract.async_add.using(run_name="sum").enqueue(2, 3)
    assert dt_inline.get_status("sum").result == 5
