"""The database calls a run makes for itself, kept out of its task's own connection.

``report_progress()`` writes the row and ``cancel_requested()`` may read it while the
task's code is running. On the task's thread and connection, two kinds of task
break them:

- an ``async def`` task calls them inside its event loop, where Django refuses any
  query (``SynchronousOnlyOperation``): the run failed;
- a task inside its own ``transaction.atomic()`` would have the progress write join
  its transaction (the row stays locked until the task commits, so a cancel waits;
  a rollback undoes the progress) and the cancel check read a snapshot older than
  the request (MySQL's repeatable read).

In those two cases the call runs on one helper thread of this process, with its own
connection, and the run's thread waits for it, as it would for its own query. A lock
the task's transaction holds on the row (it cancelled itself inside ``atomic()``)
would make that wait endless: the helper waits at most ``LOCK_WAIT`` for a lock, then
the call fails (a progress write is then dropped, as any failed one). Any other call
runs where it is called: nothing changes for the common task. Nor for a run that
itself began inside a transaction (executed in a test's ``TestCase``: its row is not
committed, so only that connection sees it), nor on SQLite, whose transactions
(``IMMEDIATE``) hold the whole database: there the call joins the task's transaction.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import connections, transaction

T = TypeVar("T")

_helper: ThreadPoolExecutor | None = None
_lock = threading.Lock()


LOCK_WAIT = 2  # seconds the helper waits for a row lock


def call(fn: Callable[[], T], alias: str, *, began_in_transaction: bool = False) -> T:
    """``fn()``, on the helper thread when this thread's ``alias`` connection cannot take
    it: an event loop runs here, or the task holds a transaction open (one that was open
    already when the run began, ``began_in_transaction``, is the run's own)."""
    if not _held(alias, began_in_transaction):
        return fn()
    try:
        future = _executor().submit(_guarded, fn, alias)
    except RuntimeError:  # the interpreter is shutting down: no new thread
        return fn()
    return future.result()


def in_transaction(alias: str) -> bool:
    """Whether this thread's ``alias`` connection is inside a transaction now."""
    return connections[alias].in_atomic_block


def _held(alias: str, began_in_transaction: bool) -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if began_in_transaction or connections[alias].vendor == "sqlite":
            return False
        return in_transaction(alias)
    return True


def _guarded(fn: Callable[[], T], alias: str) -> T:
    """``fn()`` waiting at most ``LOCK_WAIT`` for a lock, then the helper's connections
    closed: such calls come seconds apart (a row's progress every ``ROW_INTERVAL``), and
    an idle connection held by a thread that outlives every run would only hold a
    server slot."""
    try:
        connection = connections[alias]
        if connection.vendor == "postgresql":
            with transaction.atomic(using=alias), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}s'")
                return fn()
        if connection.vendor == "mysql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT}")
        return fn()
    finally:
        connections.close_all()


def _executor() -> ThreadPoolExecutor:
    global _helper
    with _lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(1, thread_name_prefix="distributed-tasks-aside")
        return _helper


def _forget_after_fork() -> None:
    """A forked pool process has no helper thread: it starts its own when needed."""
    global _helper, _lock
    _helper, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
