"""Idle nodes pull: a node with a free slot takes over a run waiting behind a busy node,
with no leader to move it and no run of its own finishing to make it look."""

import datetime as dt

import pytest
from django.utils import timezone

from distributed_tasks import State, get_status
from distributed_tasks.client import ClusterClient
from distributed_tasks.conf import get_settings
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.cluster.conftest import wait_finished
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

BUSY, IDLE = "busy@steal", "idle@steal"


@pytest.fixture(scope="module")
def nodes(cluster_factory):
    for node in (BUSY, IDLE):
        cluster_factory.start_worker(node, concurrency=1)  # and no dt_beat: no rebalancer
    cluster_factory.wait_live(BUSY, IDLE)
    return cluster_factory


def assert_old_message_ran_nothing(nodes, redis, name: str) -> None:
    """BUSY skipped the moved run's first message as stale: the run counted once."""
    stale = f"Ignoring stale message for {name} attempt 1 on {BUSY}"
    poll_until(lambda: stale in nodes.log(BUSY, tail=100_000), message=stale)
    assert redis.get(f"count:{name}") == b"1"


def test_an_idle_node_takes_over_a_run_waiting_behind_a_busy_one_exactly_once(nodes, redis):
    client = ClusterClient()
    redis.delete("release:steal-long")
    long = client.start_on(BUSY, tasks.wait_for, ["release:steal-long"], name="steal-long")
    poll_until(lambda: get_status(long.name).state == State.RUNNING, message="the long run")
    waiting = client.start_on(BUSY, tasks.count, ["count:steal-waiting"], name="steal-waiting")
    try:
        status = wait_finished(waiting.name, timeout=10)
        assert (status.state, status.node) == (State.DONE, IDLE)
        assert get_status(long.name).state == State.RUNNING  # BUSY never freed its slot
        run = TaskRun.objects.get(id=waiting.run_id)
        assert (run.attempt, run.executions, redis.get("count:steal-waiting")) == (2, 1, b"1")
        assert "Took steal-waiting over from busy@steal" in nodes.log(IDLE, tail=100_000)
    finally:
        redis.set("release:steal-long", 1)
    assert wait_finished(long.name).state == State.DONE
    assert_old_message_ran_nothing(nodes, redis, "steal-waiting")


def test_a_full_node_runs_an_older_run_waiting_elsewhere_before_its_own(nodes, redis):
    """FIFO across nodes: the slot that frees on IDLE takes the run that has waited on BUSY
    longer than IDLE's own, which a shared queue would have started first."""
    client = ClusterClient()
    redis.delete("release:fifo-own", "release:fifo-other")
    own = client.start_on(IDLE, tasks.wait_for, ["release:fifo-own"], name="fifo-own")
    other = client.start_on(BUSY, tasks.wait_for, ["release:fifo-other"], name="fifo-other")
    poll_until(
        lambda: {get_status(own.name).state, get_status(other.name).state} == {State.RUNNING},
        message="both slots busy",
    )
    older = client.start_on(BUSY, tasks.count, ["count:fifo-older"], name="fifo-older")
    # Queued REBALANCE_AFTER before IDLE's own run: a wait worth a move.
    since = TaskRun.objects.get(id=older.run_id).run_after
    margin = dt.timedelta(seconds=get_settings().REBALANCE_AFTER)
    poll_until(lambda: timezone.now() - since > margin, message="fifo-older waited")
    mine = client.start_on(IDLE, tasks.count, ["count:fifo-mine"], name="fifo-mine")
    try:
        redis.set("release:fifo-own", 1)
        status = wait_finished(older.name, timeout=10)
        assert (status.state, status.node) == (State.DONE, IDLE)
        assert wait_finished(mine.name).state == State.DONE
        assert get_status(other.name).state == State.RUNNING  # BUSY never freed its slot
        first, second = (TaskRun.objects.get(id=h.run_id) for h in (older, mine))
        assert first.started_at < second.started_at
        assert (first.attempt, first.executions, redis.get("count:fifo-older")) == (2, 1, b"1")
        taken = "Took fifo-older over from busy@steal, where it waited longer than this node's"
        assert taken in nodes.log(IDLE, tail=100_000)
    finally:
        redis.set("release:fifo-other", 1)
    assert wait_finished(other.name).state == State.DONE
    assert_old_message_ran_nothing(nodes, redis, "fifo-older")
