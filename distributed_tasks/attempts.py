"""A new attempt of an existing run: moved off a lost node, retried, or re-published.

Every new attempt goes through ``next_attempt``: a conditional update that
bumps ``attempt`` (so any message of the old attempt is fenced out), then, once
the database change is committed, the status in Redis and the message to the
new node. If the broker does not answer, the row stays QUEUED and the
orchestrator's resync publishes it again later; nothing is lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import math
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from distributed_tasks import celery, claims, keys, logs, mirror, signals
from distributed_tasks.connection import get_redis
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.placement import Placement
from distributed_tasks.store import get_store, stamped
from distributed_tasks.types import ACTIVE_STATES, MoveReason, Outcome, State

logger = logging.getLogger("distributed_tasks.attempts")

# The longest wait before a retry, whatever retry_backoff and the failures say.
MAX_BACKOFF = 24 * 3600.0
# How long a QUEUED attempt past its due time may wait for its message before the
# leader's resync publishes it (orphan pass).
ORPHAN_AFTER = dt.timedelta(seconds=30)


def retry_countdown(retry_backoff: float, executions: int) -> float:
    """Seconds before the next attempt: ``retry_backoff`` doubled per failed execution.

    Always finite and within [0, MAX_BACKOFF], even for a row written before
    validation refused NaN or infinity: an error here would leave the run RUNNING.
    """
    try:
        value = float(retry_backoff) * 2.0 ** min(max(0, executions - 1), 64)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if math.isnan(value) or value < 0:
        return 0.0
    return min(value, MAX_BACKOFF)


@functools.cache
def placement() -> Placement:
    """The ring used by workers and the orchestrator (web processes use their client's)."""
    return Placement()


def deliver(msg: RunMessage, countdown: float | None = None, *, first: bool = False) -> bool:
    """Publish one message (``first``: ahead of its node's waiting ones, see
    ``celery.publish``); False (logged) when the broker refuses it."""
    try:
        celery.publish([(msg, countdown or None)], first=first)
        return True
    except celery.PublishFailed as exc:
        logger.error(
            "Could not publish %s attempt %s: %s (resync retries)",
            msg.name,
            msg.attempt,
            exc.__cause__,
            extra=logs.run_extra(msg, "publish_failed"),
        )
        return False


def _announce(old: RunMessage, new: RunMessage, countdown: float, first: bool) -> None:
    # A newer attempt replaces the whole cached status: the earlier attempt's error
    # is in the run's history (``TaskRun.attempts``), not in the current status.
    mirror.publish(new, claims.message_fields(new, State.QUEUED))
    # Loads are approximate and rebuilt by the orchestrator every tick.
    with contextlib.suppress(*REDIS_ERRORS):
        pipe = get_redis().pipeline(transaction=False)
        pipe.hincrby(keys.loads_key(), old.node, -1)
        pipe.hincrby(keys.loads_key(), new.node, 1)
        pipe.execute()
    deliver(new, countdown, first=first)


def next_attempt(
    msg: RunMessage,
    *,
    from_states: tuple[str, ...] = ACTIVE_STATES,
    countdown: float = 0.0,
    only_if_attempts_left: bool = False,
    error: Outcome | None = None,
    epoch: int | None = None,
    node: str | None = None,
    why: MoveReason = MoveReason.NODE_LOST,
    first: bool = False,
    ended_at: dt.datetime | None = None,
) -> RunMessage | None:
    """Move ``msg``'s run to a new attempt on ``node`` (default: placed on the ring of live
    nodes); None if fenced out. ``first``: its message goes ahead of those waiting on the
    node at its priority level (a run that already waited its turn elsewhere).
    ``ended_at``: when ``msg``'s attempt ended (now), for ``requeued_by``.

    Raises ``ClusterUnavailable`` when no live node serves the run's task list.

    Inside a transaction (the orchestrator's fenced one) the status and message
    follow the commit; outside one they follow at once.
    """
    node = node or placement().choose(msg.task_list, msg.name)
    run_after = timezone.now() + dt.timedelta(seconds=countdown)
    store = get_store()
    moved = store.requeue(
        msg,
        node=node,
        run_after=run_after,
        from_states=from_states,
        only_if_attempts_left=only_if_attempts_left,
        error=error,
        epoch=epoch,
        **(stamped(store, "requeue", ended_at=ended_at) if ended_at else {}),
    )
    if not moved:
        placement().unchoose(node)
        return None
    new = msg.for_attempt(msg.attempt + 1, node)
    _after_commit(msg, new, countdown, first=first, error=error, why=why)
    return new


def requeued_by(
    msg: RunMessage, stamps: Sequence[dt.datetime], error: Outcome | None
) -> RunMessage | None:
    """The attempt after ``msg``'s that ``next_attempt`` queued with one of ``stamps`` as
    its ``ended_at`` though the reply to its write was lost (``store.requeued_by``), with
    what that commit would have sent: ``run_retried`` (or ``run_moved``), and the new
    attempt's status and message while it still waits QUEUED and the resync has not
    published it yet (``ORPHAN_AFTER``). None: no such attempt."""
    run = get_store().requeued_by(msg, stamps)
    if run is None:
        return None
    new = msg.for_attempt(msg.attempt + 1, _node_of(run, msg.attempt + 1))
    wait = (run.run_after - timezone.now()) if run.run_after else dt.timedelta()
    waiting = (run.attempt, run.state) == (new.attempt, State.QUEUED) and -wait < ORPHAN_AFTER
    _after_commit(
        msg, new, max(0.0, wait.total_seconds()), first=False, error=error, why=None,
        announce=waiting,
    )  # fmt: skip
    return new


def _node_of(run: TaskRun, attempt: int) -> str:
    """The node ``run``'s ``attempt`` was queued on: its own, or its history's entry."""
    entry = run.ended(attempt) if run.attempt != attempt else None
    return str(entry.get("node")) if entry else run.node


def _after_commit(
    msg: RunMessage,
    new: RunMessage,
    countdown: float,
    *,
    first: bool,
    error: Outcome | None,
    why: MoveReason | None,
    announce: bool = True,
) -> None:
    """The new attempt's status and message (``announce``), then ``run_retried`` or
    ``run_moved``, once the move commits (at once outside a transaction)."""
    alias = get_store().alias
    if announce:
        transaction.on_commit(
            lambda: _announce(msg, new, countdown, first), using=alias, robust=True
        )
    # run_retried (after a failure), or run_moved off a lost node
    transaction.on_commit(
        lambda: signals.send_moved(RunMessage, new, msg, error, why),
        using=alias,
        robust=True,  # a failing callback must not skip other runs' messages
    )
