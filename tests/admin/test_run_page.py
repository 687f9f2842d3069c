"""The page of one run: every field read-only, user text escaped, no way to add, edit or delete."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from distributed_tasks import api
from distributed_tasks.models import TaskRun
from tests.admin.support import done, failed, queued, running

pytestmark = pytest.mark.django_db(transaction=True)


def page(run) -> str:
    return reverse("admin:distributed_tasks_taskrun_change", args=[run.pk])


def test_shows_a_failed_run_read_only(admin_client, node):
    run = failed("broken", message="<b>not bold</b>")
    response = admin_client.get(page(run))
    assert response.status_code == 200
    html = response.content.decode()
    assert response.context["adminform"].form.fields == {}  # nothing editable
    assert 'name="_save"' not in html
    assert run.run_id in html
    assert 'style="color: #ba2121"' in html  # the coloured state
    assert "The function raised" in html  # the reason
    # The traceback is the worker's, escaped, in a <pre>: user text never becomes markup.
    assert run.traceback.startswith("Traceback (most recent call last)")
    assert '<pre style="white-space: pre-wrap; margin: 0">Traceback (most recent call last)' in html
    assert "ValueError: &lt;b&gt;not bold&lt;/b&gt;" in html
    assert "<b>not bold</b>" not in html


def test_shows_arguments_and_result_as_json(admin_client, node):
    run = done("sum", args=(20, 22))
    html = admin_client.get(page(run)).content.decode()
    assert "<pre" in html and "[\n  20,\n  22\n]" in html  # args, indented
    assert "42</pre>" in html  # result


def test_a_queued_run_has_no_outcome_yet(admin_client, node):
    run = queued("waiting")
    response = admin_client.get(page(run))
    assert response.status_code == 200
    html = response.content.decode()
    assert ">None<" not in html  # result, traceback, duration: the admin's empty value
    assert html.count('<div class="readonly">-</div>') >= 5


def test_saving_adding_and_deleting_are_refused(admin_client, node):
    run = queued("waiting")
    assert admin_client.post(page(run), {"name": "renamed"}).status_code == 403
    assert admin_client.get(reverse("admin:distributed_tasks_taskrun_add")).status_code == 403
    delete = reverse("admin:distributed_tasks_taskrun_delete", args=[run.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    run.refresh_from_db()
    assert (run.name, run.state) == ("waiting", "QUEUED")


def test_view_permission_is_enough_to_read(staff_client, node):
    run = failed("broken")
    assert staff_client("view").get(page(run)).status_code == 200
    assert staff_client("add", username="other").get(page(run)).status_code == 403


def test_a_retried_run_shows_its_earlier_attempts(admin_client, node):
    from distributed_tasks import retry

    run = failed("twice", message="disk full")
    retry("twice")
    html = admin_client.get(page(run)).content.decode()
    (attempt,) = re.findall(r'<tr class="dt-attempt">(.*?)</tr>', html)[:1]
    assert ">1<" in attempt and "FAILED" in attempt and "exception" in attempt
    assert "ValueError: disk full" in attempt
    assert html.count('<tr class="dt-attempt">') == 2  # the failed attempt, then the queued one
    assert '<div class="readonly">-</div>' in html  # the current attempt has no error yet


def test_a_running_run_shows_its_progress_and_the_cancel_asked_of_it(admin_client, node):
    run = running("syncing")
    TaskRun.objects.filter(id=run.id).update(
        progress=0.25, progress_message="<i>a quarter</i>", progress_data={"rows": 250}
    )
    api.cancel("syncing", by="grace", force=True, grace=30)
    html = admin_client.get(page(run)).content.decode()
    assert '<progress class="dt-progress" max="1" value="0.25"' in html
    assert "25% — &lt;i&gt;a quarter&lt;/i&gt;" in html and "<i>a quarter</i>" not in html
    assert "&quot;rows&quot;: 250" in html
    assert re.search(r'</time> <span class="dt-age">[^<]*</span> by grace; forced at ', html)
