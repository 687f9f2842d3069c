"""Retrying one call of the worker until its dependency answers; a caller's call that
cannot wait says so.

A worker must not give up on a run because PostgreSQL or Redis is away for a
while, nor fill the log with one warning per attempt: ``until_answered`` retries
a call with an ``Outage`` (capped backoff, one log line per change of state).
A caller's read or cancel does not wait: ``unanswered`` turns the driver's error
into ``ClusterUnavailable``, which says what may have happened and what to do.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connections
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from distributed_tasks.exceptions import ClusterUnavailable
from distributed_tasks.outage import DB_ERRORS, REDIS_ERRORS, Outage

T = TypeVar("T")

# Errors that say "the database is not answering now", not "this write is wrong".
DB_UNAVAILABLE = (OperationalError, InterfaceError)

# PostgreSQL's SQLSTATE class 54, "program limit exceeded" (a value over jsonb's limit, a
# statement too complex): an OperationalError that says "this write is wrong".
PG_LIMIT_CLASS = "54"
PG_READ_ONLY = "25006"  # read_only_sql_transaction: a standby, or a switchover under way
# MySQL/MariaDB: --read-only (1290), a read-only transaction (1792), super_read_only (1836).
MYSQL_READ_ONLY = frozenset({1290, 1792, 1836})


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of the PostgreSQL error under Django's ``exc`` ('' for others)."""
    cause = exc.__cause__
    return str(getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or "")


def read_only(exc: BaseException) -> bool:
    """Whether the database refused a write because it takes none now. PostgreSQL
    reports it as an InternalError, not an OperationalError: writes are away, as during
    a switchover, so the write waits like one that gets no answer."""
    if sqlstate(exc) == PG_READ_ONLY:
        return True
    code = exc.args[0] if exc.args else None
    return isinstance(code, int) and code in MYSQL_READ_ONLY


class WritesAway(OperationalError):
    """The database answers but takes no writes now (``read_only``): retried like one
    that does not answer, on a new connection (the old one may lead to the old primary)."""


@contextlib.contextmanager
def writes_awaited(alias: str) -> Iterator[None]:
    """A write refused as read-only raises ``WritesAway``, its connection closed."""
    try:
        yield
    except DB_ERRORS as exc:
        if isinstance(exc, WritesAway) or not read_only(exc):
            raise
        with contextlib.suppress(Exception):
            connections[alias].close()
        raise WritesAway(f"the database takes no writes now: {exc}") from exc


def over_a_limit(exc: BaseException) -> bool:
    """Whether PostgreSQL refused the statement as over one of its limits."""
    return sqlstate(exc).startswith(PG_LIMIT_CLASS)


# Error replies that mean "Redis cannot serve this now" (a failover, a cluster slot
# moving, memory full), not "this call is wrong".
UNAVAILABLE_REPLIES = (ReadOnlyError, ClusterDownError, TryAgainError, OutOfMemoryError)


@contextlib.contextmanager
def unanswered(alias: str, then: str) -> Iterator[None]:
    """``ClusterUnavailable`` instead of a driver's error when the database (``alias``)
    or Redis does not answer; ``then`` says what that means for the call and the way
    out. An error of a database that does answer (a missing table or column: SQLite and
    MySQL raise OperationalError for those too) and Redis's error replies (WRONGTYPE,
    OOM, a script's error) raise as they are."""
    try:
        yield
    except DB_UNAVAILABLE as exc:
        connection = connections[alias]
        if connection.vendor == "sqlite":  # its is_usable() is always True
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        elif not connection.in_atomic_block:  # a caller's transaction cannot be probed
            try:
                usable = connection.is_usable()
            except Exception:  # no connection at all, or asking fails as the call did
                usable = False
            if usable:
                raise
            with contextlib.suppress(Exception):  # the next call reconnects
                connection.close()
        raise ClusterUnavailable(f"The database does not answer ({exc}); {then}") from exc
    except REDIS_ERRORS as exc:
        if isinstance(exc, ResponseError) and not isinstance(exc, UNAVAILABLE_REPLIES):
            raise
        raise ClusterUnavailable(f"Redis does not answer ({exc}); {then}") from exc


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
    errors: tuple[type[BaseException], ...] = (*DB_UNAVAILABLE, *REDIS_ERRORS),
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
            if isinstance(exc, DB_ERRORS):
                close_broken_connections()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise
            continue
        outage.ok()
        return value
