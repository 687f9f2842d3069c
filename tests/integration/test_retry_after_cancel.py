"""A cancel recorded after the orchestrator (or the worker) read a RUNNING run is not
erased by a retry of that run (review item 2): the new attempt would clear the request
and run the function again. The retry is refused and the run ends instead.
"""

import pytest
from django.utils import timezone

from distributed_tasks import api, start_async
from distributed_tasks.fencing import claim_epoch, fenced
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import live_nodes
from distributed_tasks.orchestrator import TickContext
from distributed_tasks.orchestrator.lifeline import NodeLost, end_running
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason, State
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def running_then_cancelled(name: str) -> TaskRun:
    """A RUNNING run with attempts left, as read just before a cancel request landed."""
    handle = start_async(tasks.add, [1, 2], name=name, max_attempts=3)
    assert get_store().mark_running(message_for(TaskRun.objects.get(id=handle.run_id)), "inc")
    stale = TaskRun.objects.get(id=handle.run_id)
    api.cancel(name)
    return stale


def test_the_lifeline_ends_a_run_cancelled_after_its_read(node, redis, leader):
    stale = running_then_cancelled("c")
    claim_epoch(leader.epoch, "t")
    ctx = TickContext(epoch=leader.epoch, holder="t", view=live_nodes(), now=timezone.now(),
                      batch=10, redis_settling=False)  # fmt: skip
    with fenced(leader.epoch):
        got = end_running(stale, Outcome.failed(Reason.NODE_LOST, message="x"), ctx, NodeLost)
    row = TaskRun.objects.get(id=stale.id)
    assert (got, row.state, row.attempt) == ("failed", State.FAILED, 1)
    assert row.cancel_requested_at is not None


def test_the_store_refuses_to_requeue_an_attempt_asked_to_stop(node, redis):
    stale = running_then_cancelled("w")
    error = Outcome.failed(Reason.EXCEPTION, message="boom")
    assert not get_store().requeue(
        message_for(stale), node=node.name, run_after=timezone.now(), error=error
    )
    row = TaskRun.objects.get(id=stale.id)
    assert (row.state, row.attempt) == (State.RUNNING, 1) and row.cancel_requested_at
