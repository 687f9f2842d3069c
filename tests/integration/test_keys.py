"""Name keys are injective: task list ``a:b`` + name ``c`` and task list ``a`` + name
``b:c`` are two names, in Redis as in the database; keys of the old format migrate."""

import pytest

from distributed_tasks import State, api, claims, keys, runner, start_async
from distributed_tasks.models import TaskRun
from distributed_tasks.orchestrator import Orchestrator
from distributed_tasks.store import message_for
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)

COLLIDING = [(("a:b", "c"), ("a", "b:c")), (("1:x", "y"), ("1", "x:y"))]


def test_the_encoding_is_injective_and_keeps_one_hash_tag_per_name():
    for first, second in COLLIDING:
        assert keys.run_key(*first) != keys.run_key(*second)
    assert keys.run_key("a:b", "c") == "dt:{3:a:b:c}:run"
    assert keys.run_key("a", "b:c") == "dt:{1:a:b:c}:run"


@pytest.mark.parametrize(("first", "second"), COLLIDING)
def test_colliding_names_start_read_and_cancel_independently(node, first, second):
    one = start_async(tasks.add, [1, 2], task_list=first[0], name=first[1])
    two = start_async(tasks.add, [3, 4], task_list=second[0], name=second[1])
    assert one.run_id != two.run_id
    for (task_list, name), handle in ((first, one), (second, two)):
        status = api.get_status(name, task_list)
        assert (status.state, status.run_id, status.task_list) == (
            State.QUEUED,
            handle.run_id,
            task_list,
        )
        assert claims.read(task_list, name)["run_id"] == handle.run_id
    cancelled = api.cancel(first[1], first[0])
    assert (cancelled.state, cancelled.run_id) == (State.FAILED, one.run_id)
    still = api.get_status(second[1], second[0])
    assert (still.state, still.run_id) == (State.QUEUED, two.run_id)


def test_a_hash_holding_another_name_reads_as_a_miss_and_is_replaced(node, redis):
    handle = start_async(tasks.add, [1, 2], task_list="a", name="b")
    key = keys.run_key("a", "b")
    redis.hset(key, mapping={"task_list": "other", "name": "b", "run_id": "ff" * 16})
    assert claims.read("a", "b") == {}
    status = api.get_status("b", "a")  # the database answers and warms the key again
    assert (status.state, status.run_id) == (State.QUEUED, handle.run_id)
    assert claims.read("a", "b")["run_id"] == handle.run_id


def test_keys_of_the_old_format_are_rebuilt_from_the_database_and_dropped(node, redis):
    """An upgrade from the ambiguous format: the leader finds no marker of the new format,
    rebuilds each active name's key from its row, and its scan deletes the old keys."""
    handle = start_async(tasks.add, [1, 2], name="upgraded")
    old_key = "dt:{default:upgraded}:run"  # what the previous version wrote
    redis.rename(keys.run_key("default", "upgraded"), old_key)
    redis.hdel(old_key, "task_list", "name")
    redis.hset("dt:{default:gone}:run", mapping={"state": "QUEUED", "run_id": "ab" * 16})
    redis.set("dt:{nodes}:intact", "old-leader")  # the old marker does not count
    orchestrator = Orchestrator("leader@test")
    assert orchestrator.lease.try_acquire() and orchestrator.on_acquired()
    report = orchestrator.tick()["resync"]
    assert report["statuses_restored"] == 1 and report["rebuilds_completed"] == 1
    assert claims.read("default", "upgraded")["run_id"] == handle.run_id
    orchestrator._redis_lost_at = None  # done settling: the scan runs
    report = orchestrator.tick()["resync"]
    assert report["old_format_keys_dropped"] == 2
    assert not redis.exists(old_key) and not redis.exists("dt:{default:gone}:run")
    assert redis.exists(keys.run_key("default", "upgraded"))
    orchestrator.stop()


def test_colliding_names_finish_with_their_own_status_and_result(node):
    """The worker's status writes (the UPDATE script) keep the two names apart as well."""
    (first, second), handles = COLLIDING[0], []
    for (task_list, name), args in ((first, [1, 2]), (second, [30, 40])):
        handles.append(start_async(tasks.add, args, task_list=task_list, name=name))
    for handle in handles:
        runner.execute(message_for(TaskRun.objects.get(id=handle.run_id)).to_body())
    results = [api.get_status(name, task_list) for task_list, name in (first, second)]
    assert [(s.state, s.result, s.run_id) for s in results] == [
        (State.DONE, 3, handles[0].run_id),
        (State.DONE, 70, handles[1].run_id),
    ]
