"""Mirroring into Redis a transition the database already recorded (status and load).

The worker's outcome, a retry's new attempt, the leader's ending of a lost run: each is
written to its row first, then here, fenced by run and attempt (``claims.update``), so a
stale writer never overwrites a newer run. Redis may be away: a failed write only logs,
and ``get_status`` reads the database until the cache is warm again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from redis.cluster import RedisCluster

from distributed_tasks import keys, logs, scripts
from distributed_tasks.claims import encode_result, flat, message_fields, ttl_ms, update
from distributed_tasks.connection import get_redis
from distributed_tasks.messages import RunMessage
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.types import Outcome

logger = logging.getLogger("distributed_tasks.mirror")


# (node, its load) as the last ``unload`` left it in this process: a pool process that
# just ended a run knows whether its node has a free slot without asking (stealing.py).
_unloaded: tuple[str, int] | None = None


def take_unloaded(node: str) -> int | None:
    """``node``'s load as this process's last outcome left it, once; None if unknown."""
    global _unloaded
    last, _unloaded = _unloaded, None
    return last[1] if last is not None and last[0] == node else None


def publish(
    msg: RunMessage,
    fields: Mapping[str, Any],
    *,
    ttl: int = 0,
    unload: bool = False,
    active_only: bool = False,
) -> None:
    """Mirror a transition the database already recorded; a Redis error only logs.

    ``active_only``: a status of the attempt still going, which must not replace its
    outcome if another process recorded that first."""
    global _unloaded
    try:
        redis = get_redis()
        if not unload:
            m = msg
            update(
                m.task_list, m.name, m.run_id, m.attempt, fields, ttl=ttl, active_only=active_only
            )
        elif isinstance(redis, RedisCluster):  # the loads hash is in another slot
            pipe = redis.pipeline(transaction=False)
            update(msg.task_list, msg.name, msg.run_id, msg.attempt, fields, ttl=ttl, client=pipe)
            pipe.hincrby(keys.loads_key(), msg.node, -1)
            _unloaded = (msg.node, int(pipe.execute()[-1]))
        else:  # one EVALSHA: no pipeline, no script source sent
            run_key = keys.run_key(msg.task_list, msg.name)
            load = scripts.script(scripts.UPDATE_COUNTED)(
                keys=[run_key, keys.loads_key()],
                args=[msg.task_list, msg.name, msg.run_id, msg.attempt, ttl, msg.node,
                      *flat(fields)],
                client=redis,
            )  # fmt: skip
            _unloaded = (msg.node, int(load))
    except REDIS_ERRORS as exc:
        logger.warning(
            "Could not cache status of %s: %s (the database has it)",
            msg.name,
            exc,
            extra=logs.run_extra(msg, "cache_failed"),
        )


def publish_outcome(msg: RunMessage, outcome: Outcome, *, started_at: float | None = None):
    """Cache a finished attempt for CLEANUP_TIMEOUT and take it off its node's load.

    ``started_at`` goes with it when given: a short run's status never said RUNNING."""
    now = time.time()
    fields = message_fields(
        msg,
        outcome.state,
        started_at=started_at,
        finished_at=now,
        reason=outcome.reason,
        error=outcome.error[:500],
        error_type=outcome.error_type,
        **encode_result(outcome.result),
    )
    publish(msg, fields, ttl=ttl_ms(outcome.state, now, now), unload=True)
