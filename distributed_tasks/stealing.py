"""Work stealing: a node with a free slot takes over a run waiting behind a busy node.

The leader's rebalancer looks a few times a second; a shared queue (plain Celery)
hands the next run to whichever process frees up, at once. To come close to
that, a node with a free slot moves to itself the run that would start next (highest
priority, then oldest) on a node holding more runs than its slots (the loads in
Redis; a node without such a queue costs no database query), however fresh: such a
run waits whatever its node does next. Two
triggers: a pool process that just finished a run (``after_run``, which knows its node's
load from the pipeline that published the outcome), and, for a
node that sits idle while a run arrives elsewhere, the node's ``Stealer`` thread,
which looks every ``STEAL_INTERVAL`` seconds (one Redis read while nothing waits).

When every slot is busy, a node's own queue refills the slot that frees, though an
older run may wait on another node: FIFO across the cluster is lost. So a pool process
that just finished a run on a full node compares (``overtake``) the run that would
start next on this node with the runs waiting elsewhere (highest priority, then
oldest, as each node's queue orders them); if one elsewhere comes first, it moves
here, its message published ahead of this node's waiting ones at its priority level
(none of them ranks above it), so the freed slot takes it. Only a wait longer by
``REBALANCE_AFTER`` than the own run's counts; a moved run's ``run_after`` is the
time of the move, so it never qualifies again, and each overtake needs a finished
run: no run goes back and forth. A pool process looks at most every
``OVERTAKE_EVERY`` s, and a look reads each node's first few waiting runs from an
index (one query, whatever the backlog).

The move is the fenced path of every other move (``attempts.next_attempt``): a
conditional update to a new attempt on this node, so the old node's message is
stale, and of two nodes stealing the same run, or a steal racing the old node's
own start, exactly one wins.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from django.db import connections
from django.utils import timezone

from distributed_tasks import attempts, celery, keys, logs, mirror
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

OVERTAKE_EVERY = 0.05  # seconds between two overtake looks of one pool process
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


class Head(NamedTuple):
    """A waiting run as far as choosing one needs: no call, no history. Its attempt and
    node fence the take: the row read to move it must still be this attempt there."""

    pk: Any
    node: str
    attempt: int
    priority: int
    run_after: dt.datetime


def _waiting(node: NodeInfo, on: list[str], since: dt.datetime) -> list[Head]:
    """The first ``CANDIDATES`` QUEUED runs on nodes ``on`` that ``node`` serves, due by
    ``since``, in the order a node's queue serves them (highest priority, then oldest)."""
    return _heads(node, on, since)[:CANDIDATES]


def _heads(node: NodeInfo, on: list[str], since: dt.datetime) -> list[Head]:
    """The first ``CANDIDATES`` QUEUED runs of each node ``on`` that ``node`` serves, due
    by ``since``, all in the order a node's queue serves them.

    Read as each node's first few from the (node, state, priority, run_after) index, in
    one UNION ALL where the database takes one: a look costs the same whether a node
    queues ten runs or ten thousand (a sort of all of them took ~2 ms, on every look of
    a busy cluster)."""
    runs = get_store().runs.filter(state=State.QUEUED, run_after__lte=since)
    if ALL_TASK_LISTS not in node.task_lists:
        runs = runs.filter(task_list__in=node.task_lists)
    heads = [
        runs.filter(node=name).order_by("-priority", "run_after").values_list(*Head._fields)
        [:CANDIDATES]
        for name in on
    ]  # fmt: skip
    if len(heads) > 1 and connections[runs.db].features.supports_slicing_ordering_in_compound:
        # No order of the whole (sorted below): Django 6 would resolve the first part's
        # ordering against the union's columns, and fail on the model's default one.
        rows = list(heads[0].union(*heads[1:], all=True).order_by())
    else:
        rows = [row for query in heads for row in query]
    return sorted(map(Head._make, rows), key=lambda h: (-h.priority, h.run_after))


def _take(node: NodeInfo, heads: list[Head], *, first: bool = False) -> RunMessage | None:
    """Move the first of ``heads`` that no one else took meanwhile to ``node``."""
    if not heads:
        return None
    rows = get_store().runs.by_keys([head.pk for head in heads], state=State.QUEUED).in_bulk()
    # The message comes from this second read: had the run moved meanwhile (another
    # thief, the leader), its new attempt would pass the fence; so it must be the one chosen.
    chosen = (rows.get(head.pk) for head in heads)
    for run, head in zip(chosen, heads, strict=True):
        if run is None or (run.attempt, run.node) != (head.attempt, head.node):
            continue
        new = attempts.next_attempt(
            message_for(run),
            from_states=(State.QUEUED,),
            node=node.name,
            why=MoveReason.STOLEN,
            first=first,
        )
        if new is not None:
            logger.info(
                "Took %s over from %s, where it waited %s",
                run.name,
                run.node,
                "longer than this node's next run" if first else "with no free slot",
                extra=logs.run_extra(new, "stolen"),
            )
            return new
    return None


def steal(node: NodeInfo, donors: list[str] | None = None) -> RunMessage | None:
    """Move the run waiting on another node that would start there next (highest
    priority, then oldest) to ``node``; None when there is none. ``donors``: the
    ``queueing_nodes`` as just read, else they are read."""
    if donors is None:
        donors = queueing_nodes(node)
    if not donors:
        return None
    # No wait is too short: a donor holds more runs than its slots, so its newest ones
    # wait whatever it does next, and the first in line here starts now, as a shared
    # queue would start it. (Had REBALANCE_AFTER to pass first, an idle node would
    # watch a fresh run wait that long, and back off meanwhile: the steady tail.)
    return _take(node, _waiting(node, donors, timezone.now()))


def overtake(node: NodeInfo) -> RunMessage | None:
    """On a full ``node`` whose slot just freed: move here the run waiting elsewhere that
    comes before this node's own next one (as high a priority and waiting
    ``REBALANCE_AFTER`` longer, or a higher one not moved within ``OVERTAKE_EVERY``), its
    message first in line; None when this node's own run comes first, or none waits.

    Only on a broker whose queue has a front (``celery.can_publish_first``): at the back
    the moved run would wait behind this node's own, longer than where it was.
    """
    if not celery.can_publish_first():
        return None
    donors = queueing_nodes(node)
    if not donors:
        return None
    now = timezone.now()
    runs = _heads(node, [*donors, node.name], now)  # one query: each node's first few
    own = next((run for run in runs if run.node == node.name), None)
    # Only a wait longer by REBALANCE_AFTER is worth a move: reordering waits that differ
    # little (a burst, all queued at once) changes no tail but costs a fenced update
    # each, and a run moved just now never qualifies again.
    margin = dt.timedelta(seconds=get_settings().REBALANCE_AFTER)
    due = (now if own is None else own.run_after) - margin
    # A higher priority goes first too, once it has waited a look's interval: one just
    # moved to a full node (its run_after is the move) is not taken back by the node it
    # left while it waits for the slot there to free.
    settled = now - dt.timedelta(seconds=OVERTAKE_EVERY)
    ahead = [
        run
        for run in runs[: runs.index(own) if own is not None else None]
        if run.run_after <= due
        or (own is not None and run.priority > own.priority and run.run_after <= settled)
    ]
    return _take(node, ahead[:CANDIDATES], first=True)


_overtake_after = [0.0]  # monotonic time of this process's next look

# Set when the node begins its warm shutdown: it consumes no more messages, so a run
# taken over then would wait on it until it is declared lost. In shared memory made
# before the pool forks (``share_draining``): pool processes read it with no round trip.
_draining: Any = None


def share_draining() -> None:
    """A new draining flag, unset, shared with the pool processes forked after this."""
    global _draining
    _draining = multiprocessing.RawValue(ctypes.c_bool, False)


def begin_draining() -> None:
    """This node stops taking runs over, in every pool process too."""
    if _draining is not None:
        _draining.value = True


def draining() -> bool:
    return _draining is not None and bool(_draining.value)


def after_run(sender: Any = None, **kwargs: Any) -> None:
    """``task_postrun`` receiver of the pool processes: steal when this node has room,
    else let an older run waiting elsewhere take the slot that frees (``overtake``)."""
    node = current_node()
    if node is None or getattr(sender, "name", None) != TASK_NAME or draining():
        return
    try:
        # The run's outcome, published just before, read the node's load: no round trip.
        if has_free_slot(node, mirror.take_unloaded(node.name)):
            steal(node)
        elif (now := time.monotonic()) >= _overtake_after[0]:
            # At most every OVERTAKE_EVERY per pool process: with a backlog every run ends
            # on a full node, and a look per run halved the throughput of a busy cluster
            # (when a look sorted every waiting run; it reads an index now).
            _overtake_after[0] = now + OVERTAKE_EVERY
            overtake(node)
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
                # Runs wait elsewhere but none could be taken (not due yet, other task
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
            if not (donors := queueing_nodes(self.node)):
                return found
            if (new := steal(self.node, donors)) is None:
                return found or False
            found = True
            self.stolen += 1
            self.in_flight[new.task_id] = now
        return found
