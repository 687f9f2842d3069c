"""Cluster health against real Redis, PostgreSQL and broker queues."""

import dataclasses
import json
import uuid

import pytest
from django.conf import settings
from django.test import override_settings

from distributed_tasks import keys, start_async
from distributed_tasks.health import Status, check_health, queue_depths
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import Heartbeat, NodeInfo
from distributed_tasks.store import get_store
from tests import tasks
from tests.support import poll_until

pytestmark = pytest.mark.django_db(transaction=True)

NOWHERE = {"REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens on port 1


def queued_on(node: str, name: str) -> TaskRun:
    """An active row placed on ``node``, as the client records it (no message needed)."""
    run = TaskRun(id=uuid.uuid4(), name=name, active_name=name, function="tests.tasks.add")
    run.node = node
    get_store().insert(run)
    return run


def test_leader_and_a_live_node_are_healthy(leader, node):
    health = check_health()
    assert (health.status, health.exit_code, health.problems) == (Status.HEALTHY, 0, ())
    assert (health.leader.holder, health.leader.epoch) == ("beat@test", leader.epoch)
    (info,) = health.nodes
    assert (info.name, info.weight, info.task_lists, info.share) == ("idle@test", 1, ("*",), 1.0)
    assert 0 <= info.heartbeat_age < 5
    assert (info.active_runs, info.queue_depth) == (0, None)  # depths only when asked
    assert health.runs == {"QUEUED": 0, "RUNNING": 0}
    assert health.redis.ok and health.database.ok


def test_no_leader_is_degraded(node):
    health = check_health()
    assert (health.status, health.exit_code) == (Status.DEGRADED, 1)
    no_leader, not_resynced = health.problems
    assert no_leader.startswith("No orchestrator holds the lease")
    assert "dt_beat" in no_leader
    assert not_resynced.startswith("Redis lost its data")  # nobody marked it intact yet


def test_no_live_node_is_degraded_and_names_the_queued_runs(leader):
    queued_on("gone@test", "a")
    queued_on("gone@test", "b")
    health = check_health()
    assert health.status is Status.DEGRADED
    assert health.runs == {"QUEUED": 2, "RUNNING": 0}
    assert any("2 run(s) are QUEUED but no node is live" in p for p in health.problems)
    assert health.orphaned_runs == 2


def test_an_idle_cluster_without_nodes_is_degraded(leader):
    (problem,) = check_health().problems
    assert problem.startswith("No node is live, and every new start is refused.")


def test_runs_on_a_node_that_stopped_heartbeating_are_counted(leader, node):
    start_async(tasks.add, [1, 2], name="placed")
    queued_on("gone@test", "orphan")
    health = check_health()
    assert health.status is Status.DEGRADED
    assert (health.orphaned_runs, health.runs["QUEUED"]) == (1, 2)
    (info,) = health.nodes
    assert info.active_runs == 1
    assert "1 active run(s) are placed on nodes that stopped heartbeating" in health.problems[0]


def test_runs_parked_for_a_task_list_no_node_serves_are_not_called_orphaned(leader, node):
    """A retry no live node could take waits on no node (parked): it is not on a node that
    stopped heartbeating, and the leader cannot end it within a tick (review)."""
    queued_on("", "parked")
    health = check_health()
    assert health.status is Status.DEGRADED
    assert (health.orphaned_runs, health.parked_runs) == (0, 1)
    assert health.as_dict()["parked_runs"] == 1
    (problem,) = health.problems
    assert problem.startswith("1 run(s) wait for a node that serves their task list")
    assert "dt_worker --task-list" in problem


def test_redis_down_is_down_and_leaves_nodes_unknown():
    with override_settings(DISTRIBUTED_TASKS=NOWHERE):
        health = check_health()
    assert (health.status, health.exit_code) == (Status.DOWN, 2)
    assert not health.redis.ok and health.redis.error
    assert health.database.ok
    assert (health.nodes, health.leader) == ((), None)
    (problem,) = health.problems  # no leader/node complaints: they are unknown, not missing
    assert problem.startswith("Redis does not answer")


def test_weights_shape_ring_shares(leader, node):
    heavy = Heartbeat(NodeInfo(name="heavy@test", weight=3))
    heavy.start()
    try:
        health = poll_until(
            lambda: (h := check_health()) and len(h.nodes) == 2 and h,
            message="both nodes live",
        )
    finally:
        heavy.stop(leave=True)
    shares = {n.name: n.share for n in health.nodes}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert shares["heavy@test"] > shares["idle@test"]
    assert {n.name: n.weight for n in health.nodes} == {"heavy@test": 3, "idle@test": 1}


def test_queue_depth_counts_waiting_messages(leader, node):
    start_async(tasks.add, [1, 2], name="one")
    start_async(tasks.add, [3, 4], name="two", priority=50)  # another priority list
    (info,) = check_health(with_queue_depths=True).nodes
    assert (info.active_runs, info.queue_depth) == (2, 2)
    assert queue_depths(["never-started@test"]) == {"never-started@test": 0}


def test_queue_depth_is_unknown_when_the_broker_does_not_answer():
    with override_settings(DISTRIBUTED_TASKS=NOWHERE):
        assert queue_depths(["idle@test"]) == {"idle@test": None}


def test_as_dict_is_plain_json(leader, node):
    health = check_health()
    data = json.loads(json.dumps(health.as_dict()))
    assert data["status"] == "healthy"
    assert (data["leader"]["holder"], data["leader"]["epoch"]) == ("beat@test", leader.epoch)
    assert 0 < data["leader"]["ttl_ms"] <= 30_000
    assert data["nodes"][0]["name"] == "idle@test"
    assert data["nodes"][0]["task_lists"] == ["*"]
    assert data["redis"]["ok"] is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        health.status = Status.DOWN  # type: ignore[misc]


def test_redis_that_lost_its_data_is_degraded_until_the_leader_resyncs(leader, node, redis):
    redis.delete(keys.intact_key())  # what a flush or a restart without persistence leaves
    health = check_health()
    assert (health.status, health.redis_intact) == (Status.DEGRADED, False)
    (problem,) = health.problems
    assert problem.startswith("Redis lost its data")
    redis.set(keys.intact_key(), leader.holder)
    assert check_health().status is Status.HEALTHY


def test_a_node_that_stopped_heartbeating_is_listed_until_declared_lost(leader, node):
    gone = Heartbeat(NodeInfo(name="gone@test"))
    gone.beat()
    with override_settings(DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, "NODE_TIMEOUT": 0.2}):
        health = poll_until(
            lambda: (h := check_health()) and "gone@test" in h.stale_nodes and h,
            message="gone@test to go stale",
        )
    assert "gone@test" not in {n.name for n in health.nodes}
    assert health.as_dict()["stale_nodes"] == list(health.stale_nodes)
