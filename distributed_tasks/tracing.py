"""OpenTelemetry: a producer span per published attempt, a consumer span per run.

Nothing here is imported unless ``opentelemetry-api`` is installed and ``TRACING`` is
true; then ``install()`` connects to Celery's own signals, so the start and run paths
carry no tracing code:

- ``before_task_publish`` (the caller's process, inside the start walk): a PRODUCER
  span ``dt.start``, child of whatever span is current (a web request, say); its
  context goes into the message headers (W3C ``traceparent``) and the span ends;
- ``task_prerun`` / ``task_postrun`` (the pool process): a CONSUMER span ``dt.run``
  whose parent is the context from the headers, current while the run executes, so the
  task's own spans nest under it;
- ``run_finished`` / ``run_retried``: the outcome, as attributes and span status.

Attributes: ``dt.run_id``, ``dt.name``, ``dt.task_list``, ``dt.node``, ``dt.attempt``,
``dt.function``, and on the run span ``dt.outcome`` (DONE, FAILED, retried, stale) and
``dt.reason``. Without an SDK configured the API's spans are no-ops.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from distributed_tasks import signals
from distributed_tasks.conf import get_settings

TRACER = "distributed_tasks"
_runs: dict[str, tuple[Any, Any]] = {}  # celery task id -> (span, context token)
_decided: set[str] = set()  # task ids whose span got an outcome


def available() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:
        return False


def enabled() -> bool:
    return bool(get_settings().TRACING) and available()


def _attributes(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    pairs = {
        "dt.run_id": body.get("run_id"),
        "dt.name": body.get("name"),
        "dt.task_list": body.get("task_list"),
        "dt.node": body.get("node"),
        "dt.attempt": body.get("attempt"),
        "dt.function": body.get("function"),
    }
    return {k: v for k, v in pairs.items() if isinstance(v, (str, int))}


def _first_arg(args: Any) -> Any:
    return args[0] if isinstance(args, (list, tuple)) and args else None


def _exporting(trace: Any) -> bool:
    """Whether an SDK is configured: without one a span is a no-op and injects nothing,
    so the start and run paths skip building it (about 40 us each)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _on_publish(sender: Any = None, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
    from opentelemetry import propagate, trace

    from distributed_tasks.celery import TASK_NAME

    if headers is None or sender != TASK_NAME or not _exporting(trace):
        return
    args = body[0] if isinstance(body, (list, tuple)) and body else None
    attributes = _attributes(_first_arg(args))
    span = trace.get_tracer(TRACER).start_span(
        "dt.start", kind=trace.SpanKind.PRODUCER, attributes=attributes
    )
    try:
        propagate.inject(headers, context=trace.set_span_in_context(span))
    finally:
        span.end()


class _RequestGetter:
    """Reads propagation headers from a Celery task request (they become its attributes)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = getattr(carrier, key, None)
        if value is None and isinstance(getattr(carrier, "headers", None), dict):
            value = carrier.headers.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Any) -> list[str]:
        return []


def _is_ours(task: Any) -> bool:
    from distributed_tasks.celery import TASK_NAME

    return getattr(task, "name", None) == TASK_NAME


def _on_prerun(task_id: str = "", task: Any = None, args: Any = None, **kwargs: Any) -> None:
    if not _is_ours(task):
        return
    from opentelemetry import context, propagate, trace

    parent = propagate.extract(task.request, getter=_RequestGetter())
    if not _exporting(trace):
        # No SDK: a span would be a no-op (about 40 us a run). The caller's trace still
        # goes on through the run, for an instrumented call the task makes.
        if trace.get_current_span(parent).get_span_context().is_valid:
            _runs[task_id] = (None, context.attach(parent))
        return
    span = trace.get_tracer(TRACER).start_span(
        "dt.run",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=_attributes(_first_arg(args)),
    )
    _runs[task_id] = (span, context.attach(trace.set_span_in_context(span)))


def _on_postrun(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    entry = _runs.pop(task_id, None)
    if entry is None:
        return
    from opentelemetry import context

    span, token = entry
    if span is not None:
        if task_id not in _decided:
            span.set_attribute("dt.outcome", "stale")  # fenced: the run belonged elsewhere
        span.end()
    _decided.discard(task_id)
    context.detach(token)


def _outcome(message: Any, outcome: str, reason: str, failed: bool) -> None:
    entry = _runs.get(message.task_id)
    if entry is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span = entry[0]
    if span is None:
        return
    span.set_attribute("dt.outcome", outcome)
    if reason:
        span.set_attribute("dt.reason", reason)
    if failed:
        span.set_status(Status(StatusCode.ERROR, reason))
    _decided.add(message.task_id)


def _on_finished(sender: Any, message: Any, outcome: Any, **kwargs: Any) -> None:
    _outcome(message, str(outcome.state), outcome.reason, str(outcome.state) == "FAILED")


def _on_retried(sender: Any, previous: Any, outcome: Any, **kwargs: Any) -> None:
    _outcome(previous, "retried", outcome.reason, True)


def install() -> bool:
    """Connect to Celery's and our signals when tracing is enabled; returns whether it is."""
    from celery import signals as celery_signals

    hooks = (
        (celery_signals.before_task_publish, _on_publish),
        (celery_signals.task_prerun, _on_prerun),
        (celery_signals.task_postrun, _on_postrun),
        (signals.run_finished, _on_finished),
        (signals.run_retried, _on_retried),
    )
    on = enabled()
    signals.switch(hooks, on=on, prefix="dt-tracing")
    return on
