"""The worker's fenced start of one attempt: QUEUED -> RUNNING, from what the row holds.

The message only names the run and attempt: the function, arguments, callback, timeout
and name come from the row. A message that disagrees with its row (or whose Celery time
limits are not the row's timeout) was not written by us: the transition is rolled back
and nothing runs. The start is retried while the database does not answer; a start that
committed though its reply was lost is recognised by the time it stamped on the row.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from celery.exceptions import Reject, SoftTimeLimitExceeded
from django.db import DataError, ProgrammingError, transaction
from django.utils import timezone

from distributed_tasks import keys, logs, transitions
from distributed_tasks.celery import header_limits
from distributed_tasks.messages import RunMessage
from distributed_tasks.nodes import current_node
from distributed_tasks.outage import Outage
from distributed_tasks.resilience import DB_UNAVAILABLE, until_answered, writes_awaited
from distributed_tasks.store import get_store, message_for, stamped

logger = logging.getLogger("distributed_tasks.runner")

_HEX_ID = re.compile(r"[0-9a-f]{32}")


def started(msg: RunMessage, limits: tuple | None, task_id: str | None) -> RunMessage | None:
    """``start`` until the database answers. A time limit that strikes first ran nothing:
    the message goes back to its queue (``acks_late``); acknowledged, it left the row
    QUEUED with no message until its node's queue was empty (the resync's orphans).

    Each try stamps ``started_at`` with its own time, and keeps it: after an error, a
    try that finds the attempt RUNNING with this process's incarnation and an earlier
    try's time knows that try committed and only its reply was lost (before, it was
    taken for a stale message and the run stayed RUNNING until the watchdog ended it)."""
    outage = Outage(f"Starting {msg.name} attempt {msg.attempt}", logger)
    stamps: list[dt.datetime] = []
    try:
        return until_answered(
            lambda: _start_awaiting_writes(msg, limits, task_id, stamps),
            outage,
            errors=DB_UNAVAILABLE,
        )
    except SoftTimeLimitExceeded:
        logger.warning(
            "%s attempt %s met its time limit before it could start: queued again",
            msg.name, msg.attempt, extra=logs.run_extra(msg, "requeued"),
        )  # fmt: skip
        raise Reject("its time limit struck before it started", requeue=True) from None


def _start_awaiting_writes(
    msg: RunMessage, limits: tuple | None, task_id: str | None, stamps: list[dt.datetime]
) -> RunMessage | None:
    """``start``; a database that takes no writes now (a switchover) is waited for."""
    with writes_awaited(get_store().alias):
        return start(msg, limits, task_id, stamps=stamps)


def start(
    msg: RunMessage,
    limits: tuple | None,
    task_id: str | None,
    *,
    stamps: list[dt.datetime] | None = None,
) -> RunMessage | None:
    """Fenced QUEUED -> RUNNING; the message of what the row holds, None if stale or
    forged. ``stamps``: the times earlier tries of this start wrote (they raised, and
    may have committed); this try's is added."""
    node = current_node()
    if node is not None and msg.node != node.name:
        # Running it would record this node's incarnation under the other node's name,
        # and the leader would then take that node for restarted.
        logger.error(
            "Dropping a message for run %s attempt %s addressed to node %s: this is node %s "
            "(its queue %s is consumed by the wrong node; give each dt_worker its own -n)",
            msg.run_id, msg.attempt, msg.node, node.name, keys.queue_name(msg.node),
            extra=logs.run_extra(msg, "wrong_node"),
        )  # fmt: skip
        return None
    store = get_store()
    incarnation = node.incarnation if node else ""
    stamps = [] if stamps is None else stamps
    earlier = list(stamps)
    stamps.append(timezone.now())
    if _as_sent(msg, limits, task_id):
        try:
            row = store.start_as_sent(msg, incarnation, started_at=stamps[-1])
        except (DataError, ProgrammingError):  # a value PostgreSQL refuses: not our message
            row = None
        if row is not None and row is not NotImplemented:
            return message_for(row)
    # Not matched as sent (stale or forged: below tells which), or another store.
    with transaction.atomic(using=store.alias):
        stamp = stamped(store, "mark_running", started_at=stamps[-1])
        row = store.mark_running(msg, incarnation, **stamp)
        if row is None and earlier:  # an earlier try's reply was lost, not its commit?
            row = store.started_by(msg, incarnation, earlier)
        if row is None:
            logger.info(
                "Ignoring stale message for %s attempt %s on %s",
                msg.name, msg.attempt, msg.node, extra=logs.run_extra(msg, "stale"),
            )  # fmt: skip
            return None
        truth = message_for(row)
        if wrong := disagreements(msg, truth, limits, task_id):
            transaction.set_rollback(True, using=store.alias)
            logger.error(
                "Dropping a message for run %s attempt %s that disagrees with its row on %s: "
                "it was not sent by this cluster (anyone with access to the broker can send "
                "messages; restrict it)",
                msg.run_id, msg.attempt, ", ".join(wrong), extra=logs.run_extra(msg, "forged"),
            )  # fmt: skip
            return None
    return truth


def disagreements(
    msg: RunMessage, truth: RunMessage, limits: Any, task_id: str | None
) -> list[str]:
    """What of ``msg``, sent with Celery's ``limits`` and ``task_id``, its row's
    ``truth`` does not say: not sent by this cluster when any."""
    wrong = msg.differences(truth)
    if limits is not None and _as_tuple(limits) != header_limits(truth.timeout):
        wrong.append("time limits")
    if task_id is not None and task_id != truth.task_id:
        wrong.append("task id")  # nodes report their runs by it (orchestrator/watchdog.py)
    return wrong


def _as_tuple(limits: Any) -> tuple | None:
    """A message's ``timelimit`` header as a tuple; None when it is not a sequence."""
    try:
        return tuple(limits)
    except TypeError:
        return None


def _as_sent(msg: RunMessage, limits: tuple | None, task_id: str | None) -> bool:
    """Whether the store may start ``msg`` in one statement that also checks its call
    (``start_as_sent``): its Celery limits and task id are the ones its own fields give
    (the row must then have the same), and the store has that statement."""
    if not transitions.comparable(msg):  # a timeout of another type, unencodable text
        return False
    if limits is not None and tuple(limits) != header_limits(msg.timeout):
        return False
    if task_id is not None and (task_id != msg.task_id or not _HEX_ID.fullmatch(msg.run_id)):
        return False  # the row's task id has its run id as 32 hex digits
    return hasattr(get_store(), "start_as_sent")
