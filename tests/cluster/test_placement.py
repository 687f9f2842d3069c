"""Work-conserving placement on real nodes: no run waits behind a busy node beside a free one.

Two one-slot nodes, A and B, and one orchestrator. A is kept busy by a long run;
names that hash to A, runs already waiting on A (taken over by B when it frees its
slot, or moved by the leader), and periodic slots all go to B.
"""

import datetime as dt
import json

import pytest

from distributed_tasks import State, get_status, start_async, start_many
from distributed_tasks.conf import reset_caches
from distributed_tasks.models import PeriodicTaskState, TaskRun
from distributed_tasks.nodes import live_nodes
from distributed_tasks.orchestrator.resync import loads_snapshot
from distributed_tasks.ring import Ring
from tests import tasks
from tests.cluster.conftest import wait_finished
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

A, B = "pa@cluster", "pb@cluster"
PERIODIC = {"counter": {"task": "tests.tasks.Counter", "interval": 1, "enabled": False}}
ENV = {"DT_TEST_PERIODIC": json.dumps(PERIODIC)}
# Runs that wait on a full node are moved at the next tick after REBALANCE_AFTER: a
# deadline of a few ticks, with room for a loaded test machine.
SOON = 8.0


@pytest.fixture(scope="module")
def two_nodes(cluster_factory):
    for node in (A, B):
        # No idle stealing (tests/cluster/test_stealing.py): B takes a run over only when
        # it frees its slot, or the leader moves it.
        cluster_factory.start_worker(node, concurrency=1, DT_TEST_STEAL_INTERVAL="0", **ENV)
    cluster_factory.start_beat("beat-1", **ENV)
    return cluster_factory


@pytest.fixture
def cluster(two_nodes):
    two_nodes.revive()
    two_nodes.wait_live(A, B)
    two_nodes.wait_leader()
    return two_nodes


def hashing_to(node: str, prefix: str, count: int = 1) -> list[str]:
    """Names that plain consistent hashing puts on ``node`` (of A and B)."""
    ring = Ring({A: 1, B: 1})
    names = (f"{prefix}-{i}" for i in range(10_000))
    found = [n for n in names if ring.node_for(f"default:{n}") == node]
    return found[:count]


@pytest.fixture
def busy_a(cluster, redis):
    """A runs a long run until the test ends."""
    (name,) = hashing_to(A, "long")
    key = f"release:{name}"
    redis.delete(key)  # Redis outlives the tests of a cluster module
    handle = start_async(tasks.wait_for, [key], name=name)
    assert handle.node == A
    poll_until(lambda: get_status(name).state == State.RUNNING, message=f"{name} RUNNING")
    # The leader recounts the loads from the database each tick, and a count taken while
    # this start was between its claim and its row overwrites its increment until the next
    # tick (loads are approximate): the tests below need A's to be exact first.
    poll_until(lambda: loads_snapshot().get(A) == 1, message=f"{A}'s load to count {name}")
    reset_caches()  # later starts read the loads from Redis, as any other process would
    yield name
    redis.set(key, 1)
    wait_finished(name)


def counted(redis, names: list[str]) -> dict[str, int]:
    return {n: int(redis.get(f"count:{n}") or 0) for n in names}


def test_names_that_hash_to_a_busy_node_start_on_an_idle_one(busy_a, redis):
    (first, *more) = hashing_to(A, "spill", 4)
    handle = start_async(tasks.count, [f"count:{first}"], name=first)
    assert handle.node == B  # A has no free slot: the walk goes on to B
    # A burst: what placement queues behind A (B's one slot is taken) the leader moves.
    start_many([{"func": tasks.count, "args": [f"count:{n}"], "name": n} for n in more])
    for name in [first, *more]:
        status = wait_finished(name, timeout=SOON)
        assert (status.state, status.node) == (State.DONE, B)  # A is busy all along
    assert get_status(busy_a).state == State.RUNNING
    assert counted(redis, [first, *more]) == dict.fromkeys([first, *more], 1)


def test_a_node_that_frees_a_slot_takes_over_a_run_waiting_elsewhere(busy_a, cluster, redis):
    from distributed_tasks.client import ClusterClient

    cluster.stop("beat-1")  # no leader, no rebalancer: only B itself can take the run over
    waiting = ClusterClient().start_on(A, tasks.count, ["count:waiting"], name="waiting")
    assert get_status("waiting").node == A  # behind A's long run
    # These nodes do not look while idle (STEAL_INTERVAL 0): B takes the run over when it
    # finishes one of its own, however fresh the waiting run is.
    (short,) = hashing_to(B, "short")
    start_async(tasks.count, [f"count:{short}"], name=short)  # B finishes it, then looks
    status = wait_finished("waiting", timeout=SOON)
    assert (status.state, status.node) == (State.DONE, B)
    assert get_status(busy_a).state == State.RUNNING
    run = TaskRun.objects.get(id=waiting.run_id)
    assert (run.attempt, run.executions, redis.get("count:waiting")) == (2, 1, b"1")


def test_a_node_that_joins_takes_the_runs_waiting_on_a_busy_one_exactly_once(cluster, redis):
    cluster.stop(B)
    poll_until(lambda: B not in live_nodes().nodes, message=f"{B} to leave")
    reset_caches()
    key = "release:joined-long"
    redis.delete(key)
    start_async(tasks.wait_for, [key], name="joined-long")
    poll_until(lambda: get_status("joined-long").state == State.RUNNING, message="long RUNNING")
    names = [f"joined-{i}" for i in range(3)]
    for name in names:
        assert start_async(tasks.count, [f"count:{name}"], name=name).node == A
    cluster.revive(B)
    cluster.wait_live(B)
    # Within a tick of B's first heartbeat the waiting runs move to B and run there.
    moved = poll_until(
        lambda: [n for n in names if get_status(n).state == State.DONE] or None,
        timeout=SOON,
        message="a waiting run to finish on the joined node",
    )
    assert {get_status(n).node for n in moved} == {B}
    reset_caches()
    (fresh,) = hashing_to(A, "after-join")
    assert start_async(tasks.count, [f"count:{fresh}"], name=fresh).node == B
    redis.set(key, 1)
    for name in [*names, fresh, "joined-long"]:
        assert wait_finished(name).state == State.DONE
    assert counted(redis, [*names, fresh]) == dict.fromkeys([*names, fresh], 1)
    for run in TaskRun.objects.filter(name__in=names, node=B):
        assert run.attempt == 2 and run.executions == 1  # moved once, executed once
        stale = f"Ignoring stale message for {run.name} attempt 1 on {A}"
        poll_until(lambda s=stale: s in cluster.log(A, tail=200_000), message=stale)


@pytest.mark.slow
def test_periodic_slots_are_not_skipped_while_a_node_is_busy(busy_a):
    rows = PeriodicTaskState.objects.filter(name="counter")
    # Each test empties the tables: the leader declares the task again within SYNC_EVERY.
    poll_until(rows.exists, timeout=15, message="the periodic task to be declared")
    rows.update(enabled=True)
    began = dt.datetime.now(dt.UTC)
    try:
        poll_until(
            lambda: (
                TaskRun.objects.filter(
                    name="periodic:counter", state=State.DONE, queued_at__gt=began
                ).count()
                >= 5
            ),
            timeout=20,
            message="five periodic runs",
        )
    finally:
        rows.update(enabled=False)
    runs = TaskRun.objects.filter(name="periodic:counter", queued_at__gt=began)
    assert set(runs.values_list("node", flat=True)) == {B}
    row = rows.get()
    assert (row.skips, row.failures) == (0, 0), row.last_error
