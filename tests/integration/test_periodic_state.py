"""``PeriodicTaskState`` rows: every write, including a conditional update, moves ``updated_at``."""

import pytest
from django.db.models import F

from distributed_tasks.models import PeriodicTaskState

pytestmark = pytest.mark.django_db


def test_updated_at_moves_on_every_update():
    row = PeriodicTaskState.objects.create(name="poll", task="tests.tasks.Counter", interval=10)
    created = row.updated_at
    rows = PeriodicTaskState.objects.filter(name="poll")
    assert rows.update(runs=F("runs") + 1, last_outcome="DONE") == 1
    row.refresh_from_db()
    assert row.updated_at > created
    updated = row.updated_at
    rows.update(enabled=False)  # the admin's switch is an update too
    row.refresh_from_db()
    assert row.updated_at > updated
