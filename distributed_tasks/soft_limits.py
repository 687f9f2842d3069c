"""Which of Celery's soft-time-limit signals a run obeys.

A prefork pool process learns that a job met its soft time limit from a SIGUSR1, and
billiard's handler raises ``SoftTimeLimitExceeded`` wherever the process is when it
arrives. Two kinds arrive late. Celery can send the signal twice for one job, ~10 ms
apart (its hub's timer and the pool's timeout handler): the second one hits what the
process does next (the run's own timeout handling, or the next run, which would fail
with a timeout it never had). And a signal can land once the function has returned,
while the outcome is stored: a DONE would turn into FAILED, or its write be cut
half-way.

So in a prefork pool process, a run obeys one signal, and only while its function may
still be running and once half of its soft limit (its own, else the Celery app's
``task_soft_time_limit``) has passed since the run reached the process; a run with no
soft limit at all obeys none. Any other is dropped and logged once the run is over
(never from the handler: logging there could re-enter a stream the run was writing).
What a dropped signal would have stopped still ends: the hard limit kills the process
and the main process records the run lost. (A soft limit set at runtime through
Celery's ``time_limit`` remote-control command is not seen here: set ``timeout``.)
Other pools, and processes where billiard's handler is not the one installed (Celery's
SIGUSR1 stack dump in the main process), are left as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from billiard.pool import soft_timeout_sighandler  # Celery's own pool

logger = logging.getLogger("distributed_tasks.runner")

SIGNAL = getattr(signal, "SIGUSR1", None)  # billiard's SIG_SOFT_TIMEOUT (none on Windows)


@dataclasses.dataclass
class Window:
    """The run this process executes, or executed last (``finished``)."""

    since: float  # time.monotonic() when the run reached this process
    soft: float | None  # its soft limit in seconds; None: it has none
    finished: bool = False  # its function returned or raised: its outcome stands
    obeyed: bool = False  # one signal already stopped it
    dropped: list[str] = dataclasses.field(default_factory=list)  # why, for the log

    def obeys(self, now: float) -> bool:
        """Whether a signal that arrives ``now`` is this run's soft limit; records a drop."""
        if self.finished or self.obeyed:
            why = "after the run's function had ended or met its limit"
        elif self.soft is None:
            why = "during a run that has no soft limit"
        elif now - self.since < self.soft / 2:
            why = f"{now - self.since:.3f} s into a run whose soft limit is {self.soft:g} s"
        else:
            self.obeyed = True
            return True
        self.dropped.append(why)
        return False

    def log_dropped(self, what: str) -> None:
        while self.dropped:
            logger.warning(
                "Ignored a soft time limit signal that came %s (%s); a signal Celery meant "
                "for an earlier moment or job",
                self.dropped.pop(0),
                what,
            )


_window: Window | None = None


def of(limits: tuple | None) -> float | None:
    """The soft limit the pool applies to a message whose Celery ``timelimit`` is
    ``limits`` (hard, soft): its own, else the entry task's (the app's
    ``task_soft_time_limit``, or an annotation)."""
    soft = limits[1] if isinstance(limits, (list, tuple)) and len(limits) > 1 else None
    try:
        return float(soft) if soft else _task_default()
    except (TypeError, ValueError):  # not a limit: the runner drops the message as forged
        return _task_default()


@functools.cache
def _task_default() -> float | None:
    from distributed_tasks.celery import TASK_NAME, get_app

    soft = get_app().tasks[TASK_NAME].soft_time_limit
    return float(soft) if soft else None


def _handler(signum: int, frame: Any) -> None:
    window = _window
    if window is None or window.obeys(time.monotonic()):
        soft_timeout_sighandler(signum, frame)


def _installed() -> bool:
    """Put the filter in place of billiard's handler, in a prefork pool process's main
    thread; True when it is in place."""
    if SIGNAL is None or threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(SIGNAL)
    if current is _handler:
        return True
    if current is not soft_timeout_sighandler:
        return False
    signal.signal(SIGNAL, _handler)
    return True


@contextlib.contextmanager
def window(soft: float | None, what: str) -> Iterator[Window]:
    """The span of one run (``what``, for the log) in this process, from its message's
    arrival; the caller sets ``finished`` once the run's function ended. It stays the
    process's window until the next run, so a late signal meant for it is dropped too
    (and logged when the next run comes)."""
    global _window
    current = Window(time.monotonic(), soft)
    if not _installed():
        yield current
        return
    previous, _window = _window, current
    if previous is not None:
        previous.log_dropped("between runs")
    try:
        yield current
    finally:
        current.finished = True
        current.log_dropped(what)
