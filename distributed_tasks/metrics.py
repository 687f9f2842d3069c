"""Prometheus metrics recorded from our signals, in whichever process the event happens.

Nothing here runs unless ``prometheus_client`` is installed and ``METRICS`` is true:
``install()`` (called by the app's ``ready()``) then creates the metrics and connects
one receiver per signal. Without it no receiver is connected, and an unconnected
signal costs the sender a single attribute check.

Events are counted where they happen: starts and refusals in the caller's process (the
web server, ``dt_start``, the dispatcher), runs in the node's pool processes, elections,
renewals and periodic slots in ``dt_beat``. Pool processes write to prometheus'
multiprocess files (``scrape.use_multiprocess``), which the node's main process sums at
scrape time. Cluster-wide gauges are read at scrape time instead (``scrape.py``).

Every metric has labels, so no value exists before its first event: that is what lets
``scrape.use_multiprocess`` switch the value class after ``install()`` ran.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from typing import Any

from distributed_tasks import signals
from distributed_tasks.conf import get_settings

PREFIX = "dt"
# Seconds: from sub-second tasks to hour-long ones.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

_started: dict[tuple[str, int], float] = {}  # (run_id, attempt) -> perf_counter, this process
_STARTED_CAP = 10_000


def available() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None


def enabled() -> bool:
    """Metrics are recorded: the setting allows it and prometheus_client is installed."""
    return bool(get_settings().METRICS) and available()


@functools.cache
def registry_metrics() -> Any:
    """The metric objects, created once per process in prometheus' default registry."""
    from prometheus_client import Counter, Histogram

    def counter(name: str, documentation: str, *labels: str) -> Any:
        return Counter(f"{PREFIX}_{name}", documentation, list(labels))

    def histogram(name: str, documentation: str, *labels: str) -> Any:
        return Histogram(f"{PREFIX}_{name}", documentation, list(labels), buckets=BUCKETS)

    class M:
        started = counter("runs_started", "Runs started (queued) by this process.", "task_list")
        refused = counter(
            "runs_refused",
            "Starts refused: already_running, reserved (finished, reuse forbidden), invalid.",
            "task_list", "reason",
        )  # fmt: skip
        finished = counter(
            "runs_finished",
            "Runs that ended for good, by state and reason (empty for DONE).",
            "function", "task_list", "state", "reason",
        )  # fmt: skip
        retried = counter(
            "runs_retried",
            "Failed attempts followed by a new attempt (max_attempts > 1).",
            "function", "task_list", "reason",
        )  # fmt: skip
        moved = counter(
            "runs_moved",
            "QUEUED runs moved before they started, by why: node_lost, rebalanced, stolen.",
            "function", "task_list", "why",
        )  # fmt: skip
        queue_wait = histogram(
            "run_queue_wait_seconds",
            "From start_async to RUNNING (first attempts; a countdown is included).",
            "function",
        )
        duration = histogram(
            "run_duration_seconds",
            "From RUNNING to the recorded outcome of an attempt, in the pool process.",
            "function",
        )
        elections = counter(
            "leader_elections",
            "Times this dt_beat became the leader (failovers, cluster-wide: dt_leader_epoch).",
            "holder",
        )
        renewals = counter(
            "lease_renewals", "Lease renewals by this dt_beat while leader.", "holder"
        )
        slots = counter(
            "periodic_slots",
            "Due periodic slots handled by this leader: dispatched, skipped, no_node, ...",
            "task", "outcome",
        )  # fmt: skip
        nodes = counter(
            "node_events", "Membership changes seen by this leader (joined, lost).", "event"
        )

    return M


def _on_queued(sender: Any, handle: Any, **kwargs: Any) -> None:
    registry_metrics().started.labels(handle.task_list).inc()


def _on_refused(sender: Any, task_list: str, reason: str, **kwargs: Any) -> None:
    registry_metrics().refused.labels(task_list, reason).inc()


def _on_started(sender: Any, message: Any, **kwargs: Any) -> None:
    if len(_started) >= _STARTED_CAP:  # outcomes discarded as fenced never pop theirs
        _started.clear()
    _started[(message.run_id, message.attempt)] = time.perf_counter()
    if message.attempt == 1 and message.queued_at:
        wait = max(0.0, time.time() - message.queued_at)
        registry_metrics().queue_wait.labels(message.function).observe(wait)


def _observe_duration(message: Any) -> None:
    began = _started.pop((message.run_id, message.attempt), None)
    if began is not None:
        registry_metrics().duration.labels(message.function).observe(time.perf_counter() - began)


def _on_finished(sender: Any, message: Any, outcome: Any, **kwargs: Any) -> None:
    m = registry_metrics()
    m.finished.labels(message.function, message.task_list, str(outcome.state), outcome.reason).inc()
    _observe_duration(message)


def _on_retried(sender: Any, message: Any, previous: Any, outcome: Any, **kwargs: Any) -> None:
    registry_metrics().retried.labels(previous.function, previous.task_list, outcome.reason).inc()
    _observe_duration(previous)


def _on_moved(sender: Any, message: Any, previous: Any, why: str = "", **kwargs: Any) -> None:
    registry_metrics().moved.labels(previous.function, previous.task_list, why).inc()


def _on_elected(sender: Any, holder: str, **kwargs: Any) -> None:
    registry_metrics().elections.labels(holder).inc()


def _on_renewed(sender: Any, holder: str, **kwargs: Any) -> None:
    registry_metrics().renewals.labels(holder).inc()


def _on_slot(sender: Any, task: str, outcome: str, **kwargs: Any) -> None:
    registry_metrics().slots.labels(task, outcome).inc()


def _on_joined(sender: Any, **kwargs: Any) -> None:
    registry_metrics().nodes.labels("joined").inc()


def _on_lost(sender: Any, **kwargs: Any) -> None:
    registry_metrics().nodes.labels("lost").inc()


RECEIVERS = (
    (signals.run_queued, _on_queued),
    (signals.run_refused, _on_refused),
    (signals.run_started, _on_started),
    (signals.run_finished, _on_finished),
    (signals.run_retried, _on_retried),
    (signals.run_moved, _on_moved),
    (signals.leader_elected, _on_elected),
    (signals.lease_renewed, _on_renewed),
    (signals.periodic_slot, _on_slot),
    (signals.node_joined, _on_joined),
    (signals.node_lost, _on_lost),
)


def install() -> bool:
    """Connect the receivers when metrics are enabled; returns whether they are."""
    on = enabled()
    if on:
        registry_metrics()
    signals.switch(RECEIVERS, on=on, prefix="dt-metrics")
    return on


def uninstall() -> None:
    """Disconnect every receiver (metrics off): the signals cost nothing again."""
    signals.switch(RECEIVERS, on=False, prefix="dt-metrics")
