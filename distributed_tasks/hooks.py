"""Task hooks of runs that ended outside their pool process, on a thread of their own.

A run whose pool process died or was killed (``lost.py``, ``forcing.py``), or whose
node was lost (the leader's ``orchestrator/lifeline.py``), has its ``on_failure`` or
``on_timeout`` called by the process that recorded its end: a node's main process,
which must go on consuming, or the orchestrator's leader, whose tick renews its lease.
Hooks are task code and may be slow (a notification over the network, a retry loop):
on the caller's thread one stalled the node's consumer or the leader's tick, for long
enough the leader lost its lease. So they run here, one after the other on one daemon
thread per process, and the caller goes on at once. Each gets this thread's own
database connections, closed after it (hooks come seldom). At exit the thread has
``DRAIN`` seconds to run the hooks still waiting; those left are logged.

The library's own periodic bookkeeping (``PeriodicRun``, ``inline_hooks``) stays on
the caller's thread: it must be stored before the leader's dispatcher, later in the
same tick, starts the task's next slot, after which it would no longer apply.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from django.db import connections

logger = logging.getLogger("distributed_tasks.runner")

DRAIN = 5.0  # seconds the hooks still waiting at exit may take

_jobs: queue.Queue[Callable[[], None]] = queue.Queue()
_thread: threading.Thread | None = None
_lock = threading.Lock()


def call_soon(hook: Callable[[], None]) -> None:
    """``hook()`` on the hook thread, after the hooks queued before it; here and now when
    no thread can start (the interpreter is shutting down)."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            thread = threading.Thread(target=_serve, name="distributed-tasks-hooks", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                thread = None
            _thread = thread
        if _thread is not None:
            _jobs.put(hook)
            return
    _call(hook)


def drain(timeout: float = DRAIN) -> bool:
    """Wait until every hook queued so far has run; False if ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    with _jobs.all_tasks_done:
        while _jobs.unfinished_tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _jobs.all_tasks_done.wait(left)
    return True


def _serve() -> None:
    while True:
        hook = _jobs.get()
        try:
            _call(hook)
            with contextlib.suppress(Exception):  # a connection the database dropped
                connections.close_all()  # this thread's own
        finally:
            _jobs.task_done()


def _call(hook: Callable[[], None]) -> None:
    try:
        hook()
    except BaseException:  # task code: SystemExit must not end the thread either
        logger.exception("A task hook raised; the outcome stays as recorded")


def _drain_at_exit() -> None:
    if not drain(DRAIN):
        logger.warning(
            "Exiting with %s task hook(s) of ended runs not run after %g s; their outcomes "
            "stay as recorded", _jobs.unfinished_tasks, DRAIN,
        )  # fmt: skip


def _forget_after_fork() -> None:
    """A forked process has no hook thread, and none of its parent's hooks to run."""
    global _jobs, _thread, _lock
    _jobs, _thread, _lock = queue.Queue(), None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_drain_at_exit)
