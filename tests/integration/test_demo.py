"""The demo's truths: a clean start, a clean exit, the periodic line, the failing-over leader."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from django.utils import timezone

from distributed_tasks import keys, start_async
from distributed_tasks.demo import cleanup
from distributed_tasks.demo.faults import FaultPhase, periodic_line
from distributed_tasks.models import PeriodicTaskState, TaskRun
from distributed_tasks.store import get_store, message_for
from tests import tasks
from tests.support import queued

pytestmark = pytest.mark.django_db(transaction=True)


def unacked(redis, tag: str, node: str) -> None:
    """A message delivered to ``node`` and never acknowledged (kombu's Redis transport)."""
    redis.hset(cleanup.UNACKED, tag, json.dumps([{"body": "..."}, "", keys.queue_name(node)]))
    redis.zadd(cleanup.UNACKED_INDEX, {tag: time.time()})


class StubCluster:
    """The process control ``leave_clean`` uses; it records the order of the stops."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop(self, key: str) -> None:
        self.calls.append(f"stop {key}")

    def stop_all(self) -> None:
        self.calls.append("stop_all")


def test_a_demo_starts_from_a_clean_state(node, redis):
    start_async(tasks.add, [1, 2], name="earlier-demo")  # a row, a claim, a queued message
    PeriodicTaskState.objects.create(name="builds.report", task="x", interval=2, runs=7)
    unacked(redis, "t-ours", node.name)
    unacked(redis, "t-other", "elsewhere@test")
    redis.set("not-ours", "1")
    cleared = cleanup.reset([node.name])
    assert (cleared.runs, cleared.periodic, cleared.messages) == (1, 1, 1)
    assert not TaskRun.objects.exists() and not PeriodicTaskState.objects.exists()
    assert list(redis.scan_iter(match="dt:*")) == []
    assert queued(redis, node.name) == []
    assert redis.hkeys(cleanup.UNACKED) == [b"t-other"]
    assert redis.zrange(cleanup.UNACKED_INDEX, 0, -1) == [b"t-other"]
    assert redis.get("not-ours") == b"1"


def test_a_demo_leaves_no_active_run_or_unacked_message(node, redis, monkeypatch):
    monkeypatch.setattr(cleanup, "DRAIN_SECONDS", 0.3)
    start_async(tasks.add, [1, 2], name="periodic:builds.report")  # a slot nobody will take
    start_async(tasks.add, [1, 2], name="cut-short")
    running = TaskRun.objects.get(name="cut-short")
    assert get_store().mark_running(message_for(running), "incarnation")
    unacked(redis, "t-killed", node.name)
    cluster = StubCluster()
    left = cleanup.leave_clean(cluster, ["beat-1", "beat-2"], [node.name])
    assert cluster.calls == ["stop beat-1", "stop beat-2", "stop_all"]  # no slot after this
    assert (left.runs, left.messages) == (2, 1)
    ended = dict(TaskRun.objects.values_list("name", "reason"))
    assert ended == {"periodic:builds.report": "cancelled", "cut-short": "node_lost"}
    assert not TaskRun.objects.active().exists()
    assert redis.hlen(cleanup.UNACKED) == 0 and queued(redis, node.name) == []


def test_the_periodic_line_names_the_slot_that_ran_and_the_one_skipped():
    ran_slot = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=4)
    row = PeriodicTaskState(
        name="builds.report", task="x", interval=2, last_slot=ran_slot + dt.timedelta(seconds=2),
        last_outcome="SKIPPED", last_error="the previous run was still going", runs=3, skips=1,
    )  # fmt: skip
    ran = {"args": ["builds.report", ran_slot.isoformat()], "node": "w1@demo", "state": "DONE"}
    clock = f"{timezone.localtime(ran_slot):%H:%M:%S}"
    skipped = f"{timezone.localtime(row.last_slot):%H:%M:%S}"
    assert periodic_line(row, ran) == (
        f"periodic builds.report: last ran slot {clock} on w1@demo (DONE); slot {skipped} "
        "skipped (the previous run was still going); state None; 3 runs, 1 skipped, 0 failed"
    )
    row.last_slot, row.last_outcome = ran_slot, "DONE"
    assert f"last ran slot {clock} on w1@demo (DONE); state" in periodic_line(row, ran)
    assert "no slot ran yet" in periodic_line(PeriodicTaskState(name="p", task="x"), None)


def test_a_killed_leader_shows_as_failing_over_until_another_leads(leader):
    faults = FaultPhase(cluster=None, screen=None)
    assert faults.footer() == f"orchestrator: beat@test (epoch {leader.epoch})"
    faults.leader, faults.injected_at = "beat@test", time.monotonic()  # SIGKILLed
    assert faults.footer().startswith(
        "orchestrator: failing over (beat@test was killed; its lease expires in "
    )
    leader.release()
    assert faults.footer() == "orchestrator: none (failing over)"
    faults.failover = 4.2  # a new leader took over
    assert faults.footer() == "orchestrator: none"
