"""``dt_demo`` end to end: it starts from a clean state and leaves nothing active behind."""

import json
import socket
import uuid

import pytest

from distributed_tasks import keys
from distributed_tasks.demo import cleanup
from distributed_tasks.models import PeriodicTaskState, TaskRun
from distributed_tasks.store import get_store
from tests.support import queued

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PERIODIC = {
    "builds.report": {
        "task": "testproject.builds.tasks.BuildReport",
        "interval": 2,
        "timeout": 10,
        "args": {"source": "demo"},
    }
}


def test_a_demo_starts_clean_and_leaves_nothing_behind(manage_py, redis, tmp_path):
    node = f"demo-w1@{socket.gethostname()}"
    get_store().insert(TaskRun(id=uuid.uuid4(), name="left", active_name="left", function="x"))
    PeriodicTaskState.objects.create(name="builds.report", task="x", interval=2, runs=99)
    redis.hset(cleanup.UNACKED, "earlier", json.dumps([{}, "", keys.queue_name(node)]))
    result = manage_py(
        "dt_demo", "--workers", "1", "--beats", "1", "--tasks", "3", "--duplicates", "0",
        "--no-faults", "--state-dir", str(tmp_path), DT_TEST_PERIODIC=json.dumps(PERIODIC),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Clean start: removed 1 runs, 1 periodic tasks" in out
    assert "1 unacknowledged messages of earlier demos" in out
    assert "Stopped the 2 processes the demo started (beats first)" in out
    assert "3 runs started, 0 duplicates refused, 3 DONE" in out
    assert not TaskRun.objects.active().exists()  # no QUEUED periodic run left waiting
    assert not TaskRun.objects.filter(name="left").exists()
    assert PeriodicTaskState.objects.get(name="builds.report").runs < 99  # counts restarted
    assert redis.hlen(cleanup.UNACKED) == 0 and queued(redis, node) == []
