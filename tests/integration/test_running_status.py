"""The RUNNING status reaches Redis once a run has lasted RUNNING_STATUS_AFTER (running_status.py).

Runs are executed in this process (``runner.execute``), in a thread when the test has
to look at them while they run.
"""

import threading

import pytest
from django.db import connections
from django.test import override_settings

from distributed_tasks import State, get_status, mirror, runner, start_async
from distributed_tasks.conf import get_settings
from distributed_tasks.models import TaskRun
from distributed_tasks.store import message_for
from tests import tasks
from tests.support import poll_until

pytestmark = pytest.mark.django_db(transaction=True)


def _body(name: str):
    return message_for(TaskRun.objects.get(name=name, active_name=name)).to_body()


@pytest.fixture
def published(monkeypatch):
    """The states written to Redis by ``mirror.publish``, in order."""
    states: list[str] = []
    publish = mirror.publish

    def spy(msg, fields, **kwargs):
        states.append(fields["state"])
        return publish(msg, fields, **kwargs)

    monkeypatch.setattr(mirror, "publish", spy)
    return states


def _settings(after: float):
    return override_settings(DISTRIBUTED_TASKS={**_raw(), "RUNNING_STATUS_AFTER": after})


def _raw():
    from django.conf import settings

    return dict(settings.DISTRIBUTED_TASKS)


def test_a_short_run_goes_from_queued_to_its_outcome_without_a_running_write(node, published):
    assert get_settings().RUNNING_STATUS_AFTER > 0
    start_async(tasks.add, [1, 2], name="short")
    assert runner.execute(_body("short")).state == State.DONE
    assert published == [State.DONE.value]
    assert get_status("short").state == State.DONE
    assert TaskRun.objects.get(name="short").started_at is not None  # the row did say RUNNING


def _in_thread(name: str) -> threading.Thread:
    body = _body(name)

    def run() -> None:
        try:
            runner.execute(body)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_run_that_lasts_shows_running_until_its_outcome(node, redis, published):
    with _settings(2):
        start_async(tasks.wait_for, ["long:go"], name="long")
        thread = _in_thread("long")
        try:
            poll_until(lambda: TaskRun.objects.get(name="long").state == State.RUNNING, timeout=10)
            assert get_status("long").state == State.QUEUED  # not written yet
            status = poll_until(
                lambda: (s := get_status("long")).state == State.RUNNING and s, timeout=10
            )
            assert status.started_at is not None
        finally:
            redis.set("long:go", 1)
            thread.join(10)
    assert published == [State.RUNNING.value, State.DONE.value]
    assert get_status("long").state == State.DONE


def test_zero_writes_running_as_the_run_starts(node, published):
    with _settings(0):
        start_async(tasks.add, [1, 2], name="eager")
        assert runner.execute(_body("eager")).state == State.DONE
    assert published == [State.RUNNING.value, State.DONE.value]


def test_a_progress_report_shows_running_at_once(node, redis, published):
    with _settings(30):
        start_async(tasks.progress_then_wait, ["reported"], name="reporting")
        thread = _in_thread("reporting")
        try:
            poll_until(lambda: redis.llen("reported") == 1, timeout=10)
            status = get_status("reporting")
            assert status.state == State.RUNNING
            assert status.progress == 0.5
        finally:
            redis.set("reported:go", 1)
            thread.join(10)
    assert get_status("reporting").state == State.DONE
    assert published[0] == State.RUNNING.value and published[-1] == State.DONE.value


def test_a_late_running_write_never_replaces_the_outcome(node, published):
    """Many runs that end right at their due time: the last word is always the outcome."""
    with _settings(0.001):
        for i in range(30):
            start_async(tasks.sleep, [0.001], name=f"race-{i}")
            assert runner.execute(_body(f"race-{i}")).state == State.DONE
    assert all(get_status(f"race-{i}").state == State.DONE for i in range(30))


def test_a_late_running_write_never_hides_an_outcome_another_process_recorded(node):
    """A forced cancel (or the leader) ended the attempt while its RUNNING was due."""
    from distributed_tasks import claims
    from distributed_tasks.types import Outcome, Reason

    start_async(tasks.add, [1, 2], name="ended")
    msg = message_for(TaskRun.objects.get(name="ended"))
    mirror.publish_outcome(msg, Outcome.failed(Reason.CANCELLED, message="killed"))
    mirror.publish(msg, claims.message_fields(msg, State.RUNNING), active_only=True)
    assert get_status("ended").state == State.FAILED
