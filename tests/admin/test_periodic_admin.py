"""The periodic tasks admin: switches, run now, reset state, and nothing else writable."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from distributed_tasks.models import PeriodicTaskState, TaskRun

URL = "/admin/distributed_tasks/periodictaskstate/"


@pytest.fixture
def periodic_client(django_user_model):
    def make(*actions: str) -> Client:
        user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(
            codename__in=[f"{a}_periodictaskstate" for a in actions]))  # fmt: skip
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def rows(db):
    return [
        PeriodicTaskState.objects.create(name=name, task="tests.tasks.Counter", interval=10,
                                         state={"count": 3}, last_outcome=outcome,
                                         last_error="boom" if outcome == "FAILED" else "")
        for name, outcome in (("poll", "DONE"), ("sync", "FAILED"))
    ]  # fmt: skip


def act(client, action, *names):
    return client.post(URL, {"action": action, "_selected_action": list(names)}, follow=True)


def test_list_shows_schedule_and_outcomes(periodic_client, rows):
    page = periodic_client("view").get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert "poll" in html and "10.00 s" in html
    assert 'title="boom">FAILED</strong>' in html


def test_enable_disable_and_reset_need_the_change_permission(periodic_client, rows):
    viewer = periodic_client("view")
    assert "disable" not in viewer.get(URL).content.decode()
    act(viewer, "disable", "poll")  # a forged POST changes nothing
    assert PeriodicTaskState.objects.get(name="poll").enabled


def test_switches_and_reset(periodic_client, rows):
    client = periodic_client("view", "change")
    page = act(client, "disable", "poll", "sync")
    assert "Disabled 2 periodic task(s)" in page.content.decode()
    assert not PeriodicTaskState.objects.filter(enabled=True).exists()
    act(client, "enable", "poll")
    assert PeriodicTaskState.objects.get(name="poll").enabled
    page = act(client, "reset_state", "sync")
    assert "Reset the state of 1" in page.content.decode()
    assert PeriodicTaskState.objects.get(name="sync").state is None
    assert PeriodicTaskState.objects.get(name="poll").state == {"count": 3}


def test_no_add_no_delete_and_a_read_only_schedule(periodic_client, rows):
    client = periodic_client("view", "change", "add", "delete")
    assert client.get(URL + "add/").status_code == 403
    assert "delete_selected" not in client.get(URL).content.decode()
    client.post(URL + "poll/change/", {"enabled": "", "interval": 1})
    row = PeriodicTaskState.objects.get(name="poll")
    assert (row.enabled, row.interval) == (False, 10)  # enabled is the one writable field


@pytest.mark.django_db(transaction=True)
def test_run_now_starts_a_run_outside_the_slots(periodic_client, node):
    PeriodicTaskState.objects.create(name="poll", task="tests.tasks.Counter", interval=10)
    client = periodic_client("view", "change")
    page = act(client, "run_now", "poll")
    assert "Started 1 run." in page.content.decode()
    run = TaskRun.objects.get(name="periodic:poll")
    assert (run.function, run.args, run.node) == (
        "distributed_tasks.periodic.PeriodicRun",
        ["poll", ""],
        node.name,
    )
    page = act(client, "run_now", "poll")
    assert "Skipped 1: 1 with a run of the same name active." in page.content.decode()
