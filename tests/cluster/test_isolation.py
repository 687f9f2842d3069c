"""Failure isolation (GenTask): whatever a run does, it ends recorded and the node keeps serving.

One real node, prefork pool of two processes, no orchestrator: every outcome
here is recorded by the worker itself (the pool process, or the main process
when the pool process cannot).
"""

import pytest

from distributed_tasks import State, get_status, start_async
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.cluster.conftest import wait_finished
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

NODE = "solo@isolation"


@pytest.fixture(scope="module")
def solo(cluster_factory):
    cluster_factory.start_worker(NODE, concurrency=2)
    return cluster_factory


@pytest.fixture
def node(solo):
    solo.wait_live(NODE)
    return solo


def still_serves(name: str) -> None:
    start_async(tasks.where, name=name)
    status = wait_finished(name)
    assert (status.state, status.result) == (State.DONE, NODE)


def hooks(redis, name):
    return [h.decode() for h in redis.lrange(f"hooks:{name}", 0, -1)]


def test_an_exception_is_recorded_with_its_hook(node, redis):
    start_async(tasks.Hooked, ["raise"], name="raises")
    status = wait_finished("raises")
    assert (status.state, status.reason, status.error_type) == (
        State.FAILED,
        "exception",
        "KeyError",
    )
    assert hooks(redis, "raises") == ["failure:KeyError"]
    still_serves("after-raise")


def test_a_soft_timeout_is_recorded_with_its_hook(node, redis):
    start_async(tasks.Hooked, ["ok", 30], name="slow", timeout=1)
    status = wait_finished("slow")
    assert (status.state, status.reason) == (State.FAILED, "timeout")
    assert "timeout of 1 s" in status.error
    assert hooks(redis, "slow") == ["timeout"]
    still_serves("after-soft-timeout")


def test_a_soft_limit_signal_early_in_a_run_is_dropped_by_a_real_pool_process(node):
    """Celery's second soft-limit signal for the previous job lands early in the next run
    (sent here by the run itself): the prefork pool process drops it, the run ends DONE."""
    start_async(tasks.soft_signal, [0], name="early-signal", timeout=30)
    status = wait_finished("early-signal")
    assert (status.state, status.result) == (State.DONE, "not stopped")
    assert "Ignored a soft time limit signal that came " in node.log(NODE, tail=50_000)
    still_serves("after-early-signal")


def test_a_hard_timeout_kills_the_pool_process_and_is_recorded(node):
    start_async(tasks.ignore_soft_limit, [30], name="stubborn", timeout=1)
    status = wait_finished("stubborn", timeout=20)
    assert (status.state, status.reason) == (State.FAILED, "timeout")
    assert "killed" in status.error
    still_serves("after-hard-timeout")


def test_a_pool_process_that_exits_is_recorded_with_its_hook(node, redis):
    start_async(tasks.Hooked, ["exit"], name="suicide")
    status = wait_finished("suicide")
    assert (status.state, status.reason) == (State.FAILED, "worker_lost")
    # The node's main process calls the hook once the outcome is recorded (a fenced-out
    # loss calls none): a moment after the status says FAILED.
    poll_until(
        lambda: hooks(redis, "suicide") == ["failure:WorkerLostError"],
        timeout=10,
        message="the on_failure hook of the run whose pool process exited",
    )
    for i in range(4):  # no zombie node: the pool is refilled and prefetch is not stuck
        still_serves(f"after-exit-{i}")


def test_a_failed_execution_is_retried_when_attempts_allow(node, redis):
    start_async(tasks.flaky, ["flaky-count"], name="flaky", max_attempts=2)
    status = wait_finished("flaky")
    assert (status.state, status.result, status.attempt) == (State.DONE, "second time lucky", 2)
    run = TaskRun.objects.get(name="flaky")
    assert (run.executions, run.max_attempts) == (2, 2)
    assert redis.get("flaky-count") == b"2"


def test_retries_stop_at_max_attempts(node, redis):
    start_async(tasks.fail, ["always"], name="hopeless", max_attempts=3)
    status = wait_finished("hopeless")
    assert (status.state, status.attempt) == (State.FAILED, 3)
    assert TaskRun.objects.get(name="hopeless").executions == 3
    assert get_status("hopeless").error == "always"
