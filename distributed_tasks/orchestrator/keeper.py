"""The thread that competes for the lease and keeps it.

Renewal runs on its own thread so a slow duty (a large batch, a slow database)
never delays it. A follower polls every ``FOLLOWER_POLL`` seconds (with jitter),
which bounds failover after a graceful release to well under a second; after a
crash the lease expires within ``LEASE_TTL``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading

from django.db import connections

from distributed_tasks.orchestrator import Orchestrator
from distributed_tasks.outage import Outage

logger = logging.getLogger("distributed_tasks.orchestrator.keeper")

FOLLOWER_POLL = 0.2
# Longest wait between two tries while Redis or the database fails: how long a
# recovered dependency may go unnoticed (well under LEASE_TTL's failover bound).
MAX_WAIT = 2.0


class LeaseKeeper(threading.Thread):
    def __init__(self, orchestrator: Orchestrator, *, poll: float = FOLLOWER_POLL) -> None:
        super().__init__(name=f"dt-lease-{orchestrator.holder}", daemon=True)
        self.orchestrator = orchestrator
        self.poll = poll
        self._stop_event = threading.Event()
        self._release = True
        self.elected = threading.Event()  # set while this process leads (for tests/demo)
        self.outage = Outage("Orchestrator lease", logger, initial=poll, cap=MAX_WAIT)

    def step(self) -> float:
        """One renewal or acquisition attempt; returns the seconds until the next one."""
        lease = self.orchestrator.lease
        if self.elected.is_set() and not lease.is_held():
            # Paused past its validity (SIGSTOP, swap, a stalled VM): renew() refuses,
            # logs why and gives the lease up; this process stops acting at once.
            lease.renew()
            self.elected.clear()
        if lease.is_held() and self.orchestrator.is_leader():
            if lease.renew():
                return lease.ttl / 3 * random.uniform(0.8, 1.0)
            self.elected.clear()
            if lease.failure is not None:
                # Redis did not answer: an outage like a failed acquisition, so the
                # moment it answers again is logged even if no later call fails.
                raise lease.failure
            return 0.0
        if lease.is_held() or lease.try_acquire():
            try:
                ok = self.orchestrator.on_acquired()
            except Exception:
                # The database did not answer: let a beat that can reach it lead.
                lease.release()
                raise
            finally:
                with contextlib.suppress(Exception):
                    # This thread's connections, opened only on election: the fence's
                    # is DATABASE_ALIAS's, which a dead one would fail at every later one.
                    connections.close_all()
            if ok:
                self.elected.set()
                return lease.ttl / 3 * random.uniform(0.8, 1.0)
            lease.release()
        self.elected.clear()
        return self.poll * random.uniform(0.8, 1.2)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                wait = self.step()
            except Exception as exc:
                # Redis or the database failed (or anything else: this thread must not
                # die, or the beat would run on and never lead again). Logged once per
                # change of state; the wait grows to a cap while it lasts.
                self.elected.clear()
                wait = self.outage.failed(exc)
            else:
                self.outage.ok()
            self._stop_event.wait(wait)
        if self._release:
            self.orchestrator.stop()  # here, not in the caller: see stop()

    def stop(self, *, release: bool = True) -> None:
        """Stop competing; with ``release`` hand the lease over at once.

        The release runs on this thread, on the lease's own connection pool: ``stop``
        may be called while a signal interrupted the main thread inside a Redis call,
        and the main thread's pool lock must not be needed to let go of the lease.
        """
        self._release = release
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=5)
        elif release:
            self.orchestrator.stop()
        self.elected.clear()
