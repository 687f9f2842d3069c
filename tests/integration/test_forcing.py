"""The node's forced-cancel watcher, one poll at a time, on real Redis and PostgreSQL."""

import os
import time
from types import SimpleNamespace

import pytest

from distributed_tasks import forcing, keys
from distributed_tasks.celery import header_limits
from distributed_tasks.store import get_store
from tests.integration.test_runner import queue

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


def test_the_watcher_acts_only_on_a_request_its_row_vouches_for():
    """Its check of the request against the row once raised (a changed signature) and
    was swallowed: no forced cancel was carried out at all. A genuine request running
    in this very process is reported as unforceable; a copy sent with a time limit of
    its own is not acted on."""
    msg = queue("tests.tasks.add", [1, 2], node="w@test")
    assert get_store().mark_running(msg, "incarnation")
    watcher = forcing.Watcher("w@test", "incarnation")

    def request(limits):
        return SimpleNamespace(
            worker_pid=os.getpid(), args=[msg.to_body()], id=msg.task_id, sent_limits=limits
        )

    watcher.kill(request((0.001, None)))
    assert watcher.unforceable == set()
    watcher.kill(request(header_limits(None)))
    assert watcher.unforceable == {msg.task_id}
