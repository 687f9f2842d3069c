"""Acting on an existing run: cancel it (queued, or running: cancellation.py), or retry
it after it failed.

Both are fenced like every other transition: a conditional update on the run's
current attempt and state, so a cancel racing the worker's start, or a retry
racing a new start of the name, ends with exactly one winner.
"""

from __future__ import annotations

import contextlib
import logging

from django.db import connections, transaction

from distributed_tasks import cancellation, celery, claims, mirror, signals
from distributed_tasks.exceptions import (
    AlreadyRunning,
    ClusterUnavailable,
    InvalidOption,
    InvalidState,
    NotCancellable,
    TaskNotFound,
)
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.placement import Placement
from distributed_tasks.starts import manual_transaction
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason, State
from distributed_tasks.validation import check_name

logger = logging.getLogger("distributed_tasks.lifecycle")


def _names(name: str, task_list: str) -> None:
    check_name(name)
    check_name(task_list, "task list")


def check_grace(grace: object) -> None:
    """A forced cancel's grace period: seconds from 0 to a day."""
    if grace is None:
        return
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= 86400:
        raise InvalidOption(
            f"grace must be a number of seconds from 0 to 86400, got {grace!r}: it is how "
            "long a forced cancel waits for the run to stop by itself."
        )


def not_cancellable(run: TaskRun) -> NotCancellable:
    return NotCancellable(run.name, task_list=run.task_list, run_id=run.run_id,
                          node=run.node or None, state=run.state,
                          finished_at=run.finished_at)  # fmt: skip


def cancel(
    name: str,
    task_list: str = "default",
    *,
    force: bool = False,
    by: str = "",
    grace: float | None = None,
) -> None:
    """Cancel the newest run of ``name``.

    A QUEUED run ends FAILED(cancelled) at once; its message, if delivered, runs
    nothing. A RUNNING run is asked to stop (cancellation.py): it sees
    ``cancel_requested()`` and ends FAILED(cancelled); with ``force`` its node kills
    it if it still runs ``grace`` seconds later (default CANCEL_GRACE). ``by`` says
    who asked. Raises ``TaskNotFound`` when no run of the name is recorded, and
    ``NotCancellable`` when the newest run already finished.
    """
    _names(name, task_list)
    check_grace(grace)
    store = get_store()
    manual_transaction(
        connections[store.alias], "Cancelling a run", then="its status and signals would go out"
    )
    outcome = Outcome.failed(Reason.CANCELLED, message="cancelled before it started")
    for _race in range(3):  # the run may start, or move to a new attempt, meanwhile
        run = store.newest(task_list, name)
        if run is None:
            raise TaskNotFound(name, task_list)
        if run.state == State.RUNNING:
            if cancellation.request(run, force=force, by=str(by or ""), grace=grace):
                return
            continue
        if run.state != State.QUEUED:
            raise not_cancellable(run)
        if store.mark_cancelled(run, outcome):
            break
    else:
        raise not_cancellable(store.newest(task_list, name) or run)
    msg = message_for(run)

    def finished() -> None:
        mirror.publish_outcome(msg, outcome)
        signals.run_finished.send(sender=TaskRun, message=msg, outcome=outcome)

    # In a caller's transaction, once it commits: a rollback cancels nothing, and the
    # cache must not say FAILED of a run that stays QUEUED (and executes).
    transaction.on_commit(finished, using=store.alias, robust=True)


def not_retryable(name: str, state: str) -> InvalidState:
    return InvalidState(
        f"The newest run of {name!r} is {state}; only FAILED runs can be retried. "
        "Start it again with start_async() instead."
    )


def retry(name: str, task_list: str = "default", placement: Placement | None = None):
    """Run the newest FAILED run of ``name`` again, as its next attempt on a live node.

    The run keeps its id, arguments and history; it gets one more execution than it
    has used. Raises ``TaskNotFound``, ``AlreadyRunning`` (a run of the name is
    active), ``InvalidState`` (the newest run is DONE) or ``ClusterUnavailable``.
    """
    _names(name, task_list)
    store = get_store()
    run = store.newest(task_list, name)
    if run is None:
        raise TaskNotFound(name, task_list)
    if run.state in (State.QUEUED, State.RUNNING):
        raise AlreadyRunning(
            name, run.run_id, run.node or None, task_list=task_list, state=run.state
        )
    if run.state != State.FAILED:
        raise not_retryable(name, run.state)
    manual_transaction(connections[store.alias], "Retrying a run")
    placement = placement or Placement()
    node = placement.choose(task_list, name)
    msg = message_for(run).for_attempt(run.attempt + 1, node)
    reply = claims.ClaimReply.parse(
        claims.claim(task_list, name, claims.message_fields(msg, State.QUEUED), reuse="allow")
    )
    if reply.outcome is not claims.ClaimOutcome.CLAIMED:
        placement.unchoose(node)
        raise AlreadyRunning(
            name, reply.run_id, reply.node, task_list=task_list, state=reply.state or State.RUNNING
        )
    try:
        if not store.reactivate(run, node=node):
            raise AlreadyRunning(
                name, run.run_id, run.node or None, task_list=task_list, state=State.RUNNING
            )
    except BaseException:
        placement.unchoose(node)
        _release(msg)
        raise
    if connections[store.alias].in_atomic_block:
        # The worker must see the new attempt: publish once the caller's transaction commits.
        transaction.on_commit(lambda: _deliver(msg, deferred=True), using=store.alias)
    else:
        _deliver(msg)
    return msg.handle()


def _release(msg: RunMessage) -> None:
    with contextlib.suppress(*REDIS_ERRORS):  # a claim with no active row is replaced as stale
        claims.release(msg.task_list, msg.name, msg.run_id)


def _deliver(msg: RunMessage, *, deferred: bool = False) -> None:
    """Publish a retried attempt; if the broker refuses it, the run stays FAILED (after a
    commit the caller holds a handle: it stays QUEUED for the orchestrator to republish)."""
    try:
        celery.publish([(msg, None)])
    except celery.PublishFailed as exc:
        if deferred:
            logger.error("Broker refused retry of %s after commit: %s", msg.name, exc.__cause__)
            return
        lost = Outcome.failed(Reason.WORKER_LOST, message="retry not delivered")
        if not get_store().mark_lost(msg, lost, from_states=(State.QUEUED,)):
            return  # the message did go out: a worker already started it
        _release(msg)
        raise ClusterUnavailable(
            f"The Celery broker does not answer ({exc.__cause__}); the run stays FAILED."
        ) from exc
