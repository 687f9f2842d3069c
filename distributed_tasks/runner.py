"""The worker side of one attempt: fence, guard, callback, hooks, outcome.

``execute`` runs in a pool process. It first moves the row QUEUED -> RUNNING
with a conditional update on (run, attempt, node) (``fenced_start``); if no row
matches, the message is stale or a duplicate and nothing runs. User code then runs inside a
guard (GenTask): whatever it raises, or a soft time limit, ends as a recorded
FAILED outcome and a hook call, never as a dead worker. What the pool process
cannot record itself (a hard time limit, its own death) the main process
records through ``lost.record_lost``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from distributed_tasks import (
    cancellation,
    claims,
    fenced_start,
    outcomes,
    progress,
    registry,
    running_status,
    signals,
    soft_limits,
)
from distributed_tasks.exceptions import NotRegistered, NotSerializable
from distributed_tasks.messages import MalformedMessage, RunMessage, strict_json
from distributed_tasks.models import TaskRun
from distributed_tasks.resilience import (
    close_broken_connections,
)
from distributed_tasks.types import Outcome, Reason, State, exception_text

logger = logging.getLogger("distributed_tasks.runner")


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
        truth = fenced_start.started(msg, limits, task_id)
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
