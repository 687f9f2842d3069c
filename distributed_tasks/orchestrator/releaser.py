"""Releaser: publishes deferred runs once they are due (``deferred.py``).

Each tick it takes the deferred task ids whose due time passed and publishes the
message of every one whose run is still QUEUED at that attempt; a run cancelled,
moved or started meanwhile is just dropped from the set. A message the broker
refuses stays in the set for the next tick.
"""

from __future__ import annotations

import time
from collections import Counter

from distributed_tasks import attempts, deferred
from distributed_tasks.orchestrator import Duty, TickContext
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import State


class Releaser(Duty):
    name = "releaser"

    def run(self, ctx: TickContext) -> dict[str, int]:
        counts: Counter[str] = Counter()
        task_ids = deferred.due(time.time(), ctx.batch)
        if not task_ids:
            return {}
        wanted: dict[str, set[int]] = {}  # a run moved meanwhile has two attempts due
        for task_id in task_ids:
            run_id, _, attempt = task_id.partition(":")
            wanted.setdefault(run_id, set()).add(int(attempt or 0))
        runs = get_store().runs.by_keys(wanted, state=State.QUEUED)
        finished = set(task_ids)
        for run in runs:
            if run.attempt not in wanted.get(run.run_id, ()):
                continue
            msg = message_for(run)
            if attempts.deliver(msg, None):
                counts["released"] += 1
            else:
                finished.discard(msg.task_id)  # the broker refused it: next tick
        counts["dropped"] = len(finished) - counts["released"]  # cancelled, moved, started
        deferred.done(sorted(finished))
        return {k: v for k, v in counts.items() if v}
