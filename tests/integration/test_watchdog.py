"""The watchdog duty: RUNNING runs a live node stopped reporting end as worker_lost.

One node heartbeats from a thread of this process and reports what ``executing``
holds; the leader ticks in the test. NODE_TIMEOUT is short so the tests are too.
"""

import pytest
from django.test import override_settings
from django.utils import timezone

from distributed_tasks import State, keys
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import Heartbeat, NodeInfo
from tests.integration.test_orchestrator import lead, relead, row, settle
from tests.support import poll_until

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"NODE_TIMEOUT": 1.0, "HEARTBEAT_INTERVAL": 0.1, "TICK_INTERVAL": 0.1}


@pytest.fixture
def fast(settings):
    conf = {**settings.DISTRIBUTED_TASKS, **FAST}
    with override_settings(DISTRIBUTED_TASKS=conf):
        yield


@pytest.fixture
def reporting(fast):
    """A live node that reports the attempts in ``executing`` with every heartbeat."""
    executing: set[str] = set()
    beat = Heartbeat(NodeInfo(name="busy@test"), running=lambda: set(executing))
    beat.start()
    poll_until(lambda: beat.beats > 0, message="first heartbeat")
    yield beat, executing
    beat.stop(leave=True)


def running_row(info: NodeInfo, name: str, **extra) -> TaskRun:
    return row(
        name,
        info.name,
        state=State.RUNNING,
        incarnation=info.incarnation,
        executions=1,
        started_at=timezone.now(),
        **extra,
    )


def ticks_until(orchestrator, predicate, timeout=5.0):
    def done():
        orchestrator.tick()
        return predicate()

    return poll_until(done, timeout=timeout, interval=0.1, message="the watchdog to act")


def test_an_unreported_running_run_ends_worker_lost_and_frees_its_name(reporting, redis):
    beat, executing = reporting
    info = beat.info
    leader = lead()
    settle(leader, redis)
    kept = running_row(info, "kept")
    lost = running_row(info, "lost")
    executing.add(f"{kept.run_id}:{kept.attempt}")
    ticks_until(leader, lambda: TaskRun.objects.get(id=lost.id).state == State.FAILED)
    lost.refresh_from_db()
    assert (lost.reason, lost.active_name) == ("worker_lost", None)
    assert "stopped executing this run" in lost.error
    assert TaskRun.objects.get(id=kept.id).state == State.RUNNING  # reported: left alone


def test_an_unreported_run_with_attempts_left_is_retried(reporting, redis):
    info = reporting[0].info
    leader = lead()
    settle(leader, redis)
    run = running_row(info, "again", max_attempts=2)
    ticks_until(leader, lambda: TaskRun.objects.get(id=run.id).attempt == 2)
    run.refresh_from_db()
    assert run.state == State.QUEUED
    assert (run.attempts[-1]["attempt"], run.attempts[-1]["reason"]) == (1, "worker_lost")


def test_an_unreported_run_asked_to_stop_is_not_retried(reporting, redis):
    """A run with attempts left whose cancel was asked ends instead (issue 18)."""
    info = reporting[0].info
    leader = lead()
    settle(leader, redis)
    run = running_row(info, "stopping", max_attempts=3, cancel_requested_at=timezone.now())
    ticks_until(leader, lambda: TaskRun.objects.get(id=run.id).state == State.FAILED)
    run.refresh_from_db()
    assert (run.attempt, run.executions, run.reason, run.attempts) == (1, 1, "worker_lost", [])


def test_a_node_that_reports_nothing_is_not_judged(fast, redis):
    """A node of an older version (or one whose report Redis lost) has no report at all."""
    beat = Heartbeat(NodeInfo(name="quiet@test"))
    beat.start()
    try:
        poll_until(lambda: beat.beats > 0, message="first heartbeat")
        leader = lead()
        settle(leader, redis)
        run = running_row(beat.info, "unjudged")
        seen = beat.beats
        # Three node timeouts' worth of heartbeats, a tick after each.
        ticks_until(leader, lambda: beat.beats >= seen + 30, timeout=10)
        assert not redis.exists(keys.node_running_key(beat.info.name))
        assert TaskRun.objects.get(id=run.id).state == State.RUNNING
    finally:
        beat.stop(leave=True)


def test_a_redis_flush_ends_nothing_that_its_node_still_runs(reporting, redis):
    beat, executing = reporting
    leader = lead()
    settle(leader, redis)
    run = running_row(beat.info, "flushed")
    executing.add(f"{run.run_id}:{run.attempt}")
    watchdog = leader.duty("watchdog")
    ticks_until(leader, lambda: watchdog.reported_at)
    redis.flushdb()  # the reports, the lease and the node's membership go
    relead(leader)
    seen = beat.beats
    # Three node timeouts' worth of heartbeats, a tick after each: the run stays.
    ticks_until(leader, lambda: beat.beats >= seen + 30, timeout=10)
    assert redis.exists(keys.node_running_key(beat.info.name))
    assert TaskRun.objects.get(id=run.id).state == State.RUNNING
