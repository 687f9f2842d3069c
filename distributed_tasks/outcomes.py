"""Storing how an attempt ended: cleaned, retried until the database answers, logged once.

The promise is that no run stays RUNNING on a live node. So the worker's last
write must not fail on what user code produced (a NUL or a lone surrogate in an
exception message, a class name longer than its column): ``storable`` escapes
and truncates it. It must not give up while PostgreSQL is away: the write is
retried with capped backoff until the database answers. And if the database
still refuses the outcome itself, a plain FAILED outcome that says why is
stored instead. The outcome is logged once, at a level that matches it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import replace

from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, connections
from django.utils import timezone

from distributed_tasks import attempts, logs, mirror, signals
from distributed_tasks.exceptions import ClusterUnavailable
from distributed_tasks.messages import RunMessage, storable
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import DB_ERRORS, Outage
from distributed_tasks.resilience import (
    DB_UNAVAILABLE,
    WritesAway,
    close_broken_connections,
    over_a_limit,
    until_answered,
    writes_awaited,
)
from distributed_tasks.store import get_store, stamped
from distributed_tasks.types import (
    ACTIVE_STATES,
    ERROR_LIMIT,
    TRACEBACK_LIMIT,
    Outcome,
    Reason,
    State,
)

logger = logging.getLogger("distributed_tasks.runner")

RETRYABLE = frozenset({Reason.EXCEPTION, Reason.CALLBACK, Reason.TIMEOUT, Reason.WORKER_LOST})
ERROR_TYPE_LIMIT = TaskRun._meta.get_field("error_type").max_length
# Failed writes of one outcome, each while the database answered a probe, before the
# outcome itself counts as refused (``_persist``).
STRIKES = 5


def cleaned(outcome: Outcome) -> Outcome:
    """``outcome`` with every text field storable in every database."""
    return replace(
        outcome,
        error_type=storable(outcome.error_type, ERROR_TYPE_LIMIT),
        error=storable(outcome.error, ERROR_LIMIT),
        traceback=storable(outcome.traceback, TRACEBACK_LIMIT),
    )


def _retry(
    msg: RunMessage, outcome: Outcome, *, lost: bool, requeues: list[dt.datetime]
) -> RunMessage | None:
    """Queue another attempt when the run allows more executions (at-least-once opt-in).
    The time that ends this attempt in the run's history is added to ``requeues``."""
    if outcome.state is not State.FAILED or outcome.reason not in RETRYABLE:
        return None
    run = get_store().get(msg.run_id)
    if run is None or run.attempt != msg.attempt or run.executions >= run.max_attempts:
        return None
    if run.cancel_requested_at is not None:
        return None  # a run asked to stop is never retried
    options = {
        "from_states": ACTIVE_STATES if lost else (State.RUNNING,),
        "countdown": attempts.retry_countdown(run.retry_backoff, run.executions),
        "only_if_attempts_left": True,
        "error": outcome,
        "ended_at": timezone.now(),
    }
    requeues.append(options["ended_at"])
    try:
        return attempts.next_attempt(msg, **options)
    except ClusterUnavailable:
        # Placement reads Redis, which does not answer: this node, alive, takes the retry
        # (if the broker is Redis too, the resync publishes it once Redis is back).
        return attempts.next_attempt(msg, node=msg.node, **options)


def _store(
    msg: RunMessage,
    outcome: Outcome,
    lost: bool,
    retry: bool,
    stamps: list[dt.datetime],
    requeues: list[dt.datetime],
) -> tuple[bool, RunMessage | None]:
    """One try: (recorded, next attempt if one was queued; never without ``retry``).

    Each try stamps the write with its own time, kept in ``stamps`` (outcomes) or
    ``requeues`` (retries, apart: a client's ``retry()`` ends the attempt in the history
    at its ``finished_at``): a retry or an outcome found stored with an earlier try's
    time was this process's write whose reply was lost (it was called fenced out: no
    status in Redis, no ``run_finished``, a new attempt left without its message)."""
    earlier = list(stamps)
    stamps.append(now := timezone.now())
    if retry and requeues and (new := attempts.requeued_by(msg, requeues, outcome)):
        return True, new
    new = _retry(msg, outcome, lost=lost, requeues=requeues) if retry else None
    if new is not None:
        return True, new
    store = get_store()
    method = "mark_lost" if lost else "mark_finished"
    recorded = getattr(store, method)(msg, outcome, **stamped(store, method, finished_at=now))
    return recorded or bool(earlier and store.finished_by(msg, outcome, earlier)), None


def refused(outcome: Outcome, exc: BaseException) -> Outcome:
    """A plain FAILED outcome that says the database refused ``outcome``, and why."""
    return Outcome.failed(
        Reason.EXCEPTION,
        message=storable(
            f"The run ended {outcome.state} ({outcome.error_type or 'no error'}), but the "
            f"database refused to store that outcome: {type(exc).__name__}: {exc}",
            ERROR_LIMIT,
        ),
    )


def _persist(
    msg: RunMessage,
    outcome: Outcome,
    lost: bool,
    outage: Outage,
    patience: float | None,
    *,
    refusable: bool = True,
    retry: bool = True,
) -> tuple[bool, RunMessage | None]:
    """``_store`` until the database answers. The run's soft time limit may strike while
    this waits: the run itself is over, so storing its outcome goes on (its hard limit
    ends the process; the watchdog then ends the run).

    A write that loses its connection ``STRIKES`` times in a row while a new connection
    answers at once is this outcome's own fault (MariaDB drops the connection on a
    result over ``max_allowed_packet``): when ``refusable``, it raises a plain
    ``DatabaseError``, so ``record`` stores a FAILED that says why, where the run stayed
    RUNNING. A write refused on a live connection (read-only during a switchover, a
    lock or statement timeout) is retried as before: writes are what is away. So is one
    refused because the database takes no writes now (PostgreSQL's read-only error is an
    InternalError). One over a PostgreSQL limit (a result over jsonb's size) is this
    outcome's own fault, although it comes as an OperationalError."""
    strikes, stamps, requeues = 0, [], []

    def store() -> tuple[bool, RunMessage | None]:
        nonlocal strikes
        try:
            with writes_awaited(get_store().alias):
                return _store(msg, outcome, lost, retry, stamps, requeues)
        except WritesAway:
            raise  # retried, and never the outcome's fault
        except DB_UNAVAILABLE as exc:
            if over_a_limit(exc):
                raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
            if refusable:
                strikes = strikes + 1 if _dropped_but_answers() else 0
            if strikes >= STRIKES:
                what = (
                    f"{type(exc).__name__} {STRIKES} times while the database answered (on "
                    "MySQL/MariaDB: a result over max_allowed_packet?)"
                )
                raise DatabaseError(f"{what}: {exc}") from exc
            raise

    while True:
        try:
            return until_answered(store, outage, errors=DB_UNAVAILABLE, patience=patience)
        except SoftTimeLimitExceeded:
            continue


def _dropped_but_answers() -> bool:
    """Whether the failed write lost its connection while the database still answers a
    new one at once (the broken connection is closed first)."""
    connection = connections[get_store().alias]
    if connection.connection is not None and connection.is_usable():
        return False  # refused on a live connection: not the outcome's size
    close_broken_connections()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DB_ERRORS:
        return False
    return True


def since(run: TaskRun, msg: RunMessage) -> dict[str, float]:
    """When ``msg``'s attempt started and how long it ran, from its row ``run``, for an
    outcome recorded outside its pool process: its cached status may never have said
    RUNNING, and its log line gives the duration like any other. Nothing once the row
    is at another attempt (the outcome is fenced out then anyway)."""
    if run.started_at is None or run.attempt != msg.attempt:
        return {}
    started = run.started_at.timestamp()
    return {"started_at": started, "duration": max(0.0, time.time() - started)}


def record(
    msg: RunMessage,
    outcome: Outcome,
    *,
    lost: bool = False,
    duration: float | None = None,
    patience: float | None = None,
    started_at: float | None = None,
) -> bool:
    """Store ``outcome`` for ``msg``'s attempt (or queue its retry); False if fenced out.

    ``started_at``: when the attempt started (epoch seconds), for its cached status,
    which may never have said RUNNING (``running_status.py``).

    Retries while the database does not answer: for ever by default (a pool
    process has nothing better to do), or ``patience`` seconds in the worker's main
    process, which must keep consuming; the leader's safety net covers the rest.
    """
    outcome = cleaned(outcome)
    outage = Outage(f"Storing the outcome of {msg.name} attempt {msg.attempt}", logger)
    try:
        try:
            recorded, new = _persist(msg, outcome, lost, outage, patience)
        except DB_UNAVAILABLE:
            raise
        except (DatabaseError, ValueError) as exc:  # the database refused this outcome itself
            logger.exception(
                "The database refused the outcome of %s: storing a plain FAILED", msg.name
            )
            again = outcome.state is not State.DONE  # a run that succeeded never runs again
            outcome = refused(outcome, exc)
            recorded, new = _persist(
                msg, outcome, lost, outage, patience, refusable=False, retry=again
            )
    except DB_ERRORS as exc:  # away past ``patience``, or even the plain FAILED refused
        gave_up(msg, exc, patience)
        return False
    if not recorded:
        logger.warning(
            "Outcome of %s attempt %s discarded: the run was already ended elsewhere",
            msg.name, msg.attempt, extra=_extra(msg, "fenced", outcome, duration),
        )  # fmt: skip
        return False
    log(msg, outcome, duration=duration, retry=new)
    if new is None:
        mirror.publish_outcome(msg, outcome, started_at=started_at)
        try:
            signals.run_finished.send(sender=TaskRun, message=msg, outcome=outcome)
        except Exception:
            logger.exception("A run_finished receiver raised; the outcome stays as recorded")
    return True


def gave_up(msg: RunMessage, exc: BaseException, patience: float | None) -> None:
    """Log that this process stopped trying to store ``msg``'s outcome: the database did
    not answer within ``patience`` (the worker's main process), or refused even a plain
    FAILED."""
    away = isinstance(exc, DB_UNAVAILABLE)
    why = f"did not answer in {patience or 0:g} s" if away else "refused even a plain FAILED"
    logger.error(
        "Gave up storing the outcome of %s attempt %s: the database %s (%s: %s); the "
        "leader's watchdog ends the run once this node stops reporting it",
        msg.name, msg.attempt, why, type(exc).__name__, exc,
        extra=logs.run_extra(msg, "gave_up"),
    )  # fmt: skip


def _extra(msg: RunMessage, action: str, outcome: Outcome, duration: float | None) -> dict:
    """The run's fields (``logs.run_extra``) plus how this attempt ended."""
    took = None if duration is None else round(duration, 3)
    return logs.run_extra(
        msg, action, state=outcome.state.value, reason=outcome.reason, duration=took
    )


def log(
    msg: RunMessage, outcome: Outcome, *, duration: float | None, retry: RunMessage | None = None
) -> None:
    """The one log line of an attempt's end: INFO for DONE, WARNING when a retry follows
    or someone cancelled it, ERROR for any other final FAILED. ``extra`` carries the
    fields (``task_name``: ``name`` is reserved by ``logging``)."""
    took = "" if duration is None else f" in {duration:.2f} s"
    if outcome.state is State.DONE:
        logger.info(
            "%s (run %s attempt %s) DONE%s", msg.name, msg.run_id, msg.attempt, took,
            extra=_extra(msg, "done", outcome, duration),
        )  # fmt: skip
        return
    then = f"; attempt {retry.attempt} queued on {retry.node}" if retry else ""
    logger.log(
        logging.WARNING if retry or outcome.reason == Reason.CANCELLED else logging.ERROR,
        "%s (run %s attempt %s) FAILED(%s)%s: %s%s",
        msg.name, msg.run_id, msg.attempt, outcome.reason, took,
        outcome.error.partition("\n")[0][:300], then,
        extra=_extra(msg, "retry" if retry else "failed", outcome, duration),
    )  # fmt: skip
