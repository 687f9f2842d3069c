"""A run due far in the future waits in the database, not in the broker (review item 7).

On Redis, kombu redelivers an unacked ETA message every visibility_timeout (an hour):
a run started with a countdown of days was delivered again every hour and piled up in
its node's memory. Now it is not published until the leader's releaser finds it due.
"""

import time

import pytest

from distributed_tasks import keys, start_async
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.integration.test_orchestrator import lead, messages, settle
from tests.support import queued

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_long_countdown_is_published_by_the_leader_once_due(node, redis):
    orchestrator = lead()
    settle(orchestrator, redis)
    later = start_async(tasks.add, [1, 2], name="later", countdown=86400)
    soon = start_async(tasks.add, [1, 2], name="soon", countdown=5)
    assert len(queued(redis, node.name)) == 1  # "soon" only: a short countdown is an ETA
    task_id = f"{later.run_id}:1"
    assert redis.zscore(keys.deferred_key(), task_id) > time.time() + 86000
    assert orchestrator.tick()["releaser"] == {}  # not due yet
    redis.zadd(keys.deferred_key(), {task_id: time.time() - 1})  # a day later
    assert orchestrator.tick()["releaser"] == {"released": 1}
    assert len(queued(redis, node.name)) == 2 and redis.zcard(keys.deferred_key()) == 0
    assert TaskRun.objects.get(id=later.run_id).state == "QUEUED" and soon.name == "soon"


def test_a_deferred_run_cancelled_meanwhile_is_dropped(node, redis):
    from distributed_tasks import cancel

    orchestrator = lead()
    settle(orchestrator, redis)
    later = start_async(tasks.add, [1, 2], name="later", countdown=86400)
    cancel("later")
    redis.zadd(keys.deferred_key(), {f"{later.run_id}:1": time.time() - 1})
    assert orchestrator.tick()["releaser"] == {"dropped": 1}
    assert queued(redis, node.name) == [] and redis.zcard(keys.deferred_key()) == 0


def test_a_deferred_run_moved_meanwhile_releases_its_current_attempt(node, redis):
    """Review: with two attempts of one run due in the same tick (moved off a dead node
    while deferred), the older one, read last, hid the current one, which was dropped."""
    orchestrator = lead()
    settle(orchestrator, redis)
    later = start_async(tasks.add, [1, 2], name="later", countdown=86400)
    TaskRun.objects.filter(id=later.run_id).update(attempt=2)  # as a move leaves it
    now = time.time()
    redis.zadd(keys.deferred_key(), {f"{later.run_id}:2": now - 2, f"{later.run_id}:1": now - 1})
    assert orchestrator.tick()["releaser"] == {"released": 1, "dropped": 1}
    assert [m["headers"]["id"] for m in messages(redis, node.name)] == [f"{later.run_id}:2"]
    assert redis.zcard(keys.deferred_key()) == 0
