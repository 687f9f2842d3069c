"""The rebalancer duty, one tick at a time, on real Redis and PostgreSQL (nodes: threads)."""

import datetime as dt

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from distributed_tasks import claims
from distributed_tasks.models import TaskRun
from tests.conftest import _heartbeating
from tests.integration.test_orchestrator import lead, messages, row, settle

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def busy():
    """A live node with one slot; the test fills it with a RUNNING row."""
    yield from _heartbeating(name="busy@test", capacity=1)


@pytest.fixture
def idle():
    yield from _heartbeating(name="idle@test", capacity=2)


def waited(seconds: float) -> dict:
    return {"run_after": timezone.now() - dt.timedelta(seconds=seconds)}


def test_a_run_waiting_behind_a_busy_node_moves_to_a_free_one(busy, idle, redis):
    orchestrator = lead()
    settle(orchestrator, redis)
    row("long", busy.name, state="RUNNING")
    waiting = row("waiting", busy.name, **waited(5))
    moved = {"function": "tests.tasks.add", "task_list": "default", "why": "rebalanced"}
    before = REGISTRY.get_sample_value("dt_runs_moved_total", moved) or 0.0
    report = orchestrator.tick()
    assert report["rebalancer"] == {"moved": 1}
    assert REGISTRY.get_sample_value("dt_runs_moved_total", moved) == before + 1
    waiting.refresh_from_db()
    assert (waiting.state, waiting.node, waiting.attempt) == ("QUEUED", idle.name, 2)
    assert waiting.orchestrator_epoch == orchestrator.epoch
    assert [m["headers"]["id"] for m in messages(redis, idle.name)] == [f"{waiting.run_id}:2"]
    status = claims.read("default", "waiting")
    assert (status["node"], status["attempt"]) == (idle.name, "2")
    assert orchestrator.tick()["rebalancer"] == {}


def test_the_runs_that_move_are_the_ones_their_node_would_start_first(busy, idle, redis):
    """Highest priority first, then oldest: the one run left behind is the least urgent."""
    orchestrator = lead()
    settle(orchestrator, redis)
    row("long", busy.name, state="RUNNING")
    row("low-oldest", busy.name, priority=-10, **waited(9))
    row("mid-older", busy.name, **waited(5))
    row("mid-newer", busy.name, **waited(4))
    row("high-newest", busy.name, priority=10, **waited(1))
    assert orchestrator.tick()["rebalancer"] == {"moved": 3}  # idle ends as loaded as busy
    moved = set(TaskRun.objects.filter(node=idle.name).values_list("name", flat=True))
    assert moved == {"high-newest", "mid-older", "mid-newer"}


@override_settings(DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, "REBALANCE_AFTER": 60})
def test_runs_stay_put_while_they_are_fresh_or_their_node_has_a_free_slot(busy, idle, redis):
    orchestrator = lead()
    settle(orchestrator, redis)
    fresh = row("fresh", busy.name)  # queued under a minute ago: its node may yet start it
    row("on-idle", idle.name, **waited(90))  # idle has a free slot: it will start it
    assert orchestrator.tick()["rebalancer"] == {}
    row("long", busy.name, state="RUNNING")
    assert orchestrator.tick()["rebalancer"] == {}
    fresh.refresh_from_db()
    assert (fresh.node, fresh.attempt) == (busy.name, 1)


def test_runs_no_free_node_serves_do_not_hide_the_ones_that_can_move(busy, heavy, redis):
    """Review: the oldest batch of waiting runs was read before asking which free node
    serves them; a batch of runs of a task list no free node serves hid the rest."""
    conf = {**settings.DISTRIBUTED_TASKS, "BATCH_SIZE": 2}
    with override_settings(DISTRIBUTED_TASKS=conf):
        orchestrator = lead()
        settle(orchestrator, redis)
        row("long", busy.name, state="RUNNING")
        for i in range(3):
            row(f"gpu-{i}", busy.name, task_list="gpu", **waited(9))
        ci = row("ci", busy.name, task_list="ci", **waited(5))
        assert orchestrator.tick()["rebalancer"] == {"moved": 1}  # heavy serves "ci" only
    ci.refresh_from_db()
    assert (ci.node, ci.attempt) == (heavy.name, 2)


def test_a_run_that_its_node_started_meanwhile_is_not_moved(busy, idle, redis, monkeypatch):
    from distributed_tasks import attempts
    from distributed_tasks.store import get_store

    orchestrator = lead()
    settle(orchestrator, redis)
    row("long", busy.name, state="RUNNING")
    waiting = row("waiting", busy.name, **waited(5))
    next_attempt = attempts.next_attempt

    def started_first(msg, **kwargs):
        # The old node's worker wins the race for the row just before the move.
        TaskRun.objects.filter(id=waiting.id).update(state="RUNNING")
        return next_attempt(msg, **kwargs)

    monkeypatch.setattr(attempts, "next_attempt", started_first)
    assert orchestrator.tick()["rebalancer"] == {"started_meanwhile": 1}
    waiting.refresh_from_db()
    assert (waiting.node, waiting.attempt) == (busy.name, 1)
    assert messages(redis, idle.name) == []
    assert get_store().is_active(waiting.id)
