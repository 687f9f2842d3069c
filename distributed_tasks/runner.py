"""The worker side of one attempt: fence, guard, callback, hooks, outcome.

``execute`` runs in a pool process. It first moves the row QUEUED -> RUNNING
with a conditional update on (run, attempt, node); if no row matches, the
message is stale or a duplicate and nothing runs. User code then runs inside a
guard (GenTask): whatever it raises, or a soft time limit, ends as a recorded
FAILED outcome and a hook call, never as a dead worker. What the pool process
cannot record itself (a hard time limit, its own death) the main process
records through ``lost.record_lost``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from celery.exceptions import Reject, SoftTimeLimitExceeded
from django.db import DataError, ProgrammingError, transaction

from distributed_tasks import (
    cancellation,
    claims,
    keys,
    logs,
    outcomes,
    progress,
    registry,
    running_status,
    signals,
    soft_limits,
    transitions,
)
from distributed_tasks.celery import header_limits
from distributed_tasks.exceptions import NotRegistered, NotSerializable
from distributed_tasks.messages import MalformedMessage, RunMessage, strict_json
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import current_node
from distributed_tasks.outage import Outage
from distributed_tasks.resilience import (
    DB_UNAVAILABLE,
    close_broken_connections,
    until_answered,
    writes_awaited,
)
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import Outcome, Reason, State, exception_text

logger = logging.getLogger("distributed_tasks.runner")

_HEX_ID = re.compile(r"[0-9a-f]{32}")


def run_info(msg: RunMessage) -> registry.RunInfo:
    return registry.RunInfo(
        run_id=msg.run_id,
        name=msg.name,
        task_list=msg.task_list,
        attempt=msg.attempt,
        node=msg.node,
        function=msg.function,
        args=msg.args,
        kwargs=msg.kwargs,
        data=msg.data,
    )


def call_hook_of(task: registry.DistributedTask, hook: str, *args: Any) -> None:
    try:
        getattr(task, hook)(*args)
    except BaseException:
        logger.exception("%s.%s raised; the outcome stays as recorded", type(task).__name__, hook)


def _failure(reason: Reason, exc: BaseException) -> Outcome:
    """What user code raised, as an outcome. ``BaseException`` too: ``SystemExit``,
    ``KeyboardInterrupt`` or ``GeneratorExit`` from a task must end its run, not the
    pool process (which would leave the run RUNNING)."""
    if isinstance(exc, Exception):
        return Outcome.failed(reason, exc)
    text = exception_text(exc)
    detail = f": {text}" if text else ""
    return Outcome.failed(reason, exc, f"raised {type(exc).__name__}{detail}")


def limit_text(timeout: float | None) -> str:
    """The limit a run exceeded: its timeout, or (it has none) Celery's or its code's."""
    return f"its timeout of {timeout:g} s" if timeout else "a time limit (the run has no timeout)"


def _timed_out(task: Any, msg: RunMessage, exc: SoftTimeLimitExceeded) -> Outcome:
    call_hook_of(task, "on_timeout", task.info)
    return Outcome.failed(Reason.TIMEOUT, exc, f"exceeded {limit_text(msg.timeout)}")


def _guard(msg: RunMessage, *, contain: bool = True) -> Outcome:
    """Run the function and callback; turn anything they do into an Outcome.

    ``contain=False`` (the in-process test backend) lets an interrupt that is not an
    ``Exception`` go on up to the caller, after the task's hook saw it.
    """
    try:
        task = registry.resolve(msg.function).create()
    except NotRegistered as exc:
        return Outcome.failed(Reason.NOT_REGISTERED, exc)
    info = task.info = run_info(msg)
    try:
        result = registry.invoke(task.run, *msg.args, **msg.kwargs)  # async def run too
        cancellation.finish_cancelled()  # it saw cancel_requested(): FAILED(cancelled)
        try:
            stored = _as_returned(msg, task, result)
        except (ValueError, RecursionError) as exc:
            raise NotSerializable(
                f"{msg.function} returned {type(result).__name__}, which is not JSON: {exc}. "
                "Return JSON-compatible values (dicts, lists, str, numbers, bools, None)."
            ) from exc
    except SoftTimeLimitExceeded as exc:
        return _timed_out(task, msg, exc)
    except BaseException as exc:
        call_hook_of(task, "on_failure", info, exc)
        if not contain and not isinstance(exc, Exception):
            raise
        return cancellation.outcome_for(exc) or _failure(Reason.EXCEPTION, exc)
    if msg.callback:
        try:
            registry.invoke(registry.resolve(msg.callback).create().run, msg.name, result)
        except SoftTimeLimitExceeded as exc:  # the run's limit covers its callback too
            return _timed_out(task, msg, exc)
        except BaseException as exc:
            call_hook_of(task, "on_failure", info, exc)
            return _failure(Reason.CALLBACK, exc)
    try:
        task.on_success(info, result)
    except SoftTimeLimitExceeded as exc:
        return _timed_out(task, msg, exc)
    except BaseException as exc:
        logger.exception("%s.on_success raised; the run fails", type(task).__name__)
        return _failure(Reason.EXCEPTION, exc)
    return Outcome.done(stored)


def _as_returned(msg: RunMessage, task: registry.DistributedTask, result: Any) -> Any:
    """The result to store, checked as JSON: a copy, taken now, when the callback or an
    ``on_success`` of the task's own gets the object next and may change it."""
    text = strict_json(result)
    if msg.callback or type(task).on_success is not registry.DistributedTask.on_success:
        return json.loads(text)
    return result


def _start(msg: RunMessage, limits: tuple | None, task_id: str | None) -> RunMessage | None:
    """Fenced QUEUED -> RUNNING; the message of what the row holds, None if fenced or forged.

    The message only names the run and attempt: the function, arguments, callback,
    timeout and name come from the row. A message that disagrees with its row (or
    whose Celery time limits are not the row's timeout) was not written by us: the
    transition is rolled back and nothing runs.
    """
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
    if _as_sent(msg, limits, task_id):
        try:
            row = store.start_as_sent(msg, incarnation)
        except (DataError, ProgrammingError):  # a value PostgreSQL refuses: not our message
            row = None
        if row is not None and row is not NotImplemented:
            return message_for(row)
    # Not matched as sent (stale or forged: below tells which), or another store.
    with transaction.atomic(using=store.alias):
        row = store.mark_running(msg, incarnation)
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


def _started(msg: RunMessage, limits: tuple | None, task_id: str | None) -> RunMessage | None:
    """``_start`` until the database answers. A time limit that strikes first ran nothing:
    the message goes back to its queue (``acks_late``); acknowledged, it left the row
    QUEUED with no message until its node's queue was empty (the resync's orphans)."""
    outage = Outage(f"Starting {msg.name} attempt {msg.attempt}", logger)
    try:
        return until_answered(
            lambda: _start_awaiting_writes(msg, limits, task_id), outage, errors=DB_UNAVAILABLE
        )
    except SoftTimeLimitExceeded:
        logger.warning(
            "%s attempt %s met its time limit before it could start: queued again",
            msg.name, msg.attempt, extra=logs.run_extra(msg, "requeued"),
        )  # fmt: skip
        raise Reject("its time limit struck before it started", requeue=True) from None


def _start_awaiting_writes(
    msg: RunMessage, limits: tuple | None, task_id: str | None
) -> RunMessage | None:
    """``_start``; a database that takes no writes now (a switchover) is waited for."""
    with writes_awaited(get_store().alias):
        return _start(msg, limits, task_id)


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


def execute(body: Any, limits: tuple | None = None, task_id: str | None = None) -> Outcome | None:
    """Execute one run message in this pool process; returns the outcome, or None if
    nothing ran (malformed, stale or forged). ``limits`` are the Celery time limits the
    message arrived with, (hard, soft), and ``task_id`` its Celery task id, when it came
    through Celery."""
    close_broken_connections()
    try:
        msg = RunMessage.from_body(body)
    except MalformedMessage as exc:
        logger.error("Dropping malformed run message: %s", exc, extra={"action": "malformed"})
        return None
    with soft_limits.window(soft_limits.of(limits), f"{msg.name} attempt {msg.attempt}") as window:
        truth = _started(msg, limits, task_id)
        if truth is None:
            return None
        return _run(truth, window)


def _run(msg: RunMessage, window: soft_limits.Window) -> Outcome:
    """Run a started attempt and record its outcome; a soft time limit is obeyed until
    its function has ended (``soft_limits``), so the outcome is recorded whole."""
    began, started_at = time.monotonic(), time.time()
    try:
        fields = claims.message_fields(msg, State.RUNNING, started_at=started_at)
        with running_status.announced(msg, fields) as announced:  # Redis says RUNNING in a moment
            signals.run_started.send(sender=TaskRun, message=msg)
            # report_progress() and cancel_requested() see the run
            with progress.running(msg, announced):
                outcome = _guard(msg)
                window.finished = True
    except BaseException as exc:  # a run_started receiver, or our own bug: still an outcome
        window.finished = True
        outcome = Outcome.failed(Reason.EXCEPTION, exc)
        if not isinstance(exc, Exception):
            outcomes.record(msg, outcome, duration=time.monotonic() - began, started_at=started_at)
            raise
    outcomes.record(msg, outcome, duration=time.monotonic() - began, started_at=started_at)
    return outcome
