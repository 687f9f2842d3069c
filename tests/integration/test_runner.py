"""One attempt executed in this process: fence, guard, callback, hooks and outcome."""

import logging
import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from distributed_tasks import State, claims, get_status, hooks, keys, lost, mirror, runner
from distributed_tasks.celery import header_limits
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import NodeInfo, set_current_node
from distributed_tasks.store import get_store

pytestmark = pytest.mark.django_db


def queue(function, args=(), kwargs=None, name=None, callback="", node="w1@h", timeout=None):
    name = name or uuid.uuid4().hex
    run = TaskRun(
        id=uuid.uuid4(),
        name=name,
        active_name=name,
        function=function,
        args=list(args),
        kwargs=kwargs or {},
        callback=callback,
        node=node,
        timeout=timeout,
    )
    get_store().insert(run)
    return RunMessage(
        run_id=run.run_id,
        attempt=1,
        node=node,
        task_list="default",
        name=name,
        function=function,
        args=list(args),
        kwargs=kwargs or {},
        callback=callback,
        queued_at=run.queued_at.timestamp(),
        timeout=timeout,
    )


def row(msg):
    return TaskRun.objects.get(id=msg.run_id)


def test_success_records_result_and_runs_the_callback(redis):
    msg = queue("tests.tasks.add", [2, 3], name="ok", callback="tests.tasks.record")
    outcome = runner.execute(msg.to_body())
    assert (outcome.state, outcome.result) == (State.DONE, 5)
    run = row(msg)
    assert (run.state, run.result, run.executions, run.active_name) == ("DONE", 5, 1, None)
    assert redis.lrange("callback:ok", 0, -1) == [b"5"]
    cached = claims.read("default", "ok")
    assert (cached["state"], cached["result"]) == ("DONE", "5")
    assert 0 < redis.pttl(keys.run_key("default", "ok")) <= 60_000


def test_exception_ends_failed_with_type_message_and_traceback():
    msg = queue("tests.tasks.fail", ["broken"])
    runner.execute(msg.to_body())
    run = row(msg)
    assert (run.state, run.reason, run.error_type, run.error) == (
        "FAILED",
        "exception",
        "ValueError",
        "broken",
    )
    assert "raise ValueError(message)" in run.traceback
    assert claims.read("default", msg.name)["error_type"] == "ValueError"


def test_non_json_result_fails_the_run():
    msg = queue("tests.tasks.not_json")
    runner.execute(msg.to_body())
    run = row(msg)
    assert (run.state, run.error_type) == ("FAILED", "distributed_tasks.exceptions.NotSerializable")


def test_failing_callback_fails_the_run():
    msg = queue("tests.tasks.add", [1, 1], callback="tests.tasks.failing_callback")
    runner.execute(msg.to_body())
    run = row(msg)
    assert (run.state, run.reason, run.error_type) == ("FAILED", "callback", "RuntimeError")


def test_a_callback_that_meets_the_run_s_time_limit_ends_it_as_a_timeout():
    """Review: it was recorded FAILED(callback) with the error "SoftTimeLimitExceeded()",
    and on_failure ran instead of on_timeout."""
    msg = queue(
        "tests.tasks.add", [1, 1], callback="tests.tasks.callback_meets_its_limit", timeout=5
    )
    runner.execute(msg.to_body())
    run = row(msg)
    assert (run.state, run.reason, run.error) == (
        "FAILED",
        "timeout",
        "exceeded its timeout of 5 s",
    )


def test_unknown_function_in_a_message_is_not_imported():
    msg = queue("os.getcwd")
    runner.execute(msg.to_body())
    assert (row(msg).state, row(msg).reason) == ("FAILED", "not_registered")


@pytest.mark.parametrize(
    ("mode", "hook", "state"),
    [
        ("ok", "success:ok", "DONE"),
        ("raise", "failure:KeyError", "FAILED"),
    ],
)
def test_class_hooks(redis, mode, hook, state):
    msg = queue("tests.tasks.Hooked", [mode])
    runner.execute(msg.to_body())
    assert row(msg).state == state
    assert redis.lrange(f"hooks:{msg.name}", 0, -1) == [hook.encode()]


def test_duplicate_message_after_done_executes_nothing(redis):
    msg = queue("tests.tasks.count", ["counter"])
    assert runner.execute(msg.to_body()).state == State.DONE
    assert runner.execute(msg.to_body()) is None
    assert redis.get("counter") == b"1"


def test_message_for_another_attempt_or_node_executes_nothing(redis):
    msg = queue("tests.tasks.count", ["counter"])
    assert runner.execute({**msg.to_body(), "attempt": 2}) is None
    assert runner.execute({**msg.to_body(), "node": "elsewhere@h"}) is None
    assert redis.get("counter") is None
    assert row(msg).state == "QUEUED"


def test_a_message_addressed_to_another_node_runs_nothing_here(redis):
    """Its row would get this node's incarnation under the other node's name (review 3)."""
    msg = queue("tests.tasks.count", ["counter"], node="w1@h")
    set_current_node(NodeInfo(name="w2@h", incarnation="bbbb"))
    try:
        assert runner.execute(msg.to_body()) is None
    finally:
        set_current_node(None)
    assert redis.get("counter") is None
    assert (row(msg).state, row(msg).incarnation) == ("QUEUED", "")


def test_malformed_message_is_dropped():
    assert runner.execute({"run_id": 1}) is None
    assert runner.execute("not a dict") is None


def test_record_lost_ends_a_running_run_once(redis):
    msg = queue("tests.tasks.Hooked", ["exit"])
    get_store().mark_running(msg, "inc")
    lost.record_lost([msg.to_body()], lost.LostBy.CRASH)
    lost.record_lost([msg.to_body()], lost.LostBy.CRASH)
    run = row(msg)
    assert (run.state, run.reason) == ("FAILED", "worker_lost")
    assert hooks.drain()
    assert redis.lrange(f"hooks:{msg.name}", 0, -1) == [b"failure:RuntimeError"]


def test_a_lost_run_s_status_and_log_line_say_when_it_started(redis, caplog):
    msg = queue("tests.tasks.Hooked", ["exit"])
    mirror.publish(msg, claims.message_fields(msg, State.QUEUED))  # as its start cached it
    get_store().mark_running(msg, "inc")  # a short run: its status never said RUNNING
    assert get_status(msg.name).started_at is None
    with caplog.at_level(logging.ERROR, logger="distributed_tasks.runner"):
        lost.record_lost([msg.to_body()], lost.LostBy.CRASH)
    status = get_status(msg.name)
    assert (status.state, status.started_at) == ("FAILED", row(msg).started_at)
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "failed"]
    assert line.duration is not None and line.duration >= 0


def test_record_lost_by_timeout_calls_on_timeout(redis):
    msg = queue("tests.tasks.Hooked", ["ok"])
    get_store().mark_running(msg, "inc")
    lost.record_lost([msg.to_body()], lost.LostBy.TIMEOUT, timeout=2.0)
    run = row(msg)
    assert (run.state, run.reason) == ("FAILED", "timeout")
    assert "timeout of 2 s" in run.error
    assert hooks.drain()
    assert redis.lrange(f"hooks:{msg.name}", 0, -1) == [b"timeout"]


def test_a_run_with_no_timeout_ends_timeout_at_celery_s_own_limits(redis):
    """A run with no timeout of its own still meets the Celery app's
    ``task_soft_time_limit`` (or code that raises ``SoftTimeLimitExceeded``) and its
    ``task_time_limit`` (the kill, reported with no limit): both end FAILED(timeout),
    where formatting the missing timeout raised a TypeError instead."""
    soft = queue("tests.tasks.soft_limit")
    outcome = runner.execute(soft.to_body())
    assert (outcome.state, outcome.reason) == ("FAILED", "timeout")
    assert row(soft).error == "exceeded a time limit (the run has no timeout)"
    killed = queue("tests.tasks.Hooked", ["ok"])
    get_store().mark_running(killed, "inc")
    lost.record_lost([killed.to_body()], lost.LostBy.TIMEOUT)
    run = row(killed)
    assert (run.state, run.reason) == ("FAILED", "timeout")
    assert run.error == "exceeded a time limit (the run has no timeout) and was killed"


def _as_celery_delivers(msg, **forged):
    """``msg``'s body with ``forged`` fields, executed as Celery calls the entry task."""
    return runner.execute({**msg.to_body(), **forged}, limits=(None, None), task_id=msg.task_id)


@pytest.mark.parametrize("timeout", ["30", [30], {"a": 1}])
def test_a_forged_timeout_of_another_type_is_dropped_not_raised(redis, timeout):
    msg = queue("tests.tasks.count", ["counter"])
    assert _as_celery_delivers(msg, timeout=timeout) is None
    assert row(msg).state == "QUEUED"


@pytest.mark.parametrize("field", ["name", "callback", "task_list"])
def test_a_forged_lone_surrogate_in_a_text_field_is_dropped_not_raised(redis, field):
    msg = queue("tests.tasks.count", ["counter"])
    assert _as_celery_delivers(msg, **{field: "x\ud800"}) is None
    assert row(msg).state == "QUEUED"


@pytest.fixture
def pool_process():
    """This process handles SIGUSR1 as a prefork pool process does (billiard's soft-limit
    handler); ``execute`` puts ``soft_limits``' filter in its place. Restored after."""
    from billiard.pool import soft_timeout_sighandler

    from distributed_tasks import soft_limits

    previous = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    yield
    signal.signal(signal.SIGUSR1, previous)
    soft_limits._window = None


def executed_as_celery_delivers(msg):
    return runner.execute(msg.to_body(), limits=header_limits(msg.timeout), task_id=msg.task_id)


def test_a_soft_limit_signal_at_the_start_of_a_run_is_the_previous_job_s_and_ignored(
    redis, pool_process, caplog
):
    """Celery may signal a job's soft limit twice, ~10 ms apart: the second one reaches the
    process's next run, which must not fail with a timeout it never had."""
    msg = queue("tests.tasks.soft_signal", [0], timeout=30)
    with caplog.at_level(logging.WARNING, "distributed_tasks.runner"):
        outcome = executed_as_celery_delivers(msg)
    assert (outcome.state, outcome.result) == (State.DONE, "not stopped")
    assert "Ignored a soft time limit signal that came " in caplog.text
    assert f" s into a run whose soft limit is 30 s ({msg.name} attempt 1)" in caplog.text


def test_a_run_with_no_soft_limit_ignores_the_signal(redis, pool_process):
    msg = queue("tests.tasks.soft_signal", [0])
    outcome = executed_as_celery_delivers(msg)
    assert (outcome.state, outcome.result) == (State.DONE, "not stopped")


def test_a_run_with_no_timeout_obeys_the_entry_task_s_soft_limit(redis, pool_process):
    """The app's ``task_soft_time_limit`` (or an annotation of the entry task) applies to a
    run with no timeout of its own: the pool signals it, and the run obeys."""
    from distributed_tasks import soft_limits
    from distributed_tasks.celery import TASK_NAME, get_app

    entry = get_app().tasks[TASK_NAME]
    entry.soft_time_limit = 0.2
    soft_limits._task_default.cache_clear()
    try:
        outcome = executed_as_celery_delivers(queue("tests.tasks.soft_signal", [0.15]))
    finally:
        entry.soft_time_limit = None
        soft_limits._task_default.cache_clear()
    assert (outcome.state, outcome.reason) == (State.FAILED, "timeout")


def test_a_run_past_half_its_soft_limit_obeys_the_signal_once(redis, pool_process):
    """The second signal Celery sends for the same limit comes while the run's timeout is
    handled: the hook runs to its end and FAILED(timeout) is recorded."""
    msg = queue("tests.tasks.SoftSignalTwice", [0.15], timeout=0.2)
    outcome = executed_as_celery_delivers(msg)
    assert (outcome.state, outcome.reason) == (State.FAILED, "timeout")
    assert row(msg).error == "exceeded its timeout of 0.2 s"
    assert redis.lrange(f"hooks:{msg.name}", 0, -1) == [b"timeout handled"]


def test_a_soft_limit_signal_after_the_function_returned_leaves_its_outcome_whole(
    redis, pool_process, monkeypatch
):
    """The signal lands while the outcome is stored (the limit struck as the function
    returned): DONE is recorded whole, and so is the signal that comes between jobs."""
    from distributed_tasks import outcomes

    record = outcomes.record

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)
        return record(*args, **kwargs)

    monkeypatch.setattr(outcomes, "record", interrupted)
    msg = queue("tests.tasks.add", [2, 3], timeout=0.001)  # its limit is long past by then
    outcome = executed_as_celery_delivers(msg)
    assert (outcome.state, outcome.result) == (State.DONE, 5)
    assert (row(msg).state, claims.read("default", msg.name)["state"]) == ("DONE", "DONE")
    os.kill(os.getpid(), signal.SIGUSR1)  # between jobs: dropped, nothing raised here


@pytest.mark.django_db(transaction=True)  # the thread's own connection sees the row
def test_the_threads_pool_and_other_handlers_are_left_alone(redis, pool_process):
    """Outside a prefork pool process's main thread (the threads pool), or where SIGUSR1
    is not billiard's handler (Celery's stack dump in a worker's main process), runs are
    executed and the handler stays as it was."""
    import threading

    seen = []
    from django.db import connections

    def in_a_thread(msg):
        try:
            return executed_as_celery_delivers(msg)
        finally:
            connections.close_all()  # the thread's own

    with ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(in_a_thread, queue("tests.tasks.add", [1, 2])).result()
    assert outcome.state == State.DONE
    signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(threading.get_ident()))
    outcome = executed_as_celery_delivers(queue("tests.tasks.soft_signal", [0], timeout=30))
    assert (outcome.state, seen) == (State.DONE, [threading.get_ident()])
