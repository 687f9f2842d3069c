"""Reaper: finished names stop reporting after CLEANUP_TIMEOUT; history goes after retention.

The Elixir library never reaps failed names; here DONE *and* FAILED names are
reaped. Their cached status already carries a TTL of CLEANUP_TIMEOUT; the
reaper also deletes any cached status of a run finished longer ago than that
(compare-and-delete, never a newer run of the name), walking finished runs in
``finished_at`` order from a watermark, and deletes rows older than
HISTORY_RETENTION. Both are bounded by ``BATCH_SIZE`` per tick.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction

from distributed_tasks import keys, scripts
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import get_redis, text
from distributed_tasks.fencing import fenced
from distributed_tasks.orchestrator import Duty, TickContext
from distributed_tasks.store import get_store

# On election, names finished this long before the cleanup cut-off are looked at again.
LOOKBACK = dt.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class ReapPlan:
    """What one reaper pass would do (``dt_reap --dry-run`` prints it)."""

    history_rows: int
    names: list[tuple[str, str, str]]  # (task_list, name, run_id)
    until: dt.datetime | None


class Reaper(Duty):
    name = "reaper"

    def __init__(self, lookback: dt.timedelta | None = LOOKBACK) -> None:
        self.lookback = lookback  # None: walk every finished run (dt_reap)
        self.watermark: dt.datetime | None = None

    def reset(self) -> None:
        self.watermark = None

    def plan(self, now: dt.datetime, batch: int) -> ReapPlan:
        conf = get_settings()
        cut = now - dt.timedelta(seconds=conf.CLEANUP_TIMEOUT)
        finished = get_store().runs.finished().filter(finished_at__lte=cut)
        start = self.watermark or (cut - self.lookback if self.lookback else None)
        if start is not None:
            finished = finished.filter(finished_at__gt=start)
        columns = ("task_list", "name", "id", "finished_at")
        rows = list(finished.order_by("finished_at").values_list(*columns)[:batch])
        retention = now - dt.timedelta(seconds=conf.HISTORY_RETENTION)
        # A bounded slice: counting a whole retention backlog every tick would scan it.
        old = get_store().runs.reapable(retention).order_by()[:batch].count()
        return ReapPlan(
            history_rows=old,
            names=[(tl, name, run_id.hex) for tl, name, run_id, _ in rows],
            until=rows[-1][3] if rows else None,
        )

    def would_reap(self, plan: ReapPlan) -> int:
        """How many of ``plan``'s names ``apply`` would reap, changing nothing (``--dry-run``).

        The same test as ``EXPIRE_FINISHED``, read-only: the cached status is still that
        finished run. A name already reaped, expired or taken by a newer run is not counted.
        """
        if not plan.names:
            return 0
        pipe = get_redis().pipeline(transaction=False)
        for task_list, name, _run_id in plan.names:
            pipe.hmget(keys.run_key(task_list, name), "run_id", "state")
        cached = [text(fields) for fields in pipe.execute()]
        return sum(
            run_id == cached_id and state in ("DONE", "FAILED")
            for (_tl, _name, run_id), (cached_id, state) in zip(plan.names, cached, strict=True)
        )

    def run(self, ctx: TickContext) -> dict[str, int]:
        return self.apply(self.plan(ctx.now, ctx.batch), ctx.now, ctx.batch, epoch=ctx.epoch)

    def apply(
        self, plan: ReapPlan, now: dt.datetime, batch: int, *, epoch: int | None = None
    ) -> dict[str, int]:
        """Carry ``plan`` out. The leader passes its epoch (fenced); ``dt_reap`` passes none,
        which is safe because both steps are idempotent and touch only finished runs."""
        reaped = 0
        if plan.names:
            pipe = get_redis().pipeline(transaction=False)
            for task_list, name, run_id in plan.names:
                scripts.script(scripts.EXPIRE_FINISHED)(
                    keys=[keys.run_key(task_list, name)], args=[run_id], client=pipe
                )
            reaped = sum(int(r) for r in pipe.execute())
            self.watermark = plan.until
        deleted = 0
        if plan.history_rows:
            retention = now - dt.timedelta(seconds=get_settings().HISTORY_RETENTION)
            with fenced(epoch) if epoch else transaction.atomic(using=get_store().alias):
                deleted = get_store().delete_finished_before(retention, batch)
        return {"names_reaped": reaped, "history_deleted": deleted}
