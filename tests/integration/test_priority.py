"""Run priorities on the broker: a run's priority reaches its node queue's message.

Django's range (-100..100, higher first) becomes one of ``PRIORITY_LEVELS`` message
priorities; on Redis kombu keeps a list per level and serves level 0 first, so higher
priorities land in lists served earlier. The node here consumes nothing, so the
messages stay where the publish put them.
"""

from __future__ import annotations

import json

import pytest

from distributed_tasks import InvalidOption, keys, start_async
from distributed_tasks.brokers import PRIORITY_LEVELS, AmqpBroker, Broker, priority_level
from distributed_tasks.celery import get_app
from distributed_tasks.models import TaskRun
from distributed_tasks.store import message_for
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_levels_keep_djangos_order_on_both_brokers():
    priorities = [-100, -60, -1, 0, 1, 40, 100]
    levels = [priority_level(p) for p in priorities]
    assert levels == sorted(levels) and (levels[0], levels[-1]) == (0, PRIORITY_LEVELS - 1)
    assert priority_level(0) == 4  # the default sits in the middle of the scale
    app = get_app()
    assert [AmqpBroker(app).message_priority(p) for p in priorities] == levels
    # kombu's Redis transport serves the lowest number first: the scale is inverted.
    assert [Broker(app).message_priority(p) for p in priorities] == [9 - x for x in levels]


def level_of(redis, node: str, run_id: str) -> int:
    """The index of the Redis list (of the node's queue) that holds the run's message."""
    for level, key in enumerate(keys.queue_keys(node)):
        for raw in redis.lrange(key, 0, -1):
            if json.loads(raw)["headers"]["id"].startswith(run_id):
                return level
    raise AssertionError(f"no message of run {run_id} in the queue of {node}")


def test_higher_priority_lands_in_a_list_served_earlier(node, redis):
    handles = {p: start_async(tasks.add, [1, 2], priority=p) for p in (-100, 0, 100)}
    served = {p: level_of(redis, node.name, h.run_id) for p, h in handles.items()}
    assert served[100] < served[0] < served[-100]
    for priority, handle in handles.items():
        run = TaskRun.objects.get(id=handle.run_id)
        assert run.priority == priority
        assert message_for(run).priority == priority  # retries and resync publish it again


@pytest.mark.parametrize("priority", [101, -101, 1.5, "high", True, None])
def test_priority_outside_djangos_range_is_refused(node, priority):
    with pytest.raises(InvalidOption, match="priority must be a whole number between -100 and 100"):
        start_async(tasks.add, [1, 2], priority=priority)
    assert not TaskRun.objects.exists()
