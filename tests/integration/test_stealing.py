"""Work stealing on real Redis and PostgreSQL: a node with a free slot takes a waiting run,
and a full one lets an older run waiting elsewhere take the slot that frees."""

import base64
import contextlib
import json

import pytest
from django.conf import settings
from django.test import override_settings

from distributed_tasks import attempts, envelope, get_status, keys, signals
from distributed_tasks.brokers import get_broker
from distributed_tasks.models import TaskRun
from distributed_tasks.stealing import CANDIDATES, Stealer, has_free_slot, overtake, steal
from distributed_tasks.store import message_for
from tests.conftest import _heartbeating
from tests.integration.test_orchestrator import messages, row
from tests.integration.test_rebalancer import waited

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def thief():
    yield from _heartbeating(name="thief@test", capacity=2)


@pytest.fixture
def busy(redis):
    """A live one-slot node holding three runs (in the loads): two of them wait."""
    from distributed_tasks import attempts

    attempts.placement().reset()  # the cached view of an earlier test knows no such node
    redis.hset(keys.loads_key(), "busy@test", 3)
    yield from _heartbeating(name="busy@test", capacity=1)


def test_a_node_with_a_free_slot_takes_the_oldest_waiting_run(thief, busy, redis):
    newer = row("newer", "busy@test", **waited(2))
    older = row("older", "busy@test", orchestrator_epoch=7, **waited(5))  # a leader moved it
    assert has_free_slot(thief)
    whys = []

    def moved_because(sender, why, **kwargs):
        whys.append(why)

    signals.run_moved.connect(moved_because)
    try:
        moved = steal(thief)
    finally:
        signals.run_moved.disconnect(moved_because)
    assert whys == ["stolen"]
    assert (moved.name, moved.node, moved.attempt) == ("older", thief.name, 2)
    older.refresh_from_db(), newer.refresh_from_db()
    assert (older.node, older.attempt, older.state) == (thief.name, 2, "QUEUED")
    assert older.orchestrator_epoch is None  # moved last by a node, not by a leader
    assert (newer.node, newer.attempt) == ("busy@test", 1)
    assert [m["headers"]["id"] for m in messages(redis, thief.name)] == [f"{older.run_id}:2"]


def test_a_higher_priority_run_is_taken_before_an_older_one(thief, busy, redis):
    row("older", "busy@test", priority=-5, **waited(5))
    row("urgent", "busy@test", priority=5, **waited(1))
    assert steal(thief).name == "urgent"
    assert steal(thief).name == "older"


def test_a_fresh_run_behind_a_full_node_is_taken_at_once(thief, busy, redis):
    """Its node holds more runs than slots: it waits whatever that node does next, so a
    free slot takes it now, as a shared queue would (no REBALANCE_AFTER first)."""
    row("fresh", "busy@test")
    assert steal(thief).name == "fresh"


def test_own_started_and_delayed_runs_are_left_alone(thief, busy, redis):
    row("mine", thief.name, **waited(90))
    row("going", "busy@test", state="RUNNING", **waited(90))
    row("later", "busy@test", **waited(-60))  # start_in: not due for a minute
    assert steal(thief) is None


def test_a_full_node_does_not_steal(thief, redis):
    redis.hset(keys.loads_key(), thief.name, 2)
    assert not has_free_slot(thief)


def test_runs_of_a_node_without_a_queue_are_left_alone(thief, busy, redis):
    row("waiting", "busy@test", **waited(5))
    redis.hset(keys.loads_key(), "busy@test", 1)  # its one slot: it starts the run itself
    assert steal(thief) is None


def test_the_idle_slot_thread_says_when_runs_wait_that_it_may_not_take(thief, busy, redis):
    """Its answer sets how soon it looks again (backing off while nothing may be taken)."""
    stealer = Stealer(thief, free_slots=lambda: 1)
    redis.hset(keys.loads_key(), "busy@test", 1)
    assert stealer.poll() is None  # no node queues runs: one Redis read, no query
    redis.hset(keys.loads_key(), "busy@test", 3)
    row("later", "busy@test", **waited(-60))
    assert stealer.poll() is False  # a run waits, but is not due yet
    row("due", "busy@test")
    assert stealer.poll() is True and stealer.stolen == 1
    assert Stealer(thief, free_slots=lambda: 0).poll() is None  # no free slot: no look


def test_the_idle_slot_thread_fills_a_slot_once_until_its_run_arrives(thief, busy, redis):
    """A taken run's message reaches the worker a moment later: until then its slot
    still looks free, and must not be filled a second time."""
    arrived: set[str] = set()
    stealer = Stealer(thief, free_slots=lambda: 1, received=arrived.__contains__)
    first = row("first", "busy@test", **waited(5))
    row("second", "busy@test", **waited(4))
    assert stealer.poll() is True
    assert stealer.poll() is None  # its one free slot is spoken for
    arrived.add(f"{first.run_id}:2")  # the worker received the taken run: a slot frees later
    assert stealer.poll() is True and stealer.stolen == 2


def served(redis, node: str) -> list[str]:
    """Names of the runs in a node's queue, in the order its worker takes them (each
    priority level's list from its right end, the first level first)."""
    return [
        json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]["name"]
        for key in keys.queue_keys(node)
        for raw in reversed(redis.lrange(key, 0, -1))
    ]


@pytest.fixture
def full(thief, redis):
    """``thief`` with both slots busy (in the loads) and a run of its own waiting 1 s."""
    redis.hset(keys.loads_key(), thief.name, 3)
    mine = row("mine", thief.name, **waited(1))
    attempts.deliver(message_for(mine))
    return thief


def test_a_full_node_takes_an_older_run_waiting_elsewhere_ahead_of_its_own(full, busy, redis):
    older = row("older", "busy@test", **waited(5))
    moved = overtake(full)
    assert (moved.name, moved.node, moved.attempt) == ("older", full.name, 2)
    older.refresh_from_db()
    assert (older.node, older.attempt, older.state, older.priority) == (full.name, 2, "QUEUED", 0)
    assert served(redis, full.name) == ["older", "mine"]  # the slot that frees takes it
    assert get_status("older").node == full.name
    # Moved at once, it is now the youngest: no other full node takes it back.
    assert overtake(full) is None


@override_settings(DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, "REBALANCE_AFTER": 0.1})
def test_a_full_node_serves_its_own_run_when_it_came_first(full, busy, redis):
    row("newer", "busy@test", **waited(0.5))
    row("hardly", "busy@test", **waited(1.05))  # older by less than REBALANCE_AFTER
    row("low", "busy@test", priority=-5, **waited(5))  # older, but below the own run
    assert overtake(full) is None
    assert served(redis, full.name) == ["mine"]
    assert TaskRun.objects.get(name="newer").node == "busy@test"


def test_an_overtaking_run_keeps_its_priority_level(full, busy, redis):
    row("urgent", "busy@test", priority=50, **waited(0.5))
    assert overtake(full).name == "urgent"
    assert served(redis, full.name) == ["urgent", "mine"]
    (raw,) = redis.lrange(
        envelope.encode(message_for(TaskRun.objects.get(name="urgent")), None)[0], 0, -1
    )
    assert json.loads(raw)["properties"]["priority"] == get_broker().message_priority(50)


def test_nothing_overtakes_where_no_other_node_queues(full, redis):
    row("elsewhere", "other@test", **waited(5))
    assert overtake(full) is None
    assert served(redis, full.name) == ["mine"]


@override_settings(DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, "REBALANCE_AFTER": 60})
def test_a_wait_longer_by_less_than_rebalance_after_is_left_alone(full, busy, redis):
    row("older", "busy@test", **waited(5))  # older than the own run, not by a minute
    assert overtake(full) is None
    row("urgent", "busy@test", priority=5, **waited(0.5))
    assert overtake(full).name == "urgent"


@override_settings(DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, "REBALANCE_AFTER": 0.1})
def test_the_own_run_counts_when_more_runs_elsewhere_come_before_it(full, busy, redis):
    for i in range(CANDIDATES):  # a burst: older than the own run, by less than 0.1 s
        row(f"burst-{i}", "busy@test", **waited(1.01 + i / 100))
    assert overtake(full) is None
    row("oldest", "busy@test", **waited(5))
    assert overtake(full).name == "oldest"


@pytest.mark.parametrize("union", [True, False], ids=["one UNION ALL", "a query per node"])
def test_a_look_reads_each_nodes_first_runs_in_serving_order(thief, busy, union, monkeypatch):
    from django.db import connection
    from django.utils import timezone

    from distributed_tasks.stealing import _heads

    if union and not connection.features.supports_slicing_ordering_in_compound:
        pytest.skip(f"{connection.vendor} cannot slice the parts of a UNION")
    monkeypatch.setattr(connection.features, "supports_slicing_ordering_in_compound", union)
    for i in range(CANDIDATES + 2):  # more than a look reads of one node
        row(f"busy-{i}", "busy@test", **waited(10 + i))
    row("urgent", "other@test", priority=5, **waited(1))
    row("old", "other@test", **waited(60))
    heads = _heads(thief, ["busy@test", "other@test"], timezone.now())
    names = dict(TaskRun.objects.values_list("id", "name"))
    assert [names[h.pk] for h in heads] == [
        "urgent", "old", *(f"busy-{i}" for i in reversed(range(2, CANDIDATES + 2)))
    ]  # fmt: skip


def test_a_node_in_warm_shutdown_takes_nothing_over_in_any_pool_process(
    thief, busy, redis, monkeypatch
):
    """It consumes no more messages: a run it took over would wait on it until it is
    declared lost. Its pool processes, forked before, see the flag with no round trip."""
    import os
    import warnings

    from distributed_tasks import stealing
    from distributed_tasks.celery import TASK_NAME
    from distributed_tasks.nodes import set_current_node

    class Sender:
        name = TASK_NAME

    monkeypatch.setattr(stealing, "_draining", None)
    stealing.share_draining()
    read, write = os.pipe()
    with warnings.catch_warnings():  # forking with the fixtures' heartbeat threads alive
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover (a pool process: waits for the shutdown, reads the flag)
        os.close(write)
        os._exit(0 if os.read(read, 1) and stealing.draining() else 1)
    waiting = row("waiting", "busy@test", **waited(5))
    set_current_node(thief)
    try:
        stealing.begin_draining()
        os.write(write, b"x")
        assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
        stealing.after_run(sender=Sender())
        assert TaskRun.objects.get(id=waiting.id).node == "busy@test"
        stealing.share_draining()  # the next worker of this process starts afresh
        stealing.after_run(sender=Sender())
        assert TaskRun.objects.get(id=waiting.id).node == thief.name
    finally:
        set_current_node(None)
        os.close(read), os.close(write)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)


def test_a_run_moved_since_the_look_is_left_where_it_went(thief, busy, redis):
    """The look and the take are two reads: a run another node (or the leader) moved in
    between is now another attempt, which the take must not move again."""
    from django.utils import timezone

    from distributed_tasks.stealing import _take, _waiting
    from distributed_tasks.types import State

    waiting = row("waiting", "busy@test", **waited(5))
    heads = _waiting(thief, ["busy@test"], timezone.now())
    attempts.next_attempt(message_for(waiting), from_states=(State.QUEUED,), node="other@test")
    assert _take(thief, heads) is None
    waiting.refresh_from_db()
    assert (waiting.node, waiting.attempt) == ("other@test", 2)


def test_a_higher_priority_run_just_moved_is_not_taken_back(full, busy, redis):
    row("urgent", "busy@test", priority=5)  # as an overtake leaves it: run_after = the move
    assert overtake(full) is None
    assert TaskRun.objects.get(name="urgent").node == "busy@test"
