"""OpenTelemetry: a producer span per published attempt and a linked worker span per run.

The node is an embedded Celery worker (solo pool, in a thread of this process)
consuming its real queue on the real broker, so the trace context travels in the
message headers exactly as between hosts, and one in-memory exporter sees both ends.
"""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker
from opentelemetry import trace

from distributed_tasks import keys, start_async
from distributed_tasks.celery import get_app
from distributed_tasks.nodes import Heartbeat, NodeInfo, set_current_node
from tests.cluster.conftest import wait_finished
from tests.support import poll_until

pytestmark = pytest.mark.django_db(transaction=True)

NODE = "otel@test"


@pytest.fixture
def embedded_node():
    info = NodeInfo(name=NODE, capacity=1)
    set_current_node(info)
    beat = Heartbeat(info)
    beat.start()
    poll_until(lambda: beat.beats > 0, message="first heartbeat")
    try:
        with start_worker(
            get_app(),
            pool="solo",
            perform_ping_check=False,
            queues=[keys.queue_name(NODE)],
            shutdown_timeout=15,
        ):
            yield info
    finally:
        beat.stop(leave=True)
        set_current_node(None)


def test_each_run_has_a_producer_span_and_a_child_worker_span(spans, embedded_node):
    done = start_async("tests.tasks.add", [1, 2], name="otel-add")
    retried = start_async("tests.tasks.fail", ["x"], name="otel-fail", max_attempts=2)
    wait_finished("otel-add")
    wait_finished("otel-fail")
    poll_until(lambda: len(spans.get_finished_spans()) >= 6, message="six spans")
    finished = spans.get_finished_spans()
    producers = [s for s in finished if s.kind is trace.SpanKind.PRODUCER]
    workers = [s for s in finished if s.kind is trace.SpanKind.CONSUMER]
    assert {s.name for s in producers} == {"dt.start"} and {s.name for s in workers} == {"dt.run"}

    def key(span):
        return span.attributes["dt.run_id"], span.attributes["dt.attempt"]

    assert (
        sorted(map(key, producers))
        == sorted(map(key, workers))
        == sorted([(done.run_id, 1), (retried.run_id, 1), (retried.run_id, 2)])
    )
    by_key = {key(p): p for p in producers}
    outcomes = {}
    for run in workers:
        producer = by_key[key(run)]
        assert run.parent is not None and run.parent.span_id == producer.context.span_id
        assert run.context.trace_id == producer.context.trace_id
        assert run.attributes["dt.node"] == NODE
        assert run.attributes["dt.task_list"] == "default"
        outcomes[key(run)] = (run.attributes["dt.outcome"], run.status.status_code.name)
    assert outcomes == {
        (done.run_id, 1): ("DONE", "UNSET"),
        (retried.run_id, 1): ("retried", "ERROR"),
        (retried.run_id, 2): ("FAILED", "ERROR"),
    }
    # The retry was published from inside the first attempt: one trace for the whole run.
    second = by_key[(retried.run_id, 2)]
    first_run = next(w for w in workers if key(w) == (retried.run_id, 1))
    assert second.parent.span_id == first_run.context.span_id
    assert by_key[(done.run_id, 1)].attributes["dt.name"] == "otel-add"


def test_without_an_sdk_neither_a_start_nor_a_run_builds_a_span(monkeypatch):
    """The API alone makes no-op spans: both ends skip them (their cost, per start and
    per run, buys nothing); a run still carries on the trace its message came with."""
    from types import SimpleNamespace

    from distributed_tasks import tracing
    from distributed_tasks.celery import TASK_NAME

    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())
    headers: dict = {}
    tracing._on_publish(sender=TASK_NAME, body=([{"run_id": "r"}], {}, {}), headers=headers)
    assert headers == {}
    untraced = SimpleNamespace(name=TASK_NAME, request=SimpleNamespace(headers={}))
    tracing._on_prerun(task_id="no-sdk", task=untraced, args=[{}])
    assert "no-sdk" not in tracing._runs
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = SimpleNamespace(
        name=TASK_NAME, request=SimpleNamespace(traceparent=f"00-{trace_id}-00f067aa0ba902b7-01")
    )
    tracing._on_prerun(task_id="no-sdk", task=traced, args=[{}])
    assert tracing._runs["no-sdk"][0] is None  # no span, only the caller's context
    assert format(trace.get_current_span().get_span_context().trace_id, "032x") == trace_id
    tracing._on_postrun(task_id="no-sdk", task=traced)
    assert "no-sdk" not in tracing._runs
    assert not trace.get_current_span().get_span_context().is_valid
