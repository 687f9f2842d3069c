"""``POST tasks/cancel/<task_list>/<name>``: a QUEUED run ends, a RUNNING one is asked to
stop in the user's name; permissions, CSRF and bad input answer JSON errors."""

import pytest
from django.test import Client

from distributed_tasks import State, claims, mirror, runner, start_async
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store, message_for
from tests import tasks
from tests.integration.views_support import cancel_url, post_with_csrf

pytestmark = pytest.mark.django_db(transaction=True)


def test_cancel_ends_a_queued_run(login, node):
    handle = start_async(tasks.add, [1, 2], name="unwanted")
    response = post_with_csrf(login("change_taskrun"), cancel_url("unwanted"))
    assert response.status_code == 200
    data = response.json()
    assert (data["state"], data["reason"], data["run_id"]) == ("FAILED", "cancelled", handle.run_id)
    run = TaskRun.objects.get(id=handle.run_id)
    assert (run.state, run.reason, run.active_name) == (State.FAILED, "cancelled", None)


def test_cancel_needs_a_csrf_token(login, node):
    start_async(tasks.add, [1, 2], name="kept")
    response = login("change_taskrun").post(cancel_url("kept"))
    assert (response.status_code, response.json()["error"]) == (403, "csrf_failed")
    assert "X-CSRFToken" in response.json()["detail"]
    assert TaskRun.objects.get(name="kept").state == State.QUEUED


def test_cancel_needs_the_change_permission(login, node):
    start_async(tasks.add, [1, 2], name="kept")
    response = post_with_csrf(login("view_taskrun", staff=True), cancel_url("kept"))
    assert (response.status_code, response.json()["error"]) == (403, "permission_denied")
    assert "distributed_tasks.change_taskrun" in response.json()["detail"]
    assert TaskRun.objects.get(name="kept").state == State.QUEUED


def test_cancel_needs_a_login(node):
    client = Client(enforce_csrf_checks=True)
    response = post_with_csrf(client, cancel_url("x"))
    assert (response.status_code, response.json()["error"]) == (403, "not_authenticated")


def test_cancel_refuses_get(login):
    response = login("change_taskrun").get(cancel_url("x"))
    assert (response.status_code, response["Allow"]) == (405, "POST")


def test_cancel_of_an_unknown_name_is_404(login):
    response = post_with_csrf(login("change_taskrun"), cancel_url("never-ran"))
    assert (response.status_code, response.json()["error"]) == (404, "not_found")


def test_cancel_of_a_bad_name_is_400(login):
    response = post_with_csrf(login("change_taskrun"), cancel_url("x" * 201))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_name")


def started(run: TaskRun) -> None:
    """The run as its worker leaves it once started: RUNNING in the row and in Redis."""
    msg = message_for(run)
    assert get_store().mark_running(msg, "incarnation")
    mirror.publish(msg, claims.message_fields(msg, State.RUNNING))


def test_cancel_of_a_running_run_asks_it_to_stop_in_the_users_name(login, node):
    start_async(tasks.add, [1, 2], name="busy")
    run = TaskRun.objects.get(name="busy")
    started(run)
    response = post_with_csrf(login("change_taskrun"), cancel_url("busy"))
    assert response.status_code == 200
    data = response.json()
    assert (data["state"], data["run_id"]) == ("RUNNING", run.run_id)
    assert data["cancel_requested_by"].startswith("user") and data["cancel_requested_at"]
    row = TaskRun.objects.get(name="busy")
    assert (row.state, row.cancel_deadline) == (State.RUNNING, None)
    assert row.cancel_requested_by == data["cancel_requested_by"]


def test_a_forced_cancel_needs_its_own_permission(login, node):
    start_async(tasks.add, [1, 2], name="busy")
    run = TaskRun.objects.get(name="busy")
    started(run)
    url = cancel_url("busy")
    response = post_with_csrf(login("change_taskrun"), url, {"force": "1"})
    assert (response.status_code, response.json()["error"]) == (403, "permission_denied")
    assert "distributed_tasks.force_cancel_taskrun" in response.json()["detail"]
    assert TaskRun.objects.get(name="busy").cancel_requested_at is None
    client = login("change_taskrun", "force_cancel_taskrun")
    assert post_with_csrf(client, url, {"force": "1"}).status_code == 200
    assert TaskRun.objects.get(name="busy").cancel_deadline is not None


def test_cancel_of_a_finished_run_is_409_saying_it_finished(login, node):
    start_async(tasks.add, [1, 2], name="over")
    runner.execute(message_for(TaskRun.objects.get(name="over")).to_body())
    response = post_with_csrf(login("change_taskrun"), cancel_url("over"))
    data = response.json()
    assert (response.status_code, data["error"], data["state"]) == (409, "not_cancellable", "DONE")
    assert "already finished DONE at " in data["detail"]
