from __future__ import annotations

import os

import pytest
from django.conf import settings

from tests import flush, services
from tests.support import Cluster, poll_until


def pytest_sessionstart(session: pytest.Session) -> None:
    services.ensure(os.environ.get("DT_TEST_DB", "postgres"))
    flush.install()


@pytest.fixture(autouse=True)
def _clean_state(request):
    """Fresh process-level caches for every test, and an empty Redis database.

    Cluster tests keep Redis between the tests of a module: their worker and beat
    processes hold heartbeats and the lease there, and a flush is a fault that the
    fault tests inject on purpose. Their module starts on an empty database instead.
    """
    from distributed_tasks import api, hooks
    from distributed_tasks.conf import reset_caches
    from distributed_tasks.connection import get_redis

    reset_caches()
    if request.node.get_closest_marker("cluster") is None:
        get_redis().flushdb()
    yield
    drained = hooks.drain(10)  # before the override goes: a hook may start runs
    api._override.clear()
    assert drained, "a task hook queued by this test was still running after 10 s"


@pytest.fixture
def redis():
    from distributed_tasks.connection import get_redis

    return get_redis()


@pytest.fixture
def poll():
    return poll_until


@pytest.fixture
def leader():
    """A leader as health sees it: the lease (long TTL, nobody renews it), Redis resynced."""
    from distributed_tasks import keys
    from distributed_tasks.connection import get_redis
    from distributed_tasks.lease import Lease

    lease = Lease("beat@test", ttl=30)
    assert lease.try_acquire()
    get_redis().set(keys.intact_key(), lease.holder)  # as its first resync does
    yield lease
    lease.release()


@pytest.fixture
def dead_node(redis):
    """Name a node whose heartbeat stopped long ago: still a member, with a stale score."""
    from distributed_tasks import keys

    def make(name: str = "gone@test") -> str:
        seconds, micros = redis.time()
        redis.zadd(keys.members_key(), {name: seconds * 1000 + micros // 1000 - 600_000})
        return name

    return make


def _heartbeating(**info):
    """A node that heartbeats from a thread of this process (and leaves at the end)."""
    from distributed_tasks.nodes import Heartbeat, NodeInfo

    beat = Heartbeat(NodeInfo(**info))
    beat.start()
    poll_until(lambda: beat.beats > 0, message="first heartbeat")
    yield beat.info
    beat.stop(leave=True)


@pytest.fixture
def node():
    """A live node that heartbeats but consumes nothing: runs placed on it stay QUEUED."""
    yield from _heartbeating(name="idle@test")


@pytest.fixture
def heavy():
    """A second live node, of weight 3, serving task list "ci" only."""
    yield from _heartbeating(name="heavy@test", weight=3, task_lists=("ci",))


@pytest.fixture(scope="module")
def cluster_factory(django_db_setup, tmp_path_factory, request):
    from distributed_tasks.connection import get_redis

    get_redis().flushdb()
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), settings.DATABASES["default"]["NAME"])
    yield cluster
    cluster.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and "cluster_factory" in getattr(item, "funcargs", {}):
        cluster = item.funcargs["cluster_factory"]
        report.sections.append(("cluster logs", cluster.all_logs()))
        if call.when == "call":  # the processes still run: what each was doing
            report.sections.append(("cluster stacks", cluster.stacks()))
    return report
