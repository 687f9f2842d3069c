"""HA beat: a celery beat Scheduler that runs the orchestrator and sends the project's
``CELERY_BEAT_SCHEDULE`` only while it leads.

django-celery-beat duplicates every schedule when two beats run; here any
number of ``dt_beat`` processes can run and exactly one (the lease holder)
sends. The last run time of each entry is kept in the database (the
``Leadership`` row, written fenced), so a new leader continues the schedule
where the old one stopped instead of starting over, even after Redis was
flushed: a follower that started hours ago would otherwise send every entry
again at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from typing import Any

from celery.beat import Scheduler, SchedulingError

from distributed_tasks import fencing, keys
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import as_dict, get_redis, private_redis
from distributed_tasks.lease import Lease
from distributed_tasks.orchestrator import Orchestrator
from distributed_tasks.orchestrator.keeper import LeaseKeeper
from distributed_tasks.outage import DB_ERRORS, REDIS_ERRORS, Outage

logger = logging.getLogger("distributed_tasks.orchestrator.scheduler")

FOLLOWER_WAIT = 0.1

# Set by the beat's SIGTERM/SIGINT handler. The handler raises SystemExit in the main
# thread, but the frame it lands in may be Django's transaction cleanup, which can turn
# it into a DatabaseError ("can't change 'autocommit' now") that a tick survives as a
# dependency fault; this flag makes the next tick exit anyway.
SHUTDOWN = threading.Event()


def default_holder() -> str:
    return f"beat-{os.getpid()}@{socket.gethostname()}"


# Seconds between two rebalancer passes of the leader (between its ticks): a few database
# reads a second for the leader, while nodes that free a slot steal at once (stealing.py).
REBALANCE_EVERY = 0.25


class DistributedScheduler(Scheduler):
    holder: str | None = None  # set by dt_beat on a subclass

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        holder = self.holder or default_holder()
        self.orchestrator = Orchestrator(holder, lease=Lease(holder, client=private_redis()))
        self.keeper = LeaseKeeper(self.orchestrator)
        self._led_epoch = 0
        self._next_tick = 0.0
        self._next_rebalance = 0.0
        self.outage = Outage("Orchestrator beat", logger)
        self.broker = Outage("Celery broker", logger)
        self.resume = Outage("HA beat schedule", logger)
        super().__init__(app, *args, **kwargs)
        self.keeper.start()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """celery beat's loop step: never raises (celery beat exits on any exception).

        The one exit is a requested shutdown, even if its SystemExit was swallowed.
        """
        if SHUTDOWN.is_set():
            raise SystemExit()
        try:
            wait = self._tick(*args, **kwargs)
        except Exception as exc:
            if SHUTDOWN.is_set():
                raise SystemExit() from exc
            return self.outage.failed(exc, during="beat tick")
        if SHUTDOWN.is_set():
            raise SystemExit()
        self.outage.ok()
        return wait

    def _tick(self, *args: Any, **kwargs: Any) -> float:
        orchestrator = self.orchestrator
        if not orchestrator.is_leader():
            self._led_epoch = 0
            return FOLLOWER_WAIT
        if self._led_epoch != orchestrator.epoch and self.resume.ready():
            try:
                self._resume_schedule()
            except Exception as exc:  # the duties go on; only the sends wait for it
                self.resume.failed(exc, during="reading the beat schedule's last sends")
            else:
                self.resume.ok()
                self._led_epoch = orchestrator.epoch
        now = time.monotonic()
        if now >= self._next_tick:
            orchestrator.tick()
            # A failing dependency stretches the wait (capped backoff) instead of hammering it.
            self._next_tick = time.monotonic() + max(
                get_settings().TICK_INTERVAL, orchestrator.retry_in()
            )
        elif (
            orchestrator.outage.ready()
            and (slot_wait := self._periodic_wait()) is not None
            and slot_wait <= 0
        ):
            orchestrator.tick(only="dispatcher")  # a slot starts between two ticks
        elif orchestrator.outage.ready() and now >= self._next_rebalance:
            # Runs waiting behind a busy node move within a fraction of a tick.
            orchestrator.tick(only="rebalancer")
            self._next_rebalance = time.monotonic() + REBALANCE_EVERY
        if self._led_epoch == orchestrator.epoch:
            beat_wait = super().tick(*args, **kwargs)
        else:  # not resumed: sending now could repeat what the last leader just sent
            beat_wait = max(FOLLOWER_WAIT, self.resume.remaining())
        waits = [beat_wait, self._next_tick - time.monotonic()]
        if orchestrator.outage.ready():
            waits.append(self._next_rebalance - time.monotonic())
        if (slot_wait := self._periodic_wait()) is not None and orchestrator.outage.ready():
            waits.append(slot_wait)
        return max(0.0, min(waits))

    def _periodic_wait(self) -> float | None:
        """Seconds until the next periodic slot is due, so slots start on time."""
        dispatcher = self.orchestrator.duty("dispatcher")
        due = getattr(dispatcher, "next_due", None)
        return None if due is None else due.timestamp() - time.time()

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        """Send one ``CELERY_BEAT_SCHEDULE`` entry; a broker that fails is logged once.

        Celery's own version logs every failed send with a stack dump; here the broker
        gets an ``Outage``: while it backs off, due entries are skipped (as celery skips
        a failed send: the entry is not replayed later), and the cached connection is
        dropped so the next send reconnects.
        """
        if not self.orchestrator.is_leader():  # fail closed between the check and the send
            return
        if not self.broker.ready():
            return
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:
            # Celery wraps the broker's error in a SchedulingError: log what failed.
            if isinstance(exc, SchedulingError) and exc.__context__ is not None:
                exc = exc.__context__
            self.broker.failed(exc, during=f"sending {entry.name}")
            self._drop_connection()
            return
        self.broker.ok()
        sent = self.schedule.get(entry.name, entry).last_run_at
        try:
            fencing.record_sent(self.orchestrator.epoch, entry.name, sent.isoformat())
        except (*DB_ERRORS, fencing.Fenced) as exc:
            logger.warning("Could not record the send of %s: %s", entry.name, exc)

    def _ensure_connected(self) -> Any:
        # Celery connects here, retrying up to 100 times inside the beat loop (the
        # orchestrator's ticks would stop) and outside apply_entry (a failure would drop
        # the entry from the heap). The producer connects lazily on its first send instead.
        return self.connection

    def _drop_connection(self) -> None:
        self.__dict__.pop("producer", None)
        conn = self.__dict__.pop("connection", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.release()

    def _resume_schedule(self) -> None:
        """On election, continue each entry from the cluster's last send, not from now.

        The database holds the sends; releases before 0010 kept them in Redis, where a
        leader of such a release (during a rolling upgrade) still writes: the later of
        the two counts.
        """
        stored = fencing.beat_sent()
        try:
            earlier = as_dict(get_redis().hgetall(keys.beat_key()))
        except REDIS_ERRORS:
            earlier = {}
        for name, entry in self.schedule.items():
            times = [_sent_at(name, sources.get(name)) for sources in (stored, earlier)]
            if known := [then for then in times if then is not None]:
                entry.last_run_at = max(known)
        self._heap = None

    def close(self) -> None:
        self.keeper.stop(release=True)
        super().close()

    @property
    def info(self) -> str:
        return f"    . orchestrator -> {self.orchestrator.holder}"


def _sent_at(entry: str, value: Any) -> dt.datetime | None:
    """A stored last send as an aware time; None (and a warning) for a value that is not
    one. Only the schedule's own entries are read, so a bad value left by a removed entry
    or a hand edit costs that one entry its last send, never every entry's sends."""
    if value is None:
        return None
    try:
        then = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        logger.warning(
            "The last send of beat entry %r is stored as %r, which is not an ISO time: the "
            "entry continues from this beat's own last send.",
            entry,
            value,
        )
        return None
    return then if then.tzinfo else then.replace(tzinfo=dt.UTC)


def beat_class(app: Any) -> type:
    """celery beat whose SIGTERM/SIGINT handler does no I/O.

    Celery's own handler closes the scheduler *inside* the signal handler; if the
    signal lands while the main thread holds a connection-pool lock, closing (which
    talks to Redis and the broker) waits for that lock for ever. Here the handler
    only raises SystemExit: the stack unwinds, locks are released, and the beat
    service closes the scheduler (and releases the lease) on its normal way out.
    """
    from celery import platforms

    base = app.Beat

    class OrchestratorBeat(base):  # type: ignore[valid-type, misc]
        def install_sync_handler(self, service: Any) -> None:
            def stop(signum: int, frame: Any) -> None:
                SHUTDOWN.set()
                raise SystemExit()

            platforms.signals.update(SIGTERM=stop, SIGINT=stop)

    return OrchestratorBeat
