"""A new attempt shows itself only: the earlier attempts' outcomes move to the history."""

import pytest

from distributed_tasks import State, claims, get_status, retry, runner, start_async
from distributed_tasks.models import TaskRun
from distributed_tasks.store import message_for
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)

CLEARED = {"error": "", "error_type": "", "reason": "", "traceback": "", "result": None}


def run_of(name: str) -> TaskRun:
    return TaskRun.objects.get(name=name)


def cleared(run: TaskRun) -> dict:
    return {field: getattr(run, field) for field in CLEARED}


def test_a_retried_run_that_succeeds_reports_done_without_the_first_error(node, redis):
    start_async(tasks.flaky, [f"flaky-{node.name}"], name="flaky", max_attempts=2)
    runner.execute(message_for(run_of("flaky")).to_body())  # attempt 1 raises

    queued = run_of("flaky")
    assert (queued.state, queued.attempt, queued.started_at, cleared(queued)) == (
        State.QUEUED,
        2,
        None,
        CLEARED,
    )
    status = get_status("flaky")
    assert (status.state, status.attempt, status.error, status.reason) == ("QUEUED", 2, None, None)
    assert "error" not in claims.read("default", "flaky")

    runner.execute(message_for(queued).to_body())  # attempt 2 succeeds
    status = get_status("flaky")
    assert (status.state, status.result, status.error, status.error_type, status.reason) == (
        State.DONE,
        "second time lucky",
        None,
        None,
        None,
    )
    (first,) = run_of("flaky").attempts
    assert (first["attempt"], first["node"], first["state"], first["reason"]) == (
        1,
        node.name,
        "FAILED",
        "exception",
    )
    assert (first["error_type"], first["error"]) == ("ConnectionError", "first execution fails")
    assert "ConnectionError" in first["traceback"]
    assert first["started_at"] and first["ended_at"] >= first["started_at"]


def test_retry_of_a_failed_run_keeps_its_outcome_in_the_history_only(node):
    start_async(tasks.fail, ["broken"], name="broken")
    runner.execute(message_for(run_of("broken")).to_body())
    failed = run_of("broken")
    retry("broken")
    again = run_of("broken")
    assert (again.state, again.attempt, again.finished_at, cleared(again)) == (
        State.QUEUED,
        2,
        None,
        CLEARED,
    )
    assert get_status("broken").error is None
    (first,) = again.attempts
    assert (first["state"], first["reason"], first["error"], first["ended_at"]) == (
        "FAILED",
        "exception",
        "broken",
        failed.finished_at.isoformat(),
    )
