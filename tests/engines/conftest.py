"""Engines beyond one Redis: each module starts its own (a RabbitMQ vhost, a Redis
Cluster, a Sentinel group) as a module fixture named ``engine``, and this conftest
points the test process and every worker and beat subprocess at it.

The cluster is ``tests/cluster``'s full one (three nodes, two beats, a periodic task),
started once per module; the core scenarios come from ``tests.engines.scenarios``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.test import override_settings

from tests.cluster.conftest import full, full_cluster, release  # noqa: F401 - fixtures
from tests.support import Cluster

# One periodic task, every second, on every engine: the slot scenario watches it.
PERIODIC = {"counter": {"task": "tests.tasks.Counter", "interval": 1}}


@dataclass(frozen=True)
class Engine:
    """Where the engine under test is: the REDIS_URL and BROKER_URL to use."""

    redis_url: str
    broker_url: str | None = None


def require(program: str) -> str:
    """The path of ``program``; fails (never skips) the test when it is missing."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed: the engine tests need it (apt-get install it)")
    return path


def run(*argv: str, timeout: float = 60) -> str:
    """Run a command of the engine's tooling; its output, or a failure naming it."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        pytest.fail(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def cluster_factory(engine: Engine, django_db_setup, tmp_path_factory):
    """The suite's cluster factory, on ``engine`` for this process and its subprocesses."""
    from distributed_tasks.connection import get_redis

    dt = {**settings.DISTRIBUTED_TASKS, "REDIS_URL": engine.redis_url}
    dt["BROKER_URL"] = engine.broker_url
    with override_settings(DISTRIBUTED_TASKS=dt):
        get_redis().flushdb()
        cluster = Cluster(tmp_path_factory.mktemp("engine"), settings.DATABASES["default"]["NAME"])
        cluster.base_env.update(
            DT_TEST_REDIS_URL=engine.redis_url,
            DT_TEST_BROKER_URL=engine.broker_url or "",
            DT_TEST_PERIODIC=json.dumps(PERIODIC),
        )
        try:
            yield cluster
        finally:
            for key in list(cluster.procs):  # all stop at once, not one after the other
                cluster.kill(key, signal.SIGTERM)
            cluster.stop_all()


@pytest.fixture
def nodes(request):
    """The scenarios of tests/cluster that need only nodes run on the full cluster."""
    return request.getfixturevalue("full")
