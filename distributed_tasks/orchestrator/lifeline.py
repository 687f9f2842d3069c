"""Lifeline: runs of dead or restarted nodes end, or move, instead of staying RUNNING for ever.

django-celery-results leaves rows STARTED for ever when a host dies; here the
leader finds every active run whose node stopped heartbeating (or restarted,
which its incarnation id reveals) and, in one fenced transaction per batch:

- a QUEUED run (it never started) moves to a live node as a new attempt;
- a RUNNING run with executions left is retried on a live node (at-least-once); when
  no live node serves its task list, its next attempt waits QUEUED on no node and
  moves to the first node that does;
- any other RUNNING run ends FAILED with reason ``node_lost`` (the seed's
  behaviour: not restarted).

The dead node is then forgotten once (``node_lost`` is sent by the call that
removed it) and its queue purged; messages of moved attempts are fenced anyway.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections import Counter

from django.db import transaction
from django.db.models import Q

from distributed_tasks import attempts, claims, keys, logs, lost, mirror, scripts, signals
from distributed_tasks.brokers import get_broker
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import get_redis
from distributed_tasks.exceptions import ClusterUnavailable
from distributed_tasks.fencing import fenced
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import PARKED
from distributed_tasks.orchestrator import Duty, TickContext
from distributed_tasks.outage import BROKER_ERRORS, REDIS_ERRORS, describe
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason, State

logger = logging.getLogger("distributed_tasks.orchestrator.lifeline")


class NodeLost(Exception):
    """What ``on_failure`` receives for a run whose node died under it."""


class Lifeline(Duty):
    name = "lifeline"

    def __init__(self) -> None:
        self.missing_since: dict[str, float] = {}  # nodes with runs but no membership entry

    def reset(self) -> None:
        self.missing_since.clear()

    def _dead(self, ctx: TickContext, nodes_with_runs: set[str]) -> set[str]:
        """Nodes dead on evidence: a heartbeat older than NODE_TIMEOUT, or no membership
        entry at all for NODE_TIMEOUT. A node merely missing (Redis just lost its data,
        and heartbeats re-register within a second) is not dead yet."""
        now = time.monotonic()
        missing = {n for n in nodes_with_runs if n not in ctx.view.nodes} - set(ctx.view.stale)
        self.missing_since = {n: self.missing_since.get(n, now) for n in missing}
        timeout = get_settings().NODE_TIMEOUT
        confirmed = {n for n, since in self.missing_since.items() if now - since >= timeout}
        return (nodes_with_runs & set(ctx.view.stale)) | confirmed

    def run(self, ctx: TickContext) -> dict[str, int]:
        counts: Counter[str] = Counter()
        if ctx.redis_settling:  # an empty node set right after a flush is not a mass death
            return {"skipped": 1}
        self._announce_joined(ctx, counts)
        live = ctx.view.nodes
        active = get_store().runs.active().values_list("node", "state", "incarnation").distinct()
        with_runs = {node for node, _state, _inc in active}
        # Parked runs wait for a node as runs of a dead one do: moved once one serves them.
        dead = self._dead(ctx, with_runs - {PARKED}) | (with_runs & {PARKED})
        restarted = _stopped(
            {
                (node, inc)
                for node, state, inc in active
                if state == State.RUNNING and node in live and inc and inc != live[node].incarnation
            }
        )
        if dead or restarted:
            self._rescue(ctx, dead, restarted, counts)
        # Forget a dead node (purge its queue, send node_lost) once no run is left on it,
        # and only as the current leader: a fenced-out one changes nothing, here either.
        gone = (dead | set(ctx.view.stale)) - {PARKED}
        with fenced(ctx.epoch):
            busy = set(
                get_store().runs.active().filter(node__in=gone).values_list("node", flat=True)
            )
            for node in sorted(gone - busy):
                self._forget(node, counts)
        return dict(counts)

    def _announce_joined(self, ctx: TickContext, counts: Counter[str]) -> None:
        if not ctx.view.nodes:
            return
        pipe = get_redis().pipeline(transaction=False)
        names = sorted(ctx.view.nodes)
        for name in names:
            pipe.sadd(keys.known_key(), name)
        for name, added in zip(names, pipe.execute(), strict=True):
            if added:
                counts["nodes_joined"] += 1
                signals.node_joined.send(sender=Lifeline, node=name)

    def _forget(self, node: str, counts: Counter[str]) -> None:
        removed = scripts.script(scripts.FORGET_NODE)(
            keys=[
                keys.members_key(),
                keys.node_key(node),
                keys.membership_version_key(),
                keys.known_key(),
            ],
            args=[node, int(get_settings().NODE_TIMEOUT * 1000)],
        )
        if removed:
            counts["nodes_lost"] += 1
            with contextlib.suppress(*REDIS_ERRORS):  # the node is forgotten: go on regardless
                get_redis().delete(keys.node_cancel_key(node))  # its pending forced cancels
            try:
                purged = get_broker().purge(node)
            except BROKER_ERRORS as exc:  # forgotten already: this is the only chance
                logger.warning("Could not purge lost node %s's queue: %s", node, describe(exc))
                purged = 0  # its stale messages are fenced: a node of that name runs none
            if purged:
                counts["messages_purged"] += purged  # stale messages of moved runs
            signals.node_lost.send(sender=Lifeline, node=node)

    def _rescue(self, ctx, dead: set[str], restarted: set[tuple[str, str]], counts) -> None:
        """Move, retry or end a batch of the lost runs, oldest first. A QUEUED run whose
        task list no live node serves cannot move: it is left out of the batch until one
        does, or a batch of those would come first every tick and the runs behind them
        (a RUNNING run of another dead node) would never be reached."""
        lost = Q(node__in=dead)
        for node, incarnation in restarted:
            lost |= Q(node=node, incarnation=incarnation, state=State.RUNNING)
        candidates = get_store().runs.active().filter(lost)
        queued = candidates.filter(state=State.QUEUED).order_by()
        lists = set(queued.values_list("task_list", flat=True).distinct())
        served = {t for t in lists if any(i.serves(t) for i in ctx.view.nodes.values())}
        movable = Q(state=State.RUNNING) | Q(task_list__in=served)
        runs = list(candidates.filter(movable).order_by("queued_at")[: ctx.batch])
        with fenced(ctx.epoch):
            for run in runs:
                counts[self._rescue_one(run, ctx)] += 1

    def _rescue_one(self, run: TaskRun, ctx: TickContext) -> str:
        msg = message_for(run)
        where = (
            "restarted while running it" if run.node in ctx.view.nodes else "stopped heartbeating"
        )
        outcome = Outcome.failed(
            Reason.NODE_LOST, message=f"node {run.node} {where} (attempt {run.attempt})"
        )
        try:
            if run.state == State.QUEUED:  # it never started: moving it runs nothing twice
                countdown = max(0.0, (run.run_after - ctx.now).total_seconds())
                new = attempts.next_attempt(
                    msg, from_states=(State.QUEUED,), countdown=countdown, epoch=ctx.epoch
                )
                return "moved" if new else "fenced"
        except ClusterUnavailable:
            return "waiting_for_a_node"
        return end_running(run, outcome, ctx, NodeLost)


def _stopped(incarnations: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (node, incarnation) pairs whose process stopped beating: a node restarted only
    once its old incarnation is silent, not while two processes share its name."""
    if not incarnations:
        return incarnations
    pairs = sorted(incarnations)
    pipe = get_redis().pipeline(transaction=False)
    for node, incarnation in pairs:
        pipe.exists(keys.incarnation_key(node, incarnation))
    return {pair for pair, beats in zip(pairs, pipe.execute(), strict=True) if not beats}


def end_running(run: TaskRun, outcome: Outcome, ctx: TickContext, error: type[Exception]) -> str:
    """A RUNNING attempt that nothing executes any more: retried on a live node if the run
    has executions left, else ended with ``outcome``. Inside the caller's fenced
    transaction; ``error`` is what the task's ``on_failure`` receives."""
    msg = message_for(run)
    try:
        if run.executions < run.max_attempts and run.cancel_requested_at is None:
            new = attempts.next_attempt(
                msg,
                from_states=(State.RUNNING,),
                countdown=attempts.retry_countdown(run.retry_backoff, run.executions),
                only_if_attempts_left=True,
                error=outcome,
                epoch=ctx.epoch,
            )
            if new:
                return "retried"  # else fenced out, or a cancel came after the read: end it
    except ClusterUnavailable:
        if _park(msg, outcome, ctx, attempts.retry_countdown(run.retry_backoff, run.executions)):
            return "parked"
    if not get_store().mark_lost(msg, outcome, epoch=ctx.epoch):
        return "fenced"
    transaction.on_commit(
        lambda: _finished(msg, outcome, error), using=get_store().alias, robust=True
    )
    return "failed"


def _park(msg: RunMessage, outcome: Outcome, ctx: TickContext, countdown: float) -> bool:
    """No live node serves the run's task list: its next attempt waits QUEUED on no node
    (``PARKED``), so its name reads QUEUED, its dead node can be forgotten, and the
    lifeline moves it to the first node that serves its task list."""
    moved = get_store().requeue(
        msg,
        node=PARKED,
        run_after=ctx.now + dt.timedelta(seconds=countdown),
        from_states=(State.RUNNING,),
        only_if_attempts_left=True,
        error=outcome,
        epoch=ctx.epoch,
    )
    if moved:
        new = msg.for_attempt(msg.attempt + 1, PARKED)
        fields = claims.message_fields(new, State.QUEUED)
        for announce in (
            lambda: mirror.publish(new, fields),
            lambda: signals.send_moved(RunMessage, new, msg, outcome),  # run_retried
        ):
            transaction.on_commit(announce, using=get_store().alias, robust=True)
    return moved


def _finished(msg, outcome: Outcome, error: type[Exception]) -> None:
    mirror.publish_outcome(msg, outcome)
    signals.run_finished.send(sender=TaskRun, message=msg, outcome=outcome)
    lost.call_hook(msg, "on_failure", error(outcome.error))  # after, as record_lost does
    logger.warning(
        "%s ended FAILED(%s): %s",
        msg.name,
        outcome.reason,
        outcome.error,
        extra=logs.run_extra(msg, outcome.reason),
    )
