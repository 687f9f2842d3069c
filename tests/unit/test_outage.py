"""Outage: one log line per change of state, capped backoff, a traceback only for bugs."""

import logging

from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from distributed_tasks.outage import Outage, describe

logger = logging.getLogger("tests.outage")


def test_a_long_outage_logs_one_line_down_and_one_line_up(caplog):
    outage = Outage("Orchestrator tick", logger, initial=0.5, cap=4.0)
    with caplog.at_level(logging.INFO, logger="tests.outage"):
        waits = [outage.failed(OperationalError("database is locked")) for _ in range(50)]
        assert outage.down and not outage.ready()
        outage.ok()
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("WARNING", "Orchestrator tick failed"),
        ("INFO", "Orchestrator tick works again after 0.0 s (50 failed attempts)"),
    ]
    down, up = caplog.records
    assert "OperationalError: database is locked" in down.getMessage()
    assert down.exc_info is None  # a dependency fault: no traceback
    assert (down.action, up.action) == ("outage", "recovered")
    # Backoff doubles from 0.5 s to the cap (minus up to 20 % jitter) and stays there.
    assert 0.4 <= waits[0] <= 0.5 and 0.8 <= waits[1] <= 1.0
    assert all(3.2 <= w <= 4.0 for w in waits[3:])
    assert not outage.down and outage.ready() and outage.remaining() == 0.0


def test_a_new_kind_of_failure_is_one_more_line(caplog):
    outage = Outage("Orchestrator lease", logger)
    with caplog.at_level(logging.INFO, logger="tests.outage"):
        outage.failed(RedisConnectionError("Connection refused"))
        outage.failed(RedisConnectionError("Connection refused"))
        outage.failed(OperationalError("server closed the connection"), during="on_acquired")
        outage.failed(OperationalError("server closed the connection"), during="on_acquired")
        # The same fault met in another place (duties failing in turn) is the same outage.
        outage.failed(OperationalError("server closed the connection"), during="reaper")
    assert [r.getMessage() for r in caplog.records] == [
        "Orchestrator lease failed: ConnectionError: Connection refused; retrying with "
        "backoff (at most every 5 s) until it answers",
        "Orchestrator lease failed (on_acquired): OperationalError: server closed the "
        "connection; retrying with backoff (at most every 5 s) until it answers",
    ]


def test_a_bug_keeps_its_traceback(caplog):
    outage = Outage("Orchestrator beat", logger)
    with caplog.at_level(logging.WARNING, logger="tests.outage"):
        outage.failed(KeyError("missing"))
    (record,) = caplog.records
    assert record.exc_info is not None


def test_success_without_an_outage_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="tests.outage"):
        Outage("Celery broker", logger).ok()
    assert caplog.records == []


def test_describe_keeps_the_first_line():
    assert describe(OperationalError("locked\nDETAIL: long")) == "OperationalError: locked"
    assert describe(TimeoutError()) == "TimeoutError"
