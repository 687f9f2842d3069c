"""The JSON views through Django's test client: answers, permissions, CSRF, bad input."""

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import reverse

from distributed_tasks import State, claims, runner, start_async
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store, message_for
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "a" * 32  # a CSRF secret in the cookie, echoed in the header


@pytest.fixture
def login(django_user_model):
    """A client logged in as a fresh user with the given permissions (and staff flag)."""

    def make(*codenames: str, staff: bool = False, superuser: bool = False) -> Client:
        user = django_user_model.objects.create_user(
            f"user{django_user_model.objects.count()}",
            password="pw",
            is_staff=staff or superuser,
            is_superuser=superuser,
        )
        for codename in codenames:
            user.user_permissions.add(
                Permission.objects.get(
                    content_type__app_label="distributed_tasks", codename=codename
                )
            )
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    return make


def status_url(name: str, task_list: str = "default") -> str:
    return reverse("distributed_tasks:status", args=[task_list, name])


def cancel_url(name: str, task_list: str = "default") -> str:
    return reverse("distributed_tasks:cancel", args=[task_list, name])


def post_with_csrf(client: Client, url: str, data: dict | None = None):
    client.cookies["csrftoken"] = TOKEN
    return client.post(url, data or {}, HTTP_X_CSRFTOKEN=TOKEN)


def execute(name: str) -> None:
    """Run the QUEUED run of ``name`` in this process, as its worker would."""
    runner.execute(message_for(TaskRun.objects.get(name=name, active_name=name)).to_body())


# -- health --------------------------------------------------------------------------


def test_health_tells_anyone_only_the_status(client, node):
    response = client.get(reverse("distributed_tasks:health"))
    assert response.status_code == 200  # degraded (no leader) still serves
    assert response.json() == {"status": "degraded"}
    assert "no-store" in response["Cache-Control"]


def test_health_is_503_when_redis_is_down(client):
    with override_settings(DISTRIBUTED_TASKS={"REDIS_URL": "redis://127.0.0.1:1/0"}):
        response = client.get(reverse("distributed_tasks:health"))
    assert (response.status_code, response.json()) == (503, {"status": "down"})


def test_health_shows_details_to_staff_who_may_view_runs(login, leader, node):
    response = login("view_taskrun", staff=True).get(reverse("distributed_tasks:health"))
    data = response.json()
    assert (response.status_code, data["status"], data["problems"]) == (200, "healthy", [])
    assert data["leader"]["holder"] == "beat@test"
    assert [n["name"] for n in data["nodes"]] == ["idle@test"]
    assert data["runs"] == {"QUEUED": 0, "RUNNING": 0}


def test_health_hides_details_from_users_who_are_not_staff(login, node):
    data = login("view_taskrun").get(reverse("distributed_tasks:health")).json()
    assert data == {"status": "degraded"}


@pytest.mark.parametrize(
    ("codenames", "staff", "sees"),
    [
        (("view_taskrun",), True, True),
        (("change_taskrun",), True, True),
        (("add_taskrun",), True, False),
        ((), True, False),  # any staff user used to see hosts, pids and the leader
        (("view_taskrun",), False, False),
    ],
)
def test_health_details_and_the_cluster_page_follow_one_rule(login, node, codenames, staff, sees):
    client = login(*codenames, staff=staff)
    details = client.get(reverse("distributed_tasks:health")).json()
    assert ("nodes" in details) is sees
    page = client.get(reverse("admin:distributed_tasks_cluster"))
    assert page.status_code == (200 if sees else 403 if staff else 302)


def test_health_refuses_post_with_json(client):
    response = client.post(reverse("distributed_tasks:health"))
    assert (response.status_code, response["Allow"]) == (405, "GET, HEAD")
    assert response.json()["error"] == "method_not_allowed"
    assert "use GET or HEAD" in response.json()["detail"]


# -- status --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["status/", "status/default/", "status//name", "status", "cancel/", "cancel//x", "cancel/a/"],
)
def test_paths_that_name_no_run_answer_json_404(login, path):
    client = login("view_taskrun", "change_taskrun", staff=True)
    for response in (client.get(f"/tasks/{path}"), client.post(f"/tasks/{path}")):
        assert (response.status_code, response["Content-Type"]) == (404, "application/json")
        assert response.json()["error"] == "not_found"
        assert "task list and a name that are not empty" in response.json()["detail"]


def test_status_of_a_queued_run(login, node):
    handle = start_async(tasks.add, [1, 2], name="sum")
    response = login("view_taskrun").get(status_url("sum"))
    assert response.status_code == 200
    data = response.json()
    assert (data["name"], data["task_list"], data["state"]) == ("sum", "default", "QUEUED")
    assert (data["run_id"], data["node"], data["attempt"]) == (handle.run_id, node.name, 1)
    assert (data["result"], data["error"], data["started_at"], data["finished_at"]) == (
        None,
        None,
        None,
        None,
    )
    queued = dt.datetime.fromisoformat(data["queued_at"])  # ISO 8601 with an offset
    assert queued.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - queued).total_seconds()) < 60


def test_status_of_a_finished_run_carries_its_result(login, node):
    start_async(tasks.add, [2, 3], name="five")
    execute("five")
    data = login("view_taskrun").get(status_url("five")).json()
    assert (data["state"], data["result"]) == ("DONE", 5)
    finished = dt.datetime.fromisoformat(data["finished_at"])
    assert finished >= dt.datetime.fromisoformat(data["queued_at"])


def test_status_of_a_finished_run_keeps_its_start_time(login, node):
    start_async(tasks.add, [2, 3], name="five")
    execute("five")
    data = login("view_taskrun").get(status_url("five")).json()
    assert data["started_at"] is not None
    queued, started, finished = (
        dt.datetime.fromisoformat(data[f"{when}_at"]) for when in ("queued", "started", "finished")
    )
    assert queued <= started <= finished


def test_status_of_a_failed_run_carries_its_error(login, node):
    start_async(tasks.fail, ["broken"], name="bad-run")
    execute("bad-run")
    data = login("view_taskrun").get(status_url("bad-run")).json()
    assert (data["state"], data["reason"], data["error_type"], data["error"]) == (
        "FAILED",
        "exception",
        "ValueError",
        "broken",
    )


def test_status_finds_names_with_slashes_and_other_task_lists(login, node):
    start_async(tasks.add, [1, 1], name="builds/42", task_list="ci")
    client = login("view_taskrun")
    assert client.get(status_url("builds/42", "ci")).json()["state"] == "QUEUED"
    assert client.get(status_url("builds/42")).status_code == 404


def test_status_of_an_unknown_name_is_404(login):
    response = login("view_taskrun").get(status_url("never-ran"))
    assert response.status_code == 404
    data = response.json()
    assert (data["error"], data["name"], data["task_list"]) == ("not_found", "never-ran", "default")
    assert "No run of 'never-ran'" in data["detail"]


@pytest.mark.parametrize(
    ("name", "task_list", "words"),
    [
        ("x" * 201, "default", "1 to 200 characters"),
        ("bell\x07", "default", "non-printable"),
        ("ok", "l" * 201, "task list must be 1 to 200"),
    ],
)
def test_status_of_a_bad_name_is_400(login, name, task_list, words):
    response = login("view_taskrun").get(status_url(name, task_list))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_name"
    assert words in response.json()["detail"]


def test_status_needs_a_login(client, node):
    start_async(tasks.add, [1, 2], name="secret")
    response = client.get(status_url("secret"))
    assert (response.status_code, response.json()["error"]) == (403, "not_authenticated")
    assert "distributed_tasks.view_taskrun" in response.json()["detail"]


@pytest.mark.parametrize("staff", [False, True])
def test_status_needs_the_view_permission(login, node, staff):
    start_async(tasks.add, [1, 2], name="secret")
    response = login(staff=staff).get(status_url("secret"))
    assert (response.status_code, response.json()["error"]) == (403, "permission_denied")


def test_superusers_may_read_status(login, node):
    start_async(tasks.add, [1, 2], name="open")
    assert login(superuser=True).get(status_url("open")).json()["state"] == "QUEUED"


def test_status_refuses_post_even_without_a_csrf_token(login):
    response = login("view_taskrun").post(status_url("x"))
    assert (response.status_code, response.json()["error"]) == (405, "method_not_allowed")


# -- cancel --------------------------------------------------------------------------


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
    claims.publish(msg, claims.message_fields(msg, State.RUNNING))


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
