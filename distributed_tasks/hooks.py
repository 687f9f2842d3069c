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

One thread means one hook that never returns holds up every hook after it in that
process. Nothing can stop task code from outside, but an operator must hear of it: a
hook queued behind one that has run for ``SLOW`` seconds logs a warning naming the
slow hook (once per hook), and so does the exit that gives up waiting for it.

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
from dataclasses import dataclass

from django.db import connections

logger = logging.getLogger("distributed_tasks.runner")

DRAIN = 5.0  # seconds the hooks still waiting at exit may take
SLOW = 30.0  # seconds a hook may run before the hooks queued behind it say so


@dataclass(slots=True, eq=False)
class Job:
    """A hook waiting for, or running on, the hook thread; ``what`` names it in logs."""

    call: Callable[[], None]
    what: str
    began: float | None = None  # time.monotonic() when the thread took it up
    reported: bool = False  # a slow-hook warning was logged for it


_jobs: queue.Queue[Job] = queue.Queue()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_running: Job | None = None  # the hook the thread is running now, if any


def call_soon(hook: Callable[[], None], what: str = "a task hook") -> None:
    """``hook()`` on the hook thread, after the hooks queued before it; here and now when
    no thread can start (the interpreter is shutting down). ``what`` names the hook
    ("the on_failure hook of run ...") in the warnings about slow hooks."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            thread = threading.Thread(target=_serve, name="distributed-tasks-hooks", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                thread = None
            _thread = thread
        queued = _thread is not None
        if queued:
            _jobs.put(Job(hook, what))
    if queued:
        _warn_if_slow()
    else:
        _call(hook)


def slow_hook() -> tuple[str, float] | None:
    """What the hook thread has been running for ``SLOW`` seconds or more, and for how
    long; None while it keeps up."""
    job = _running
    began = job.began if job is not None else None
    if job is None or began is None or (took := time.monotonic() - began) < SLOW:
        return None
    return job.what, took


def _warn_if_slow() -> None:
    """Log, once per hook, that a slow hook holds up the hooks queued behind it."""
    job = _running
    if job is None or job.reported or (slow := slow_hook()) is None:
        return
    job.reported = True
    logger.warning(
        "%s has run for %.0f s on the hook thread of this process; %d later hook(s) of "
        "ended runs wait for it to return (their outcomes are recorded already)",
        slow[0][:1].upper() + slow[0][1:], slow[1], _jobs.unfinished_tasks - 1,
    )  # fmt: skip


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
    global _running
    while True:
        job = _jobs.get()
        job.began, _running = time.monotonic(), job
        try:
            _call(job.call)
            with contextlib.suppress(Exception):  # a connection the database dropped
                connections.close_all()  # this thread's own
        finally:
            _running = None
            _jobs.task_done()


def _call(hook: Callable[[], None]) -> None:
    try:
        hook()
    except BaseException:  # task code: SystemExit must not end the thread either
        logger.exception("A task hook raised; the outcome stays as recorded")


def _drain_at_exit() -> None:
    if not drain(DRAIN):
        job = _running
        logger.warning(
            "Exiting with %s task hook(s) of ended runs not run after %g s%s; their "
            "outcomes stay as recorded", _jobs.unfinished_tasks, DRAIN,
            f" ({job.what} is still running)" if job is not None else "",
        )  # fmt: skip


def _forget_after_fork() -> None:
    """A forked process has no hook thread, and none of its parent's hooks to run."""
    global _jobs, _thread, _lock, _running
    _jobs, _thread, _lock, _running = queue.Queue(), None, threading.Lock(), None


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_drain_at_exit)
