"""The Celery side: the app, the one entry task, and publishing to per-node queues.

The project's own app is used when ``CELERY_APP`` names one; otherwise one is
built from ``BROKER_URL``. Either way the app gets one task,
``distributed_tasks.execute``, that executes a run message: JSON only,
``acks_late`` with prefetch 1, and a custom request class so a hard time limit
or a dead pool process is recorded by the worker's main process.

Celery sends a message for a direct queue through the default (anonymous)
exchange with the queue's name as routing key: that needs no exchange binding,
so a Redis flush cannot make publishes vanish into an exchange that no longer
routes anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.worker import state as worker_state
from celery.worker.request import Request
from django.utils.module_loading import import_string
from kombu import Producer

from distributed_tasks import keys
from distributed_tasks.brokers import PRIORITY_LEVELS, celery_conf, forget_failed_ack, get_broker
from distributed_tasks.conf import get_settings
from distributed_tasks.messages import RunMessage
from distributed_tasks.outage import BROKER_ERRORS, REDIS_ERRORS

TASK_NAME = "distributed_tasks.execute"
# Extra seconds between the soft limit (an exception in the task) and the hard one (a kill).
HARD_LIMIT_GRACE = 2.0

APP_DEFAULTS: dict[str, Any] = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "worker_prefetch_multiplier": 1,
    "task_acks_late": True,
    "task_ignore_result": True,
    "broker_connection_retry_on_startup": True,
    "worker_hijack_root_logger": False,
    "worker_send_task_events": False,
    "enable_utc": True,
    # Run priorities (brokers.PRIORITY_LEVELS levels): a Redis list per level, served in
    # level order; RabbitMQ node queues declared with x-max-priority.
    "broker_transport_options": {
        "priority_steps": list(range(PRIORITY_LEVELS)),
        "queue_order_strategy": "priority",
    },
    "task_queue_max_priority": PRIORITY_LEVELS - 1,
}


class _QuietEntrySuccess(logging.Filter):
    """Celery logs "Task distributed_tasks.execute[...] succeeded in 0.02s" at INFO even
    when the run FAILED: the entry task always returns. The runner logs the outcome
    itself, so Celery's line for our task goes down to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict) and args.get("name") == TASK_NAME and "runtime" in args:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("celery.app.trace").addFilter(_QuietEntrySuccess())


class RunRequest(Request):
    """Records outcomes that never reach the pool process's own code.

    A hard time limit kills the child, and ``os._exit`` or an OOM kill ends it:
    in both cases only the worker's main process learns about it, here.
    """

    sent_limits: Any = (None, None)  # the message's ``timelimit``, for record_lost

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_limits = self.time_limits  # type: ignore[has-type]
        if not _limits_ok(self.time_limits):  # type: ignore[has-type]
            # The pool's timer takes float() of them in the main process when the job
            # starts: a foreign value ("x", NaN) stopped the node, and the message, never
            # acknowledged, stopped it again after every restart. None keeps the task's
            # limits; the runner drops the run as forged (its header disagrees with the row).
            self.time_limits = (None, None)

    def acknowledge(self) -> None:
        super().acknowledge()  # logs, and swallows, a broker that does not answer
        forget_failed_ack(self.message)

    def _as_sent(self) -> dict[str, Any]:
        """The Celery fields the runner checks against the run's row, as sent."""
        return {"limits": self.sent_limits, "task_id": self.id}

    def _duplicate_runs_on(self) -> bool:
        """Another pool process of this node executes the same attempt (a duplicate
        delivery of its message): that one records its outcome, this loss ends nothing."""
        return any(r is not self and r.id == self.id for r in tuple(worker_state.active_requests))

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if not soft and not self._duplicate_runs_on():
            from distributed_tasks import lost

            lost.record_lost(self.args, lost.LostBy.TIMEOUT, timeout=timeout, **self._as_sent())

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False):
        result = super().on_failure(exc_info, send_failed_event, return_ok)
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # unwrap ExceptionWithTraceback
        if isinstance(exc, (WorkerLostError, TimeLimitExceeded)) and not self._duplicate_runs_on():
            from distributed_tasks import lost

            by = lost.LostBy.TIMEOUT if isinstance(exc, TimeLimitExceeded) else lost.LostBy.CRASH
            lost.record_lost(self.args, by, exc=exc, **self._as_sent())
        return result


def _limits_ok(limits: Any) -> bool:
    """Whether a message's ``timelimit`` is two limits, each None or a number ≥ 0."""
    if not isinstance(limits, (list, tuple)) or len(limits) != 2:
        return False
    return all(
        limit is None
        or (isinstance(limit, (int, float)) and not isinstance(limit, bool) and 0 <= limit < 1e9)
        for limit in limits
    )


def execute(task: Any, body: dict[str, Any]) -> str:
    """The entry task. Returns a short word for Celery's own (DEBUG) log line, which the
    runner's outcome line replaces: "DONE", "FAILED" or "dropped"."""
    from distributed_tasks import runner

    request = task.request
    outcome = runner.execute(
        body, limits=tuple(request.timelimit or (None, None)), task_id=request.id
    )
    return "dropped" if outcome is None else outcome.state.value


JSON_CONTENT = frozenset({"json", "application/json"})


def content_problem(app: Celery) -> str | None:
    """Why ``app`` must not consume node queues, or None: it accepts more than JSON."""
    accepted = app.conf.accept_content
    accepted = [accepted] if isinstance(accepted, str) else list(accepted or ())
    others = [c for c in accepted if c not in JSON_CONTENT]
    if not others:
        return None
    return (
        f"The Celery app accepts {', '.join(map(repr, others))} besides JSON: dt_worker would "
        "deserialize whatever anyone with access to the broker sends to a node queue "
        "(pickle runs code). Run messages are JSON only."
    )


def install(app: Celery) -> Celery:
    """Register the entry task on ``app`` (idempotent)."""
    if TASK_NAME not in app.tasks:
        app.task(
            name=TASK_NAME,
            acks_late=True,
            acks_on_failure_or_timeout=True,
            reject_on_worker_lost=False,
            ignore_result=True,
            serializer="json",
            bind=True,
            Request=RunRequest,
        )(execute)
    return app


@functools.cache
def get_app() -> Celery:
    conf = get_settings()
    if conf.CELERY_APP:
        app = import_string(conf.CELERY_APP)
    else:
        from django.conf import settings

        app = Celery("distributed_tasks", set_as_current=False)
        transport = APP_DEFAULTS["broker_transport_options"]
        app.conf.update({**APP_DEFAULTS, **celery_conf(conf.broker_url, transport)})
        # The project's ordinary periodic entries, sent by the orchestrator leader only.
        app.conf.beat_schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", {})
    return install(app)


def time_limits(timeout: float | None) -> dict[str, float | None]:
    """``apply_async``'s limits for a run of ``timeout``. None, explicitly, for a run with
    none: ``apply_async`` would put the entry task's own limits (``task_time_limit``, an
    annotation) in the message, which then disagreed with its row and was dropped as
    forged. The pool still applies the task's limits to a message that carries none."""
    if not timeout:
        return {"soft_time_limit": None, "time_limit": None}
    return {"soft_time_limit": timeout, "time_limit": timeout + HARD_LIMIT_GRACE}


def header_limits(timeout: float | None) -> tuple[float | None, float | None]:
    """The ``(hard, soft)`` limits a message for ``timeout`` carries (Celery's ``timelimit``)."""
    limits = time_limits(timeout)
    return limits.get("time_limit"), limits.get("soft_time_limit")


class PublishFailed(Exception):
    """The broker refused a message; the first ``sent`` messages of the batch went out."""

    def __init__(self, sent: int) -> None:
        self.sent = sent
        super().__init__(f"broker refused the message after {sent} were sent")


def can_publish_first() -> bool:
    """Whether ``publish(..., first=True)`` puts a message before those already waiting:
    only when writing the Redis lists ourselves (``envelope.py``); an AMQP queue has no
    front to publish to."""
    from distributed_tasks import envelope

    return envelope.client() is not None


def publish(messages: Iterable[tuple[RunMessage, float | None]], *, first: bool = False) -> None:
    """Send each ``(message, countdown)`` to its node's queue over one producer connection.

    On our own app's plain Redis broker the messages are LPUSHed as kombu's envelope
    (``envelope.py``, one pipeline); otherwise several messages go as one batch when
    kombu has ``Producer.batch`` (5.7+: a single Redis pipeline). A batch that fails
    reports none as sent, though some (or, after a lost reply, all) may have gone out
    and already started: the caller undoes only rows still QUEUED at their first
    attempt (a message for a deleted row matches nothing and runs nothing) and keeps
    a run a worker started as sent. ``first``: ahead of the messages waiting at the same
    priority level, where ``can_publish_first()`` (else at the back, as always).
    """
    from distributed_tasks import deferred, envelope

    try:
        messages = deferred.hold(list(messages))  # a long countdown waits in the database
    except REDIS_ERRORS as exc:
        raise PublishFailed(0) from exc
    if not messages:
        return
    direct = envelope.client()
    if direct is not None:
        try:
            envelope.push(direct, messages, first=first)
        except BROKER_ERRORS as exc:
            raise PublishFailed(0) from exc
        return
    app = get_app()
    task = app.tasks[TASK_NAME]
    broker = get_broker()
    batched = len(messages) > 1 and hasattr(Producer, "batch")
    sent = 0
    try:
        with (
            app.producer_or_acquire() as producer,
            producer.batch() if batched else contextlib.nullcontext(),
        ):
            for msg, countdown in messages:
                task.apply_async(
                    args=[msg.to_body()],
                    task_id=msg.task_id,
                    queue=keys.queue_name(msg.node),
                    producer=producer,
                    countdown=countdown,
                    priority=broker.message_priority(msg.priority),
                    retry=False,
                    # Celery would build a safe repr of the whole body for every message.
                    argsrepr=f"[{msg.name!r}]",
                    kwargsrepr="{}",
                    **time_limits(msg.timeout),
                )
                sent += 1
    except BROKER_ERRORS as exc:
        raise PublishFailed(0 if batched else sent) from exc
