"""The RUNNING status in Redis, written once a run has lasted ``RUNNING_STATUS_AFTER``.

Most runs of a busy cluster last a few milliseconds. Writing RUNNING to Redis as each
one starts cost a round trip, about a seventh of a run's CPU on the worker, for a
state that the outcome replaced a moment later and that nobody had read. So a pool
process hands the write to one thread of its own (``Announcer``), which makes it once
the run has been going for ``RUNNING_STATUS_AFTER`` seconds (default 0.05); a run
that ends before goes from QUEUED straight to its outcome in Redis. The row says
RUNNING from the fenced start on either way, so nothing that decides anything (the
watchdog, cancel, the reaper) sees a difference: only ``get_status`` shows QUEUED
for that first moment. A progress report writes RUNNING at once (``now``), and 0
restores the write at the start of every run.

The outcome must never be overwritten by a late RUNNING: ``withdraw`` takes the
pending write back under the lock the thread writes under, so the outcome is written
only after a RUNNING write that was already under way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from distributed_tasks import mirror
from distributed_tasks.conf import get_settings
from distributed_tasks.messages import RunMessage

logger = logging.getLogger("distributed_tasks.running_status")


@dataclass(frozen=True, slots=True, eq=False)
class Pending:
    """A RUNNING status to write at ``due`` (``time.monotonic``) unless withdrawn."""

    msg: RunMessage
    fields: Mapping[str, Any]
    due: float


class Announcer:
    """One per process: the thread that writes the RUNNING status of runs still going.

    The thread sleeps until the earliest write is due, and parks while nothing is
    pending, so a busy process wakes it about once per ``RUNNING_STATUS_AFTER`` and an
    idle one never. Several runs may be pending at once (a thread pool).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held while a write is made or taken back
        self.pending: dict[int, Pending] = {}
        self.wake = threading.Event()
        self.parked = False
        self.pid: int | None = None

    def add(self, item: Pending) -> None:
        self._ensure_thread()
        with self.lock:
            self.pending[id(item)] = item
        if self.parked:
            self.wake.set()

    def withdraw(self, item: Pending) -> None:
        """Take ``item`` back; returns once a write of it already under way is done."""
        with self.lock:
            self.pending.pop(id(item), None)

    def now(self, item: Pending) -> None:
        """Write ``item`` at once if it is still pending (a progress report shows RUNNING)."""
        with self.lock:
            if self.pending.pop(id(item), None) is not None:
                mirror.publish(item.msg, item.fields, active_only=True)

    def _ensure_thread(self) -> None:
        """Start this process's thread on its first run (a pool process is forked from a
        parent whose thread, if any, did not come along); once, whatever the pool."""
        if self.pid == os.getpid():
            return
        with _starting:
            if self.pid == os.getpid():
                return
            self.lock, self.pending = threading.Lock(), {}
            self.wake, self.parked = threading.Event(), False
            threading.Thread(target=self._loop, name="dt-running-status", daemon=True).start()
            self.pid = os.getpid()

    def _loop(self) -> None:
        while True:
            self.parked = True
            if not self.pending:
                self.wake.wait()
            self.wake.clear()
            self.parked = False
            try:
                self._write_due()
            except Exception:  # never let the thread die: the outcome is written anyway
                logger.exception("Could not cache a RUNNING status")

    def _write_due(self) -> None:
        while self.pending:
            now = time.monotonic()
            with self.lock:
                due = [p for p in self.pending.values() if p.due <= now]
                for item in due:
                    del self.pending[id(item)]
                    mirror.publish(item.msg, item.fields, active_only=True)  # an error only logs
                later = min((p.due for p in self.pending.values()), default=None)
            if later is not None:
                time.sleep(max(0.0, later - time.monotonic()))


_announcer = Announcer()
_starting = threading.Lock()


def _after_fork() -> None:
    global _starting
    _starting = threading.Lock()  # a thread of the parent may have held it


os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def announced(msg: RunMessage, fields: Mapping[str, Any]) -> Iterator[Pending | None]:
    """Cache ``msg``'s RUNNING ``fields`` once the run has lasted ``RUNNING_STATUS_AFTER``
    (at once when it is 0); on leaving, a write not made yet is taken back."""
    after = get_settings().RUNNING_STATUS_AFTER
    if after <= 0:
        mirror.publish(msg, fields, active_only=True)
        yield None
        return
    item = Pending(msg, fields, time.monotonic() + after)
    _announcer.add(item)
    try:
        yield item
    finally:
        _announcer.withdraw(item)


def write_now(item: Pending | None) -> None:
    """Write a pending RUNNING status at once (before a progress report)."""
    if item is not None:
        _announcer.now(item)
