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
hook still running after ``SLOW`` seconds is logged once as a warning that names it
and counts the hooks waiting behind it, and so does the exit that gives up on it.

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
SLOW = 30.0  # seconds a hook may run before a warning names it


@dataclass(slots=True, eq=False)
class Job:
    """A hook waiting for, or running on, the hook thread; ``what`` names it in logs."""

    call: Callable[[], None]
    what: str


_jobs: queue.Queue[Job] = queue.Queue()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_running: Job | None = None  # the hook the thread is running now, if any


def call_soon(hook: Callable[[], None], what: str = "a task hook") -> None:
    """``hook()`` on the hook thread, after the hooks queued before it; here and now when
    no thread can start (the interpreter is shutting down). ``what`` names the hook
    ("the on_failure hook of run ...") in the warning about a slow hook."""
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
            _jobs.put(Job(hook, what))
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
    global _running
    while True:
        job = _jobs.get()
        _running = job
        watch = _watch(job)
        try:
            _call(job.call)
            with contextlib.suppress(Exception):  # a connection the database dropped
                connections.close_all()  # this thread's own
        finally:
            if watch is not None:
                watch.cancel()
            _running = None
            _jobs.task_done()


def _watch(job: Job) -> threading.Timer | None:
    """A timer that reports ``job`` if it is still running after ``SLOW`` seconds."""
    timer = threading.Timer(SLOW, _report_slow, args=(job,))
    timer.daemon = True
    try:
        timer.start()
    except RuntimeError:  # no new thread at interpreter shutdown: the exit's drain reports
        return None
    return timer


def _report_slow(job: Job) -> None:
    if _running is not job:
        return
    with _jobs.mutex:
        waiting = max(0, _jobs.unfinished_tasks - 1)
    what = job.what[:1].upper() + job.what[1:]
    logger.warning(
        "%s has run for %g s on the hook thread of this process; the hooks of ended runs "
        "queued after it wait until it returns (%d waiting now; their outcomes are recorded)",
        what, SLOW, waiting,
    )  # fmt: skip


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
