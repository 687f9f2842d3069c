"""Runs on real dt_worker processes against real Redis and PostgreSQL."""

import pytest

from distributed_tasks import State, get_status, start_async
from distributed_tasks.celery import publish
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import live_nodes
from distributed_tasks.ring import Ring
from tests import tasks
from tests.cluster.conftest import NODES, wait_finished

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_run_executes_on_the_rings_node(nodes):
    ring = Ring({name: info.weight for name, info in live_nodes().nodes.items()})
    handle = start_async(tasks.where, name="where-1")
    assert handle.node == ring.node_for("default:where-1")
    status = wait_finished("where-1")
    assert (status.state, status.result, status.node) == (State.DONE, handle.node, handle.node)


def test_status_moves_queued_running_done(nodes, redis, release, poll):
    key = release("release:walk")
    handle = start_async(tasks.wait_for, [key], name="walk")
    assert get_status("walk").state in (State.QUEUED, State.RUNNING)
    running = poll(
        lambda: (s := get_status("walk")).state == State.RUNNING and s, message="RUNNING"
    )
    assert (running.node, running.run_id) == (handle.node, handle.run_id)
    redis.set(key, 1)
    done = wait_finished("walk")
    assert (done.state, done.result) == (State.DONE, "released")
    run = TaskRun.objects.get(id=handle.run_id)
    assert run.queued_at <= run.started_at <= run.finished_at
    assert run.active_name is None


def test_failing_function_ends_failed_with_its_traceback(nodes):
    start_async(tasks.fail, ["no compiler"], name="broken")
    status = wait_finished("broken")
    assert (status.state, status.error_type, status.error, status.reason) == (
        State.FAILED,
        "ValueError",
        "no compiler",
        "exception",
    )
    run = TaskRun.objects.get(name="broken")
    assert "raise ValueError(message)" in run.traceback


def test_duplicate_message_for_a_finished_run_executes_nothing(nodes, redis, poll):
    handle = start_async(tasks.count, ["executions"], name="once")
    wait_finished("once")
    run = TaskRun.objects.get(id=handle.run_id)
    again = RunMessage(
        run_id=run.run_id,
        attempt=1,
        node=run.node,
        task_list="default",
        name="once",
        function=run.function,
        args=run.args,
    )
    publish([(again, None)])
    poll(
        lambda: f"Ignoring stale message for once attempt 1 on {run.node}" in nodes.log(run.node),
        message="the worker to drop the duplicate",
    )
    assert redis.get("executions") == b"1"
    run.refresh_from_db()
    assert (run.state, run.executions) == ("DONE", 1)


def test_callback_runs_on_the_worker_before_done(nodes):
    from testproject.builds.tasks import load_artefact

    start_async(
        "testproject.builds.tasks.compile",
        [7],
        {"seconds": 0.1},
        name="compile-7",
        callback="testproject.builds.tasks.store_artefact",
    )
    status = wait_finished("compile-7")
    assert status.state == State.DONE
    assert load_artefact("compile-7")["compiled_artefact"] == "app-7.tar.gz"


def test_runs_spread_over_every_node(nodes):
    """Placement puts runs on every node; each runs where its row says. Where they run may
    be fewer nodes: one slow to take its first runs (three starting on two cores) has its
    waiting runs stolen by the others, as it should (a CI run saw w3's all taken)."""
    names = [f"spread-{i}" for i in range(30)]
    for name in names:
        start_async(tasks.where, name=name)
    statuses = [wait_finished(name) for name in names]
    assert all((s.state, s.result) == (State.DONE, s.node) for s in statuses)
    placed = {TaskRun.objects.get(name=name).history()[0]["node"] for name in names}
    assert placed == set(NODES)
