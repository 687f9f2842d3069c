"""Work stealing: a node with a free slot takes over a run waiting behind a busy node.

The leader's rebalancer looks a few times a second; a shared queue (plain Celery)
hands the next run to whichever process frees up, at once. To come close to
that, a node with a free slot moves to itself the oldest run that has waited
longer than ``REBALANCE_AFTER`` on a node holding more runs than its slots (the
loads in Redis; a node without such a queue costs no database query). Two
triggers: a pool process that just finished a run (``after_run``, which knows its node's
load from the pipeline that published the outcome), and, for a
node that sits idle while a run arrives elsewhere, the node's ``Stealer`` thread,
which looks every ``STEAL_INTERVAL`` seconds (one Redis read while nothing waits).

The move is the fenced path of every other move (``attempts.next_attempt``): a
conditional update to a new attempt on this node, so the old node's message is
stale, and of two nodes stealing the same run, or a steal racing the old node's
own start, exactly one wins.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from distributed_tasks import attempts, claims, keys, logs
from distributed_tasks.celery import TASK_NAME
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import as_dict, get_redis
from distributed_tasks.messages import RunMessage
from distributed_tasks.nodes import ALL_TASK_LISTS, NodeInfo, current_node
from distributed_tasks.outage import Outage
from distributed_tasks.resilience import close_broken_connections
from distributed_tasks.store import get_store, message_for
from distributed_tasks.types import MoveReason, State

logger = logging.getLogger("distributed_tasks.stealing")

CANDIDATES = 3  # runs tried per steal: others may be taking the oldest ones meanwhile
IDLE_BACKOFF = 1.0  # seconds between looks at most, while runs wait that none may take
IN_FLIGHT_FOR = 2.0  # seconds a taken run's slot stays counted until its message arrives


def has_free_slot(node: NodeInfo, load: int | None = None) -> bool:
    """Whether ``node`` holds fewer active runs than its slots (the approximate loads);
    ``load``: its load as just read, else it is read."""
    if load is None:
        load = int(get_redis().hget(keys.loads_key(), node.name) or 0)
    return load < node.slots


def queueing_nodes(node: NodeInfo) -> list[str]:
    """Other live nodes holding more active runs than their slots: runs wait there."""
    loads = as_dict(get_redis().hgetall(keys.loads_key()))
    view = attempts.placement().view()  # slots change only with membership: cached
    return [
        name
        for name, info in view.nodes.items()
        if name != node.name
        and int(loads.get(name, 0)) > info.slots
        and any(info.serves(t) for t in node.task_lists)
    ]


def steal(node: NodeInfo) -> RunMessage | None:
    """Move the run waiting on another node that would start there next (highest
    priority, then oldest) to ``node``; None when there is none."""
    donors = queueing_nodes(node)
    if not donors:
        return None
    since = timezone.now() - dt.timedelta(seconds=get_settings().REBALANCE_AFTER)
    runs = (
        get_store()
        .runs.filter(state=State.QUEUED, run_after__lte=since, node__in=donors)
        .order_by("-priority", "run_after")
    )
    if ALL_TASK_LISTS not in node.task_lists:
        runs = runs.filter(task_list__in=node.task_lists)
    for run in runs[:CANDIDATES]:
        new = attempts.next_attempt(
            message_for(run), from_states=(State.QUEUED,), node=node.name, why=MoveReason.STOLEN
        )
        if new is not None:
            logger.info(
                "Took %s over from %s, where it waited with no free slot",
                run.name,
                run.node,
                extra=logs.run_extra(new, "stolen"),
            )
            return new
    return None


def after_run(sender: Any = None, **kwargs: Any) -> None:
    """``task_postrun`` receiver of the pool processes: steal when this node has room."""
    node = current_node()
    if node is None or getattr(sender, "name", None) != TASK_NAME:
        return
    try:
        # The run's outcome, published just before, read the node's load: no round trip.
        if has_free_slot(node, claims.take_unloaded(node.name)):
            steal(node)
    except Exception:  # a failed steal leaves the run where it waits: the leader moves it
        logger.exception("Could not take a waiting run over")


class Stealer(threading.Thread):
    """A node's idle slots pull: every ``STEAL_INTERVAL`` s, while ``free_slots()`` (the
    worker's own count: pool processes neither running nor holding a reserved run) is
    positive and another node queues runs, take up to that many over."""

    def __init__(
        self,
        node: NodeInfo,
        free_slots: Callable[[], int],
        received: Callable[[str], bool] = lambda task_id: True,
    ) -> None:
        super().__init__(name=f"dt-steal-{node.name}", daemon=True)
        self.node, self.free_slots, self.received = node, free_slots, received
        self._stop_event = threading.Event()
        self.outage = Outage(f"Work stealing of node {node.name}", logger)
        self.stolen = 0
        # Runs taken whose message the worker has not received yet (task id -> when):
        # their slots look free until then, and must not be filled twice.
        self.in_flight: dict[str, float] = {}

    def run(self) -> None:
        interval = get_settings().STEAL_INTERVAL
        if interval <= 0:
            return
        wait = interval
        while not self._stop_event.wait(max(wait, self.outage.remaining())):
            try:
                found = self.poll()
            except Exception as exc:  # the thread must outlive any fault
                close_broken_connections()  # this thread's own connection, if it broke
                self.outage.failed(exc)
            else:
                self.outage.ok()
                # Runs wait elsewhere but none could be taken (too fresh, other task
                # lists): look less often, up to IDLE_BACKOFF, instead of querying the
                # database 20 times a second for nothing.
                wait = interval if found is not False else min(wait * 2, IDLE_BACKOFF)

    def stop(self) -> None:
        self._stop_event.set()

    def poll(self) -> bool | None:
        """Take up to one run per free slot. False when runs waited elsewhere but none
        could be taken; None when no node queued runs (one Redis read) or none is free."""
        now = time.monotonic()
        self.in_flight = {
            task_id: at
            for task_id, at in self.in_flight.items()
            if now - at < IN_FLIGHT_FOR and not self.received(task_id)
        }
        found = None
        for _ in range(max(0, self.free_slots() - len(self.in_flight))):
            if not queueing_nodes(self.node):
                return found
            if (new := steal(self.node)) is None:
                return found or False
            found = True
            self.stolen += 1
            self.in_flight[new.task_id] = now
        return found
