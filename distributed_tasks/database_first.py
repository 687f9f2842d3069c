"""A single start decided by the database: one INSERT, then one Redis call.

The general walk (``client.py``) claims the name in Redis, inserts the row, then
publishes: two Redis round trips around the INSERT, because the message may only go
out once the row is committed. But the database's unique active name decides anyway
(invariant 1): the claim only refused a duplicate a little sooner. So the common
start (one run, outside a transaction, no countdown, any earlier run's name reusable,
run messages pushed by ``envelope.py`` into the same single Redis that caches
statuses) inserts its row first, and then writes its QUEUED status, counts its node's
load and pushes its message in one ``EVALSHA`` (``scripts.QUEUE``): one statement and
one round trip. A refused start costs an INSERT that inserts nothing (``ON CONFLICT DO
NOTHING`` on PostgreSQL and SQLite: no error, no dead row) and a read of the run that
holds the name (the claim-first walk refused in one Redis round trip).

What the claim-first walk guaranteed still holds: a refused or failed start leaves no
row, no status, no load and no message (``client.py`` undoes a failure as for any
start); a process that dies between the INSERT and the Redis call leaves a QUEUED row
without a message, which the leader publishes after ``ORPHAN_AFTER``. One thing
differs: a claim in Redis without a row no longer refuses such a start; whichever
INSERT comes first wins, and the other start is refused with the winner's run. And an
INSERT waits for a caller's transaction that holds an uncommitted row of the same name
(PostgreSQL and MySQL lock the unique index entry) where the claim refused at once.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

from distributed_tasks import claims, envelope, keys, scripts
from distributed_tasks.connection import get_redis
from distributed_tasks.starts import Start
from distributed_tasks.types import Reuse, State


def direct_redis(alias: str) -> Any | None:
    """The client that takes status, load and message in one call, or None: the start
    takes the general walk (a caller's transaction, another broker, Redis Cluster...)."""
    if connections[alias].in_atomic_block:
        return None  # the message waits for the caller's commit: claim first
    redis = envelope.client()  # None for Redis Cluster and Sentinel URLs, CELERY_APP...
    return redis if redis is not None and redis is get_redis() else None


def applies(starts: list[Start], alias: str) -> Any | None:
    """The Redis client to queue ``starts`` with, when they are one plain start."""
    if len(starts) != 1:
        return None
    r = starts[0].request
    if r.reuse != Reuse.ALLOW or r.countdown:  # the reuse check and deferral: general walk
        return None
    return direct_redis(alias)


def queue(redis: Any, s: Start) -> None:
    """Write ``s``'s QUEUED status and load and push its message, in one call.

    Raises ``RedisError``: the status and load may have been written or not, so the
    start counts as claimed from here (a failure releases both, by run id)."""
    m = s.message
    key, message = envelope.encode(m, None)
    s.claimed = True
    scripts.script(scripts.QUEUE)(
        keys=[keys.run_key(m.task_list, m.name), keys.loads_key(), key],
        args=[m.task_list, m.name, m.run_id, m.node, message,
              *claims.message_pairs(m, State.QUEUED)],
        client=redis,
    )  # fmt: skip
    envelope.published([(m, None)])
