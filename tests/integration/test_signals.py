"""Run signals: each is sent exactly once per event, with the documented arguments.

``run_queued`` is sent by the web process once a start is recorded and published;
``run_started`` and ``run_finished`` by the worker, here by calling the runner
in-process exactly as a pool process does.
"""

import pytest
from django.db import transaction

from distributed_tasks import (
    AlreadyRunning,
    ClusterUnavailable,
    attempts,
    cancel,
    keys,
    lost,
    runner,
    signals,
    start_async,
    start_many,
)
from distributed_tasks.fencing import claim_epoch, fenced
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, State, TaskHandle
from tests import tasks
from tests.support import queued

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def received():
    """``received(signal)`` -> the list of calls it gets, each with the row state at the time."""
    connected = []

    def listen(signal):
        calls = []

        def receiver(**kwargs):
            subject = kwargs.get("handle") or kwargs.get("message")
            row = TaskRun.objects.filter(id=subject.run_id).first()
            calls.append({**kwargs, "row_state": row.state if row else None})

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return calls

    yield listen
    for signal, receiver in connected:
        signal.disconnect(receiver)


def message_of(name: str) -> RunMessage:
    return message_for(TaskRun.objects.get(name=name))


# -- run_queued ------------------------------------------------------------------------


def test_run_queued_once_per_start_with_its_handle(received, node):
    queued = received(signals.run_queued)
    handle = start_async(tasks.add, [1, 2], name="sum")
    (call,) = queued
    assert set(call) == {"signal", "sender", "handle", "row_state"}
    assert (call["sender"], call["handle"], call["row_state"]) == (TaskRun, handle, State.QUEUED)
    assert isinstance(call["handle"], TaskHandle)


def test_an_interrupt_in_a_run_queued_receiver_reaches_the_caller(node, redis):
    """Ctrl-C (or SystemExit) while the last entry's run_queued receivers run: the start
    is out and kept, and the interrupt is raised, where it was swallowed (review)."""

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    signals.run_queued.connect(interrupted, weak=False, dispatch_uid="interrupt")
    try:
        with pytest.raises(KeyboardInterrupt):
            start_async(tasks.add, [1, 2], name="interrupted")
    finally:
        signals.run_queued.disconnect(dispatch_uid="interrupt")
    run = TaskRun.objects.get(name="interrupted")
    assert run.state == State.QUEUED and len(queued(redis, node.name)) == 1


def test_run_queued_waits_for_the_callers_commit(received, node):
    queued = received(signals.run_queued)
    with transaction.atomic():
        handle = start_async(tasks.add, [1, 2], name="in-tx")
        assert queued == []
    assert [c["handle"] for c in queued] == [handle]


def test_run_queued_is_not_sent_for_refused_starts(received, node):
    queued = received(signals.run_queued)
    start_async(tasks.add, [1, 2], name="dup")
    with pytest.raises(AlreadyRunning):
        start_async(tasks.add, [1, 2], name="dup")
    existing = start_async(tasks.add, [1, 2], name="dup", on_conflict="return_existing")
    assert existing.existing
    assert [c["handle"].name for c in queued] == ["dup"]


def test_run_queued_is_not_sent_when_no_node_can_take_the_run(received):
    queued = received(signals.run_queued)
    with pytest.raises(ClusterUnavailable):
        start_async(tasks.add, [1, 2], name="lonely")
    assert queued == []


def test_run_queued_once_per_run_of_a_batch(received, node):
    queued = received(signals.run_queued)
    start_async(tasks.add, [0, 0], name="b")
    results = start_many(
        [
            {"func": tasks.add, "args": [1, 2], "name": "a"},
            {"func": tasks.add, "args": [1, 2], "name": "b"},  # active: refused
            {"func": tasks.add, "args": [1, 2], "name": "c"},
        ]
    )
    assert isinstance(results[1], AlreadyRunning)
    assert [c["handle"].name for c in queued] == ["b", "a", "c"]
    assert [c["handle"] for c in queued[1:]] == [results[0], results[2]]


# -- run_started / run_finished ------------------------------------------------------------


def test_started_then_finished_once_each_for_a_successful_run(received, node):
    started, finished = received(signals.run_started), received(signals.run_finished)
    start_async(tasks.add, [2, 3], name="five")
    msg = message_of("five")
    runner.execute(msg.to_body())
    (start,) = started
    assert set(start) == {"signal", "sender", "message", "row_state"}
    assert (start["sender"], start["message"], start["row_state"]) == (
        TaskRun,
        msg,
        State.RUNNING,
    )
    (finish,) = finished
    assert set(finish) == {"signal", "sender", "message", "outcome", "row_state"}
    assert (finish["sender"], finish["message"], finish["row_state"]) == (
        TaskRun,
        msg,
        State.DONE,
    )
    assert finish["outcome"] == Outcome.done(5)


def test_run_finished_carries_the_failure(received, node):
    finished = received(signals.run_finished)
    start_async(tasks.fail, ["broken"], name="bad-run")
    runner.execute(message_of("bad-run").to_body())
    (call,) = finished
    outcome = call["outcome"]
    assert (outcome.state, outcome.reason, outcome.error_type, outcome.error) == (
        State.FAILED,
        "exception",
        "ValueError",
        "broken",
    )
    assert call["row_state"] == State.FAILED


def test_a_duplicate_message_sends_nothing_more(received, node):
    started, finished = received(signals.run_started), received(signals.run_finished)
    start_async(tasks.add, [1, 1], name="twice")
    body = message_of("twice").to_body()
    runner.execute(body)
    assert runner.execute(body) is None  # fenced: the row is no longer QUEUED
    assert (len(started), len(finished)) == (1, 1)


def test_a_lost_pool_process_finishes_the_run_once(received, node):
    started, finished = received(signals.run_started), received(signals.run_finished)
    start_async(tasks.add, [1, 1], name="crashed")
    msg = message_of("crashed")
    assert get_store().mark_running(msg, "incarnation")  # the child took it, then died
    lost.record_lost([msg.to_body()], lost.LostBy.CRASH)
    lost.record_lost([msg.to_body()], lost.LostBy.CRASH)  # a second report changes nothing
    (call,) = finished
    assert (call["message"], call["outcome"].reason, call["row_state"]) == (
        msg,
        "worker_lost",
        State.FAILED,
    )
    assert started == []


def test_cancel_finishes_a_queued_run_without_starting_it(received, node):
    started, finished = received(signals.run_started), received(signals.run_finished)
    start_async(tasks.add, [1, 1], name="unwanted")
    msg = message_of("unwanted")
    cancel("unwanted")
    (call,) = finished
    assert (call["message"], call["outcome"].reason, call["row_state"]) == (
        msg,
        "cancelled",
        State.FAILED,
    )
    assert runner.execute(msg.to_body()) is None  # its message, delivered late, runs nothing
    assert (len(started), len(finished)) == (0, 1)


def test_a_retried_attempt_starts_again_and_the_run_finishes_once(received, node):
    started, finished = received(signals.run_started), received(signals.run_finished)
    start_async(tasks.fail, ["flaky"], name="retried", max_attempts=2)
    first = message_of("retried")
    runner.execute(first.to_body())
    assert (len(started), finished) == (1, [])  # the attempt failed, the run goes on
    second = message_of("retried")
    assert (second.attempt, TaskRun.objects.get(name="retried").state) == (2, State.QUEUED)
    runner.execute(second.to_body())
    assert [c["message"] for c in started] == [first, second]
    (call,) = finished
    assert (call["message"], call["outcome"].error, call["row_state"]) == (
        second,
        "flaky",
        State.FAILED,
    )


@pytest.fixture
def raising():
    """A user's receiver with a bug, on ``signal``; disconnected afterwards."""
    connected = []

    def connect(signal):
        def boom(sender, **kwargs):
            raise RuntimeError("user receiver bug")

        signal.connect(boom, weak=False)
        connected.append((signal, boom))

    yield connect
    for signal, boom in connected:
        signal.disconnect(boom)


def test_a_raising_run_queued_receiver_does_not_undo_published_starts(raising, node, redis):
    """Review item 6: the first receiver error rolled back the batch's later starts,
    whose messages had already gone out."""
    raising(signals.run_queued)
    handles = start_many([{"func": tasks.add, "name": n} for n in ("q1", "q2")])
    assert [h.name for h in handles] == ["q1", "q2"]
    assert TaskRun.objects.filter(state=State.QUEUED).count() == 2
    assert len(queued(redis, node.name)) == 2


def test_a_raising_run_moved_receiver_drops_no_other_runs_message(raising, node, redis, leader):
    """Review item 6: moves announce after the commit; the receiver's error skipped the
    callbacks (status, message) of every run moved after it."""
    runs = [start_async(tasks.add, [1, 2], name=n) for n in ("m1", "m2")]
    redis.delete(*keys.queue_keys(node.name))
    claim_epoch(leader.epoch, "t")
    raising(signals.run_moved)
    with fenced(leader.epoch):
        for h in runs:
            msg = message_for(TaskRun.objects.get(id=h.run_id))
            attempts.next_attempt(msg, from_states=(State.QUEUED,), node=node.name)
    assert set(TaskRun.objects.values_list("attempt", flat=True)) == {2}
    assert len(queued(redis, node.name)) == 2
