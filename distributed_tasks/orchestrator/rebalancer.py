"""Rebalancer: a run never waits behind a busy node while another node has a free slot.

Placement sends a run where a slot is free when it starts, but per-node queues
make that choice final, and durations differ: a node that drew long runs keeps
a queue while another one idles. Each tick the leader finds QUEUED runs that
have waited longer than ``REBALANCE_AFTER`` on a live node with no free slot
(every slot executing) and moves them, oldest first, to live nodes with a free
slot, until the loads are even for their capacities (``plan``, pure).

A move is the fenced path that rescues a lost node's runs
(``attempts.next_attempt``): a conditional update to a new attempt on the new
node. The old message becomes stale, so the old node runs nothing when it gets
to it; the worker's own ``QUEUED -> RUNNING`` on the old attempt and this move
exclude each other in the database, so a moved run executes exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.db.models import Count

from distributed_tasks import attempts
from distributed_tasks.conf import get_settings
from distributed_tasks.fencing import fenced
from distributed_tasks.nodes import ALL_TASK_LISTS, NodeInfo
from distributed_tasks.orchestrator import Duty, TickContext
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import MoveReason, State

logger = logging.getLogger("distributed_tasks.orchestrator.rebalancer")


def plan(
    waiting: Iterable[tuple[str, str, str]],
    loads: Mapping[str, int],
    slots: Mapping[str, int],
    serves: Callable[[str, str], bool],
) -> list[tuple[str, str]]:
    """``(run id, new node)`` for the ``(run id, node, task list)`` runs worth moving.

    ``waiting`` lists runs that may move, oldest first; ``loads`` counts active runs
    per live node and ``slots`` gives each live node's capacity. Only nodes with a
    free slot now receive runs. A run moves while its new node still has a free
    slot, or while the new node stays less loaded (for its capacity) than the old
    one was: the least loaded node fills up to the level of the others, no further.
    """
    load = Counter({n: loads.get(n, 0) for n in slots})
    receivers = {n for n in slots if load[n] < slots[n]}
    moves: list[tuple[str, str]] = []
    for run_id, node, task_list in waiting:
        candidates = [n for n in receivers if n != node and serves(n, task_list)]
        if not candidates or node not in slots:
            continue
        to = min(candidates, key=lambda n: (load[n] / slots[n], n))
        free = load[to] < slots[to]
        if free or (load[to] + 1) / slots[to] < load[node] / slots[node]:
            moves.append((run_id, to))
            load[to] += 1
            load[node] -= 1
    return moves


def _movable(receivers: list[NodeInfo]) -> dict[str, Any]:
    """Only the task lists a node with a free slot serves: a batch of runs that none of
    them can take would otherwise fill every pass and hide the runs behind it."""
    if any(ALL_TASK_LISTS in info.task_lists for info in receivers):
        return {}
    return {"task_list__in": sorted({name for info in receivers for name in info.task_lists})}


class Rebalancer(Duty):
    name = "rebalancer"

    def run(self, ctx: TickContext) -> dict[str, int]:
        if ctx.redis_settling:  # nodes are still re-registering: their slots are unknown
            return {"skipped": 1}
        live = ctx.view.nodes
        slots = {name: info.slots for name, info in live.items()}
        rows = (
            get_store()
            .runs.active()
            .filter(node__in=list(live))
            .values("node", "state")
            .annotate(n=Count("id"))
            .order_by()
        )
        running: Counter[str] = Counter()
        loads: Counter[str] = Counter()
        for row in rows:
            loads[row["node"]] += row["n"]
            if row["state"] == State.RUNNING:
                running[row["node"]] += row["n"]
        if all(loads[n] >= slots[n] for n in slots):
            return {}
        full = [n for n in slots if running[n] >= slots[n]]
        if not full:
            return {}
        since = ctx.now - dt.timedelta(seconds=get_settings().REBALANCE_AFTER)
        runs = list(
            get_store()
            .runs.filter(state=State.QUEUED, node__in=full, run_after__lte=since)
            .filter(**_movable([live[n] for n in slots if loads[n] < slots[n]]))
            .order_by("-priority", "run_after")[: ctx.batch]
        )
        moves = dict(
            plan(
                ((r.run_id, r.node, r.task_list) for r in runs),
                loads,
                slots,
                lambda node, task_list: live[node].serves(task_list),
            )
        )
        counts: Counter[str] = Counter()
        with fenced(ctx.epoch):
            for run in runs:
                if run.run_id in moves:
                    new = attempts.next_attempt(
                        message_for(run),
                        from_states=(State.QUEUED,),
                        epoch=ctx.epoch,
                        node=moves[run.run_id],
                        why=MoveReason.REBALANCED,
                    )
                    counts["moved" if new else "started_meanwhile"] += 1
        if counts["moved"]:
            logger.info(
                "Moved %d waiting run(s) to nodes with a free slot",
                counts["moved"],
                extra={"action": "rebalanced"},
            )
        return dict(counts)
