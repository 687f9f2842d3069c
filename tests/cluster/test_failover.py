"""Orchestrator failover with real dt_beat processes: crash, graceful stop, pause.

Deadlines are the documented promises: after a crash the next leader within
LEASE_TTL + 1 s, after a graceful stop within 1 s.
"""

import base64
import json
import signal
import time
import uuid

import pytest

from distributed_tasks.conf import get_settings
from distributed_tasks.fencing import leadership
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

BEATS = ("beat-a", "beat-b")
ROUNDS = 5


@pytest.fixture(scope="module")
def beats(cluster_factory):
    for name in BEATS:
        cluster_factory.start_beat(name)
    return cluster_factory


def starts(cluster, key: str) -> int:
    """How many times ``key`` got as far as celery beat's loop (its lease keeper runs)."""
    return cluster.log(key, tail=10**8).count("beat: Starting...")


@pytest.fixture
def pair(beats):
    """Both beats running and one of them leading, after this test's Redis flush.

    A beat the last test stopped is started again and waited for: on a loaded machine
    it takes seconds to boot, and until then it cannot take over in the 1 s promised.
    """
    before = {key: starts(beats, key) for key in BEATS}
    for key in beats.revive():
        poll_until(lambda k=key: starts(beats, k) > before[k], timeout=60, message=f"{key} up")
    beats.wait_leader()
    return beats


def new_leader_acts(old_epoch: int, timeout: float):
    """The new leader registered its epoch in the database and ticked under it."""

    def acted():
        row = leadership()
        return row if row and row.epoch > old_epoch and row.ticked_at else None

    return poll_until(acted, timeout=timeout, interval=0.02, message="the new leader to tick")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigkill_of_the_leader_fails_over_within_lease_ttl_plus_one_second(pair, round_):
    leader = pair.wait_leader()
    pair.kill(leader.holder, signal.SIGKILL)
    killed_at = time.monotonic()
    promise = get_settings().LEASE_TTL + 1.0
    successor = pair.wait_leader(timeout=promise, other_than=leader.holder)
    assert successor.epoch > leader.epoch
    new_leader_acts(leader.epoch, timeout=max(0.1, promise - (time.monotonic() - killed_at)))
    pair.stop(leader.holder)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigterm_of_the_leader_hands_over_within_one_second(pair, round_):
    leader = pair.wait_leader()
    pair.kill(leader.holder, signal.SIGTERM)
    successor = pair.wait_leader(timeout=1.0, other_than=leader.holder)
    assert successor.epoch > leader.epoch
    assert pair.procs[leader.holder].wait(10) == 0
    pair.stop(leader.holder)


def probe_messages(redis) -> list[dict]:
    """Beat messages, oldest first (kombu LPUSHes, so Redis holds them newest first)."""
    return [json.loads(m) for m in reversed(redis.lrange("ha-beat-probe", 0, -1))]


def test_only_the_leader_sends_the_beat_schedule(pair, redis):
    leader = pair.wait_leader()
    first = len(probe_messages(redis))
    began = time.monotonic()
    poll_until(lambda: len(probe_messages(redis)) >= first + 4, timeout=10, message="4 sends")
    elapsed = time.monotonic() - began
    messages = probe_messages(redis)[first:]
    origins = {m["headers"]["origin"] for m in messages}
    assert len(origins) == 1, origins  # one sender, not one per beat
    assert len(messages) <= elapsed + 1.5  # once per second, never twice
    pair.kill(leader.holder, signal.SIGKILL)
    pair.wait_leader(other_than=leader.holder)
    count = len(probe_messages(redis))
    poll_until(lambda: len(probe_messages(redis)) >= count + 2, timeout=10, message="handover")
    assert len({m["headers"]["origin"] for m in probe_messages(redis)[count:]}) == 1
    pair.stop(leader.holder)


def ghost_run(node="ghost@nowhere") -> TaskRun:
    """A RUNNING run of a node whose heartbeat stopped long ago."""
    from distributed_tasks import keys
    from distributed_tasks.connection import get_redis

    seconds, micros = get_redis().time()
    get_redis().zadd(keys.members_key(), {node: seconds * 1000 + micros // 1000 - 600_000})
    name = f"ghost-{uuid.uuid4().hex[:8]}"
    run = TaskRun(
        id=uuid.uuid4(),
        name=name,
        active_name=name,
        function="tests.tasks.add",
        node=node,
        state="RUNNING",
        executions=1,
    )
    get_store().insert(run)
    return run


def test_a_paused_leader_resumes_without_acting(pair):
    leader = pair.wait_leader()
    pair.kill(leader.holder, signal.SIGSTOP)
    try:
        successor = pair.wait_leader(
            timeout=get_settings().LEASE_TTL + 1.0, other_than=leader.holder
        )
        new_leader_acts(leader.epoch, timeout=3)
    finally:
        pair.kill(leader.holder, signal.SIGCONT)
    # A run of a dead node appears after the old leader woke up: only the new epoch handles it.
    run = ghost_run()
    poll_until(
        lambda: TaskRun.objects.get(id=run.id).state == "FAILED",
        timeout=10,
        message="the new leader to end the ghost run",
    )
    run.refresh_from_db()
    assert run.orchestrator_epoch == successor.epoch
    poll_until(
        lambda: "lost the orchestrator lease" in pair.log(leader.holder),
        timeout=5,
        message="the old leader to notice",
    )
    assert leadership().epoch == successor.epoch
    assert pair.wait_leader().holder == successor.holder


def test_beat_messages_are_plain_json(pair, redis):
    pair.wait_leader()
    poll_until(lambda: probe_messages(redis), timeout=5, message="a beat message")
    message = probe_messages(redis)[0]
    assert message["content-type"] == "application/json"
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == []
