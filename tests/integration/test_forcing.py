"""The node's forced-cancel watcher, one poll at a time, on real Redis and PostgreSQL."""

import time
from types import SimpleNamespace

import pytest

from distributed_tasks import forcing, keys

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_deadline_that_is_not_a_time_is_dropped_and_the_others_still_count(
    redis, monkeypatch, caplog
):
    """Review: one foreign value in the node's cancel hash made every poll raise, so no
    forced cancel of that node was carried out again."""
    running = {"good": SimpleNamespace(worker_pid=None)}  # taken, its pid not known yet
    monkeypatch.setattr(forcing, "_active_requests", lambda: running)
    key = keys.node_cancel_key("w@test")
    redis.hset(key, mapping={"good": time.time() + 60, "bad": "soon", "nan": "nan", "inf": "inf"})
    watcher = forcing.Watcher("w@test", "incarnation")
    watcher.poll()
    assert set(watcher.deadlines) == {"good"}
    assert redis.hkeys(key) == [b"good"]
    assert "deadline 'soon' is not a time" in caplog.text
