"""Redis loses everything (FLUSHDB of our database) under load: no run is lost or doubled.

The tests flush their own Redis database rather than FLUSHALL, so other suites on
the same server are untouched; for this cluster it is the same event.
"""

import pytest

from distributed_tasks import State, claims, keys, start_async
from distributed_tasks.conf import get_settings
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

RUNS = 60


def test_a_flush_under_load_loses_no_run_and_runs_none_twice(full, redis):
    names = [f"flush-{i}" for i in range(RUNS)]
    for name in names:
        start_async(tasks.sleep, [0.2], name=name)
    poll_until(
        lambda: TaskRun.objects.filter(name__in=names, state=State.DONE).count() >= RUNS // 4,
        timeout=60,
        message="a quarter of the runs done",
    )
    redis.flushdb()
    active = set(TaskRun.objects.filter(name__in=names).active().values_list("name", flat=True))
    # Statuses of active runs are back in Redis within two leader ticks.
    poll_until(
        lambda: all(claims.read("default", n) for n in active - done_names(names)),
        timeout=2 * get_settings().TICK_INTERVAL + 1.0,
        message="statuses restored",
    )
    assert redis.exists(keys.intact_key())
    poll_until(
        lambda: TaskRun.objects.filter(name__in=names, state=State.DONE).count() == RUNS,
        timeout=120,
        message="every run done",
    )
    rows = TaskRun.objects.filter(name__in=names)
    assert rows.count() == RUNS
    assert set(rows.values_list("executions", flat=True)) == {1}  # none ran twice


def done_names(names):
    return set(
        TaskRun.objects.filter(name__in=names, state=State.DONE).values_list("name", flat=True)
    )
