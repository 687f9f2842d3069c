"""A requested beat shutdown ends the beat even when its SystemExit was swallowed.

The SIGTERM handler raises SystemExit wherever the main thread is; inside Django's
transaction cleanup that can come out as a DatabaseError, which a tick survives as a
dependency fault. The flag the handler sets makes the tick exit anyway.
"""

import pytest
from django.db import ProgrammingError

from distributed_tasks.orchestrator import scheduler
from distributed_tasks.outage import Outage


class Swallowing(scheduler.DistributedScheduler):
    def __init__(self) -> None:  # no keeper thread, no Celery app: only tick()
        self.outage = Outage("test beat", scheduler.logger)

    def _tick(self, *args, **kwargs) -> float:
        scheduler.SHUTDOWN.set()  # the signal arrived during this tick...
        raise ProgrammingError("can't change 'autocommit' now")  # ...and was swallowed


@pytest.fixture(autouse=True)
def _reset_flag():
    scheduler.SHUTDOWN.clear()
    yield
    scheduler.SHUTDOWN.clear()


def test_a_swallowed_sigterm_still_ends_the_beat():
    with pytest.raises(SystemExit):
        Swallowing().tick()


def test_a_tick_after_the_request_exits_at_once():
    scheduler.SHUTDOWN.set()
    with pytest.raises(SystemExit):
        Swallowing().tick()


def test_without_a_request_a_failing_tick_backs_off():
    class Failing(Swallowing):
        def _tick(self, *args, **kwargs) -> float:
            raise ProgrammingError("a real fault")

    assert Failing().tick() > 0
