"""The admin as a person uses it: log in, read the cluster page, retry a failed run.

One test, against pytest-django's live server and headless Chromium. Rows are made
before the browser opens and checked after it closes (see ``browser_page``).
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from distributed_tasks.fencing import claim_epoch
from tests.admin.support import CHANGELIST, CLUSTER, failed, fetch

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_retry_a_failed_run_from_the_admin(
    live_server, browser_page, node, leader, django_user_model, tmp_path
):
    django_user_model.objects.create_superuser("root", "root@example.com", "s3cret-pw")
    run = failed("nightly-report", message="disk full")
    claim_epoch(leader.epoch, leader.holder)  # as the leader does before its first write

    with browser_page() as page:
        page.goto(live_server.url + reverse("admin:login"))
        page.fill("#id_username", "root")
        page.fill("#id_password", "s3cret-pw")
        page.click('input[type="submit"]')
        expect(page.locator("#user-tools")).to_contain_text("root")

        page.goto(live_server.url + reverse(CLUSTER))
        expect(page.locator("#dt-status strong")).to_have_text("healthy")
        expect(page.locator("#dt-nodes tbody th")).to_have_text(node.name)
        expect(page.locator(".dt-leader")).to_contain_text(f"beat@test, epoch {leader.epoch}")
        expect(page.locator(".dt-leadership")).to_contain_text("registered by beat@test")
        page.screenshot(path=tmp_path / "cluster.png", full_page=True)

        page.click("text=Runs")
        row = page.locator("#result_list tbody tr", has_text="nightly-report")
        expect(row.locator(".dt-state")).to_have_text("Failed")
        row.locator('input[name="_selected_action"]').check()
        page.select_option('select[name="action"]', "retry_runs")
        page.click('button[name="index"]')
        expect(page.locator(".messagelist li.success")).to_have_text("Retried 1 run.")
        expect(row.locator(".dt-state")).to_have_text("Queued")
        page.screenshot(path=tmp_path / "runs.png", full_page=True)

    assert page.url.endswith(reverse(CHANGELIST))
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("cluster.png", "runs.png"))
    retried = fetch(run)
    assert (retried.state, retried.attempt, retried.node) == ("QUEUED", 2, node.name)
