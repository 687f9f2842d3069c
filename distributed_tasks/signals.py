"""Signals, named for events that happened (as Django's ``task_finished``).

Each is sent once per event, in the process where it happened:

- ``run_queued(sender, handle)``: a start was recorded and published (web process).
- ``run_started(sender, message)``: a worker fenced the run to RUNNING (pool process).
- ``run_finished(sender, message, outcome)``: the run ended for good and was recorded
  (DONE, or FAILED with no attempt left; a retried attempt sends none), by the worker,
  or by the orchestrator for runs of lost nodes.
- ``node_joined(sender, node)`` / ``node_lost(sender, node)``: membership changes, sent
  by the orchestrator leader.
- ``leader_elected(sender, holder, epoch)``: this beat process became the leader.
- ``run_refused(sender, task_list, name, reason, error)``: a start was refused
  (``reason``: ``already_running``, ``reserved`` or ``invalid``), in the caller's process.
- ``run_retried(sender, message, previous, outcome)`` / ``run_moved(sender, message,
  previous, why)``: a new attempt (``message``) replaced ``previous``, after a failure
  (``outcome``) or, before it started, off a lost node or away from a busy one
  (``why``: a ``MoveReason``, ``node_lost``, ``rebalanced`` or ``stolen``); sent once
  the change committed.
- ``periodic_slot(sender, task, outcome)``: the leader handled a due slot of a periodic
  task (``outcome``: ``dispatched``, ``skipped``, ``no_node``, ``invalid``, ...).
- ``lease_renewed(sender, holder, epoch)``: the leader extended its lease.
- ``run_cancel_requested(sender, message, by, force, requested_at, deadline)``: cancel()
  asked a RUNNING run to stop (``deadline``: when a forced cancel kills it), in the
  caller's process; ``run_finished`` follows when it ends.

A receiver that raises is logged and skipped (``Event``): it never fails the start, run
or tick that sent the signal. The extra signals exist for ``metrics.py`` and
``tracing.py``; sending one with no receiver costs a single attribute check.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.dispatch import Signal, receiver

from distributed_tasks.exceptions import AlreadyRunning, DistributedTasksError, NameReserved

logger = logging.getLogger("distributed_tasks.signals")


class Event(Signal):
    """A signal whose receivers can never fail what sent it: a raising receiver is logged
    (by Django) and the others still run, so a user's receiver bug never skips the
    publishing, recording or other runs' messages that follow the send."""

    def send(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        return self.send_robust(sender, **named)


run_queued = Event()
run_started = Event()
run_finished = Event()
node_joined = Event()
node_lost = Event()
leader_elected = Event()
run_refused = Event()
run_retried = Event()
run_moved = Event()
periodic_slot = Event()
lease_renewed = Event()
run_cancel_requested = Event()


class Refusal:
    """``run_refused`` reasons."""

    ALREADY_RUNNING = "already_running"
    RESERVED = "reserved"
    INVALID = "invalid"


def send_refusals(sender: Any, outcomes: Iterable[object]) -> None:
    """``run_refused`` for each ``AlreadyRunning`` (or ``NameReserved``) among ``outcomes``."""
    if not run_refused.receivers:
        return
    for o in outcomes:
        if isinstance(o, AlreadyRunning):
            reason = Refusal.RESERVED if isinstance(o, NameReserved) else Refusal.ALREADY_RUNNING
            run_refused.send(sender, task_list=o.task_list, name=o.name, reason=reason, error=o)


def refuses_invalid(prepare: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates ``validation.prepare``: a start refused as invalid sends ``run_refused``."""

    @functools.wraps(prepare)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return prepare(*args, **kwargs)
        except DistributedTasksError as exc:
            if run_refused.receivers:
                task_list, name = kwargs.get("task_list", "default"), kwargs.get("name")
                run_refused.send(
                    prepare, task_list=str(task_list), name=name, reason=Refusal.INVALID, error=exc
                )
            raise

    return wrapper


def send_moved(
    sender: Any, message: Any, previous: Any, outcome: Any, why: str | None = None
) -> None:
    """``run_retried`` when a failure (``outcome``) caused the new attempt, else ``run_moved``
    (with ``why``: a ``MoveReason``, which a move needs and a retry does not)."""
    if outcome is not None:
        run_retried.send(sender, message=message, previous=previous, outcome=outcome)
    else:
        run_moved.send(sender, message=message, previous=previous, why=why)


def never_raises(func: Callable[..., None]) -> Callable[..., None]:
    """Wraps an observability receiver: a failing metric or span (a full disk under the
    multiprocess files, say) must not fail the start or run that sent the signal."""

    @functools.wraps(func)
    def safe(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception:
            logger.exception("Receiver %s failed; the event is not recorded", func)

    return safe


def switch(hooks: Iterable[tuple[Any, Callable[..., None]]], *, on: bool, prefix: str) -> None:
    """Connect each ``(signal, receiver)`` (Django's or Celery's), never raising, or
    disconnect them all; ``prefix`` + the receiver's name is the dispatch uid."""
    for signal, func in hooks:
        uid = f"{prefix}-{func.__name__}"
        if on:
            signal.connect(never_raises(func), weak=False, dispatch_uid=uid)
        else:
            signal.disconnect(dispatch_uid=uid)


@receiver(node_lost)
def _log_node_lost(sender, node, **kwargs):
    logger.warning("Node %s lost", node, extra={"action": "node_lost"})


@receiver(leader_elected)
def _log_leader(sender, holder, epoch, **kwargs):
    logger.info(
        "%s is the orchestrator leader (epoch %s)",
        holder,
        epoch,
        extra={"action": "leader_elected"},
    )
