"""The testing doubles on their own: scripting, assertions, installation (the inline
client's execution: ``test_inline``).

What the doubles share with the real client is pinned by tests/contract; these
tests cover what only a double offers. None of them touches the database (no
``django_db`` mark), and ``test_the_doubles_need_no_services`` points Redis at a
closed port to show they need no Redis either.
"""

from __future__ import annotations

from unittest.mock import ANY

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import override_settings

from distributed_tasks import (
    AlreadyRunning,
    ClusterUnavailable,
    InvalidOption,
    NameReserved,
    NotRegistered,
    NotSerializable,
    State,
    TaskStatus,
    aget_status,
    api,
    astart_async,
    cancel,
    get_status,
    start_async,
)
from distributed_tasks.testing import (
    FakeClient,
    InlineClient,
    InvalidScript,
    fake_tasks,
    inline_tasks,
)
from tests.unit.double_tasks import CALLS, boom, double, remember


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()
    yield
    CALLS.clear()


def test_installs_nest_and_restore_what_was_there():
    before = list(api._override)
    with fake_tasks() as fake:
        assert api.get_client() is fake
        with inline_tasks() as inline:
            assert api.get_client() is inline
        assert api.get_client() is fake
    assert api._override == before


def test_the_plugin_fixture_puts_its_client_behind_the_api(dt_fake):
    assert isinstance(dt_fake, FakeClient) and api.get_client() is dt_fake


def test_the_backend_setting_can_name_a_double():
    conf = {**settings.DISTRIBUTED_TASKS, "BACKEND": "distributed_tasks.testing.InlineClient"}
    with override_settings(DISTRIBUTED_TASKS=conf):
        assert isinstance(api.get_client(), InlineClient)
        assert get_status(start_async(double, [4]).name).result == 8


def test_the_module_api_and_its_async_twins_record_on_the_fake(dt_fake):
    handle = start_async(double, [2], name="d", callback=remember, timeout=5)
    start = dt_fake.assert_started(double, name="d", args=(2,), callback=remember)
    assert (start.run_id, start.callback, start.options["timeout"]) == (
        handle.run_id,
        "tests.unit.double_tasks.remember",
        5,
    )
    async_to_sync(astart_async)(double, [3], name="a")
    assert async_to_sync(aget_status)("a").state == State.QUEUED
    assert get_status("d").state == State.QUEUED and CALLS == []  # the fake runs nothing


def test_assert_started_matches_the_given_criteria_only(dt_fake):
    start_async(double, [1], name="one")
    start_async(double, [2], callback="tests.unit.double_tasks.remember")
    assert dt_fake.assert_started("tests.unit.double_tasks.double", args=[1]).name == "one"
    assert dt_fake.assert_started(double, name=ANY, times=2)
    assert dt_fake.assert_started(callback=remember).args == [2]
    assert len(dt_fake.starts_of(double, callback=None)) == 1
    dt_fake.assert_not_started(boom)
    with pytest.raises(AssertionError, match=r"of tests.unit.double_tasks.double\(args=\[3\]\)"):
        dt_fake.assert_started(double, args=[3])
    with pytest.raises(AssertionError, match=r"Recorded starts:\n  .*double\(name='one'"):
        dt_fake.assert_not_started(double, args=[1])
    with pytest.raises(AssertionError, match="Expected 3 start"):
        dt_fake.assert_started(double, times=3)


def test_assertions_refuse_criteria_a_start_does_not_have(dt_fake):
    with pytest.raises(AssertionError, match="No start was recorded"):
        dt_fake.assert_started(double)
    with pytest.raises(InvalidOption, match="Did you mean 'name'"):
        dt_fake.assert_started(double, nmae="x")
    with pytest.raises(NotRegistered):
        dt_fake.assert_started("os.system")


def test_set_status_scripts_a_name_and_keeps_its_rules(dt_fake):
    assert dt_fake.set_status("r", State.RUNNING).state == State.RUNNING
    with pytest.raises(AlreadyRunning, match="already RUNNING"):
        start_async(double, [1], name="r")
    done = dt_fake.set_status("r", "DONE", result={"artefact": [1, 2]})
    assert get_status("r") == done and done.result == {"artefact": [1, 2]}
    with pytest.raises(NameReserved):
        start_async(double, [1], name="r", reuse="allow_failed_only")
    assert start_async(double, [1], name="r").run_id != done.run_id
    assert dt_fake.set_status("r", State.NOT_FOUND).state == State.NOT_FOUND
    assert get_status("r").state == State.NOT_FOUND


def test_set_status_failed_carries_the_error_and_refuses_non_json(dt_fake):
    failed = dt_fake.set_status("f", State.FAILED, error="no compiler", error_type="ValueError")
    assert (failed.error, failed.error_type, failed.reason) == (
        "no compiler",
        "ValueError",
        "exception",
    )
    with pytest.raises(NotSerializable, match="not JSON"):
        dt_fake.set_status("f", State.DONE, result={1, 2})


def test_script_status_answers_every_read_like_a_mox_expectation(dt_fake):
    dt_fake.set_status("known", State.DONE, result=1)
    dt_fake.script_status(lambda name, task_list: State.RUNNING if name != "known" else None)
    assert get_status("anything").state == State.RUNNING
    assert get_status("known").result == 1  # None falls through to the recorded runs
    dt_fake.script_status(lambda name, task_list: TaskStatus(name=name, state=State.FAILED))
    assert get_status("x").state == State.FAILED
    dt_fake.script_status(lambda name, task_list: "bogus")
    with pytest.raises(InvalidScript, match="return a TaskStatus, a State, or None"):
        get_status("x")
    dt_fake.script_status(None)
    assert get_status("x").state == State.NOT_FOUND
    assert dt_fake.status_requests[:2] == [("anything", "default"), ("known", "default")]


def test_refused_starts_validate_first_and_record_nothing(dt_fake):
    dt_fake.refuse_starts()
    with pytest.raises(NotRegistered):
        start_async("os.system", ["true"])
    with pytest.raises(ClusterUnavailable, match="accept_starts"):
        start_async(double, [1], name="x")
    dt_fake.refuse_starts(RuntimeError("broker down"))
    with pytest.raises(RuntimeError, match="broker down"):
        start_async(double, [1], name="x")
    assert dt_fake.starts == [] and get_status("x").state == State.NOT_FOUND
    dt_fake.accept_starts()
    assert start_async(double, [1], name="x").name == "x"


def test_drain_runs_the_queued_runs_as_a_worker_would(dt_fake):
    start_async(double, [21], name="a", callback=remember)
    start_async(double, [1], name="cancelled")
    cancel("cancelled")
    dt_fake.set_status("scripted", State.QUEUED)
    assert [(s.name, s.state, s.result) for s in dt_fake.drain()] == [("a", State.DONE, 42)]
    assert CALLS == [("a", 42)]
    assert get_status("cancelled").reason == "cancelled"
    assert get_status("scripted").state == State.QUEUED  # nothing to run: it was scripted
    assert dt_fake.drain() == []


@pytest.mark.parametrize("install", [fake_tasks, inline_tasks])
def test_finished_names_expire_after_cleanup_timeout(install):
    with install() as client:
        start_async(double, [1], name="e")
        if get_status("e").is_active:  # the fake's run stays queued until cancelled
            cancel("e")
        assert get_status("e").is_finished
        with pytest.raises(NameReserved):
            start_async(double, [1], name="e", reuse="reject")
        client.advance(59)
        assert get_status("e").is_finished
        client.advance(2)
        assert get_status("e").state == State.NOT_FOUND
        assert start_async(double, [1], name="e", reuse="reject").name == "e"


@pytest.mark.parametrize("install", [fake_tasks, inline_tasks])
def test_cancel_reads_the_history_and_checks_grace_like_the_real_client(install):
    """Past CLEANUP_TIMEOUT the status is gone but the run is not: NotCancellable (409),
    not TaskNotFound (404), as the database answers in production."""
    from distributed_tasks import NotCancellable

    with install() as client:
        start_async(double, [1], name="old")
        if get_status("old").is_active:
            cancel("old")
        client.advance(3600)
        assert get_status("old").state == State.NOT_FOUND
        with pytest.raises(NotCancellable):
            cancel("old")
        with pytest.raises(InvalidOption, match="grace"):
            cancel("old", force=True, grace=-1)


def test_the_fake_retries_a_run_whose_status_expired():
    from distributed_tasks import retry

    with fake_tasks() as fake:
        start_async(double, [1], name="late")
        cancel("late")
        fake.advance(3600)
        assert retry("late").attempt == 2


def test_the_doubles_hand_over_the_values_a_worker_gets_back_from_the_database():
    """Through JSON, as production stores them: a nested key 5 is "5", a tuple a list. A
    test that relied on the originals would pass here and fail in production."""
    with inline_tasks():
        start_async(remember, ["inline", {5: "five", "pair": (1, 2)}])
    assert CALLS == [("inline", {"5": "five", "pair": [1, 2]})]
    with fake_tasks() as fake:
        start_async(remember, ["fake", {5: "five"}], name="f")
        fake.assert_started(remember, args=["fake", {"5": "five"}])
        fake.assert_started(remember, args=("fake", {5: "five"}))  # so does the expectation
        fake.drain()
    assert CALLS[-1] == ("fake", {"5": "five"})


def test_the_doubles_need_no_services():
    conf = {**settings.DISTRIBUTED_TASKS, "REDIS_URL": "redis://127.0.0.1:1/0"}
    with override_settings(DISTRIBUTED_TASKS=conf):
        with inline_tasks():
            assert get_status(start_async(double, [2], name="i").name).result == 4
        with fake_tasks() as fake:
            start_async(double, [2], name="f")
            fake.set_status("g", State.RUNNING)
            assert [s.result for s in fake.drain()] == [4]


def test_the_fake_retries_failed_runs_like_the_real_client():
    from distributed_tasks import AlreadyRunning, InvalidState, State, retry
    from distributed_tasks.testing import fake_tasks

    with fake_tasks() as fake:
        from tests import tasks

        handle = fake.start_async(tasks.add, [1, 2], name="r")
        with pytest.raises(AlreadyRunning):
            retry("r")
        fake.set_status("r", State.FAILED, error="boom")
        assert retry("r").attempt == handle.attempt + 1
        fake.set_status("r", State.DONE, result=3)
        with pytest.raises(InvalidState):
            retry("r")
