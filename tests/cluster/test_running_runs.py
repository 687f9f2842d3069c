"""Running runs on a real node: live progress, cooperative and forced cancel (issue 18).

One node (prefork, two pool processes) and one orchestrator for the module: the
orchestrator is there so its watchdog and lifeline get every chance to retry a
cancelled run (they must not).
"""

import time

import pytest
from django.test import Client
from django.urls import reverse

from distributed_tasks import State, cancel, get_status, start_async
from distributed_tasks.conf import get_settings
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.cluster.conftest import wait_finished
from tests.support import poll_until, progress_of

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

NODE = "rr@cluster"


@pytest.fixture(scope="module")
def one_node(cluster_factory):
    cluster_factory.start_worker(NODE, concurrency=2)
    cluster_factory.start_beat("rr-beat")
    return cluster_factory


@pytest.fixture
def node(one_node):
    one_node.wait_live(NODE)
    one_node.wait_leader()
    return one_node


def started(redis, key: str, entry: bytes = b"started") -> None:
    poll_until(lambda: entry in redis.lrange(key, 0, -1), timeout=30, message=f"{key}: {entry}")


@pytest.fixture
def admin_client(django_user_model):
    user = django_user_model.objects.create_superuser("boss", password="pw")
    client = Client()
    client.force_login(user)
    return client


def test_progress_is_live_in_status_json_and_admin_and_final_once_it_ends(
    node, redis, admin_client
):
    key = "rr:progress"
    handle = start_async(tasks.progress_then_wait, [key], name="progressing")
    poll_until(lambda: redis.llen(key), timeout=30, message="the report")
    reported = float(redis.lindex(key, 0))

    status = poll_until(
        lambda: (s := get_status("progressing")).progress is not None and s,
        timeout=1.0,
        message="progress in get_status",
    )
    seen = time.time()
    assert (status.state, *progress_of(status)) == (State.RUNNING, 0.5, "half way", {"items": 21})
    assert seen - reported < 1.0
    data = admin_client.get(reverse("distributed_tasks:status", args=["default", "progressing"]))
    assert data.json()["progress"] == 0.5 and data.json()["progress_message"] == "half way"
    page = admin_client.get(reverse("admin:distributed_tasks_taskrun_changelist")).content.decode()
    assert 'value="0.5"' in page and "half way" in page
    run_page = admin_client.get(
        reverse("admin:distributed_tasks_taskrun_change", args=[handle.run_id])
    ).content.decode()
    assert "50%" in run_page and "half way" in run_page

    redis.set(f"{key}:go", 1)
    status = wait_finished("progressing")
    row = TaskRun.objects.get(id=handle.run_id)
    assert status.state == State.DONE
    assert progress_of(status) == progress_of(row) == (1.0, "all done", {"items": 42})
    time.sleep(0.5)  # longer than the Redis throttle: a late write would have landed
    assert get_status("progressing").progress == 1.0


def test_cooperative_cancel_ends_a_running_run_within_one_heartbeat(node, redis):
    key = "rr:coop"
    handle = start_async(tasks.until_cancelled, [key], name="coop", max_attempts=3)
    started(redis, key)
    poll_until(lambda: get_status("coop").state == State.RUNNING, message="RUNNING")
    asked = time.monotonic()
    status = cancel("coop", by="alice")
    assert status.state == State.RUNNING and status.cancel_requested_by == "alice"
    status = wait_finished("coop")
    took = time.monotonic() - asked
    assert took < get_settings().HEARTBEAT_INTERVAL + 0.1 + 0.5  # + the task's own interval
    assert (status.state, status.reason) == (State.FAILED, "cancelled")
    assert "asked by alice at " in status.error
    assert b"saw the request" in redis.lrange(key, 0, -1)
    row = TaskRun.objects.get(id=handle.run_id)
    assert (row.cancel_requested_by, row.executions, row.attempt) == ("alice", 1, 1)
    assert row.cancel_requested_at is not None


def test_forced_cancel_kills_a_run_stuck_in_c_and_the_node_serves_on(node, redis):
    key = "rr:stuck"
    handle = start_async(tasks.Stuck, [key, 60], name="stuck", max_attempts=3)
    started(redis, key)
    start_async(tasks.add, [2, 2], name="beside-stuck")  # the other pool process serves
    assert wait_finished("beside-stuck").result == 4
    grace = 1.0
    asked = time.monotonic()
    cancel("stuck", force=True, grace=grace, by="ops")
    status = wait_finished("stuck", timeout=grace + 5)
    assert time.monotonic() - asked < grace + 1.0
    assert (status.state, status.reason) == (State.FAILED, "cancelled")
    assert "killed after a grace of 1 s" in status.error
    started(redis, key, b"on_failure Cancelled")
    # The node goes on with two pool processes (the killed one replaced): two runs at once.
    for i in range(2):
        start_async(tasks.wait_for, ["rr:after-stuck:go"], name=f"after-stuck-{i}")
    poll_until(
        lambda: all(get_status(f"after-stuck-{i}").state == State.RUNNING for i in range(2)),
        timeout=10,
        message="two runs at once on the node",
    )
    redis.set("rr:after-stuck:go", 1)
    for i in range(2):
        assert wait_finished(f"after-stuck-{i}").result == "released"
    # Neither the runner, the watchdog nor the lifeline retries it (max_attempts=3).
    time.sleep(get_settings().NODE_TIMEOUT + 2 * get_settings().TICK_INTERVAL)
    row = TaskRun.objects.get(id=handle.run_id)
    assert (row.state, row.reason, row.executions, row.attempt, row.attempts) == (
        State.FAILED,
        "cancelled",
        1,
        1,
        [],
    )


def test_async_task_gets_cancelled_error(node, redis):
    key = "rr:async"
    start_async(tasks.async_until_cancelled, [key], name="async-coop")
    started(redis, key)
    cancel("async-coop")
    status = wait_finished("async-coop", timeout=5)
    assert (status.state, status.reason) == (State.FAILED, "cancelled")
    assert b"CancelledError" in redis.lrange(key, 0, -1)


def test_a_redis_flush_between_request_and_check_does_not_lose_it(node, redis):
    key, gate = "rr:flush", "rr:flush:gate"
    start_async(tasks.until_cancelled, [key, gate], name="flushed")
    started(redis, key)
    cancel("flushed", by="bob")
    redis.flushdb()  # the request's copy in Redis is gone; the row keeps it
    redis.set(gate, 1)  # now the task starts checking
    status = wait_finished("flushed", timeout=10)
    assert (status.state, status.reason) == (State.FAILED, "cancelled")
    assert "asked by bob" in status.error
