"""The JSON views through Django's test client: answers, permissions, CSRF, bad input
(cancel: ``test_cancel_view``)."""

import datetime as dt
from urllib.parse import urlencode

import pytest
from django.test import override_settings
from django.urls import reverse

from distributed_tasks import runner, start_async
from distributed_tasks.models import TaskRun
from distributed_tasks.store import message_for
from tests import tasks
from tests.integration.views_support import post_with_csrf, status_url

pytestmark = pytest.mark.django_db(transaction=True)


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
    ["status/", "status/default/", "status//name", "cancel/", "cancel//x", "cancel/a/"],
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


def test_status_and_cancel_name_a_task_list_holding_a_slash_in_the_query(login, node):
    """Review: a task list is one path segment, so a run of task list "team/ci" had no
    URL at all."""
    start_async(tasks.add, [1, 1], name="builds/42", task_list="team/ci")
    client = login("view_taskrun", "change_taskrun")
    status = reverse("distributed_tasks:status_query")
    query = {"task_list": "team/ci", "name": "builds/42"}
    data = client.get(status, query).json()
    assert (data["task_list"], data["name"], data["state"]) == ("team/ci", "builds/42", "QUEUED")
    assert client.get(status, {**query, "task_list": "team"}).status_code == 404
    cancel = reverse("distributed_tasks:cancel_query")
    cancelled = post_with_csrf(client, f"{cancel}?{urlencode(query)}").json()  # in the query
    assert (cancelled["task_list"], cancelled["state"]) == ("team/ci", "FAILED")


def test_a_forced_cancel_in_the_query_form_is_forced(login, node):
    """force=1 counts wherever the task list and name may be given (review)."""
    start_async(tasks.add, [1, 1], name="x", task_list="a/b")
    TaskRun.objects.filter(name="x").update(state="RUNNING")
    cancel = reverse("distributed_tasks:cancel_query")
    url = f"{cancel}?{urlencode({'task_list': 'a/b', 'name': 'x', 'force': '1'})}"
    response = post_with_csrf(login("change_taskrun"), url)
    assert (response.status_code, response.json()["error"]) == (403, "permission_denied")
    assert "force_cancel_taskrun" in response.json()["detail"]


@pytest.mark.parametrize(
    "query", [{}, {"task_list": "ci"}, {"name": "x"}, {"task_list": "", "name": "x"}]
)
def test_the_query_form_without_a_task_list_or_name_is_json_404(login, query):
    """Nothing defaults: a misspelt task_list must not cancel another list's run."""
    client = login("view_taskrun", "change_taskrun")
    for response in (
        client.get(reverse("distributed_tasks:status_query"), query),
        post_with_csrf(client, reverse("distributed_tasks:cancel_query"), query),
    ):
        assert (response.status_code, response.json()["error"]) == (404, "not_found")
        assert "status?task_list=<task_list>&name=<name>" in response.json()["detail"]


def test_the_query_form_keeps_its_methods_and_permissions(login, client):
    assert client.get(reverse("distributed_tasks:status_query"), {"name": "x"}).status_code == 403
    viewer = login("view_taskrun")
    assert viewer.post(reverse("distributed_tasks:status_query")).status_code == 405
    assert viewer.get(reverse("distributed_tasks:cancel_query")).status_code == 405
    response = post_with_csrf(viewer, reverse("distributed_tasks:cancel_query"), {"name": "x"})
    assert (response.status_code, response.json()["error"]) == (403, "permission_denied")


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
