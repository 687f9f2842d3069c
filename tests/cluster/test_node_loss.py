"""A worker node is SIGKILLed mid-run: its runs end or move; nothing stays RUNNING.

Deadline: a dead node is noticed NODE_TIMEOUT after its last heartbeat, and the
leader acts at its next tick, so within NODE_TIMEOUT + TICK_INTERVAL of the kill
(plus half a second for process scheduling on a loaded 2-core machine).
"""

import json
import signal
import time
from collections import Counter

import pytest

from distributed_tasks import State, start_async
from distributed_tasks.conf import get_settings
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.cluster.conftest import wait_finished
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

RUNS = 9


def detection_deadline() -> float:
    conf = get_settings()
    return conf.NODE_TIMEOUT + conf.TICK_INTERVAL + 0.5


def start_journaled(prefix: str, **options) -> list[str]:
    """Runs that note each execution, then wait until ``release(redis, name)``."""
    names = [f"{prefix}-{i}" for i in range(RUNS)]
    for name in names:
        start_async(tasks.journal, [f"journal:{name}", f"release:{name}"], name=name, **options)
    return names


def release(redis, *names: str) -> None:
    for name in names:
        redis.set(f"release:{name}", 1)


def victim_with_running_runs(names: list[str]) -> tuple[str, list[str], list[str]]:
    """The node holding most runs, once two of them run there (their functions began: each
    wrote its journal entry, so a kill cannot fall between RUNNING and the entry); its
    running and queued names."""
    from distributed_tasks.connection import get_redis

    def ready():
        rows = list(TaskRun.objects.filter(name__in=names).values_list("name", "node", "state"))
        node = Counter(n for _, n, _ in rows).most_common(1)[0][0]
        running = [name for name, n, s in rows if n == node and s == State.RUNNING]
        queued = [name for name, n, s in rows if n == node and s == State.QUEUED]
        began = all(journal(get_redis(), name) for name in running)
        return (node, running, queued) if len(running) == 2 and began else None

    return poll_until(ready, timeout=30, message="two runs RUNNING on one node")


def journal(redis, name: str) -> list[dict]:
    return [json.loads(e) for e in redis.lrange(f"journal:{name}", 0, -1)]


def test_running_runs_of_a_killed_node_end_failed_node_lost(full, redis):
    names = start_journaled("loss")
    victim, running, queued = victim_with_running_runs(names)
    full.kill(victim, signal.SIGKILL)
    try:
        for name in running:
            status = poll_until(
                lambda name=name: (s := wait_or_none(name)) and s,
                timeout=detection_deadline(),
                message=f"{name} to end",
            )
            assert (status.state, status.reason) == (State.FAILED, "node_lost")
            assert victim in status.error
        for name in queued:  # never started on the victim: moved, and run elsewhere
            run = poll_until(
                lambda name=name: (r := TaskRun.objects.get(name=name)).node != victim and r,
                timeout=detection_deadline(),
                message=f"{name} to move",
            )
            # A new attempt: the move off the lost node, perhaps after an idle node had
            # already taken it over (stealing) and was the one lost.
            assert run.attempt >= 2
    finally:
        release(redis, *names)
    for name in set(names) - set(running):
        assert wait_finished(name).state == State.DONE
    assert not TaskRun.objects.filter(node=victim, state=State.RUNNING).exists()
    assert all(len(journal(redis, name)) == 1 for name in names)


def wait_or_none(name):
    from distributed_tasks import get_status

    status = get_status(name)
    return status if status.is_finished else None


def test_with_two_attempts_each_lost_run_runs_exactly_once_more_elsewhere(full, redis):
    names = start_journaled("again", max_attempts=2)
    victim, running, _queued = victim_with_running_runs(names)
    full.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    release(redis, *(set(names) - set(running)))  # free the other nodes for the retries
    try:
        for name in running:
            poll_until(
                lambda name=name: len(journal(redis, name)) == 2,
                timeout=detection_deadline() + 5,
                message=f"{name} to run again",
            )
            first, second = journal(redis, name)
            assert first["node"] == victim
            assert second["node"] != victim
            assert second["at"] > killed_at  # the first execution died before it began
    finally:
        release(redis, *names)
    for name in names:
        status = wait_finished(name)
        # The status is the last attempt's: DONE, without the lost attempt's error.
        assert (status.state, status.error, status.reason) == (State.DONE, None, None)
        run = TaskRun.objects.get(name=name)
        assert run.executions == (2 if name in running else 1)
        assert len(journal(redis, name)) == run.executions
        if name in running:  # the lost attempt is in the run's history
            assert [(a["node"], a["reason"]) for a in run.attempts] == [(victim, "node_lost")]
