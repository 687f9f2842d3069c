"""A process forked while another of its threads holds a Redis pool's lock can still
reach Redis (issue 17): a node's main process forks prefork pool processes while its
heartbeat, forced-cancel watcher or metrics scrape may be taking a connection."""

from __future__ import annotations

import os
import signal
import threading
import warnings
from collections.abc import Iterator

import pytest

from distributed_tasks.connection import get_redis
from tests.support import poll_until

LOCKS = {
    "pool._lock": lambda r: r.connection_pool._lock,
    "pool._fork_lock": lambda r: r.connection_pool._fork_lock,
    # Taken while a connection goes back to the pool, inside the pool's own lock.
    "pool._event_dispatcher._lock": lambda r: r.connection_pool._event_dispatcher._lock,
    "client._event_dispatcher._lock": lambda r: r._event_dispatcher._lock,
}


@pytest.fixture(params=sorted(LOCKS))
def held_lock(request) -> Iterator[str]:
    """A thread holding one lock of the shared client or its pool (as a busy heartbeat
    would) until the test ends; the lock's name."""
    get_redis().ping()  # the pool exists and has a connection, as on a running node
    lock = LOCKS[request.param](get_redis())
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            holding.set()
            done.wait()

    thread = threading.Thread(target=hold, name="holds-the-pool-lock", daemon=True)
    thread.start()
    assert holding.wait(5)
    yield request.param
    done.set()
    thread.join(5)


def fork_and_ping() -> int:
    """Fork; the child pings through the inherited client and exits 0 on success."""
    with warnings.catch_warnings():  # forking with a thread alive is the very case tested
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            code = 0 if get_redis().ping() else 1
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> tuple[int] | None:
    """``(code,)`` once the child exited (a tuple: a code of 0 is an answer), else None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return (os.waitstatus_to_exitcode(status),) if done else None


def test_a_child_forked_while_a_thread_holds_the_pool_lock_reaches_redis(held_lock):
    pid = fork_and_ping()
    try:
        (code,) = poll_until(
            lambda: exit_code(pid),
            timeout=15,
            message=f"the forked child to ping Redis (the parent's thread holds {held_lock})",
        )
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    assert code == 0
