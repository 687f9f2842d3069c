"""The Redis writes of a batch of starts, in one round trip whatever its size.

A ``start_many`` of 1,000 entries used to send 1,000 ``EVAL``s of the claim script
(its source each time) and 1,000 ``HINCRBY``s: redis-py packing ~16 arguments per
entry cost more CPU than the claims themselves. On one server the whole batch is one
``CLAIM_MANY`` call (the entries as one JSON argument, only the refusals in its reply)
plus one ``HINCRBY`` per node. On Redis Cluster the names of a batch span hash slots
and one script may only touch one, so each name keeps its own ``CLAIM`` (the cluster
pipeline groups them per server).

A single start on one server is one ``EVALSHA`` of ``CLAIM_COUNTED`` (claim and count
together), without a pipeline: a pipeline sends a script's whole source (``EVAL``,
to spare redis-py's ``SCRIPT EXISTS``), which Redis hashes again on every call; the
direct call sends its SHA and costs ~30 us less CPU, ~100 us less wall time.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from redis.cluster import RedisCluster

from distributed_tasks import keys, scripts
from distributed_tasks.claims import ClaimOutcome, ClaimReply
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import get_redis

CLAIMED = ClaimReply(ClaimOutcome.CLAIMED)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# One claim: [task list, name, reuse policy, status field, value, field, value, ...].
Entry = Sequence[str]


def claim(entries: Sequence[Entry], nodes: Iterable[str]) -> list[ClaimReply]:
    """Claim every entry and count one run on each of ``nodes``, in one round trip.

    Raises ``RedisError``; the claims and counts may then have been written or not.
    """
    redis = get_redis()
    cutoff = time.time() - get_settings().CLEANUP_TIMEOUT
    cluster = isinstance(redis, RedisCluster)
    if len(entries) == 1 and not cluster:
        ((task_list, name, reuse, *fields),) = entries
        (node,) = nodes
        raw = scripts.script(scripts.CLAIM_COUNTED)(
            [keys.run_key(task_list, name), keys.loads_key()],
            [task_list, name, reuse, "", cutoff, node, *fields],
        )
        return [CLAIMED if raw[0] == 1 else ClaimReply.parse(raw)]
    run_keys = [keys.run_key(e[0], e[1]) for e in entries]
    pipe = redis.pipeline(transaction=False)
    one_call = len(entries) > 1 and not cluster
    if one_call:
        scripts.script(scripts.CLAIM_MANY)(run_keys, [cutoff, _dumps(entries)], client=pipe)
    else:
        for key, (task_list, name, reuse, *fields) in zip(run_keys, entries, strict=True):
            args = [task_list, name, reuse, "", cutoff, *fields]
            scripts.script(scripts.CLAIM)([key], args, client=pipe)
    count(pipe, nodes, 1)
    replies = pipe.execute()
    if not one_call:
        return [ClaimReply.parse(raw) for raw in replies[: len(entries)]]
    out = [CLAIMED] * len(entries)
    refused = replies[0]
    for i in range(0, len(refused), 3):
        out[int(refused[i]) - 1] = ClaimReply.parse(refused[i + 1 : i + 3])
    return out


def count(pipe: Any, nodes: Iterable[str], sign: int) -> None:
    """Add (or, with ``sign`` -1, take back) one run per entry of ``nodes``: one
    ``HINCRBY`` per node, queued on ``pipe``."""
    loads = keys.loads_key()
    for node, n in Counter(nodes).items():
        pipe.hincrby(loads, node, sign * n)
