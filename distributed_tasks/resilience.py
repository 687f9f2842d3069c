"""Riding out a dependency that errors or vanishes: capped backoff, one log line per change.

A worker must not give up on a run because PostgreSQL or Redis is away for a
while, nor fill the log with one warning per attempt. ``Outage`` remembers
whether a dependency is failing, logs only when that changes (first failure,
recovery) and hands out the next delay; ``until_answered`` retries one call
with it until the dependency answers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from redis.exceptions import RedisError

T = TypeVar("T")

FIRST_DELAY = 0.1
MAX_DELAY = 5.0
# Errors that say "the database is not answering now", not "this write is wrong".
DB_UNAVAILABLE = (OperationalError, InterfaceError)


class Outage:
    """The state of one dependency as seen by one loop: up, or failing since when."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        first: float = FIRST_DELAY,
        cap: float = MAX_DELAY,
    ) -> None:
        self.logger = logger
        self.what = what
        self.first = first
        self.cap = cap
        self.failures = 0
        self.since = 0.0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException) -> float:
        """Note one failure; returns how long to wait before the next try."""
        if not self.failures:
            self.since = time.monotonic()
            self.logger.warning(
                "%s failed: %s; retrying with backoff (up to %g s) until it answers",
                self.what, exc, self.cap, extra={"action": "outage", "dependency": self.what},
            )  # fmt: skip
        self.failures += 1
        return min(self.cap, self.first * 2 ** min(self.failures - 1, 30))

    def recovered(self) -> None:
        """Note a success; logs once if the dependency was failing."""
        if self.failures:
            self.logger.warning(
                "%s works again after %.1f s and %s failed tries",
                self.what, time.monotonic() - self.since, self.failures,
                extra={"action": "recovered", "dependency": self.what},
            )  # fmt: skip
            self.failures = 0


def close_broken_connections() -> None:
    """Drop database connections an error left unusable, so the next query reconnects.

    Connections outlive a run (worker.DB_REUSE_MAX), so one broken while the database
    was away would otherwise fail every later run of this process.
    """
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred:
            with contextlib.suppress(Exception):  # closing a dead socket may complain too
                conn.close_if_unusable_or_obsolete()


def until_answered(
    call: Callable[[], T],
    outage: Outage,
    *,
    errors: tuple[type[BaseException], ...] = (*DB_UNAVAILABLE, RedisError),
    stop: threading.Event | None = None,
    patience: float | None = None,
) -> T:
    """``call()`` retried while it raises one of ``errors`` (never other errors).

    The last error is raised once ``stop`` is set or ``patience`` seconds have passed.
    """
    deadline = None if patience is None else time.monotonic() + patience
    while True:
        try:
            value = call()
        except errors as exc:
            delay = outage.failed(exc)
            if isinstance(exc, DatabaseError):
                close_broken_connections()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise
            continue
        outage.recovered()
        return value
