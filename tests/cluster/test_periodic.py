"""Global periodic tasks on 3 real nodes and 2 real beats: once per slot, on one node."""

import datetime as dt
import itertools
import json
import signal
import time

import pytest

from distributed_tasks.conf import get_settings
from distributed_tasks.models import PeriodicTaskState, TaskRun
from tests.cluster.conftest import BEATS, NODES
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

PERIODIC = {
    "counter": {"task": "tests.tasks.Counter", "interval": 1},
    "sleepy": {"task": "tests.tasks.Sleepy", "interval": 1, "timeout": 1},
    "off": {"task": "tests.tasks.Counter", "interval": 1, "enabled": False},
}
ENV = {"DT_TEST_PERIODIC": json.dumps(PERIODIC)}


@pytest.fixture(scope="module")
def periodic_cluster(cluster_factory):
    for node in NODES:
        cluster_factory.start_worker(node, concurrency=2, **ENV)
    for beat in BEATS:
        cluster_factory.start_beat(beat, **ENV)
    return cluster_factory


@pytest.fixture
def cluster(periodic_cluster):
    periodic_cluster.revive()
    periodic_cluster.wait_live(*NODES)
    periodic_cluster.wait_leader()
    poll_until(
        lambda: PeriodicTaskState.objects.filter(name="counter").exists(),
        timeout=15,
        message="the periodic tasks to be synced",
    )
    # The previous test's flush emptied every table under the running cluster: wait for
    # the leader to run the counter again before a test kills it, so each test starts
    # from a leader in its steady state, not one still re-establishing after the reset.
    since = dt.datetime.now(dt.UTC)
    poll_until(
        lambda: TaskRun.objects.filter(
            name="periodic:counter", state="DONE", queued_at__gte=since
        ).exists(),
        timeout=45,
        message="the counter to run again",
    )
    return periodic_cluster


def slots(name: str, after: dt.datetime | None = None) -> list[tuple[dt.datetime, str]]:
    """(slot, node) of every run of ``name``, in slot order."""
    rows = TaskRun.objects.filter(name=f"periodic:{name}").values_list("args", "node")
    out = sorted((dt.datetime.fromisoformat(args[1]), node) for args, node in rows)
    return [s for s in out if after is None or s[0] >= after]


def wait_for_slots(name: str, start: dt.datetime, count: int, timeout: float):
    end = start + dt.timedelta(seconds=count)
    poll_until(
        lambda: any(s >= end for s, _ in slots(name)),
        timeout=timeout,
        message=f"{name} to reach slot {end:%H:%M:%S}",
    )
    return [s for s in slots(name, start) if s[0] < end]


def test_one_run_per_slot_over_twenty_intervals_on_several_nodes(cluster):
    first = poll_until(lambda: slots("counter"), timeout=15, message="a first run")[0][0]
    start = first + dt.timedelta(seconds=1)
    window = wait_for_slots("counter", start, 20, timeout=40)
    times = [s for s, _ in window]
    assert len(times) == len(set(times))  # no slot ran twice
    assert 19 <= len(times) <= 21
    assert len({node for _, node in window}) > 1


def test_no_slot_twice_and_a_short_gap_while_the_leader_is_killed_twice(cluster):
    promise = get_settings().LEASE_TTL + 1.0  # + interval
    began = dt.datetime.now(dt.UTC)
    for _ in range(2):
        leader = cluster.wait_leader()
        cluster.kill(leader.holder, signal.SIGKILL)
        cluster.wait_leader(other_than=leader.holder, timeout=promise)
        cluster.revive(leader.holder)
    window = wait_for_slots("counter", began, 20, timeout=40)
    times = [s for s, _ in window]
    assert len(times) == len(set(times))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert max(gaps) <= promise

    def counts() -> tuple[int, int, int]:
        row = PeriodicTaskState.objects.get(name="counter")
        done = TaskRun.objects.filter(name="periodic:counter", state="DONE").count()
        return row.state["count"], row.runs, done

    # Carried across both leader changes. A run counts itself (on_success) just before
    # its row says DONE, so the three agree between runs, not at every instant.
    poll_until(lambda: len(set(counts())) == 1, timeout=10, message="the three counts to agree")


def test_disabling_from_the_model_stops_runs_within_one_tick(cluster):
    wait_for_slots("counter", dt.datetime.now(dt.UTC), 1, timeout=10)
    PeriodicTaskState.objects.filter(name="counter").update(enabled=False)
    stopped = dt.datetime.now(dt.UTC)
    tick = get_settings().TICK_INTERVAL
    try:
        # Watch three more intervals: no slot may start after the next tick.
        deadline = time.monotonic() + 3
        poll_until(lambda: time.monotonic() > deadline, timeout=5, message="3 s to pass")
        late = [s for s, _ in slots("counter") if s > stopped + dt.timedelta(seconds=tick)]
        assert late == []
    finally:
        PeriodicTaskState.objects.filter(name="counter").update(enabled=True)


def test_a_disabled_declaration_never_runs(cluster):
    assert PeriodicTaskState.objects.get(name="off").enabled is False
    assert slots("off") == []


def test_the_timeout_bounds_each_run_and_counts_as_a_failure(cluster):
    poll_until(
        lambda: TaskRun.objects.filter(name="periodic:sleepy", state="FAILED").exists(),
        timeout=20,
        message="a sleepy run to time out",
    )
    run = TaskRun.objects.filter(name="periodic:sleepy", state="FAILED").first()
    assert run.reason == "timeout"
    row = PeriodicTaskState.objects.get(name="sleepy")
    assert row.failures >= 1 and row.state is None
