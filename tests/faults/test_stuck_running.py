"""No run stays RUNNING on a live node, whatever stopped its execution (issue 11 item 1).

Each trigger below once left its run RUNNING, and its name taken, until the node
restarted. Now each ends FAILED (or DONE, when only the database was away) within
NODE_TIMEOUT + one tick, the name starts again, and the same node process runs it.
"""

import os
import signal

import pytest

from distributed_tasks import State, get_status, start_async
from distributed_tasks.conf import get_settings
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import live_nodes
from distributed_tasks.store import get_store
from tests import tasks
from tests.cluster.conftest import finished
from tests.faults.conftest import NODE, serves_again
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def deadline() -> float:
    """NODE_TIMEOUT + one tick, plus scheduling slack on a loaded 2-core machine."""
    conf = get_settings()
    return conf.NODE_TIMEOUT + conf.TICK_INTERVAL + 1.5


def ended(name: str):
    return poll_until(finished(name), timeout=deadline(), message=f"{name} to end")


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [("exit", "SystemExit"), ("keyboard", "KeyboardInterrupt"), ("generator", "GeneratorExit")],
)
def test_an_interrupt_raised_by_the_task_ends_its_run_failed(serving, kind, error_type):
    name = f"interrupt-{kind}"
    start_async(tasks.interrupt, [kind], name=name)
    status = ended(name)
    assert (status.state, status.reason, status.error_type) == (
        State.FAILED,
        "exception",
        error_type,
    )
    log = serving.log(NODE, tail=100_000)  # the outcome, once, and no Celery "succeeded in"
    assert log.count(f"{name} (run {status.run_id} attempt 1) FAILED(exception)") == 1
    assert f"{status.run_id}:1] succeeded in" not in log
    serves_again(serving, name)


@pytest.mark.parametrize(
    ("kind", "error_type", "shown"),
    [
        ("nul_error", "ValueError", "a NUL \\x00 in the message"),
        ("surrogate_error", "ValueError", "a lone \\ud800 surrogate"),
        ("surrogate_result", "distributed_tasks.exceptions.NotSerializable", "lone surrogate"),
        ("long_class", "tests.tasks." + "Long" * 100, "does not fit the column"),
        # str() of the exception raises: it escaped the worker's guard, the run RUNNING
        ("unprintable_error", "tests.tasks.Unprintable", "<str() of Unprintable raised>"),
        ("unprintable_exit", "tests.tasks.UnprintableExit", "<str() of UnprintableExit raised>"),
    ],
)
def test_an_outcome_the_database_would_refuse_is_cleaned_and_stored(
    serving, kind, error_type, shown
):
    name = f"unstorable-{kind}"
    start_async(tasks.unstorable, [kind], name=name)
    status = ended(name)
    assert (status.state, status.reason) == (State.FAILED, "exception")
    row = TaskRun.objects.get(name=name)
    assert row.error_type == error_type[:255] and shown in row.error
    serves_again(serving, name)


def start_running(name: str) -> None:
    """Start a run of ``name`` that waits for ``release:<name>``; return once RUNNING."""
    start_async(tasks.wait_for, [f"release:{name}"], name=name)
    poll_until(
        lambda: TaskRun.objects.filter(name=name, state=State.RUNNING).exists(),
        timeout=30,
        message=f"{name} RUNNING",
    )


def test_an_outcome_waits_for_the_database_to_come_back(serving, db_proxy, redis):
    name = "database-away"
    start_running(name)
    failing = f"Storing the outcome of {name} attempt 1 failed"
    db_proxy.stop()
    try:
        redis.set(f"release:{name}", 1)  # the run finishes while the database is away
        poll_until(lambda: failing in serving.log(NODE, tail=50_000), message="a failed write")
    finally:
        db_proxy.start()
    status = ended(name)
    assert (status.state, status.result) == (State.DONE, "released")
    log = serving.log(NODE, tail=50_000)
    assert log.count(failing) == 1  # one line per change of state, not one per try
    assert f"Storing the outcome of {name} attempt 1 works again" in log
    serves_again(serving, name)


def test_a_run_whose_time_limit_strikes_before_it_can_start_runs_once_the_database_answers(
    serving, db_proxy
):
    """Its soft time limit struck while its start waited for the database: the message was
    acknowledged, and the row stayed QUEUED with no message until the node's queue was
    empty, 30 s later at best (review). Now the message goes back to its queue."""
    name = "limit-before-start"
    db_proxy.stop()
    try:
        start_async(tasks.add, [20, 22], name=name, timeout=1)  # this process: no proxy
        poll_until(
            lambda: (
                f"{name} attempt 1 met its time limit before it could start: queued again"
                in serving.log(NODE, tail=50_000)
            ),
            timeout=20,
            message="the time limit before the start",
        )
    finally:
        db_proxy.start()
    status = poll_until(finished(name), timeout=15, message=f"{name} to run")  # < ORPHAN_AFTER
    assert (status.state, status.result, TaskRun.objects.get(name=name).attempt) == (
        State.DONE,
        42,
        1,
    )


def test_a_run_its_live_node_stopped_reporting_ends_worker_lost(serving):
    """The safety net: a RUNNING row that its node does not execute (here: never did)."""
    name = "unreported"
    node = live_nodes().nodes[NODE]
    run = TaskRun(
        name=name,
        active_name=name,
        function="tests.tasks.add",
        args=[1, 1],
        node=NODE,
        state=State.RUNNING,
        incarnation=node.incarnation,
        executions=1,
    )
    get_store().insert(run)
    # The leader first sees the row at its next tick: that is when non-reporting starts.
    status = poll_until(
        finished(name), timeout=deadline() + get_settings().TICK_INTERVAL, message=f"{name} to end"
    )
    assert (status.state, status.reason) == (State.FAILED, "worker_lost")
    assert f"node {NODE} is alive but stopped executing this run" in status.error
    assert get_status(name).run_id == run.run_id
    serves_again(serving, name)


def pool_processes(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


@pytest.mark.slow
def test_a_pool_process_lost_while_the_database_is_away_ends_worker_lost(serving, db_proxy, redis):
    """The main process cannot store the loss (no database): the watchdog ends the run."""
    name = "lost-offline"
    start_running(name)
    db_proxy.stop()
    try:
        for child in pool_processes(serving.procs[NODE].pid):
            os.kill(child, signal.SIGKILL)
        poll_until(
            lambda: f"Gave up storing the outcome of {name}" in serving.log(NODE, tail=50_000),
            timeout=20,
            message="the main process to give up",
        )
        status = ended(name)  # the orchestrator reaches the database directly
    finally:
        db_proxy.start()
    assert (status.state, status.reason) == (State.FAILED, "worker_lost")
    assert "stopped executing this run" in status.error
    serves_again(serving, name)
