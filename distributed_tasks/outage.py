"""Riding out a dependency that fails: capped backoff, and one log line per change of state.

The long-lived loops of a node and of an orchestrator (the leader's tick, the lease
keeper, celery beat's sends) must neither die nor flood their log when the database
or Redis errors or goes away for a while: SQLite answering "database is locked" under
an admin read, PostgreSQL restarting, Redis failing over. Each loop keeps an
``Outage`` per dependency: the first failure logs one WARNING (a traceback only for an
error that is not a known dependency fault, i.e. probably a bug), later failures of the
same kind log nothing and only lengthen the wait (doubling up to a cap, with jitter so
several processes do not retry in step), and the first success logs one INFO line with
how long it lasted. The loop itself decides what to retry; this only says when and logs.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time

from django.db import DatabaseError, InterfaceError
from kombu.exceptions import KombuError
from redis.exceptions import RedisClusterException, RedisError

# Every error of a database that went away or refused: a lost connection is an
# InterfaceError on some drivers (PyMySQL), which is not a DatabaseError in Django.
DB_ERRORS = (DatabaseError, InterfaceError)

# Every error of a Redis that went away: redis-py's cluster client raises some (a slot
# that no node covers while it re-reads the cluster's layout, no node to send a command
# to) as RedisClusterException, which is not a RedisError.
REDIS_ERRORS = (RedisError, RedisClusterException)

# What a broker that does not answer raises: kombu wraps some, sockets raise others, and
# py-amqp (RabbitMQ) raises its own, which are neither (a connection lost mid-publish).
# Not its channel errors (NOT_FOUND, ACCESS_REFUSED...): those are the setup's.
_AMQP_ERRORS: tuple[type[Exception], ...] = ()
with contextlib.suppress(ImportError):
    from amqp.exceptions import ConnectionError as AmqpConnectionError

    _AMQP_ERRORS = (AmqpConnectionError,)
BROKER_ERRORS = (KombuError, *_AMQP_ERRORS, OSError, *REDIS_ERRORS)

# Faults of a dependency rather than of our code: logged as one line, no traceback.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, *BROKER_ERRORS)

INITIAL_DELAY = 0.5
MAX_DELAY = 5.0


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``: a log line, not a traceback."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class Outage:
    """Whether ``what`` is failing now, and how long to wait before trying it again."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        initial: float = INITIAL_DELAY,
        cap: float = MAX_DELAY,
    ) -> None:
        self.what = what
        self.logger = logger
        self.initial = initial
        self.cap = cap
        self.failures = 0  # consecutive failed attempts
        self.since: float | None = None  # monotonic time of the first of them
        self.delay = 0.0
        self.retry_at = 0.0
        self._kind = ""

    @property
    def down(self) -> bool:
        return self.failures > 0

    def ready(self) -> bool:
        """Whether the backoff after the last failure has passed (always, when not down)."""
        return time.monotonic() >= self.retry_at

    def remaining(self) -> float:
        """Seconds left of the backoff after the last failure (0 when not down)."""
        return max(0.0, self.retry_at - time.monotonic())

    def failed(self, exc: BaseException, *, during: str = "") -> float:
        """Count one failed attempt; log only when the kind of failure changed. Returns the
        seconds to wait before the next attempt."""
        kind = type(exc).__qualname__  # not where: duties failing in turn are one outage
        if self.failures == 0:
            self.since = time.monotonic()
            self.delay = self.initial
        else:
            self.delay = min(self.cap, self.delay * 2)
        self.failures += 1
        if kind != self._kind:
            self._kind = kind
            transient = isinstance(exc, DEPENDENCY_ERRORS)
            self.logger.warning(
                "%s failed%s: %s; retrying with backoff (at most every %g s) until it answers",
                self.what,
                f" ({during})" if during else "",
                describe(exc),
                self.cap,
                exc_info=None if transient else exc,
                extra={"action": "outage", "dependency": self.what, "error": describe(exc)},
            )
        wait = self.delay * random.uniform(0.8, 1.0)
        self.retry_at = time.monotonic() + wait
        return wait

    def ok(self) -> None:
        """The dependency answered: log the recovery once, and forget the backoff."""
        if self.failures:
            lasted = time.monotonic() - (self.since or time.monotonic())
            self.logger.info(
                "%s works again after %.1f s (%d failed attempts)",
                self.what,
                lasted,
                self.failures,
                extra={"action": "recovered", "dependency": self.what, "seconds": lasted},
            )
        self.forget()

    def forget(self) -> None:
        """Drop the outage without a line: what failed is no longer this loop's to try
        (a leader that lost its lease stops ticking; the lease keeper logs Redis)."""
        self.failures, self.since, self.delay, self.retry_at, self._kind = 0, None, 0.0, 0.0, ""
