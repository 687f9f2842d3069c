"""`celery inspect` against real nodes: silent by default, answering once opted in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

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


def operator_env() -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env.pop("PYTHONWARNINGS", None)  # third-party CLIs, not our code
    return env


def inspect_cli(*argv: str) -> dict:
    """``celery -A distributed_tasks.celeryapp inspect ...`` as an operator runs it."""
    env = operator_env()
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


@pytest.fixture
def flower(tmp_path):
    """``celery -A distributed_tasks.celeryapp flower`` as docs/observability.md runs it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**operator_env(), "FLOWER_UNAUTHENTICATED_API": "true"}  # Flower 2: API opt-in
    log = (tmp_path / "flower.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "distributed_tasks.celeryapp", "flower",
         f"--port={port}", "--address=127.0.0.1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_flower_lists_the_opted_in_node_with_its_pool(nodes, flower):
    def workers() -> dict | None:
        try:
            url = f"{flower}/api/workers?refresh=1"
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read()) or None
        except OSError:  # not listening yet
            return None

    listed = poll_until(lambda: (w := workers()) and OPEN in w and w, timeout=30, message="Flower")
    assert CLOSED not in listed  # remote control off: it answers no broadcast
    assert listed[OPEN]["stats"]["pool"]["max-concurrency"] >= 1
    assert any(q["name"].endswith(OPEN) for q in listed[OPEN]["active_queues"])
