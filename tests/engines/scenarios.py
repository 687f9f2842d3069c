"""The core scenarios every engine passes, written once; each engine module imports them
(``from tests.engines.scenarios import *`` brings in exactly the tests of ``__all__``).

From ``tests/cluster``: the unique start race, the status walk and node loss by
SIGKILL, as they are. Here: leader failover with periodic slots, and the check
used by the engines that can lose a Redis master (Cluster, Sentinel): a fault
under load loses no run, runs none twice, leaves every status readable, and
the fencing epoch never goes back.
"""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from distributed_tasks import AlreadyRunning, ClusterUnavailable, State, get_status, start_async
from distributed_tasks.claims import CLAIM_GRACE
from distributed_tasks.conf import get_settings
from distributed_tasks.fencing import leadership
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.cluster.test_concurrency import (
    test_200_concurrent_starts_of_one_name_make_one_run,
)
from tests.cluster.test_execution import test_status_moves_queued_running_done
from tests.cluster.test_failover import new_leader_acts
from tests.cluster.test_node_loss import (
    test_running_runs_of_a_killed_node_end_failed_node_lost,
)
from tests.cluster.test_periodic import slots, wait_for_slots
from tests.support import poll_until

__all__ = [
    "test_200_concurrent_starts_of_one_name_make_one_run",
    "test_leader_sigkill_fails_over_with_a_higher_epoch_and_no_slot_twice",
    "test_running_runs_of_a_killed_node_end_failed_node_lost",
    "test_status_moves_queued_running_done",
]

SLOTS = 6


def test_leader_sigkill_fails_over_with_a_higher_epoch_and_no_slot_twice(full):
    promise = get_settings().LEASE_TTL + 1.0
    poll_until(lambda: slots("counter"), timeout=20, message="a first periodic run")
    began = dt.datetime.now(dt.UTC)
    leader = full.wait_leader()
    full.kill(leader.holder, signal.SIGKILL)
    killed_at = time.monotonic()
    successor = full.wait_leader(timeout=promise, other_than=leader.holder)
    print(f"\nleader failover: {time.monotonic() - killed_at:.2f} s")
    assert successor.epoch > leader.epoch
    new_leader_acts(leader.epoch, timeout=max(0.1, promise - (time.monotonic() - killed_at)))
    times = [s for s, _ in wait_for_slots("counter", began, SLOTS, timeout=30)]
    assert len(times) == len(set(times))  # no slot ran twice
    assert max(b - a for a, b in itertools.pairwise(times)).total_seconds() <= promise


def name_placed_on(node: str, prefix: str) -> str:
    """A name whose point on the ring of live nodes is ``node``'s (it lands there when
    that node has a free slot)."""
    from distributed_tasks.nodes import live_nodes
    from distributed_tasks.ring import Ring

    ring = Ring({name: info.weight for name, info in live_nodes().nodes.items()})
    names = (f"{prefix}-{i}" for i in range(1000))
    return next(name for name in names if ring.node_for(f"default:{name}") == node)


class FenceWatch(threading.Thread):
    """Samples the database's fence (epoch, holder) until stopped: it must never go back.

    It also keeps, per epoch, the last time its leader noted a tick there (a fenced
    write of each tick in which that leader acted)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: list[tuple[int, str]] = []
        self.last_tick: dict[int, dt.datetime] = {}  # epoch -> the last tick its leader noted
        self.halt = threading.Event()

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.halt.wait(0.05):
                row = leadership()
                if row and (not self.seen or self.seen[-1] != (row.epoch, row.holder)):
                    self.seen.append((row.epoch, row.holder))
                if row and row.ticked_at:
                    self.last_tick[row.epoch] = row.ticked_at
        finally:
            connection.close()

    def stop(self) -> list[tuple[int, str]]:
        self.halt.set()
        self.join(10)
        return self.seen


def start_until_accepted(name: str, deadline: float) -> None:
    """Start ``name``, again while the cluster is unavailable (a failover in progress).

    ``AlreadyRunning`` on a retry means an earlier try went through.
    """
    while True:
        try:
            start_async(tasks.sleep, [0.1], name=name)
            return
        except AlreadyRunning:
            return
        except ClusterUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def assert_fault_under_load_loses_nothing(fault: Callable[[], None], prefix: str, runs: int):
    """Start ``runs`` runs, inject ``fault`` halfway, and check every invariant.

    Returns the seconds from the fault to the first start accepted after it, and to
    every status read back as DONE.
    """
    names = [f"{prefix}-{i}" for i in range(runs)]
    watch = FenceWatch()
    watch.start()
    try:
        timings = run_through(fault, names)
    finally:
        fence = watch.stop()
    rows = TaskRun.objects.filter(name__in=names)
    assert rows.count() == runs  # none lost, none started twice
    assert set(rows.values_list("executions", flat=True)) == {1}  # none executed twice
    epochs = [epoch for epoch, _ in fence]
    assert epochs == sorted(epochs), fence  # the fence never goes back
    assert len({e for e, _ in fence}) == len(fence), fence  # a new holder, a new epoch
    times = [s for s, _ in slots("counter")]
    assert len(times) == len(set(times))  # no periodic slot ran twice
    return timings


def run_through(fault: Callable[[], None], names: list[str]) -> tuple[float, float]:
    half = len(names) // 2
    for name in names[:half]:
        start_async(tasks.sleep, [0.1], name=name)
    fault()
    faulted = time.monotonic()
    start_until_accepted(names[half], deadline=faulted + 60)
    recovered = time.monotonic() - faulted
    for name in names[half + 1 :]:
        start_until_accepted(name, deadline=time.monotonic() + 60)
    runs = TaskRun.objects.filter(name__in=names)
    poll_until(
        lambda: runs.filter(state=State.DONE).count() == len(names),
        timeout=90,
        message=lambda: f"every run DONE (now {Counter(runs.values_list('state', flat=True))})",
    )
    # A status written to the old master just before it died is lost with it; the
    # leader's resync restores it from the database once the claim is CLAIM_GRACE old.
    poll_until(
        lambda: statuses_done(names),
        timeout=CLAIM_GRACE + 20,
        message="every status DONE after the failover",
    )
    return recovered, time.monotonic() - faulted


def statuses_done(names: list[str]) -> bool:
    try:
        return all(get_status(name).state == State.DONE for name in names)
    except ClusterUnavailable:  # a failover still in progress
        return False
