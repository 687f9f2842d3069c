"""The worker side of one attempt: fence, guard, callback, hooks, outcome.

``execute`` runs in a pool process. It first moves the row QUEUED -> RUNNING
with a conditional update on (run, attempt, node); if no row matches, the
message is stale or a duplicate and nothing runs. User code then runs inside a
guard (GenTask): whatever it raises, or a soft time limit, ends as a recorded
FAILED outcome and a hook call, never as a dead worker. What the pool process
cannot record itself (a hard time limit, its own death) the main process
records through ``record_lost``.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db import connections

from distributed_tasks import attempts, claims, registry, signals
from distributed_tasks.exceptions import ClusterUnavailable, NotRegistered, NotSerializable
from distributed_tasks.messages import MalformedMessage, RunMessage, strict_json
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import current_node
from distributed_tasks.store import get_store
from distributed_tasks.types import ACTIVE_STATES, Outcome, Reason, State

logger = logging.getLogger("distributed_tasks.runner")


class LostBy(enum.Enum):
    TIMEOUT = "timeout"
    CRASH = "crash"


def _info(msg: RunMessage) -> registry.RunInfo:
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


def _hook(task: registry.DistributedTask, hook: str, *args: Any) -> None:
    try:
        getattr(task, hook)(*args)
    except Exception:
        logger.exception("%s.%s raised; the outcome stays as recorded", type(task).__name__, hook)


def _guard(msg: RunMessage) -> Outcome:
    """Run the function and callback; turn anything they do into an Outcome."""
    try:
        task = registry.resolve(msg.function).create()
    except NotRegistered as exc:
        return Outcome.failed(Reason.NOT_REGISTERED, exc)
    info = task.info = _info(msg)
    try:
        result = task.run(*msg.args, **msg.kwargs)
        try:
            strict_json(result)
        except ValueError as exc:
            raise NotSerializable(
                f"{msg.function} returned {type(result).__name__}, which is not JSON: {exc}. "
                "Return JSON-compatible values (dicts, lists, str, numbers, bools, None)."
            ) from exc
    except SoftTimeLimitExceeded as exc:
        _hook(task, "on_timeout", info)
        return Outcome.failed(Reason.TIMEOUT, exc, f"exceeded its timeout of {msg.timeout:g} s")
    except Exception as exc:
        _hook(task, "on_failure", info, exc)
        return Outcome.failed(Reason.EXCEPTION, exc)
    if msg.callback:
        try:
            registry.resolve(msg.callback).create().run(msg.name, result)
        except Exception as exc:
            _hook(task, "on_failure", info, exc)
            return Outcome.failed(Reason.CALLBACK, exc)
    try:
        task.on_success(info, result)
    except Exception as exc:
        logger.exception("%s.on_success raised; the run fails", type(task).__name__)
        return Outcome.failed(Reason.EXCEPTION, exc)
    return Outcome.done(result)


RETRYABLE = frozenset({Reason.EXCEPTION, Reason.CALLBACK, Reason.TIMEOUT, Reason.WORKER_LOST})


def _retry(msg: RunMessage, outcome: Outcome, *, lost: bool) -> bool:
    """Queue another attempt when the run allows more executions (at-least-once opt-in)."""
    if outcome.state is not State.FAILED or outcome.reason not in RETRYABLE:
        return False
    run = get_store().get(msg.run_id)
    if run is None or run.attempt != msg.attempt or run.executions >= run.max_attempts:
        return False
    countdown = run.retry_backoff * 2 ** max(0, run.executions - 1)
    try:
        new = attempts.next_attempt(
            msg,
            from_states=ACTIVE_STATES if lost else (State.RUNNING,),
            countdown=countdown,
            only_if_attempts_left=True,
            error=outcome,
        )
    except ClusterUnavailable:
        return False
    if new is not None:
        logger.info(
            "%s failed (%s); attempt %s queued on %s in %.1f s (%s of %s executions used)",
            msg.name, outcome.reason, new.attempt, new.node, countdown, run.executions,
            run.max_attempts, extra={"action": "retry"},
        )  # fmt: skip
    return new is not None


def _record(msg: RunMessage, outcome: Outcome, *, lost: bool = False) -> bool:
    if _retry(msg, outcome, lost=lost):
        return True
    store = get_store()
    recorded = store.mark_lost(msg, outcome) if lost else store.mark_finished(msg, outcome)
    if not recorded:
        logger.warning(
            "Outcome of %s attempt %s discarded: the run was already ended elsewhere",
            msg.name,
            msg.attempt,
            extra={"action": "fenced"},
        )
        return False
    claims.publish_outcome(msg, outcome)
    signals.run_finished.send(sender=TaskRun, message=msg, outcome=outcome)
    return True


def _drop_broken_connections() -> None:
    """Connections outlive a run (worker.DB_REUSE_MAX): close one that an error left unusable."""
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred:
            conn.close_if_unusable_or_obsolete()


def execute(body: Any) -> Outcome | None:
    """Execute one run message in this pool process; returns the outcome, or None if fenced."""
    _drop_broken_connections()
    try:
        msg = RunMessage.from_body(body)
    except MalformedMessage as exc:
        logger.error("Dropping malformed run message: %s", exc, extra={"action": "malformed"})
        return None
    node = current_node()
    incarnation = node.incarnation if node else ""
    if not get_store().mark_running(msg, incarnation):
        logger.info(
            "Ignoring stale message for %s attempt %s on %s",
            msg.name,
            msg.attempt,
            msg.node,
            extra={"action": "stale"},
        )
        return None
    claims.publish(msg, claims.message_fields(msg, State.RUNNING, started_at=time.time()))
    signals.run_started.send(sender=TaskRun, message=msg)
    outcome = _guard(msg)
    _record(msg, outcome)
    return outcome


def record_lost(args: Any, by: LostBy, *, timeout: float | None = None, exc: Any = None) -> None:
    """Called in the worker's main process when a pool process could not finish a run."""
    try:
        msg = RunMessage.from_body(args[0])
    except (MalformedMessage, IndexError, TypeError):
        return
    if by is LostBy.TIMEOUT:
        limit = msg.timeout if msg.timeout is not None else timeout
        outcome = Outcome.failed(
            Reason.TIMEOUT, exc, f"exceeded its timeout of {limit:g} s and was killed"
        )
    else:
        outcome = Outcome.failed(
            Reason.WORKER_LOST, exc, "the pool process running it died (killed or exited)"
        )
    if _record(msg, outcome, lost=True):
        if by is LostBy.TIMEOUT:
            call_hook(msg, "on_timeout")
        else:
            call_hook(msg, "on_failure", exc or RuntimeError(outcome.error))


def call_hook(msg: RunMessage, hook: str, *args: Any) -> None:
    """Call a task's hook for a run that ended outside its pool process (lost, killed)."""
    try:
        task = registry.resolve(msg.function).create()
    except NotRegistered:
        return
    task.info = _info(msg)
    _hook(task, hook, task.info, *args)
