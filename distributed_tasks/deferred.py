"""Runs due far in the future wait in the database, not in the broker.

A message with a long countdown would sit in the broker as an ETA message: on Redis,
kombu redelivers every unacked message once ``visibility_timeout`` (an hour) passed,
so each such run would be delivered again every hour and pile up, reserved, in its
node's memory until due. A message due more than ``DEFER_AFTER`` seconds from now is
therefore not published: its run stays QUEUED in the database (``run_after`` says
when) and its task id goes into a Redis sorted set scored by the due time. The
leader's ``Releaser`` duty publishes each one once it is due (orchestrator/releaser.py),
and a resync after Redis lost its data puts the deferred runs back in the set.
"""

from __future__ import annotations

import time

from distributed_tasks import keys
from distributed_tasks.connection import get_redis
from distributed_tasks.messages import RunMessage

# Countdowns longer than this are not published at once (well below visibility_timeout).
DEFER_AFTER = 600.0


def hold(
    messages: list[tuple[RunMessage, float | None]],
) -> list[tuple[RunMessage, float | None]]:
    """Record the messages due later than ``DEFER_AFTER`` and return the others, to publish.

    Raises ``redis.RedisError`` when Redis does not answer (the publish fails as a whole).
    """
    later = [(m, c) for m, c in messages if c is not None and c > DEFER_AFTER]
    if not later:
        return messages
    now = time.time()
    get_redis().zadd(keys.deferred_key(), {m.task_id: now + c for m, c in later})
    return [(m, c) for m, c in messages if c is None or c <= DEFER_AFTER]


def due(now: float, limit: int) -> list[str]:
    """Task ids (``<run_id>:<attempt>``) of deferred messages due by ``now``, oldest first."""
    members = get_redis().zrangebyscore(keys.deferred_key(), "-inf", now, start=0, num=limit)
    return [m.decode() if isinstance(m, bytes) else m for m in members]


def done(task_ids: list[str]) -> None:
    if task_ids:
        get_redis().zrem(keys.deferred_key(), *task_ids)
