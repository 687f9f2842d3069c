"""One node: a Celery worker that consumes only ``dt.node.<node>``, plus its heartbeat.

The heartbeat starts once the consumer is ready (the node is announced only
when it can take work) and, on a graceful stop, ends after Celery's warm
shutdown has let running tasks finish, with an explicit leave so the
orchestrator learns at once instead of after NODE_TIMEOUT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import signals as celery_signals
from celery.worker import state as worker_state

from distributed_tasks import forcing, keys, redis_channel, stealing
from distributed_tasks.celery import content_problem, get_app
from distributed_tasks.conf import get_settings
from distributed_tasks.consumer import NodeConsumer
from distributed_tasks.exceptions import InvalidConfiguration
from distributed_tasks.nodes import (
    ALL_TASK_LISTS,
    Heartbeat,
    NodeInfo,
    live_twin,
    set_current_node,
)

logger = logging.getLogger("distributed_tasks.worker")

# Celery's Django fixup closes every database connection before and after each task
# unless this is set: each run would open a new PostgreSQL connection. Now connections
# are closed every DB_REUSE_MAX tasks, and the runner drops a broken one.
DB_REUSE_MAX = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    node: str
    concurrency: int = 2
    pool: str = "prefork"
    weight: int = 1
    task_lists: tuple[str, ...] = (ALL_TASK_LISTS,)
    loglevel: str = "INFO"
    max_tasks_per_child: int | None = None


def executing() -> list[str]:
    """The attempts (Celery task ids, ``<run_id>:<attempt>``) this node holds now.

    Read in the heartbeat thread while the consumer changes the sets: a copy that
    races a change is taken again.
    """
    for _ in range(10):
        try:
            return [r.id for r in (*worker_state.active_requests, *worker_state.reserved_requests)]
        except RuntimeError:  # "set changed size during iteration"
            continue
    raise RuntimeError("the worker's request sets kept changing")


class WorkerNode:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.info = NodeInfo(
            name=options.node,
            weight=options.weight,
            task_lists=options.task_lists,
            capacity=options.concurrency * options.weight,
        )
        self.heartbeat = Heartbeat(
            self.info, active=lambda: len(worker_state.active_requests), running=executing
        )
        # Forced cancels: kills the pool process of a run that outlived its grace period.
        self.cancels = forcing.Watcher(self.info.name, self.info.incarnation)
        # Idle slots take over runs that wait behind a busy node.
        self.stealer = stealing.Stealer(
            self.info, self._free_slots, lambda task_id: task_id in worker_state.requests
        )

    def _free_slots(self) -> int:
        """Pool processes neither running a run nor holding one received for them (a
        reserved request stays in the set while it runs)."""
        return self.options.concurrency - len(worker_state.reserved_requests)

    def _on_ready(self, **kwargs: object) -> None:
        if not self.heartbeat.is_alive():
            self.heartbeat.start()
            self.cancels.start()
            self.stealer.start()
            logger.info(
                "Node %s (incarnation %s) joined; consuming %s",
                self.info.name,
                self.info.incarnation,
                keys.queue_name(self.info.name),
                extra={"action": "node_ready"},
            )

    def _on_shutting_down(self, **kwargs: object) -> None:
        self.stealer.stop()
        stealing.begin_draining()  # nor do the pool processes, finishing their runs

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        o = self.options
        app = get_app()
        if problem := content_problem(app):
            raise InvalidConfiguration(problem)
        if twin := live_twin(self.info):
            raise InvalidConfiguration(
                f"Another dt_worker (pid {twin.pid} on host {twin.host}, incarnation "
                f"{twin.incarnation}) still heartbeats as node {o.node}: two processes under "
                "one name would take each other's runs for lost. Stop that one, or give this "
                "one its own name (dt_worker -n other@%h)."
            )
        set_current_node(self.info)  # before the pool forks, so children inherit it
        app.conf.setdefault("CELERY_DB_REUSE_MAX", DB_REUSE_MAX)  # read when the fixup starts
        # Anyone who can write to the broker could otherwise stop the node with a
        # `shutdown` broadcast (or change its pool, rate limits...).
        app.conf.worker_enable_remote_control = get_settings().REMOTE_CONTROL
        # The broker may be away for any length of time: Celery would give up (and exit)
        # after 100 reconnection attempts, about 50 minutes; a node keeps trying.
        app.conf.broker_connection_max_retries = None
        # No message may stop the node (consumer.py); Celery reads this before arguments.
        app.conf.worker_consumer = f"{NodeConsumer.__module__}:{NodeConsumer.__qualname__}"
        celery_signals.worker_ready.connect(self._on_ready, weak=False)
        # A node that stops consuming must not take runs over while its runs finish.
        celery_signals.worker_shutting_down.connect(self._on_shutting_down, weak=False)
        # A pool process that frees a slot takes over a run waiting behind a busy node.
        celery_signals.task_postrun.connect(stealing.after_run, weak=False)
        stealing.share_draining()  # before the pool forks: its processes must see it
        redis_channel.reuse_clients()  # one redis.Redis per channel, not one per ack
        worker = app.Worker(
            hostname=o.node,
            queues=[keys.queue_name(o.node)],
            concurrency=o.concurrency,
            pool_cls=o.pool,
            loglevel=o.loglevel,
            prefetch_multiplier=1,
            optimization="fair",
            max_tasks_per_child=o.max_tasks_per_child,
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
            quiet=True,
        )
        try:
            worker.start()
        finally:
            celery_signals.worker_ready.disconnect(self._on_ready)
            celery_signals.worker_shutting_down.disconnect(self._on_shutting_down)
            self.cancels.stop()
            self.stealer.stop()
            self.heartbeat.stop(leave=True)
            logger.info("Node %s left the cluster", o.node, extra={"action": "node_left"})
        return worker.exitcode or 0
