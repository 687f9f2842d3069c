"""`celery inspect` against real nodes: silent by default, answering once opted in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from distributed_tasks import start_async
from distributed_tasks.celery import get_app
from tests.cluster.conftest import finished
from tests.cluster.conftest import release as release  # the fixture
from tests.support import ROOT, poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLOSED, OPEN = "closed@rc", "open@rc"


@pytest.fixture(scope="module")
def nodes(cluster_factory):
    cluster_factory.start_worker(CLOSED)
    cluster_factory.start_worker(OPEN, args=("--task-list", "rc"), DT_TEST_REMOTE_CONTROL="1")
    cluster_factory.wait_live(CLOSED, OPEN)
    return cluster_factory


def inspect_cli(*argv: str) -> dict:
    """``celery -A distributed_tasks.celeryapp inspect ...`` as an operator runs it."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "distributed_tasks.celeryapp", "inspect", *argv,
         "--json", "--timeout", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def test_ping_and_active_answer_only_on_the_opted_in_node(nodes, redis, release):
    replies = get_app().control.inspect(destination=[CLOSED, OPEN], timeout=2).ping() or {}
    assert replies == {OPEN: {"ok": "pong"}}  # remote control is off on CLOSED
    assert inspect_cli("ping") == {OPEN: {"ok": "pong"}}

    handle = start_async("tests.tasks.wait_for", [release("rc:go")], name="rc", task_list="rc")
    assert handle.node == OPEN  # the only node serving task list "rc"
    active = poll_until(lambda: inspect_cli("active").get(OPEN), timeout=20, message="active")
    (request,) = active
    assert request["id"] == f"{handle.run_id}:1"  # Celery task id: run id and attempt
    assert request["name"] == "distributed_tasks.execute"
    assert request["hostname"] == OPEN
    redis.set("rc:go", 1)
    poll_until(finished("rc", "rc"), timeout=30, message="rc to finish")
