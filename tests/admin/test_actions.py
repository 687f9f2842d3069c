"""Cancel, retry and re-run: what they do, what they report, and who may use them."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import OperationalError
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from distributed_tasks import api
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.admin.support import (
    CHANGELIST,
    REDIS_DOWN,
    action_names,
    done,
    failed,
    fetch,
    queued,
    run_action,
    running,
)

pytestmark = pytest.mark.django_db(transaction=True)

ALL_ACTIONS = {"cancel_runs", "force_cancel_runs", "retry_runs", "rerun_runs"}


def history_of(run: TaskRun) -> list[str]:
    return list(
        LogEntry.objects.filter(object_id=str(run.pk)).values_list("change_message", flat=True)
    )


def finished_row(name: str, function: str = "tests.tasks.add") -> TaskRun:
    """A FAILED record whose node is long gone (no live node is needed to make it)."""
    return TaskRun.objects.create(
        name=name, function=function, state="FAILED", node="gone@test", finished_at=timezone.now()
    )


# -- who sees and may use which action -------------------------------------------------


@pytest.mark.parametrize(
    ("permissions", "offered"),
    [
        (("view",), set()),
        (("view", "change"), {"cancel_runs", "retry_runs"}),
        (("view", "add"), {"rerun_runs"}),
        (("view", "change", "add"), ALL_ACTIONS - {"force_cancel_runs"}),
        (("view", "force_cancel"), {"force_cancel_runs"}),
        (("view", "change", "add", "force_cancel"), ALL_ACTIONS),
    ],
)
def test_actions_are_offered_by_permission(staff_client, node, permissions, offered):
    queued("one")
    response = staff_client(*permissions).get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert action_names(response) == offered


def test_a_superuser_has_every_action(admin_client, node):
    queued("one")
    assert action_names(admin_client.get(reverse(CHANGELIST))) == ALL_ACTIONS


REFUSED = [("warning", "No action selected.")]  # Django's answer to an action not offered


@pytest.mark.parametrize(
    ("permissions", "action", "make", "answer"),
    [
        (("view",), "cancel_runs", queued, []),  # no action at all: the POST only lists runs
        (("view", "add"), "cancel_runs", queued, REFUSED),
        (("view", "add"), "retry_runs", failed, REFUSED),
        (("view", "change"), "rerun_runs", failed, REFUSED),
        (("view", "change"), "force_cancel_runs", running, REFUSED),
    ],
)
def test_an_action_without_its_permission_is_refused(
    staff_client, node, permissions, action, make, answer
):
    run = make("guarded")
    before = (run.state, run.attempt, TaskRun.objects.count())
    assert run_action(staff_client(*permissions), action, [run]) == answer
    after = fetch(run)
    assert (after.state, after.attempt, TaskRun.objects.count()) == before
    assert history_of(run) == []


# -- cancel ------------------------------------------------------------------------------


def test_cancel_ends_queued_runs_asks_running_ones_and_skips_finished(staff_client, node):
    first, second = queued("first"), queued("second")
    busy, broken = running("busy"), failed("broken")
    messages = run_action(
        staff_client("view", "change"), "cancel_runs", [first, second, busy, broken]
    )
    assert messages == [("warning", "Cancelled 3 runs. Skipped 1: 1 already finished.")]
    for run in (first, second):
        run = fetch(run)
        assert (run.state, run.reason, run.active_name) == ("FAILED", "cancelled", None)
        assert history_of(run) == ["Cancelled in the admin."]
    busy = fetch(busy)  # asked to stop in the user's name; its node ends it
    assert (busy.state, busy.cancel_requested_by, busy.cancel_deadline) == (
        "RUNNING",
        "operator",
        None,
    )
    assert history_of(busy) == ["Asked to stop in the admin."]
    assert fetch(broken).reason == "exception"


def test_force_cancel_sets_a_deadline_in_the_users_name(staff_client, node):
    busy = running("busy")
    client = staff_client("view", "force_cancel")
    assert run_action(client, "force_cancel_runs", [busy]) == [
        ("success", "Force-cancelled 1 run.")
    ]
    busy = fetch(busy)
    assert (busy.state, busy.cancel_requested_by) == ("RUNNING", "operator")
    assert busy.cancel_deadline > busy.cancel_requested_at
    assert history_of(busy) == ["Asked to stop in the admin (forced)."]


def test_cancel_of_queued_runs_only_is_a_success(admin_client, node):
    run = queued("unwanted")
    assert run_action(admin_client, "cancel_runs", [run]) == [("success", "Cancelled 1 run.")]


def test_cancel_works_while_redis_is_down(admin_client, node):
    """The database decides; the status cache is rebuilt by the orchestrator later."""
    run = queued("unwanted")
    with override_settings(DISTRIBUTED_TASKS=REDIS_DOWN):
        assert run_action(admin_client, "cancel_runs", [run]) == [("success", "Cancelled 1 run.")]
    assert (fetch(run).state, fetch(run).reason) == ("FAILED", "cancelled")


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (RedisConnectionError("Connection refused"), "Redis does not answer (Connection refused)."),
        (OperationalError("server closed the connection"), "The database does not answer ("),
    ],
)
def test_errors_of_the_services_become_error_messages(
    admin_client, node, monkeypatch, error, shown
):
    """Whatever the API lets through from Redis or the database stops the action, never a 500."""
    runs = [failed("first"), failed("second"), failed("third")]

    def unavailable(name, task_list="default"):
        raise error

    monkeypatch.setattr(api, "retry", unavailable)
    ((level, text),) = run_action(admin_client, "retry_runs", runs)
    assert level == "error"
    assert text.startswith(f"Retried 0 runs. Stopped at 'third': {shown}")
    assert text.endswith("2 more not tried.")


# -- retry -------------------------------------------------------------------------------


def test_retry_runs_the_newest_failed_run_again(staff_client, node, redis):
    older = failed("nightly")
    newest = failed("nightly")
    ok = done("fine")
    messages = run_action(staff_client("view", "change"), "retry_runs", [older, newest, ok])
    assert messages == [
        (
            "warning",
            "Retried 1 run. Skipped 2: 1 not FAILED; 1 superseded by a newer run of the same name.",
        )
    ]
    retried = fetch(newest)
    assert (retried.state, retried.attempt, retried.node) == ("QUEUED", 2, node.name)
    assert history_of(newest) == [f"Retried in the admin as attempt 2 on {node.name}."]
    assert (fetch(older).state, fetch(older).attempt) == ("FAILED", 1)
    assert fetch(ok).state == "DONE"


def test_retry_without_a_live_node_stops_with_an_error(admin_client):
    first, second = finished_row("first"), finished_row("second")
    messages = run_action(admin_client, "retry_runs", [first, second])
    ((level, text),) = messages
    assert level == "error"
    assert text.startswith("Retried 0 runs. Stopped at 'second': No live node serves task list")
    assert text.endswith("1 more not tried.")
    assert [(r.state, r.attempt) for r in map(fetch, (first, second))] == [("FAILED", 1)] * 2


# -- re-run ------------------------------------------------------------------------------


def test_rerun_starts_the_same_call_again_under_the_same_name(staff_client, node):
    original = done(
        "compile-7",
        func=tasks.add,
        args=(),
        kwargs={"a": 3, "b": 4},
        task_list="ci",
        callback="tests.tasks.record",
        timeout=30,
    )
    messages = run_action(staff_client("view", "add"), "rerun_runs", [original])
    assert messages == [("success", "Re-ran 1 run.")]
    new = TaskRun.objects.exclude(pk=original.pk).get()
    assert (new.task_list, new.name, new.state, new.node) == (
        "ci",
        "compile-7",
        "QUEUED",
        node.name,
    )
    same = ("function", "args", "kwargs", "callback", "timeout")
    assert [getattr(new, f) for f in same] == [getattr(original, f) for f in same]
    assert history_of(original) == [f"Re-run in the admin as run {new.run_id} on {node.name}."]


def test_rerun_skips_active_names_and_unknown_functions(admin_client, node):
    older, newer = failed("twice"), done("twice")
    busy = queued("busy")
    vanished = finished_row("vanished", function="tests.tasks.vanished")
    messages = run_action(admin_client, "rerun_runs", [older, newer, busy, vanished])
    assert messages == [
        (
            "warning",
            "Re-ran 1 run. Skipped 3: 1 still active; 1 with a function that is not registered; "
            "1 with a run of the same name active.",
        )
    ]
    assert TaskRun.objects.filter(name="twice").count() == 3
    assert TaskRun.objects.get(name="twice", state="QUEUED").args == newer.args


def test_rerun_when_redis_is_down_is_an_error_message(admin_client, node):
    run = failed("again")
    with override_settings(DISTRIBUTED_TASKS=REDIS_DOWN):
        ((level, text),) = run_action(admin_client, "rerun_runs", [run])
    assert level == "error"
    assert text.startswith("Re-ran 0 runs. Stopped at 'again': Redis does not answer (")
    assert TaskRun.objects.filter(name="again").count() == 1


@pytest.mark.parametrize("action", sorted(ALL_ACTIONS))
def test_select_all_over_too_many_runs_is_refused_with_a_message(admin_client, action):
    """ "Select all" over 3,000 runs took 7 s in one request: over the cap, nothing is done."""
    from distributed_tasks.admin.actions import MAX_ACTION_RUNS

    state = "QUEUED" if action == "cancel_runs" else "FAILED"
    TaskRun.objects.bulk_create(
        TaskRun(name=f"bulk-{i}", function="tests.tasks.add", state=state, node="gone@test")
        for i in range(MAX_ACTION_RUNS + 1)
    )
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": action, "index": 0, "select_across": 1, "_selected_action": ["x"]},
    )
    (message,) = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert message[0] == "error"
    assert f"{MAX_ACTION_RUNS + 1} runs are selected" in message[1]
    assert "nothing was done. Narrow the list with its filters" in message[1]
    assert TaskRun.objects.filter(state=state).count() == MAX_ACTION_RUNS + 1
    assert not LogEntry.objects.exists()
