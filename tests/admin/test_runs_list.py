"""The runs list: columns, colours, filters, search, and a constant number of queries."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from distributed_tasks.models import TaskRun
from tests.admin.support import CHANGELIST, done, failed, page_while_redis_is_down, queued, running

pytestmark = pytest.mark.django_db(transaction=True)


def shown(response) -> list[str]:
    """Names of the runs the list shows, in order."""
    return [run.name for run in response.context["cl"].result_list]


def history(count: int, start: int = 0) -> None:
    """Finished runs spread over nodes, task lists and functions (no worker needed)."""
    now = timezone.now()
    TaskRun.objects.bulk_create(
        TaskRun(
            name=f"old-{i}",
            task_list=("default", "ci")[i % 2],
            function=("tests.tasks.add", "tests.tasks.fail")[i % 2],
            state=("DONE", "FAILED")[i % 2],
            node=f"w{i % 3}@test",
            queued_at=now - dt.timedelta(minutes=i + 1),
            started_at=now - dt.timedelta(minutes=i + 1),
            finished_at=now - dt.timedelta(minutes=i),
        )
        for i in range(start, start + count)
    )


def test_lists_runs_with_their_columns(admin_client, node):
    run = failed("nightly-report", task_list="reports")
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert shown(response) == ["nightly-report"]
    html = response.content.decode()
    for text in ("nightly-report", "reports", "tests.tasks.fail", "idle@test"):
        assert f">{text}<" in html
    seconds = (run.finished_at - run.started_at).total_seconds()
    assert f"{seconds:.2f} s" in html  # the duration column


@pytest.mark.parametrize(
    ("make", "colour", "label"),
    [
        (queued, "#808080", "Queued"),
        (running, "#2b7bb9", "Running"),
        (done, "#2e8540", "Done"),
        (failed, "#ba2121", "Failed"),
    ],
)
def test_state_has_its_colour(admin_client, node, make, colour, label):
    make("coloured")
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert f'class="dt-state dt-state-{label.lower()}" style="color: {colour}"' in html
    assert f">{label}</strong>" in html


def test_failure_reason_shows_on_the_state(admin_client, node):
    failed("broken")
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert 'title="The function raised">Failed</strong>' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "FAILED"}, {"failing"}),
        ({"state": "QUEUED"}, {"waiting"}),
        ({"state": "active"}, {"waiting"}),
        ({"state": "finished"}, {"failing", "adding"}),
        ({"node": "idle@test"}, {"failing", "adding", "waiting"}),
        ({"node": "elsewhere@test"}, set()),
        ({"task_list": "ci"}, {"adding"}),
        ({"function": "tests.tasks.fail"}, {"failing"}),
        ({"q": "add"}, {"adding"}),
        ({"q": "ING"}, {"failing", "adding", "waiting"}),  # substring, any case
        ({"q": '"add'}, set()),  # an unbalanced quote is part of the term
        ({"q": '"add"'}, {"adding"}),  # quotes group words
    ],
)
def test_filters_and_search(admin_client, node, query, expected):
    failed("failing")
    done("adding", task_list="ci")
    queued("waiting")
    response = admin_client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    assert set(shown(response)) == expected


def test_filter_sidebar_offers_every_value(admin_client, node):
    failed("failing")
    done("adding", task_list="ci")
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    for link in ("?state=active", "?state=FAILED", "?node=idle%40test", "?task_list=ci"):
        assert link in html
    assert "?function=tests.tasks.fail" in html


def test_search_by_run_id(admin_client, node):
    wanted = queued("one")
    queued("two")
    for term in (wanted.run_id, str(wanted.pk)):
        response = admin_client.get(reverse(CHANGELIST), {"q": term})
        assert shown(response) == ["one"]


def test_date_hierarchy_drills_into_queued_at(admin_client, node):
    queued("last-year")
    TaskRun.objects.filter(name="last-year").update(
        queued_at=timezone.now() - dt.timedelta(days=400)
    )
    queued("now")
    this_year = timezone.now().year
    top = admin_client.get(reverse(CHANGELIST)).content.decode()
    years = [f"?queued_at__year={year}" for year in (this_year - 1, this_year)]
    assert all(link in top for link in years)
    response = admin_client.get(reverse(CHANGELIST), {"queued_at__year": this_year})
    assert shown(response) == ["now"]


def test_queries_do_not_grow_with_the_page(admin_client, node, django_assert_max_num_queries):
    history(3)
    url = reverse(CHANGELIST)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url).status_code == 200
    history(40, start=3)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(url)
    assert len(shown(response)) == 43
    assert len(few.captured_queries) <= 12


def test_list_leaves_large_fields_out(admin_client, node):
    failed("big", message="x" * 1000)
    response = admin_client.get(reverse(CHANGELIST))
    (row,) = response.context["cl"].result_list
    assert {"traceback", "args", "kwargs", "result"} <= row.get_deferred_fields()


def test_no_add_button_and_no_delete_action(admin_client, node):
    queued("one")
    response = admin_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    assert reverse("admin:distributed_tasks_taskrun_add") not in html
    assert "delete_selected" not in html


def test_list_shows_when_the_cluster_is_down(admin_client):
    page_while_redis_is_down(admin_client, CHANGELIST)


@pytest.mark.parametrize("value", ["failed", "Failed", "FAILED"])
def test_state_filter_ignores_case(admin_client, node, value):
    failed("failing")
    queued("waiting")
    assert shown(admin_client.get(reverse(CHANGELIST), {"state": value})) == ["failing"]
    assert set(shown(admin_client.get(reverse(CHANGELIST), {"state": "ACTIVE"}))) == {"waiting"}


def test_times_have_seconds_and_age_and_errors_their_first_line(admin_client, node):
    run = failed("broken", message="first line\nsecond line " + "x" * 300)
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    clock = timezone.localtime(run.queued_at).strftime("%H:%M:%S")
    time = rf'<time class="dt-time"[^>]*>{clock}</time> <span class="dt-age">\d+ s ago'
    assert re.search(time, html)
    assert ">ValueError: first line</span>" in html
    assert "x" * 250 not in html  # the list loads the error's head only (the rest on hover)


def test_cluster_problems_show_commands_as_code(admin_client):
    html = admin_client.get(reverse(CHANGELIST)).content.decode()  # no node, no leader
    assert "<code>manage.py dt_worker</code>" in html
    assert "`" not in html.split('class="messagelist dt-health-banner"')[1].split("</ul>")[0]
