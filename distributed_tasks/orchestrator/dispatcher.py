"""Dispatcher: each due slot of each enabled periodic task becomes one run, on a free node.

Slots are the multiples of ``interval`` on the clock, so schedules do not drift.
A slot is claimed by moving ``last_slot`` forward with a conditional update in
the leader's fenced transaction: two leaders, or one leader twice, can never
dispatch the same slot. The slot's run is inserted in that same transaction and
published when it commits, so a leader that dies (or loses Redis or the database)
between the two leaves neither, and the next tick dispatches the slot: it is never
claimed without its run. The run is the unique named run ``periodic:<name>``: if
the previous one still runs, the slot is skipped and counted, never overlapped.
After a leader gap only the current slot runs (one catch-up, no burst).
The run goes to a random node among ``nodes()`` that has a free slot (the least
loaded for its capacity when none has), so a node busy with long user runs never
makes a slot wait behind them, and the next slot is never skipped for that.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import random
from collections import Counter

from django.db import transaction
from django.db.models import F, Q

from distributed_tasks import signals
from distributed_tasks.client import ClusterClient
from distributed_tasks.conf import get_settings
from distributed_tasks.exceptions import (
    AlreadyRunning,
    ClusterUnavailable,
    DistributedTasksError,
    InvalidConfiguration,
)
from distributed_tasks.fencing import fenced
from distributed_tasks.models import PeriodicTaskState, TaskRun
from distributed_tasks.orchestrator import Duty, TickContext
from distributed_tasks.outage import DB_ERRORS, REDIS_ERRORS
from distributed_tasks.periodic import (
    PeriodicRun,
    PeriodicSpec,
    declared_specs,
    states,
    task_class,
)
from distributed_tasks.store import get_store
from distributed_tasks.types import TaskHandle

logger = logging.getLogger("distributed_tasks.orchestrator.dispatcher")

SYNC_EVERY = dt.timedelta(seconds=10)
# Outcomes of a slot that is tried again (its claim rolled back, next_run_at still due).
WAITING = frozenset({"pending", "unavailable"})


class _Again(Exception):
    """Roll the slot's transaction back: the next tick dispatches the slot again, unless
    ``spent`` (the start itself was refused: the slot is then claimed and FAILED)."""

    def __init__(self, outcome: str, reason: str, *, spent: bool = False) -> None:
        super().__init__(reason)
        self.outcome, self.spent = outcome, spent


def slot_of(now: dt.datetime, interval: float) -> dt.datetime:
    """The start of the slot ``now`` falls in: a multiple of ``interval`` since the epoch."""
    start = math.floor(now.timestamp() / interval) * interval
    return dt.datetime.fromtimestamp(start, tz=dt.UTC)


def next_slot(now: dt.datetime, interval: float) -> dt.datetime:
    return slot_of(now, interval) + dt.timedelta(seconds=interval)


class Dispatcher(Duty):
    name = "dispatcher"

    def __init__(self) -> None:
        self.synced_at: dt.datetime | None = None
        self.next_due: dt.datetime | None = None
        self.client = ClusterClient()
        self.placed: Counter[str] = Counter()  # runs started this tick, per node
        # Task name -> when its waiting slot is tried again: its next_run_at stays due, so
        # without this the beat would dispatch it again at once, in a loop without sleep,
        # and a batch of waiting slots would come first at every tick, before the others.
        self.retry_at: dict[str, dt.datetime] = {}

    def reset(self) -> None:
        self.synced_at = None
        self.retry_at.clear()

    def run(self, ctx: TickContext) -> dict[str, int]:
        counts: Counter[str] = Counter()
        self.placed.clear()
        if self.synced_at is None or ctx.now - self.synced_at > SYNC_EVERY:
            self.sync(ctx, counts)
        self.retry_at = {name: at for name, at in self.retry_at.items() if at > ctx.now}
        rows = states().filter(enabled=True, next_run_at__lte=ctx.now)
        for row in rows.exclude(name__in=self.retry_at).order_by("next_run_at")[: ctx.batch]:
            outcome = self._dispatch(row, ctx)
            counts[outcome] += 1
            if outcome in WAITING:
                wait = dt.timedelta(seconds=get_settings().TICK_INTERVAL)
                self.retry_at[row.name] = ctx.now + wait
            signals.periodic_slot.send(Dispatcher, task=row.name, outcome=outcome)
        upcoming = states().filter(enabled=True).exclude(name__in=self.retry_at)
        due = upcoming.order_by("next_run_at").values_list("next_run_at", flat=True).first()
        self.next_due = min((t for t in (due, *self.retry_at.values()) if t), default=None)
        return dict(counts)

    def sync(self, ctx: TickContext, counts: Counter[str]) -> None:
        """Copy changed declarations (code or settings) into the table."""
        try:
            specs = declared_specs()
        except InvalidConfiguration as exc:
            logger.error("Periodic tasks not synced: %s", exc)
            counts["invalid_declarations"] += 1
            return
        rows = {row.name: row for row in states().all()}
        with fenced(ctx.epoch):
            for name, spec in specs.items():
                counts[self._sync_one(rows.get(name), spec, ctx.now)] += 1
            gone = [name for name, row in rows.items() if name not in specs and row.declared]
            if gone:  # no longer declared: stop it, keep its record
                states().filter(name__in=gone).update(enabled=False, declared={})
                counts["undeclared"] += len(gone)
        self.synced_at = ctx.now

    @staticmethod
    def _sync_one(row: PeriodicTaskState | None, spec: PeriodicSpec, now) -> str:
        declared = spec.declared()
        first = now if spec.instant else next_slot(now, spec.interval)
        fields = {
            "task": spec.task,
            "task_list": spec.task_list,
            "interval": spec.interval,
            "timeout": spec.timeout,
            "instant": spec.instant,
            "args": spec.args,
            "declared": declared,
        }
        if row is None:
            states().create(name=spec.name, enabled=spec.enabled, next_run_at=first, **fields)
            return "created"
        if row.declared == declared:
            return "unchanged"
        if row.declared.get("enabled") != spec.enabled:
            fields["enabled"] = spec.enabled
        if row.interval != spec.interval or row.next_run_at is None:
            fields["next_run_at"] = next_slot(now, spec.interval)
        states().filter(name=row.name).update(**fields)
        return "updated"

    def _dispatch(self, row: PeriodicTaskState, ctx: TickContext) -> str:
        first_instant = row.instant and row.last_slot is None  # runs at once, off the grid
        slot = ctx.now if first_instant else slot_of(ctx.now, row.interval)
        following = next_slot(ctx.now, row.interval)
        allowed = self._allowed(row, slot, ctx)  # user code: not inside the leader's lock
        started: list[TaskHandle] = []
        try:
            with fenced(ctx.epoch):
                if self._claim(row, slot, following):
                    return self._start(row, slot, allowed, ctx, started)
        except _Again as again:  # next_run_at stays due: the next tick tries the slot again
            return self._again(again, row, slot, following, ctx)
        except BaseException:
            if started:  # the transaction, and the run's row and message with it, did not commit
                self.client.forget(started)
            raise
        states().filter(name=row.name).update(next_run_at=following)
        return "already_dispatched"

    @staticmethod
    def _claim(row: PeriodicTaskState, slot: dt.datetime, following: dt.datetime) -> int:
        return (
            states()
            .filter(name=row.name, enabled=True)
            .filter(Q(last_slot__isnull=True) | Q(last_slot__lt=slot))
            .update(last_slot=slot, next_run_at=following)
        )

    def _again(
        self,
        again: _Again,
        row: PeriodicTaskState,
        slot: dt.datetime,
        following: dt.datetime,
        ctx: TickContext,
    ) -> str:
        if again.spent:  # a fresh transaction: the refused start's may be unusable
            with fenced(ctx.epoch):
                if not self._claim(row, slot, following):
                    return "already_dispatched"
                states().filter(name=row.name, last_slot=slot).update(
                    failures=F("failures") + 1, last_outcome="FAILED", last_error=str(again)
                )
            return again.outcome
        with contextlib.suppress(*DB_ERRORS):
            states().filter(name=row.name).update(last_error=str(again))
        return again.outcome

    @staticmethod
    def _candidates(ctx: TickContext, task_list: str) -> list[str]:
        """Live nodes serving the list, preferring those that heartbeat on time: a node
        that missed two beats is probably dying, and a slot sent there would be lost."""
        serving = sorted(n for n, info in ctx.view.nodes.items() if info.serves(task_list))
        recent = 2 * get_settings().HEARTBEAT_INTERVAL + 0.5
        return [n for n in serving if ctx.view.age(n) <= recent] or serving

    @staticmethod
    def _settling(ctx: TickContext) -> bool:
        """Whether an empty node list may only mean that nodes have not beaten again yet:
        Redis lost its data, or answers again after nobody could reach it."""
        return ctx.redis_settling or ctx.view.recovering()

    def _least_busy(self, allowed: list[str], ctx: TickContext) -> str:
        """A random node with a free slot, else a random one of the least loaded."""
        nodes = ctx.view.nodes
        ratio = {n: (ctx.view.loads.get(n, 0) + self.placed[n]) / nodes[n].slots for n in allowed}
        free = [n for n in allowed if ratio[n] < 1]
        least = min(ratio.values())
        node = random.choice(free or [n for n in allowed if ratio[n] == least])
        self.placed[node] += 1  # ctx.view's loads do not include this tick's starts
        return node

    def _allowed(
        self, row: PeriodicTaskState, slot: dt.datetime, ctx: TickContext
    ) -> list[str] | InvalidConfiguration:
        """The live nodes the task's ``nodes()`` allows, or why it could not say."""
        live = self._candidates(ctx, row.task_list)
        try:
            return [n for n in task_class(row.task)().nodes(list(live)) if n in live]
        except (*DB_ERRORS, *REDIS_ERRORS):
            raise  # the database or Redis away: the tick backs off, the slot is not claimed
        except Exception as exc:  # a bad declaration, or the task's own code (nodes())
            if isinstance(exc, InvalidConfiguration):
                return exc
            logger.exception("%s.nodes() raised; slot %s of %s not run", row.task, slot, row.name)
            return InvalidConfiguration(f"{row.task}.nodes() raised {type(exc).__name__}: {exc}")

    def _start(
        self,
        row: PeriodicTaskState,
        slot: dt.datetime,
        allowed: list[str] | InvalidConfiguration,
        ctx: TickContext,
        started: list[TaskHandle],
    ) -> str:
        rows = states().filter(name=row.name, last_slot=slot)
        if isinstance(allowed, InvalidConfiguration):
            rows.update(failures=F("failures") + 1, last_outcome="FAILED", last_error=str(allowed))
            return "invalid"
        if not allowed and self._settling(ctx):  # nodes() may name one not back yet
            raise _Again("unavailable", f"slot {slot.isoformat()} waits: nodes re-register")
        if not allowed:
            rows.update(
                skips=F("skips") + 1,
                last_outcome="SKIPPED",
                last_error="no live node among nodes()",
            )
            return "no_node"
        node = self._least_busy(allowed, ctx)
        # Once committed, the run is the cluster's whatever its publish does: never forgotten.
        transaction.on_commit(started.clear, using=get_settings().DATABASE_ALIAS)
        try:
            outcome = self.client.offer_on(
                node,
                PeriodicRun,
                [row.name, slot.isoformat()],
                name=row.run_name,
                task_list=row.task_list,
                timeout=row.timeout,
            )
        except ClusterUnavailable as exc:
            raise _Again("unavailable", f"slot {slot.isoformat()} waits: {exc}") from exc
        except DistributedTasksError as exc:  # a declaration validation let through
            raise _Again("invalid", f"slot {slot.isoformat()} not run: {exc}", spent=True) from exc
        if isinstance(outcome, AlreadyRunning):
            if outcome.run_id and not get_store().is_active(outcome.run_id):
                # Only Redis holds the name: a start that has no row yet, or one a dead
                # leader left (taken over once CLAIM_GRACE passed). Not a running run.
                raise _Again("pending", f"slot {slot.isoformat()} waits: {outcome}")
            rows.update(
                skips=F("skips") + 1,
                last_outcome="SKIPPED",
                last_error="the previous run was still going",
            )
            transaction.on_commit(
                lambda: signals.send_refusals(TaskRun, [outcome]),
                using=get_settings().DATABASE_ALIAS,
            )
            return "skipped"
        started.append(outcome)
        rows.update(last_run_id=outcome.run_id, last_node=node)
        return "dispatched"
