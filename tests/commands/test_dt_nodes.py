"""``dt_nodes``: live nodes with ring share, active runs and queue depth."""

import io
import json

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from distributed_tasks import start_async
from distributed_tasks.nodes import Heartbeat, NodeInfo
from tests import tasks
from tests.support import poll_until

pytestmark = pytest.mark.django_db(transaction=True)


def rows(out: str) -> dict[str, list[str]]:
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["NODE", "HEARTBEAT", "WEIGHT"]
    return {line.split()[0]: line.split() for line in lines if "@" in line.split()[0]}


def test_a_node_with_queued_runs(run_command, node, leader):
    start_async(tasks.add, [1, 2], name="one")
    start_async(tasks.add, [1, 2], name="two")
    out = run_command("dt_nodes")
    name, _age, weight, executing, lists, share, active, queue, _where = rows(out)["idle@test"]
    assert (name, weight, executing, lists, share, active, queue) == (
        "idle@test",
        "1",
        "0/1",  # it consumes nothing; one slot (its weight: no capacity declared)
        "*",
        "100.0%",
        "2",
        "2",
    )
    assert out.splitlines()[-1] == f"Orchestrator leader: beat@test (epoch {leader.epoch})"


def test_json_lists_every_detail(run_command, node, heavy):
    start_async(tasks.add, [1, 2], name="ci-run", task_list="ci")
    data = json.loads(run_command("dt_nodes", "--json"))
    nodes = {n["name"]: n for n in data["nodes"]}
    assert set(nodes) == {"idle@test", "heavy@test"}
    assert (nodes["heavy@test"]["weight"], nodes["heavy@test"]["task_lists"]) == (3, ["ci"])
    assert (nodes["heavy@test"]["slots"], nodes["heavy@test"]["executing"]) == (3, 0)
    assert nodes["heavy@test"]["share"] > nodes["idle@test"]["share"]
    assert sum(n["share"] for n in nodes.values()) == pytest.approx(1.0, abs=1e-3)
    assert (nodes["heavy@test"]["active_runs"], nodes["heavy@test"]["queue_depth"]) == (1, 1)
    assert (nodes["idle@test"]["active_runs"], nodes["idle@test"]["queue_depth"]) == (0, 0)
    assert data["leader"] is None
    assert any("No orchestrator holds the lease" in p for p in data["problems"])


def test_no_live_node(run_command):
    out = run_command("dt_nodes")
    assert out.splitlines() == [
        "No live node: start one with `manage.py dt_worker`.",
        "Orchestrator leader: none (start `manage.py dt_beat`)",
    ]


def test_redis_down_is_an_error(run_command):
    with (
        override_settings(DISTRIBUTED_TASKS={"REDIS_URL": "redis://127.0.0.1:1/0"}),
        pytest.raises(CommandError, match="Redis does not answer"),
    ):
        run_command("dt_nodes")


def test_lists_nodes_that_stopped_heartbeating(run_command, node):
    Heartbeat(NodeInfo(name="gone@test")).beat()  # one beat, then silence

    def stale(out: str) -> list[str]:
        prefix = "Stopped heartbeating, not yet declared lost: "
        line = next((x for x in out.splitlines() if x.startswith(prefix)), prefix)
        return line.removeprefix(prefix).split(", ")

    fast = {**settings.DISTRIBUTED_TASKS, "NODE_TIMEOUT": 0.2}
    with override_settings(DISTRIBUTED_TASKS=fast):
        out = poll_until(
            lambda: "gone@test" in stale(o := run_command("dt_nodes")) and o,
            message="gone@test listed as stale",
        )
    assert not any(line.startswith("gone@test") for line in out.splitlines())


EVIL = "\x1b]0;owned\x07\x1b[2J"  # retitle the terminal, clear the screen


def test_text_from_redis_is_printed_escaped(run_command):
    """Anyone who can write to Redis can name a node or a leader: commands escape it."""
    from distributed_tasks.lease import Lease

    beat = Heartbeat(NodeInfo(name=f"evil{EVIL}@test", host=f"h{EVIL}", task_lists=(EVIL,)))
    beat.start()
    lease = Lease(f"beat{EVIL}@test", ttl=30)
    try:
        poll_until(lambda: beat.beats > 0, message="first heartbeat")
        assert lease.try_acquire()
        out = run_command("dt_nodes")
        check = io.StringIO()
        with pytest.raises(SystemExit):  # degraded: the evil node is no worse than any
            call_command("dt_check", stdout=check)
    finally:
        lease.release()
        beat.stop(leave=True)
    for text in (out, check.getvalue()):
        assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b]0;owned\\x07\\x1b[2J@test" in out
    assert "Orchestrator leader: beat\\x1b]0;owned" in out


@pytest.mark.parametrize("task_list", ["red\x1b[31m", "", "x" * 201, "   "])
def test_dt_worker_refuses_a_task_list_start_async_would_refuse(run_command, task_list):
    with pytest.raises(CommandError, match="task list"):
        run_command("dt_worker", "--task-list", task_list)
