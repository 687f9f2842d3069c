"""Serving metrics: this process's counters plus gauges read from the cluster at scrape time.

Two places answer a scrape: ``GET <prefix>/metrics`` (views.py) in web processes, and
the small HTTP server ``dt_worker --metrics-port`` / ``dt_beat --metrics-port`` start
in processes with no web server. Both render the same union: the process's own
counters (``metrics.py``) and a ``ClusterCollector``.

Cluster gauges are not kept up to date by events; they are read when scraped, with
health.py's bounded reading: one Lua call for the live nodes, one GET for the lease,
one grouped query over active runs, one query over the periodic tasks, and one
passive queue declare per node. A node's own port reads only itself.

Prefork pool processes count in prometheus' multiprocess files: ``dt_worker`` calls
``use_multiprocess`` with a fresh per-node directory before the pool forks, and its
server sums every process's file (dead children's included) at scrape time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError
from django.db import connections

from distributed_tasks import cli
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.resilience import DB_ERRORS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def node_directory(node: str) -> Path:
    """Where a node's pool processes write: a subdirectory per node of the configured
    multiprocess directory, or of the system temporary directory."""
    base = os.environ.get(MULTIPROC_ENV) or os.path.join(tempfile.gettempdir(), "dt-metrics")
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in node)
    return Path(base) / safe


def use_multiprocess(directory: Path) -> None:
    """Count in ``directory`` (emptied first: counters restart with the process), in this
    process and in every process it forks afterwards.

    A lock beside the directory, held while this process or one of its children lives,
    keeps a second node of the same name on this host (another cluster, a test run)
    from emptying and mixing our files; ``OSError`` says so.
    """
    from prometheus_client import values

    directory.parent.mkdir(parents=True, exist_ok=True)
    lock = open(directory.parent / f"{directory.name}.lock", "w")  # noqa: SIM115 (held)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise OSError(
            f"the metrics directory {directory} is in use by another process: a node of "
            f"the same name runs on this host. Give each its own {MULTIPROC_ENV}."
        ) from None
    _held.append(lock)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    _renew_lock_in_children(values.ValueClass)


def _renew_lock_in_children(value_class: Any) -> None:
    """Give forked children a new copy of the one lock of prometheus' multiprocess values.

    Every value of the class counts under that lock. A node's main process counts in
    threads too (a run its stealer took over, a forced cancel); a pool process forked
    while one of them held the lock would wait for it forever at its first count, with
    its run started (issue 17). Only the forking thread lives on in the child, so a new
    lock there is safe. The lock is a closure variable: when a prometheus_client
    version names it otherwise, nothing is done.
    """
    code = value_class.inc.__code__
    if "lock" not in code.co_freevars:
        return
    cell = value_class.inc.__closure__[code.co_freevars.index("lock")]

    reentrant = isinstance(cell.cell_contents, type(threading.RLock()))

    def renew() -> None:
        cell.cell_contents = threading.RLock() if reentrant else threading.Lock()

    os.register_at_fork(after_in_child=renew)


_held: list[Any] = []  # the directory locks of this process, open for its lifetime


def local_collector() -> Any:
    """This process's counters: summed over the multiprocess directory when one is in use."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


@dataclass
class ClusterCollector:
    """Gauges read from Redis and the database at scrape time (bounded, see module doc).

    ``node`` restricts the reading to one node (its own metrics port); ``capacity`` is
    that node's pool size when the heartbeat does not carry one.
    """

    node: str | None = None
    capacity: int | None = None
    close_connections: bool = False  # the scrape runs on a short-lived server thread

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        began = time.perf_counter()
        try:
            yield from self._collect(GaugeMetricFamily, CounterMetricFamily)
        finally:
            if self.close_connections:
                connections.close_all()
        took = GaugeMetricFamily("dt_scrape_duration_seconds", "Time to read the cluster gauges.")
        took.add_metric([], time.perf_counter() - began)
        yield took

    def _collect(self, gauge: Any, counter: Any) -> Iterator[Any]:
        from distributed_tasks import health
        from distributed_tasks.lease import current_leader
        from distributed_tasks.nodes import live_nodes

        up = gauge(
            "dt_up", "Whether a service answered this scrape (1) or not (0).", labels=["service"]
        )
        view = counts = None
        with contextlib.suppress(*REDIS_ERRORS):
            view = live_nodes()
        with contextlib.suppress(*DB_ERRORS):
            counts = health.active_counts()
        up.add_metric(["redis"], float(view is not None))
        up.add_metric(["database"], float(counts is not None))
        yield up
        if view is not None:
            yield from self._nodes(gauge, view, counts)
        if self.node is not None:
            return
        if counts is not None:
            active = gauge(
                "dt_runs_active", "Active runs in the database, by state.", labels=["state"]
            )
            for state in ("QUEUED", "RUNNING"):
                n = sum(v for (s, _node), v in counts.items() if s == state)
                active.add_metric([state], n)
            yield active
        if view is not None:  # Redis down: the leader is unknown, not absent
            leader = current_leader()
            epoch = gauge("dt_leader_epoch", "Epoch of the current lease (0: no leader).")
            epoch.add_metric([], leader.epoch if leader else 0)
            info = gauge("dt_leader", "1 for the dt_beat that holds the lease.", labels=["holder"])
            if leader:
                info.add_metric([leader.holder], 1)
            yield from (epoch, info)
        yield from self._periodic(counter)

    def _nodes(self, gauge: Any, view: Any, counts: Any) -> Iterator[Any]:
        from distributed_tasks import health

        names = [self.node] if self.node is not None else sorted(view.nodes)
        live = [n for n in names if n in view.nodes]
        depths = health.queue_depths(live) if live else {}
        per_node: dict[str, int] = {}
        for (_state, node), n in (counts or {}).items():
            per_node[node] = per_node.get(node, 0) + n
        families = {
            "live": gauge("dt_node_live", "1 while the node heartbeats.", labels=["node"]),
            "age": gauge(
                "dt_node_heartbeat_age_seconds", "Since its last heartbeat.", labels=["node"]
            ),
            "capacity": gauge("dt_node_capacity", "Runs it executes at once.", labels=["node"]),
            "weight": gauge("dt_node_weight", "Its ring weight.", labels=["node"]),
            "active": gauge("dt_node_active_runs", "QUEUED + RUNNING runs on it.", labels=["node"]),
            "executing": gauge(
                "dt_node_executing", "Runs executing at its last heartbeat.", labels=["node"]
            ),
            "depth": gauge(
                "dt_node_queue_depth", "Messages waiting in its queue.", labels=["node"]
            ),
        }
        for name in names:
            info = view.nodes.get(name)
            families["live"].add_metric([name], float(info is not None))
            if info is None:
                continue
            families["age"].add_metric([name], view.age(name))
            capacity = info.capacity or self.capacity
            if capacity:
                families["capacity"].add_metric([name], capacity)
            families["weight"].add_metric([name], info.weight)
            families["executing"].add_metric([name], info.active)
            if counts is not None:
                families["active"].add_metric([name], per_node.get(name, 0))
            if depths.get(name) is not None:
                families["depth"].add_metric([name], depths[name])
        yield from families.values()

    @staticmethod
    def _periodic(counter: Any) -> Iterator[Any]:
        from distributed_tasks.periodic import states  # on DATABASE_ALIAS

        try:
            rows = list(states().values_list("name", "runs", "skips", "failures"))
        except DB_ERRORS:
            return
        runs = counter("dt_periodic_runs", "Slots run, per periodic task.", labels=["task"])
        skips = counter("dt_periodic_skips", "Slots skipped, per periodic task.", labels=["task"])
        fails = counter("dt_periodic_failures", "Slots failed, per periodic task.", labels=["task"])
        for name, n_runs, n_skips, n_fails in rows:
            runs.add_metric([name], n_runs)
            skips.add_metric([name], n_skips)
            fails.add_metric([name], n_fails)
        yield from (runs, skips, fails)


@dataclass(frozen=True)
class Union:
    """Several collectors rendered as one registry (``generate_latest`` needs ``collect``)."""

    collectors: tuple[Any, ...]

    def collect(self) -> Iterable[Any]:
        for collector in self.collectors:
            yield from collector.collect()


def render(*collectors: Any) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(Union(collectors))  # type: ignore[arg-type]


def serve(port: int, *collectors: Any, addr: str = "0.0.0.0") -> Any:
    """Answer ``GET /metrics`` on ``port`` from a daemon thread; returns the server."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=Union(collectors))  # type: ignore[arg-type]
    return server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` / ``--metrics-addr`` for ``dt_worker`` and ``dt_beat``."""
    parser.add_argument(
        "--metrics-port",
        type=cli.port,
        default=None,
        help="Serve Prometheus metrics on this port (needs prometheus_client; default: off).",
    )
    parser.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        help="Address the metrics port binds (default 127.0.0.1; 0.0.0.0 for every interface).",
    )


def serve_from_command(options: dict[str, Any], collector: ClusterCollector) -> Any:
    """Start the metrics server a command asked for; None when it asked for none."""
    from distributed_tasks import metrics

    port = options.get("metrics_port")
    if port is None:
        return None
    if not metrics.enabled():
        raise CommandError(
            "--metrics-port needs prometheus_client (pip install "
            "'django-distributed-tasks[metrics]') and DISTRIBUTED_TASKS['METRICS'] true."
        )
    collector.close_connections = True
    try:
        if collector.node is not None:  # a worker: its pool processes count in files
            use_multiprocess(node_directory(collector.node))
        return serve(port, local_collector(), collector, addr=options["metrics_addr"])
    except OSError as exc:
        raise CommandError(
            f"Cannot serve metrics on {options['metrics_addr']}:{port}: {exc}. A port in use "
            "needs another --metrics-port."
        ) from None
