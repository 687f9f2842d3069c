"""The demo starts from a clean slate and leaves one behind.

Each demo is a fresh cluster: counts, periodic counters and leftovers of an earlier
demo (rows, Redis keys, messages in the demo nodes' queues) would make its table lie,
so they are removed first. At the end the beats stop first (no new periodic slot is
dispatched), the runs still active get a few seconds to finish, the workers stop,
and what is left (a periodic run that no worker will take, a message that a killed
node never acknowledged) is ended or dropped, so nothing waits for a cluster that is
gone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis.exceptions import RedisError

from distributed_tasks import keys
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import get_redis, text
from distributed_tasks.localcluster import LocalCluster

# Kombu's Redis transport keeps a delivered, not yet acknowledged message here
# (delivery tag -> [message, exchange, routing key]) until a worker acks it.
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
# How long the runs still active at the end may take before they are ended.
DRAIN_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Cleared:
    runs: int = 0
    periodic: int = 0
    redis_keys: int = 0
    messages: int = 0

    def __str__(self) -> str:
        return (
            f"{self.runs} runs, {self.periodic} periodic tasks, {self.redis_keys} Redis keys "
            f"and {self.messages} unacknowledged messages"
        )


def drop_messages(nodes: Iterable[str]) -> tuple[int, int]:
    """Delete the nodes' queues and their unacknowledged messages: (queues, messages)."""
    nodes = list(nodes)
    queues = {keys.queue_name(node) for node in nodes}
    client = get_redis()
    dropped = []
    for tag, raw in client.hscan_iter(UNACKED):
        try:
            routing_key = json.loads(text(raw))[2]
        except (ValueError, IndexError, TypeError):
            continue
        if routing_key in queues:
            dropped.append(tag)
    if dropped:
        pipe = client.pipeline(transaction=False)
        pipe.hdel(UNACKED, *dropped)
        pipe.zrem(UNACKED_INDEX, *dropped)
        pipe.execute()
    lists = [key for node in nodes for key in keys.queue_keys(node)]  # a list per priority
    return client.delete(*lists) if lists else 0, len(dropped)


def reset(nodes: Iterable[str]) -> Cleared:
    """Remove what earlier demos left: every run and periodic row, every key under
    ``KEY_PREFIX``, and the demo nodes' queues and unacknowledged messages. The
    ``Leadership`` row stays: the next leader's epoch must still be higher than any a
    former leader wrote with."""
    from distributed_tasks.models import PeriodicTaskState, TaskRun

    runs = TaskRun.objects.all().delete()[0]
    periodic = PeriodicTaskState.objects.all().delete()[0]
    client = get_redis()
    ours = list(client.scan_iter(match=f"{get_settings().KEY_PREFIX}:*", count=1000))
    deleted = client.delete(*ours) if ours else 0
    queues, messages = drop_messages(nodes)
    return Cleared(runs=runs, periodic=periodic, redis_keys=deleted + queues, messages=messages)


def _active():
    from distributed_tasks.models import TaskRun

    return TaskRun.objects.active()


def leave_clean(cluster: LocalCluster, beats: Iterable[str], nodes: Iterable[str]) -> Cleared:
    """Stop beats, let active runs finish (briefly), stop workers, end and drop the rest."""
    from distributed_tasks import api
    from distributed_tasks.exceptions import DistributedTasksError
    from distributed_tasks.store import get_store, message_for
    from distributed_tasks.types import Outcome, Reason, State

    for beat in beats:
        cluster.stop(beat)
    deadline = time.monotonic() + DRAIN_SECONDS
    while _active().exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    cluster.stop_all()
    ended = 0
    for run in _active():
        if run.state == State.QUEUED:
            try:
                api.cancel(run.name, run.task_list)
                ended += 1
            except DistributedTasksError:
                pass  # it ended meanwhile
        else:
            outcome = Outcome.failed(Reason.NODE_LOST, message="the demo stopped its node")
            ended += get_store().mark_lost(message_for(run), outcome)
    try:
        queues, messages = drop_messages(nodes)
    except RedisError:
        queues, messages = 0, 0
    return Cleared(runs=ended, redis_keys=queues, messages=messages)
