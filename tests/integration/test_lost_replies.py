"""A publish whose reply was lost: the message reached the broker and a worker already
started the run, yet the client saw an error (a socket timeout after the LPUSH; a kombu
batch reports none sent). Undoing that start would delete a RUNNING row and free its
name while it executes; the start counts as sent instead (review item 1). Likewise a
claim whose reply was lost is taken back (review item 4).
"""

import contextlib

import pytest
from django.db import transaction
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from distributed_tasks import (
    AlreadyRunning,
    ClusterUnavailable,
    celery,
    database_first,
    keys,
    lifecycle,
    mirror,
    scripts,
    signals,
    start_async,
    start_many,
)
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason, State
from tests import tasks
from tests.support import queued

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reply_lost(monkeypatch):
    """Publish for real; in a batch naming a run of ``started``, the node starts those
    runs and the publish fails."""
    real, started = celery.publish, set()

    def publish(messages):
        messages = list(messages)
        real(messages)
        if not any(msg.name in started for msg, _countdown in messages):
            return
        for msg, _countdown in messages:
            if msg.name in started:
                assert get_store().mark_running(msg, "inc") is not None
        try:
            raise RedisTimeout("Timeout reading from socket")
        except RedisTimeout as exc:
            raise celery.PublishFailed(0) from exc

    monkeypatch.setattr(celery, "publish", publish)
    queue = database_first.queue

    def queue_then_lose_the_reply(redis, s):  # a single start: one Redis call after the row
        queue(redis, s)
        if s.message.name in started:
            assert get_store().mark_running(s.message, "inc") is not None
            raise RedisTimeout("Timeout reading from socket")

    monkeypatch.setattr(database_first, "queue", queue_then_lose_the_reply)
    return started


def test_a_start_the_worker_already_began_is_answered_not_undone(node, redis, reply_lost):
    reply_lost.update({"dup", "b-started"})
    queued_handles = []
    signals.run_queued.connect(
        lambda handle, **kw: queued_handles.append(handle), weak=False, dispatch_uid="t"
    )
    try:
        handle = start_async(tasks.add, [1, 2], name="dup")
    finally:
        signals.run_queued.disconnect(dispatch_uid="t")
    assert queued_handles == [handle]  # it was recorded and published: run_queued says so
    row = TaskRun.objects.get(name="dup")
    assert (row.run_id, row.state) == (handle.run_id, State.RUNNING)
    assert redis.hget(keys.run_key("default", "dup"), "run_id").decode() == handle.run_id
    with pytest.raises(AlreadyRunning):  # no second run of the name beside it
        start_async(tasks.add, [1, 2], name="dup")
    # In a batch, the entries no worker started are undone; the started one stays.
    with pytest.raises(ClusterUnavailable) as raised:
        start_many([{"func": tasks.add, "name": n} for n in ("b-started", "b-queued")])
    assert [h.name for h in raised.value.started] == ["b-started"]
    assert "'b-started' (run " in str(raised.value) and "will run" in str(raised.value)
    assert list(TaskRun.objects.filter(name__startswith="b-").values_list("name", "state")) == [
        ("b-started", State.RUNNING)
    ]
    assert redis.exists(keys.run_key("default", "b-started"))
    assert not redis.exists(keys.run_key("default", "b-queued"))


def test_a_retry_the_worker_already_began_is_answered_not_ended(node, redis, reply_lost):
    handle = start_async(tasks.add, [1, 2], name="again")
    msg = message_for(TaskRun.objects.get(id=handle.run_id))
    assert get_store().mark_running(msg, "inc") is not None
    failed = Outcome.failed(Reason.EXCEPTION, message="boom")
    assert get_store().mark_finished(msg, failed)
    mirror.publish_outcome(msg, failed)
    reply_lost.add("again")
    retried = lifecycle.retry("again")
    row = TaskRun.objects.get(id=handle.run_id)
    assert (retried.attempt, row.attempt, row.state) == (2, 2, State.RUNNING)
    assert redis.hget(keys.run_key("default", "again"), "run_id").decode() == handle.run_id


@pytest.mark.parametrize("how", ["script", "pipeline"])
def test_a_claim_whose_reply_was_lost_is_taken_back(node, redis, monkeypatch, how):
    """The claim ran in Redis, its reply did not come back (review item 4): a single
    start's claim script on one server, or the pipeline of a batch (or a cluster)."""
    lost = []

    def lose_first_reply(real):
        def call(self, *args, **kwargs):
            replies = real(self, *args, **kwargs)
            if not lost:
                lost.append(replies)
                raise RedisConnectionError("Connection closed by server")
            return replies

        return call

    if how == "script":
        target = scripts.RegisteredScript
        monkeypatch.setattr(target, "__call__", lose_first_reply(target.__call__))
        names = ["leak"]
    else:  # a batch of several claims through a pipeline
        monkeypatch.setattr(Pipeline, "execute", lose_first_reply(Pipeline.execute))
        names = ["leak", "leak-2"]
    with pytest.raises(ClusterUnavailable, match="Redis does not answer"):
        if how == "script":
            start_async(tasks.add, [1, 2], name="leak")
        else:
            start_many([{"func": tasks.add, "args": [1, 2], "name": n} for n in names])
    assert lost, "the claim ran"
    for name in names:
        assert not redis.exists(keys.run_key("default", name))
    assert int(redis.hget(keys.loads_key(), node.name) or 0) == 0
    for name in names:
        assert start_async(tasks.add, [1, 2], name=name).name == name


@pytest.mark.parametrize("walk", ["database first", "claim first"])
def test_a_script_sent_again_after_its_reply_was_lost_starts_the_run_once(
    node, redis, monkeypatch, walk
):
    """The script ran, its reply was lost, and redis-py sent it again (it retries a command
    after a connection error): the start goes on, counted and pushed once. The claim of a
    start inside a transaction is not refused by itself (which would leave a claim with
    no row holding the name); a single start's status, load and message are not doubled."""
    target = scripts.RegisteredScript
    real = target.__call__

    def twice(self, *args, **kwargs):
        real(self, *args, **kwargs)  # this reply is lost
        return real(self, *args, **kwargs)

    monkeypatch.setattr(target, "__call__", twice)
    with transaction.atomic() if walk == "claim first" else contextlib.nullcontext():
        handle = start_async(tasks.add, [1, 2], name="sent-twice")
    assert TaskRun.objects.get(id=handle.run_id).state == State.QUEUED
    assert redis.hget(keys.run_key("default", "sent-twice"), "run_id").decode() == handle.run_id
    assert int(redis.hget(keys.loads_key(), node.name)) == 1  # counted once
    assert len(queued(redis, node.name)) == 1  # one message


def test_a_row_whose_insert_committed_but_whose_reply_was_lost_is_taken_back(
    node, redis, monkeypatch
):
    """The INSERT committed, then the connection dropped before its reply: the caller is
    told the start failed, so its row must go with its claim (else the orchestrator
    would publish the orphan later and a refused start would run)."""
    from django.db import OperationalError

    store = type(get_store())
    real = store.insert_many

    def committed_then_lost(self, rows):
        real(self, rows)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(store, "insert_many", committed_then_lost)
    with pytest.raises(ClusterUnavailable, match="The database"):
        start_async(tasks.add, [1, 2], name="insert-lost")
    monkeypatch.undo()
    assert not TaskRun.objects.filter(name="insert-lost").exists()
    assert not redis.exists(keys.run_key("default", "insert-lost"))
    assert start_async(tasks.add, [1, 2], name="insert-lost").name == "insert-lost"
