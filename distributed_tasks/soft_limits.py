"""Which of Celery's soft-time-limit signals a run obeys.

A prefork pool process learns that a job met its soft time limit from a SIGUSR1, and
billiard's handler raises ``SoftTimeLimitExceeded`` wherever the process is when it
arrives. Two kinds arrive late. Celery can send the signal twice for one job, ~10 ms
apart (its hub's timer and the pool's timeout handler): the second one hits what the
process does next, the next run, which would fail with a timeout it never had. And a
signal can land once the function has returned, while the outcome is stored: a DONE
would turn into FAILED, or its write be cut half-way.

So in a pool process that executes runs, a signal is obeyed only while a run's function
may still be running and once half of that run's soft limit has passed since the run
reached the process; any other is logged and dropped. What a dropped limit would have
stopped still ends: the hard limit kills the process and the main process records the
run lost. A process that never executed a run keeps billiard's handler as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger("distributed_tasks.runner")

SIGNAL = getattr(signal, "SIGUSR1", None)  # billiard's SIG_SOFT_TIMEOUT (none on Windows)


@dataclasses.dataclass
class Window:
    """The run this process executes, or executed last (``finished``)."""

    since: float  # time.monotonic() when the run reached this process
    soft: float | None  # its soft limit in seconds, when the message carries one
    finished: bool = False  # its function returned or raised: its outcome stands

    def obeys(self, now: float) -> bool:
        if self.finished:
            return False
        return self.soft is None or now - self.since >= self.soft / 2


_window: Window | None = None
_inner: Callable[..., Any] | None = None  # billiard's handler


def _handler(signum: int, frame: Any) -> None:
    window = _window
    if window is not None and not window.obeys(time.monotonic()):
        logger.warning(
            "Ignored a soft time limit signal: it came %s",
            "after the run's function had ended" if window.finished
            else f"{time.monotonic() - window.since:.3f} s into a run whose soft limit is "
            f"{window.soft:g} s (meant for the process's previous job)",
        )  # fmt: skip
        return
    if _inner is not None:
        _inner(signum, frame)


def install() -> bool:
    """Put the filter in front of the process's soft-limit handler, once: True when in
    front. Only a Python handler (billiard's, in a pool process) is wrapped."""
    global _inner
    if SIGNAL is None:
        return False
    current = signal.getsignal(SIGNAL)
    if current is _handler:
        return True
    if not callable(current):  # the default or ignored: no pool is timing this process
        return False
    _inner = current
    signal.signal(SIGNAL, _handler)
    return True


@contextlib.contextmanager
def window(limits: tuple | None) -> Iterator[Window]:
    """The span of one run in this process, from its message's arrival; the caller sets
    ``finished`` once the run's function ended. It stays the process's last window until
    the next run, so a signal meant for it that comes after it is dropped too."""
    global _window
    soft = limits[1] if limits and len(limits) > 1 else None
    current = Window(time.monotonic(), float(soft) if soft else None)
    if install():
        _window = current
    try:
        yield current
    finally:
        current.finished = True
