"""The flush between transactional tests, made to survive the running cluster.

A cluster test flushes every table under live worker and beat processes. Django's
flush is one ``TRUNCATE a, b, ...`` whose table order comes from a set, so it
changes with the hash seed. A leader's fenced write locks the ``Leadership`` row
and then writes a run: when the TRUNCATE already holds that run's table and waits
for ``Leadership``, PostgreSQL finds a deadlock and aborts one side, often the
TRUNCATE. Its transaction then rolled back whole, so running it again is safe.
"""

from __future__ import annotations

import functools

from django.core.management.base import CommandError
from django.test import TransactionTestCase

#: deadlock_detected, lock_not_available
RETRIED = frozenset({"40P01", "55P03"})
ATTEMPTS = 5


def lost_a_lock_conflict(error: BaseException) -> bool:
    """Whether PostgreSQL aborted the statement behind ``error`` for a lock conflict."""
    cause: BaseException | None = error
    while cause is not None:
        if (getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)) in RETRIED:
            return True
        cause = cause.__cause__
    return False


def install() -> None:
    """Make every transactional test's teardown flush again after a lock conflict."""
    flush = TransactionTestCase._fixture_teardown
    if getattr(flush, "retries_lock_conflicts", False):
        return

    @functools.wraps(flush)
    def teardown(self: TransactionTestCase) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return flush(self)
            except CommandError as error:
                if attempt == ATTEMPTS or not lost_a_lock_conflict(error):
                    raise

    teardown.retries_lock_conflicts = True  # type: ignore[attr-defined]
    TransactionTestCase._fixture_teardown = teardown
