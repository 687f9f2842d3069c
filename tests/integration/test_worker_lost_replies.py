"""A worker's write that committed though its reply was lost (the connection dropped
after the commit) is recognised on the next try by the time that try stamped on it.

Here: a retry (``next_attempt`` from the worker) and a lost run's outcome
(``mark_lost``, the node's main process). The start and the plain outcome are in
``test_worker_row.py``. Each was called fenced out before: for the retry, its new
attempt waited QUEUED without a message until the resync's orphan pass; for the lost
run, its status never reached Redis and ``run_finished`` was not sent.
"""

import datetime as dt
import time
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone

from distributed_tasks import State, attempts, claims, lost, resilience, runner, signals, store
from distributed_tasks.conf import reset_caches
from distributed_tasks.health import queue_depths
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store
from distributed_tasks.types import ACTIVE_STATES, Outcome, Reason
from tests.integration.test_runner import queue, row

# Outside a transaction, as in a pool process: each write commits by itself.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_waits(monkeypatch):
    """The backoff between tries, without its waits."""
    monkeypatch.setattr(
        resilience, "time", SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: None)
    )


def reply_lost_once(monkeypatch, method: str) -> list[dict]:
    """``OrmStore.<method>`` whose first call commits and then loses its reply; the
    keyword arguments of each call, in order."""
    original, calls = getattr(store.OrmStore, method), []

    def write(self, *args, **kwargs):
        calls.append(kwargs)
        done = original(self, *args, **kwargs)
        if len(calls) == 1:
            assert done  # committed...
            raise OperationalError("server closed the connection unexpectedly")  # ...unseen
        return done

    monkeypatch.setattr(store.OrmStore, method, write)
    return calls


@pytest.fixture
def signals_sent():
    """The messages ``run_retried`` and ``run_finished`` are sent with during the test."""
    seen: dict[str, list] = {"retried": [], "finished": []}

    def retried(sender, message, **kwargs):
        seen["retried"].append(message)

    def finished(sender, message, **kwargs):
        seen["finished"].append(message)

    signals.run_retried.connect(retried, weak=False)
    signals.run_finished.connect(finished, weak=False)
    yield seen
    signals.run_retried.disconnect(retried)
    signals.run_finished.disconnect(finished)


def test_a_retry_queued_though_its_reply_was_lost_gets_its_message(monkeypatch, node, signals_sent):
    msg = queue("tests.tasks.fail", ["once"], name="retry-reply-lost", node=node.name)
    TaskRun.objects.filter(id=msg.run_id).update(max_attempts=2)
    calls = reply_lost_once(monkeypatch, "requeue")
    outcome = runner.execute(msg.to_body())
    assert (outcome.state, outcome.reason) == (State.FAILED, Reason.EXCEPTION)
    run = row(msg)
    assert (run.state, run.attempt, run.executions) == (State.QUEUED, 2, 1)
    assert run.attempts[-1]["ended_at"] == calls[0]["ended_at"].isoformat()
    assert queue_depths([node.name]) == {node.name: 1}  # its message, not left for resync
    assert claims.read("default", "retry-reply-lost")["attempt"] == "2"
    assert [m.attempt for m in signals_sent["retried"]] == [2]
    assert signals_sent["finished"] == []


def test_a_lost_runs_outcome_stored_though_its_reply_was_lost_is_published(
    monkeypatch, signals_sent
):
    msg = queue("tests.tasks.add", [1, 2], name="lost-reply-lost")
    assert get_store().mark_running(msg, "") is not None
    calls = reply_lost_once(monkeypatch, "mark_lost")
    lost.record_lost([msg.to_body()], lost.LostBy.CRASH)
    assert claims.read("default", "lost-reply-lost").get("state") == "FAILED"
    assert [m.attempt for m in signals_sent["finished"]] == [1]
    assert len(calls) == 2 and calls[0]["finished_at"] < calls[1]["finished_at"]
    run = row(msg)
    assert (run.state, run.reason) == (State.FAILED, Reason.WORKER_LOST)
    assert run.finished_at == calls[0]["finished_at"]


def test_a_retry_ended_by_another_write_is_not_taken_for_ours():
    msg = queue("tests.tasks.fail", ["x"])
    ours = timezone.now()
    theirs = ours + dt.timedelta(microseconds=1)
    assert get_store().requeue(msg, node=msg.node, run_after=timezone.now(), ended_at=theirs)
    assert get_store().requeued_by(msg, [ours]) is None
    assert attempts.requeued_by(msg, [ours], Outcome.failed(Reason.EXCEPTION)) is None
    assert get_store().requeued_by(msg, [theirs]).attempt == 2
    # Only the attempt it ended, on its node: not a later retry's entry.
    later = msg.for_attempt(2, msg.node)
    assert get_store().requeued_by(later, [theirs]) is None


def test_a_retry_moved_on_since_is_told_but_not_announced_again(node, signals_sent):
    """Our retry committed, then the run moved on (its new node was lost) before the
    reply was recognised: run_retried still tells of attempt 2 on its own node, and no
    message or status of attempt 2 goes out over the newer attempt's."""
    msg = queue("tests.tasks.fail", ["x"], node=node.name)
    assert get_store().mark_running(msg, "") is not None
    ours = timezone.now()
    assert get_store().requeue(msg, node="gone@h", run_after=ours, ended_at=ours)
    assert get_store().requeue(msg.for_attempt(2, "gone@h"), node=node.name, run_after=ours)
    new = attempts.requeued_by(msg, [ours], Outcome.failed(Reason.EXCEPTION))
    assert (new.attempt, new.node) == (2, "gone@h")
    assert [(m.attempt, m.node) for m in signals_sent["retried"]] == [(2, "gone@h")]
    assert queue_depths([node.name, "gone@h"]) == {node.name: 0, "gone@h": 0}
    assert claims.read("default", msg.name).get("attempt") != "2"


class StoreOfAnEarlierRelease(store.OrmStore):
    """A ``STORE`` whose ``requeue`` and ``mark_lost`` predate their stamps."""

    def requeue(
        self, msg, *, node, run_after, from_states=ACTIVE_STATES, only_if_attempts_left=False,
        error=None, epoch=None,
    ):  # fmt: skip
        return super().requeue(
            msg, node=node, run_after=run_after, from_states=from_states,
            only_if_attempts_left=only_if_attempts_left, error=error, epoch=epoch,
        )  # fmt: skip

    def mark_lost(self, msg, outcome, *, epoch=None, from_states=ACTIVE_STATES):
        return super().mark_lost(msg, outcome, epoch=epoch, from_states=from_states)


def test_a_store_written_before_the_stamps_still_retries_and_ends_lost_runs(node):
    conf = {**settings.DISTRIBUTED_TASKS, "STORE": f"{__name__}.StoreOfAnEarlierRelease"}
    with override_settings(DISTRIBUTED_TASKS=conf):
        reset_caches()
        try:
            assert isinstance(get_store(), StoreOfAnEarlierRelease)
            retried = queue("tests.tasks.fail", ["once"], node=node.name)
            TaskRun.objects.filter(id=retried.run_id).update(max_attempts=2)
            runner.execute(retried.to_body())
            died = queue("tests.tasks.add", [1, 2], node=node.name)
            assert get_store().mark_running(died, "") is not None
            lost.record_lost([died.to_body()], lost.LostBy.CRASH)
        finally:
            reset_caches()
    assert (row(retried).state, row(retried).attempt) == (State.QUEUED, 2)
    assert (row(died).state, row(died).reason) == (State.FAILED, Reason.WORKER_LOST)


def test_a_clients_retry_after_a_lost_outcome_reply_is_not_taken_for_the_workers(
    monkeypatch, node, signals_sent
):
    """``retry()`` ends the attempt in the history at its row's ``finished_at``: the time
    the worker's outcome write stamped. It is not the worker's own retry to announce."""
    msg = queue("tests.tasks.fail", ["x"], node=node.name)
    original = store.OrmStore.mark_finished

    def reply_lost_after_a_retry(self, msg, outcome, **stamp):
        if not original(self, msg, outcome, **stamp):
            return False
        assert get_store().reactivate(row(msg), node=node.name)  # a client's retry()
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(store.OrmStore, "mark_finished", reply_lost_after_a_retry)
    runner.execute(msg.to_body())
    assert (row(msg).state, row(msg).attempt) == (State.QUEUED, 2)
    assert signals_sent["retried"] == []
    assert queue_depths([node.name]) == {node.name: 0}  # the client publishes its own
