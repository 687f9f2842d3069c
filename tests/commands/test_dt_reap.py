import datetime as dt
import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from distributed_tasks import claims, keys
from distributed_tasks.connection import get_redis
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store

pytestmark = pytest.mark.django_db


def finished(name: str, age: float) -> TaskRun:
    run = TaskRun(id=uuid.uuid4(), name=name, active_name=name, function="tests.tasks.add")
    get_store().insert(run)
    TaskRun.objects.filter(id=run.id).update(
        state="DONE", active_name=None, finished_at=timezone.now() - dt.timedelta(seconds=age)
    )
    run.refresh_from_db()
    claims.update("default", name, run.run_id, 1, claims.fields_for_run(run), ttl=600_000)
    return run


def reap(*args) -> dict:
    out = StringIO()
    call_command("dt_reap", "--json", *args, stdout=out)
    assert out.getvalue().endswith("}\n")
    return json.loads(out.getvalue())


def test_dry_run_counts_and_changes_nothing():
    finished("old-name", 120)
    finished("ancient", 8 * 24 * 3600)
    assert reap("--dry-run") == {"names_to_reap": 2, "history_to_delete": 1}
    assert TaskRun.objects.count() == 2
    assert claims.read("default", "old-name")


def test_reaps_names_and_history_in_batches():
    for i in range(5):
        finished(f"ancient-{i}", 8 * 24 * 3600)
    finished("recent", 5)
    assert reap("--batch", "2") == {"names_reaped": 5, "history_deleted": 5}
    assert list(TaskRun.objects.values_list("name", flat=True)) == ["recent"]
    assert claims.read("default", "recent")["state"] == "DONE"


def test_dry_run_reports_what_a_real_reap_then_reaps():
    finished("old-name", 120)
    finished("ancient", 8 * 24 * 3600)
    finished("recent", 5)
    finished("expired", 300)
    get_redis().delete(keys.run_key("default", "expired"))  # its cached status expired already
    plan = reap("--dry-run")
    assert plan == {"names_to_reap": 2, "history_to_delete": 1}
    assert reap() == {"names_reaped": 2, "history_deleted": 1}
    assert reap("--dry-run") == {"names_to_reap": 0, "history_to_delete": 0}  # nothing left


def test_text_output_ends_with_a_newline():
    out = StringIO()
    call_command("dt_reap", "--dry-run", stdout=out)
    assert out.getvalue() == "names to reap: 0, history to delete: 0\n"
