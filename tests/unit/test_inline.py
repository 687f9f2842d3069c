"""The inline client: each start runs at once, in-process, through the worker's own guard.

Like ``test_testing``, none of these touches the database or Redis.
"""

from __future__ import annotations

import pytest

from distributed_tasks import State, get_status, signals, start_async
from tests.unit.double_tasks import (
    CALLS,
    Hooks,
    boom,
    double,
    explode,
    flaky,
    leave,
    not_json,
    pair,
    remember,
    restart_self,
)


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()
    yield
    CALLS.clear()


def test_inline_runs_the_function_and_its_callback(dt_inline):
    handle = start_async(double, [21], name="x", callback=remember)
    status = get_status("x")
    assert (status.state, status.result, status.run_id, status.node) == (
        State.DONE,
        42,
        handle.run_id,
        "inline@testing",
    )
    assert status.queued_at <= status.started_at <= status.finished_at
    assert CALLS == [("x", 42)]
    dt_inline.assert_started(double, name="x", args=[21])


def test_inline_failures_report_failed_and_free_the_name(dt_inline):
    start_async(boom, ["no compiler"], name="b")
    status = get_status("b")
    assert (status.state, status.error_type, status.error, status.reason) == (
        State.FAILED,
        "ValueError",
        "no compiler",
        "exception",
    )
    assert "raise ValueError(message)" in dt_inline.runs("b")[-1].traceback
    start_async(double, [1], name="c", callback=explode)
    assert (get_status("c").reason, get_status("c").error) == ("callback", "cannot store c")
    start_async(not_json, name="j")
    assert get_status("j").error_type == "distributed_tasks.exceptions.NotSerializable"
    assert start_async(boom, ["again"], name="b").name == "b"


def test_inline_retries_a_failure_while_max_attempts_allows(dt_inline):
    start_async(flaky, [1], name="twice", max_attempts=2)
    status = get_status("twice")
    assert (status.state, status.result, status.attempt) == (State.DONE, 2, 2)
    CALLS.clear()
    start_async(flaky, [5], name="gives-up", max_attempts=3)
    status = get_status("gives-up")
    assert (status.state, status.error, status.attempt) == (
        State.FAILED,
        "execution 3 failed",
        3,
    )


def test_inline_results_come_back_through_json(dt_inline):
    assert get_status(start_async(pair).name).result == [1, 2]


def test_inline_calls_the_class_hooks(dt_inline):
    start_async(Hooks, ["ok"], name="h1")
    start_async(Hooks, ["raise"], name="h2")
    assert CALLS == [("success", "h1", "ok"), ("failure", "h2", "KeyError")]
    assert (get_status("h1").state, get_status("h2").error_type) == (State.DONE, "KeyError")


def test_an_inline_run_holds_its_name_while_it_runs(dt_inline):
    start_async(restart_self, ["me"], name="me")
    assert get_status("me").result == "refused while RUNNING"


def test_an_interrupt_still_ends_the_inline_run(dt_inline):
    with pytest.raises(SystemExit):
        start_async(leave, name="gone")
    assert (get_status("gone").state, get_status("gone").error_type) == (
        State.FAILED,
        "SystemExit",
    )


def test_inline_sends_the_run_signals(dt_inline):
    seen = []

    def queued(sender, handle, **kwargs):
        seen.append(("queued", handle.name))

    def started(sender, message, **kwargs):
        seen.append(("started", message.name))

    def finished(sender, message, outcome, **kwargs):
        seen.append(("finished", message.name, outcome.state))

    for signal, receiver in [
        (signals.run_queued, queued),
        (signals.run_started, started),
        (signals.run_finished, finished),
    ]:
        signal.connect(receiver, weak=False)
    try:
        start_async(double, [1], name="s")
    finally:
        signals.run_queued.disconnect(queued)
        signals.run_started.disconnect(started)
        signals.run_finished.disconnect(finished)
    assert seen == [("queued", "s"), ("started", "s"), ("finished", "s", State.DONE)]
