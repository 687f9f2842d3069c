"""Fenced writes reach their row by its primary key, whatever the planner's statistics.

The scenario is a node draining a backlog that arrived after the table was last
analyzed (a fresh table, a burst): PostgreSQL then estimates as few rows for the node's
queued runs as for the key, and without the fence in ``by_key.py`` it read every queued
run of the node to find one.
"""

import uuid

import pytest
from django.db import connection
from django.utils import timezone

from distributed_tasks import State
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store, message_for
from distributed_tasks.transitions import statements
from distributed_tasks.types import Outcome

pytestmark = [pytest.mark.django_db, pytest.mark.postgresql]

NODE = "w1@h"
BACKLOG = 2000


@pytest.fixture
def backlog() -> list[TaskRun]:
    """``BACKLOG`` runs queued on ``NODE`` since the table's last ANALYZE."""
    if connection.vendor != "postgresql":
        pytest.fail("these plans are PostgreSQL's: run the suite on PostgreSQL")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TaskRun._meta.db_table}")  # statistics of the table before
    runs = [
        TaskRun(id=uuid.uuid4(), name=f"b{i}", active_name=f"b{i}", function="f", node=NODE)
        for i in range(BACKLOG)
    ]
    return TaskRun.objects.bulk_create(runs)


def plan(sql: str, params: list) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def assert_by_key(text: str) -> None:
    """Every scan is of the primary key. A Bitmap Heap Scan reads the rows that its
    bitmap index scans found (the planner picks it for a few keys under some statistics:
    seen when another selection of tests ran first): those must be of the key."""
    scans = [line.strip() for line in text.splitlines() if "Scan" in line]
    keyed = [scan for scan in scans if "_pkey" in scan]
    heaps = [scan for scan in scans if scan.removeprefix("->  ").startswith("Bitmap Heap Scan")]
    assert keyed and len(keyed) + len(heaps) == len(scans), text


def test_the_worker_s_start_and_finish_find_their_row_by_key(backlog):
    run = backlog[BACKLOG // 2]
    msg = message_for(run)
    sql = statements(connection)
    now = timezone.now()
    start = [State.RUNNING, now, "inc", run.id, run.attempt, NODE, State.QUEUED]
    assert_by_key(plan(sql.start, start))
    call = [run.task_list, run.name, run.function, "", None, "[]", "{}", "{}"]
    assert_by_key(plan(sql.start_as_sent, start + call))
    finish = [now, State.DONE, None, "", "", "", "", run.id, run.attempt, State.RUNNING]
    assert_by_key(plan(sql.finish, finish))
    # And they still fence: the row is found only while it is this attempt, in this state.
    store = get_store()
    assert store.mark_running(msg, "inc") is not None
    assert store.mark_running(msg, "inc") is None
    assert not store.mark_finished(msg.for_attempt(2, NODE), Outcome.done(None))
    assert store.mark_finished(msg, Outcome.done(None))


def test_the_store_s_fenced_reads_and_writes_find_their_rows_by_key(backlog):
    run = backlog[BACKLOG // 2]
    runs = get_store().runs
    querysets = [
        runs.by_key(run.id, attempt=run.attempt, node=NODE, state__in=[State.QUEUED]),
        runs.by_key(run.id, attempt=1, state=State.QUEUED),
        runs.by_key(run.id, active_name__isnull=False),
        runs.by_keys([r.id for r in backlog[:3]], state=State.QUEUED),
    ]
    for rows in querysets:
        assert_by_key(rows.explain())
        assert rows.exists()
    assert not runs.by_key(run.id, attempt=run.attempt, state=State.RUNNING).exists()
