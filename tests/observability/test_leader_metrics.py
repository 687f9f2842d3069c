"""What the leader counts: elections, renewals, moves, retries and losses of a dead node."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.integration.test_orchestrator import lead, row, settle

pytestmark = pytest.mark.django_db(transaction=True)

ADD = {"function": "tests.tasks.add", "task_list": "default"}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts() -> dict[str, float]:
    return {
        "elected": value("dt_leader_elections_total", holder="leader@test"),
        "renewed": value("dt_lease_renewals_total", holder="leader@test"),
        "moved": value("dt_runs_moved_total", **ADD, why="node_lost"),
        "retried": value("dt_runs_retried_total", **ADD, reason="node_lost"),
        "failed": value("dt_runs_finished_total", **ADD, state="FAILED", reason="node_lost"),
        "lost": value("dt_node_events_total", event="lost"),
    }


def test_lifeline_and_lease_events_are_counted(node, redis, dead_node):
    before = counts()
    orchestrator = lead()
    settle(orchestrator, redis)
    dead_node("gone@test")
    row("queued", "gone@test")
    row("last-chance", "gone@test", state="RUNNING", executions=1)
    row("retry", "gone@test", state="RUNNING", executions=1, max_attempts=2)
    assert orchestrator.tick()["lifeline"] == {
        "moved": 1,
        "failed": 1,
        "retried": 1,
        "nodes_lost": 1,
    }
    assert orchestrator.lease.renew()
    after = counts()
    assert {k: after[k] - before[k] for k in after} == {
        "elected": 1,
        "renewed": 1,
        "moved": 1,
        "retried": 1,
        "failed": 1,
        "lost": 1,
    }
