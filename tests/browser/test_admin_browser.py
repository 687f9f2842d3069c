"""The admin as a person uses it: log in, read the cluster page, retry a failed run,
and read every list on a 1366 px screen without a column cut off.

Against pytest-django's live server and headless Chromium. Rows are made before the
browser opens and checked after it closes (see ``browser_page``). The screenshots of
docs/admin.md are taken here: ``DT_SCREENSHOTS=docs/img`` writes them there (commit
them); otherwise they go to the test's tmp dir.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from distributed_tasks import retry
from distributed_tasks.fencing import claim_epoch
from distributed_tasks.models import PeriodicTaskState, TaskRun
from tests.admin.support import (
    CHANGELIST,
    CLUSTER,
    done,
    executed,
    failed,
    fetch,
    queued,
    running,
)
from tests.support import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SMALL_SCREEN = {"width": 1366, "height": 768}
PERIODIC = "admin:distributed_tasks_periodictaskstate_changelist"

# The right edge of the widest list cell, and the room the page gives the list.
OVERFLOW = """() => {
  const table = document.querySelector('#result_list');
  const box = table.closest('.results') || table.parentElement;
  return {table: Math.ceil(table.getBoundingClientRect().right), scroll: table.scrollWidth,
          room: box.clientWidth, page: document.documentElement.scrollWidth,
          viewport: window.innerWidth};
}"""


def log_in(page, live_server) -> None:
    page.goto(live_server.url + reverse("admin:login"))
    page.fill("#id_username", "root")
    page.fill("#id_password", "s3cret-pw")
    page.click('input[type="submit"]')
    expect(page.locator("#user-tools")).to_contain_text("root")


def assert_fits(page) -> None:
    """No column is cut off: the list needs no horizontal scrolling, nor does the page."""
    size = page.evaluate(OVERFLOW)
    assert size["scroll"] <= size["room"], size
    assert size["table"] <= size["viewport"] and size["page"] <= size["viewport"], size


def screenshots_dir(tmp_path: Path) -> Path:
    wanted = os.environ.get("DT_SCREENSHOTS")
    return (ROOT / wanted) if wanted else tmp_path


def realistic_rows(node) -> TaskRun:
    """Runs in every state (one retried, one with a long name), periodic tasks; the failed run."""
    done("compile-app-1042", args=(20, 22))
    queued("thumbnail-7f3a9c2e-large-original-upload-from-the-mobile-app")
    syncing = running("sync-customers")
    TaskRun.objects.filter(id=syncing.id).update(
        progress=0.37, progress_message="3,700 of 10,000 customers (eu-west and us-east shards)"
    )
    retried = failed("import-ledger", message="connection reset by peer")
    retry("import-ledger")
    report = failed("nightly-report", message="disk full: /var/backups has 0 bytes left\n(see df)")
    retry("nightly-report")
    report = executed(fetch(report))  # the second attempt fails the same way
    now = timezone.now()
    for name, outcome, error, runs in (
        ("poll-api", "DONE", "", 412),
        ("sync-ledger", "FAILED", "ValueError: ledger row 17 has no currency", 96),
        ("rebuild-search-index", "SKIPPED", "the previous run was still going", 33),
    ):
        PeriodicTaskState.objects.create(
            name=name, task="tests.tasks.Counter", interval=30, last_slot=now - dt.timedelta(
                seconds=12), last_node=node.name, last_outcome=outcome, last_error=error,
            runs=runs, skips=outcome == "SKIPPED", failures=outcome == "FAILED",
            next_run_at=now + dt.timedelta(seconds=18),
        )  # fmt: skip
    assert fetch(retried).attempt == 2
    return report


def test_retry_a_failed_run_from_the_admin(
    live_server, browser_page, node, leader, django_user_model, tmp_path
):
    django_user_model.objects.create_superuser("root", "root@example.com", "s3cret-pw")
    run = failed("nightly-report", message="disk full")
    claim_epoch(leader.epoch, leader.holder)  # as the leader does before its first write

    with browser_page() as page:
        log_in(page, live_server)

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


def test_lists_fit_a_small_screen_and_screenshots(
    live_server, browser_page, node, leader, django_user_model, tmp_path
):
    django_user_model.objects.create_superuser("root", "root@example.com", "s3cret-pw")
    report = realistic_rows(node)
    claim_epoch(leader.epoch, leader.holder)
    shots = screenshots_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    with browser_page(viewport=SMALL_SCREEN) as page:
        log_in(page, live_server)
        page.goto(live_server.url + reverse(CHANGELIST))
        expect(page.locator("#result_list tbody tr")).to_have_count(5)
        assert_fits(page)
        expect(page.locator("#result_list .dt-error").first).to_be_visible()
        expect(page.locator("#result_list progress.dt-progress")).to_have_attribute("value", "0.37")
        page.screenshot(path=shots / "admin-runs.png")

        page.goto(live_server.url + reverse(CHANGELIST) + "?state=failed")
        expect(page.locator("#result_list tbody tr")).to_have_count(1)
        page.click("text=nightly-report")
        expect(page.locator(".dt-history")).to_contain_text("disk full")
        page.screenshot(path=shots / "admin-failed-run.png", full_page=True)

        page.goto(live_server.url + reverse(PERIODIC))
        expect(page.locator("#result_list tbody tr")).to_have_count(3)
        assert_fits(page)
        page.screenshot(path=shots / "admin-periodic.png")

        page.goto(live_server.url + reverse(CLUSTER))
        expect(page.locator("#dt-status strong")).to_have_text("healthy")
        page.screenshot(path=shots / "admin-cluster.png")

    assert (report.state, report.attempt) == ("FAILED", 2)
    for name in ("admin-runs", "admin-failed-run", "admin-periodic", "admin-cluster"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
