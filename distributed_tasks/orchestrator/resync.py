"""Resync: Redis is rebuilt from the database, which is the source of truth.

Each tick the leader
- after Redis lost its data (the ``intact`` marker is gone), walks every active
  run in batches, restores its cached status, and publishes again the message of
  each QUEUED run when Redis is also the broker (a duplicate is harmless: only
  one delivery can move the row QUEUED -> RUNNING), and of each deferred run
  (``deferred.py``: its entry in the lost set comes back); then sets the marker;
- rebuilds the per-node load counts from the database;
- publishes again a QUEUED run whose message is gone: its start time passed
  ``ORPHAN_AFTER`` ago and its live node's queue is empty (its publisher died
  between insert and publish, or the broker refused after commit);
- on its first tick as leader, does the same at once for the QUEUED runs a
  previous leader queued in the last ``ORPHAN_AFTER`` (a periodic slot, a run it
  requeued or moved) and that are due: that leader may have died between its
  commit and its publish, and a periodic run left so would hold its name, and
  skip every slot, until the rule above;
- scans a slice of the name keys for claims that no active row backs (their
  owner died between claim and insert) and releases them, or restores the
  finished status the row has; it deletes keys of the old format (before
  ``keys.KEY_FORMAT`` 2, they store no task list), which nothing reads any more.

Upgrading the key format renames the resync marker, so the first leader of the
new version finds it missing and rebuilds every active name's key (as after a
flush); the scan then drops the old keys.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter

from django.db.models import Count, Q
from django.utils import timezone

from distributed_tasks import attempts, claims, deferred, keys, scripts
from distributed_tasks.brokers import get_broker
from distributed_tasks.connection import as_dict, get_redis, scan_step, text
from distributed_tasks.messages import run_hex
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import PARKED
from distributed_tasks.orchestrator import Duty, TickContext
from distributed_tasks.periodic import PeriodicRun
from distributed_tasks.registry import path_of
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import ACTIVE_STATES, State

INHERITED_MARGIN = dt.timedelta(seconds=1)


class Resync(Duty):
    name = "resync"

    def __init__(self) -> None:
        self.rebuild_from: str | None = None  # run id cursor while rebuilding
        self.scan_cursor = 0
        self.elected_at = timezone.now()
        self.inherited_checked = 0  # the epoch whose inherited runs were all looked at
        self.inherited_until: dt.datetime | None = None  # due times looked at so far
        # key -> (attempt, when first seen) of a claim ahead of its run's finished row
        self.ahead: dict[str, tuple[str, float]] = {}

    def reset(self) -> None:
        self.rebuild_from = None
        self.scan_cursor = 0
        self.elected_at = timezone.now()
        self.inherited_until = None
        self.ahead.clear()

    def run(self, ctx: TickContext) -> dict[str, int]:
        counts: Counter[str] = Counter()
        if not ctx.view.intact and self.rebuild_from is None:
            self.rebuild_from = ""
        if self.rebuild_from is not None:
            self._rebuild(ctx, counts)
        self._loads()
        if not ctx.redis_settling:
            self._inherited(ctx, counts)
            self._orphans(ctx, counts)
            self._stale_claims(ctx, counts)
        return dict(counts)

    def _rebuild(self, ctx: TickContext, counts: Counter[str]) -> None:
        runs = list(
            get_store().runs.active().filter(id__gt=self.rebuild_from or "0" * 32).order_by("id")
            [: ctx.batch]
        )  # fmt: skip
        republish = get_broker().shares_redis
        for run in runs:
            if claims.fill(run.task_list, run.name, claims.fields_for_run(run)):
                counts["statuses_restored"] += 1
            held = run.run_after - run.queued_at > dt.timedelta(seconds=deferred.DEFER_AFTER)
            parked = run.node == PARKED  # no queue: the lifeline moves it once a node serves it
            if run.state == State.QUEUED and not parked and (republish or held):  # held: lost set
                countdown = max(0.0, (run.run_after - ctx.now).total_seconds())
                counts["republished"] += attempts.deliver(message_for(run), countdown)
        if len(runs) < ctx.batch:
            get_redis().set(keys.intact_key(), ctx.holder)
            self.rebuild_from = None
            counts["rebuilds_completed"] += 1
        else:
            self.rebuild_from = runs[-1].run_id

    def _loads(self) -> None:
        rows = get_store().runs.active().values("node").annotate(n=Count("id")).order_by()
        loads = {row["node"]: row["n"] for row in rows}
        pipe = get_redis().pipeline(transaction=True)
        pipe.delete(keys.loads_key())
        if loads:
            pipe.hset(keys.loads_key(), mapping=loads)
        pipe.execute()

    def _inherited(self, ctx: TickContext, counts: Counter[str]) -> None:
        """Once per leadership: a QUEUED run that a previous leader queued or moved, due,
        its node's queue empty, may be one that leader never published. Publish it again
        now rather than ``ORPHAN_AFTER`` later: if its message was out after all (taken
        by the node, waiting for a free slot), the second delivery finds the attempt
        started and is dropped. Only runs younger than ``ORPHAN_AFTER`` (older ones are
        ``_orphans``'), newest first: a slot the last leader dispatched comes first."""
        if self.inherited_checked == ctx.epoch:
            return
        recent = ctx.now - attempts.ORPHAN_AFTER
        earlier = Q(orchestrator_epoch__lt=ctx.epoch) | Q(
            function=path_of(PeriodicRun), queued_at__lt=self.elected_at
        )
        # A second's margin: a worker's retry backoff set on another host's clock. A run
        # the last leader committed less than that before this election becomes due in a
        # later tick: each tick looks at the due times after the last one's, until the
        # election itself is a margin old.
        until = ctx.now - INHERITED_MARGIN
        after = self.inherited_until
        since = {"run_after__gt": after} if after and after > recent else {"run_after__gte": recent}
        due = {"run_after__lte": until, **since}
        if self._republish(ctx, counts, "inherited_republished", earlier, newest=True, **due):
            self.inherited_until = until
            if until >= self.elected_at:
                self.inherited_checked = ctx.epoch

    def _orphans(self, ctx: TickContext, counts: Counter[str]) -> None:
        self._republish(
            ctx, counts, "orphans_republished", run_after__lt=ctx.now - attempts.ORPHAN_AFTER
        )

    @staticmethod
    def _republish(
        ctx: TickContext, counts: Counter[str], count: str, *q: Q, newest: bool = False, **when
    ) -> bool:
        """Publish again each QUEUED run so filtered whose live node's queue is empty.
        False when nothing could be judged or sent (the broker did not answer).

        When a whole batch is found, the idle nodes' runs are read again on their own: old
        runs waiting behind busy nodes' queues would otherwise fill every pass, and an
        orphan on an idle node behind them would never be reached. Nothing to look at
        asks the broker nothing."""
        runs = get_store().runs.filter(*q, state=State.QUEUED, **when)
        runs = runs.order_by("-run_after" if newest else "run_after")
        nodes = list(runs.filter(node__in=list(ctx.view.nodes)).values_list("node", flat=True)
                     [: ctx.batch])  # fmt: skip
        if not nodes:
            return True
        full = len(nodes) == ctx.batch  # more may wait than were read
        depths = get_broker().depths(ctx.view.nodes if full else set(nodes))
        if any(depth is None for depth in depths.values()):
            return False
        idle = [node for node, depth in depths.items() if depth == 0]
        complete = True
        for run in runs.filter(node__in=idle)[: ctx.batch] if idle else ():
            sent = attempts.deliver(message_for(run))
            counts[count] += sent
            complete = complete and sent
        return complete

    def _stale_claims(self, ctx: TickContext, counts: Counter[str]) -> None:
        redis = get_redis()
        self.scan_cursor, found = scan_step(
            self.scan_cursor, match=keys.run_key_pattern(), count=ctx.batch
        )
        found = text(found)
        if not found:
            return
        pipe = redis.pipeline(transaction=False)
        for key in found:
            pipe.hmget(key, "run_id", "state", "queued_at", "task_list", "attempt")
        suspects: dict[str, str] = {}  # key -> the run id it holds, as stored
        attempts: dict[str, str] = {}  # key -> its attempt, compared as stored, never parsed
        now = time.time()
        replies = zip(found, pipe.execute(), strict=True)
        for key, (run_id, state, queued_at, task_list, attempt) in replies:
            if task_list is None:  # the old key format: nothing reads it any more
                dropped = scripts.script(scripts.DROP_OLD_FORMAT)(keys=[key])
                counts["old_format_keys_dropped"] += int(dropped)
                continue
            if text(state) in ACTIVE_STATES and claims.past_grace(text(queued_at), now):
                suspects[key] = text(run_id) or ""
                attempts[key] = text(attempt) or ""
        for key in set(found) - set(attempts):
            self.ahead.pop(key, None)  # no longer a suspect: a next one gets its full grace
        ours = {key: run for key, stored in suspects.items() if (run := run_hex(stored))}
        for key in suspects.keys() - ours.keys():  # not a run id: no row can back it
            self._release(key, suspects[key], counts)
        if not ours:
            return
        rows = get_store().runs.by_keys(set(ours.values()), active_name__isnull=False)
        active = {run_id.hex for run_id in rows.values_list("id", flat=True)}
        for key, run_id in ours.items():
            if run_id in active:
                self.ahead.pop(key, None)
                continue
            row = get_store().get(run_id)
            if row is not None and row.finished_at is not None:
                if self._restore(row, key, attempts[key], now):
                    counts["finished_statuses_restored"] += 1
            else:
                self._release(key, suspects[key], counts)

    @staticmethod
    def _release(key: str, run_id: str, counts: Counter[str]) -> None:
        released = scripts.script(scripts.RELEASE)(keys=[key], args=[run_id])
        counts["stale_claims_released"] += int(released)

    def _restore(self, row: TaskRun, key: str, attempt: str, now: float) -> bool:
        """Put the finished status of ``row`` back in its name's key, which holds
        ``attempt`` of the run, QUEUED or RUNNING.

        The key may hold a newer attempt: a ``retry()`` that claimed it but whose row
        never became QUEUED (its transaction rolled back, its process died). The update
        refuses a newer attempt, so such a claim is replaced once it has stayed ahead of
        its finished row for ``CLAIM_GRACE`` (as a start's claim without a row is): a
        retry that commits does so within it, and one that commits later is mirrored."""
        fields = claims.fields_for_run(row)
        finished = row.finished_at.timestamp() if row.finished_at else now  # kept CLEANUP_TIMEOUT
        ttl = claims.ttl_ms(row.state, finished, now)
        if claims.update(row.task_list, row.name, row.run_id, row.attempt, fields, ttl=ttl):
            self.ahead.pop(key, None)
            return True
        seen = self.ahead.get(key)
        if seen is None or seen[0] != attempt:
            self.ahead[key] = (attempt, now)
            return False
        if now - seen[1] <= claims.CLAIM_GRACE:
            return False
        self.ahead.pop(key, None)
        if not scripts.script(scripts.RELEASE)(keys=[key], args=[row.run_id, attempt]):
            return False
        claims.fill(row.task_list, row.name, fields, ttl=ttl)
        latest = get_store().get(row.run_id)
        if latest is not None and latest.finished_at is None:  # the retry committed meanwhile
            claims.update(latest.task_list, latest.name, latest.run_id, latest.attempt,
                          claims.fields_for_run(latest))  # fmt: skip
        return True


def loads_snapshot() -> dict[str, int]:
    return {k: int(v) for k, v in as_dict(get_redis().hgetall(keys.loads_key())).items()}
