"""Runs whose pool process could not end them, ended by the node's main process.

A hard time limit kills the pool process, and ``os._exit`` or an OOM kill ends it:
only the worker's main process learns of it (``celery.RunRequest``), and stores the
outcome here. What it stores, and the hook it calls, are the row's: the message it
got must be its row's (``trusted``), so a forged copy ends nothing. It retries only
``LOST_PATIENCE`` seconds, as it must get back to consuming; the leader's safety net
(``orchestrator/watchdog.py``) ends the run after that.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Any

from distributed_tasks import forcing, hooks, logs, outcomes, registry
from distributed_tasks.exceptions import NotRegistered
from distributed_tasks.fenced_start import disagreements
from distributed_tasks.messages import MalformedMessage, RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import Outage
from distributed_tasks.resilience import DB_UNAVAILABLE, until_answered
from distributed_tasks.runner import call_hook_of, limit_text, run_info
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason

logger = logging.getLogger("distributed_tasks.runner")

# Seconds the worker's main process retries storing a lost run's outcome: it must get
# back to consuming; the leader's safety net (orchestrator/watchdog.py) ends the run.
LOST_PATIENCE = 3.0


class LostBy(enum.Enum):
    TIMEOUT = "timeout"
    CRASH = "crash"


def record_lost(
    args: Any,
    by: LostBy,
    *,
    timeout: float | None = None,
    exc: Any = None,
    limits: Any = None,
    task_id: str | None = None,
) -> None:
    """Called in the worker's main process when a pool process could not finish a run.

    The outcome and the hook are the row's. A forged message that timed out or died
    before its pool process dropped it ends nothing: its call, and the Celery ``limits``
    and ``task_id`` it came with, must be its row's (a copy of a running attempt's message
    with a tiny hard limit ended the genuine run). When the database does not answer
    within ``LOST_PATIENCE`` the watchdog ends the run later.
    """
    try:
        sent = RunMessage.from_body(args[0])
    except (MalformedMessage, IndexError, TypeError):
        return
    if forcing.was_killed(sent.task_id):
        return  # a forced cancel: its outcome is recorded already
    outage = Outage(f"Storing the outcome of {sent.name} attempt {sent.attempt}", logger)
    try:
        found = until_answered(
            lambda: trusted(sent, limits, task_id),
            outage,
            errors=DB_UNAVAILABLE,
            patience=LOST_PATIENCE,
        )
    except DB_UNAVAILABLE as error:  # not ``exc``: the pool's error, read below
        outcomes.gave_up(sent, error, LOST_PATIENCE)
        return
    if found is None:
        return
    msg, run = found
    if by is LostBy.TIMEOUT:
        limit = msg.timeout if msg.timeout is not None else timeout
        killed = f"exceeded {limit_text(limit)} and was killed"
        outcome = Outcome.failed(Reason.TIMEOUT, exc, killed)
    else:
        outcome = Outcome.failed(
            Reason.WORKER_LOST, exc, "the pool process running it died (killed or exited)"
        )
    if outcomes.record(msg, outcome, lost=True, patience=LOST_PATIENCE, **outcomes.since(run, msg)):
        if by is LostBy.TIMEOUT:
            call_hook(msg, "on_timeout")
        else:
            call_hook(msg, "on_failure", exc or RuntimeError(outcome.error))


def trusted(msg: RunMessage, limits: Any, task_id: str | None) -> tuple[RunMessage, TaskRun] | None:
    """``msg`` as its row has it, for its own attempt, and the row; None if no row or
    they disagree."""
    run = get_store().get(msg.run_id)
    if run is None:
        return None
    truth = dataclasses.replace(message_for(run), attempt=msg.attempt, node=msg.node)
    if wrong := disagreements(msg, truth, limits, task_id):
        logger.error(
            "Ignoring the loss of a message for run %s that disagrees with its row on %s",
            msg.run_id, ", ".join(wrong), extra=logs.run_extra(msg, "forged"),
        )  # fmt: skip
        return None
    return truth, run


def call_hook(msg: RunMessage, hook: str, *args: Any) -> None:
    """Call a task's hook for a run that ended outside its pool process (lost, killed),
    on the hook thread: the caller goes on at once (``hooks.py``). A task class of the
    library's own with ``inline_hooks`` has it called here."""
    try:
        entry = registry.resolve(msg.function)
    except NotRegistered:
        return
    if getattr(entry.factory, "inline_hooks", False):
        _call_hook(entry, msg, hook, *args)
    else:
        what = f"the {hook} hook of run {msg.run_id} ({msg.name!r}, {msg.function})"
        hooks.call_soon(lambda: _call_hook(entry, msg, hook, *args), what)


def _call_hook(entry: registry.RegisteredTask, msg: RunMessage, hook: str, *args: Any) -> None:
    try:
        task = entry.create()
    except Exception:  # the task class's own constructor: the node's main process goes on
        logger.exception("%s could not be created for its %s hook", msg.function, hook)
        return
    task.info = run_info(msg)
    call_hook_of(task, hook, task.info, *args)
