"""report_progress() and cancel_requested() in a run executed in this process."""

import logging

import pytest
from django.db import connection
from django.utils import timezone
from redis.exceptions import SlotNotCoveredError

from distributed_tasks import (
    State,
    aside,
    cancel,
    cancel_requested,
    claims,
    get_status,
    keys,
    mirror,
    progress,
    report_progress,
    runner,
    start_async,
)
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store, message_for
from tests import tasks
from tests.support import poll_until, progress_of

pytestmark = pytest.mark.django_db(transaction=True)


def execute(name: str):
    return runner.execute(message_for(TaskRun.objects.get(name=name, active_name=name)).to_body())


def test_writes_are_throttled_and_the_last_report_stays_with_the_finished_run(node, monkeypatch):
    writes = {"redis": 0, "row": 0}
    set_redis, set_row = claims.set_if_attempt, type(get_store()).set_progress

    def count_redis(*args, **kwargs):
        writes["redis"] += 1
        return set_redis(*args, **kwargs)

    def count_row(self, *args, **kwargs):
        writes["row"] += 1
        return set_row(self, *args, **kwargs)

    monkeypatch.setattr(claims, "set_if_attempt", count_redis)
    monkeypatch.setattr(type(get_store()), "set_progress", count_row)
    handle = start_async(tasks.report_many, [5000], name="many")
    started = timezone.now()
    assert execute("many").state == State.DONE
    took = (timezone.now() - started).total_seconds()
    assert writes["redis"] <= 2 + took / progress.REDIS_INTERVAL
    assert writes["row"] <= 2 + took / progress.ROW_INTERVAL
    row = TaskRun.objects.get(id=handle.run_id)
    assert progress_of(get_status("many")) == progress_of(row) == (1.0, "item 5000", {"done": 5000})


def test_a_stale_attempts_progress_is_dropped(node, redis):
    handle = start_async(tasks.add, [1, 2], name="moved")
    old = message_for(TaskRun.objects.get(id=handle.run_id))
    assert get_store().mark_running(old, "incarnation")
    mirror.publish(old, claims.message_fields(old, State.RUNNING))
    # The attempt moves on (its node was declared lost, say): attempt 2 holds the run.
    assert get_store().requeue(old, node=old.node, run_after=timezone.now())
    new = old.for_attempt(2, old.node)
    mirror.publish(new, claims.message_fields(new, State.QUEUED))
    with progress.running(old):
        report_progress(0.9, "from the past", late=True)
    row = TaskRun.objects.get(id=handle.run_id)
    assert (row.attempt, row.progress, row.progress_message) == (2, None, "")
    cached = claims.read("default", "moved")
    assert (cached["attempt"], "progress" in cached) == ("2", False)


def test_outside_a_run_nothing_happens_and_bad_values_never_fail_the_run(node, caplog):
    report_progress(0.5, "nowhere")  # no run: nothing to do, nothing raised
    assert cancel_requested() is False
    start_async(tasks.report_badly, name="badly")
    with caplog.at_level(logging.WARNING, logger="distributed_tasks.progress"):
        outcome = execute("badly")
    assert (outcome.state, outcome.result) == (State.DONE, "fine")
    # 2.0 is taken as done; the data last given (not JSON) leaves what was written before
    assert progress_of(get_status("badly")) == (1.0, "ok so far", None)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "fraction 'lots' is not a number" in warning


def test_values_whose_conversions_raise_never_fail_the_run(node, caplog):
    start_async(tasks.report_hostile, name="hostile")
    with caplog.at_level(logging.WARNING, logger="distributed_tasks.progress"):
        outcome = execute("hostile")
    assert (outcome.state, outcome.result) == (State.DONE, "fine")
    assert progress_of(get_status("hostile")) == (None, None, None)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "fraction <unprintable Hostile> is not a number" in warning


def test_a_run_that_saw_the_request_ends_cancelled_and_is_not_retried(node, redis):
    handle = start_async(tasks.SelfCancelled, ["me"], name="self", max_attempts=3)
    outcome = execute("self")
    assert (outcome.state, outcome.reason) == (State.FAILED, "cancelled")
    assert "cancelled while running (asked by me at " in outcome.error
    row = TaskRun.objects.get(id=handle.run_id)
    assert (row.state, row.executions, row.attempt, row.attempts) == ("FAILED", 1, 1, [])
    assert row.cancel_requested_by == "me"
    (failure,) = redis.lrange("self:failure", 0, -1)
    assert failure.decode().startswith("Cancelled: cancelled while running (asked by me")
    status = get_status("self")
    assert (status.cancel_requested_by, status.reason) == ("me", "cancelled")
    assert redis.hget(keys.run_key("default", "self"), "cancel_requested_by") == b"me"


def test_a_run_reads_its_row_when_redis_lost_the_request(node, redis):
    handle = start_async(tasks.add, [1, 2], name="flushed")
    msg = message_for(TaskRun.objects.get(id=handle.run_id))
    assert get_store().mark_running(msg, "incarnation")
    mirror.publish(msg, claims.message_fields(msg, State.RUNNING))
    with progress.running(msg):
        assert cancel_requested() is False
        cancel("flushed", by="dana")
        redis.delete(keys.run_key("default", "flushed"))  # a flush: only the row has it
        poll_until(cancel_requested, timeout=1, message="the request, from the row")
        assert progress.scope().cancel.by == "dana"


def test_redis_cluster_errors_while_a_run_reports_and_ends_never_fail_it(node, monkeypatch):
    """redis-py's cluster client raises some errors (a slot that no node covers while it
    re-reads the cluster's layout) as RedisClusterException, which is not a RedisError:
    a progress report and the outcome's cache write only log them."""
    start_async(tasks.report_many, [50], name="uncovered")
    calls = []

    def uncovered(*args, **kwargs):
        calls.append(args)
        raise SlotNotCoveredError('Slot "42" is not covered by the cluster.')

    monkeypatch.setattr(claims, "set_if_attempt", uncovered)  # the progress report's write
    monkeypatch.setattr(mirror, "get_redis", uncovered)  # the outcome's
    assert execute("uncovered").state == State.DONE
    row = TaskRun.objects.get(name="uncovered")
    assert (row.state, row.result, row.progress) == (State.DONE, 50, 1.0)
    assert len(calls) >= 2


def test_progress_inside_the_tasks_own_transaction_is_written_outside_it(node, monkeypatch):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite's transactions hold the whole database: progress joins them")
    monkeypatch.setattr(progress, "ROW_INTERVAL", 0.0)
    start_async(tasks.progress_in_transaction, ["inside"], name="inside")
    assert execute("inside").state == State.DONE
    assert TaskRun.objects.get(name="inside").result == [[0.5, "inside"]]


def test_progress_behind_a_lock_the_tasks_transaction_holds_is_dropped_not_awaited(
    node, monkeypatch
):
    monkeypatch.setattr(progress, "ROW_INTERVAL", 0.0)
    monkeypatch.setattr(aside, "LOCK_WAIT", 1)
    start_async(tasks.cancel_self_in_transaction, ["locked"], name="locked")
    assert execute("locked").state == State.DONE
    row = TaskRun.objects.get(name="locked")
    assert (row.result, row.cancel_requested_by) == ("not stuck", "itself")
