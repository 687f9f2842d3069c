"""The orchestrator rides out failing dependencies in-process: no exception leaves a tick
or the lease keeper, one log line per change of state, and it resumes by itself.
(Real processes against a locked SQLite and a vanishing Redis: tests/cluster/test_beat_faults.py.)
"""

import logging

import pytest
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from distributed_tasks import orchestrator as orchestrator_module
from distributed_tasks.orchestrator import Duty, Orchestrator
from distributed_tasks.orchestrator.keeper import LeaseKeeper
from tests.support import poll_until

pytestmark = pytest.mark.django_db(transaction=True)


class Flaky(Duty):
    """A duty whose dependency fails while ``failing`` is set."""

    name = "flaky"

    def __init__(self) -> None:
        self.failing: Exception | None = None
        self.runs = 0

    def run(self, ctx):
        if self.failing:
            raise self.failing
        self.runs += 1
        return {"done": 1}


class Counting(Duty):
    name = "counting"

    def __init__(self) -> None:
        self.runs = 0

    def run(self, ctx):
        self.runs += 1
        return {}


def lead(*duties) -> Orchestrator:
    orchestrator = Orchestrator("faults@test", list(duties))
    assert orchestrator.lease.try_acquire() and orchestrator.on_acquired()
    return orchestrator


def lines(caplog):
    """What the outage trackers logged (the first tick's resync line aside)."""
    return [
        r.getMessage()
        for r in caplog.records
        if getattr(r, "action", None) in ("outage", "recovered")
    ]


def test_a_locked_database_costs_one_line_and_ends_the_tick_early(caplog):
    counting, flaky, after = Counting(), Flaky(), Counting()
    after.name = "after"
    orchestrator = lead(counting, flaky, after)
    flaky.failing = OperationalError("database is locked")
    with caplog.at_level(logging.INFO, logger="distributed_tasks"):
        reports = [orchestrator.tick() for _ in range(20)]
        assert orchestrator.retry_in() > 0  # the beat waits before the next tick
        flaky.failing = None
        assert orchestrator.tick() == {"counting": {}, "flaky": {"done": 1}, "after": {}}
        orchestrator.tick()
    # The duties after it would wait for the same database: they wait for the next tick.
    assert reports[0] == {"counting": {}, "flaky": {"errors": 1}}
    assert (counting.runs, after.runs) == (22, 2) and orchestrator.is_leader()
    assert orchestrator.retry_in() == 0
    down, up = lines(caplog)
    assert down == (
        "Orchestrator tick failed (flaky): OperationalError: database is locked; retrying "
        "with backoff (at most every 5 s) until it answers"
    )
    assert up.startswith("Orchestrator tick works again after ")
    assert up.endswith(" s (20 failed attempts)")


def test_a_bug_in_one_duty_leaves_the_others_running_and_logs_its_traceback_once(caplog):
    flaky, counting = Flaky(), Counting()
    orchestrator = lead(flaky, counting)
    flaky.failing = KeyError("a bug")
    with caplog.at_level(logging.INFO, logger="distributed_tasks"):
        for _ in range(5):
            assert orchestrator.tick() == {"flaky": {"errors": 1}, "counting": {}}
    (down,) = [r for r in caplog.records if getattr(r, "action", None) == "outage"]
    assert down.exc_info is not None and counting.runs == 5


def test_redis_gone_mid_tick_is_no_exception(monkeypatch, caplog):
    counting = Counting()
    orchestrator = lead(counting)

    def gone():
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    monkeypatch.setattr(orchestrator_module, "live_nodes", gone)
    with caplog.at_level(logging.INFO, logger="distributed_tasks"):
        assert [orchestrator.tick() for _ in range(5)] == [None] * 5
        monkeypatch.undo()
        assert orchestrator.tick() == {"counting": {}}
    assert len(lines(caplog)) == 2 and "cluster view" in lines(caplog)[0]


def test_an_outage_a_leader_lost_its_lease_in_is_forgotten_not_ended_later(caplog):
    """Its ticks failed, then it lost the lease: when it leads again much later, its
    first good tick does not log "works again" with the old outage's length."""
    flaky = Flaky()
    orchestrator = lead(flaky)
    flaky.failing = OperationalError("database is locked")
    with caplog.at_level(logging.INFO, logger="distributed_tasks"):
        assert orchestrator.tick() == {"flaky": {"errors": 1}}
        orchestrator.lease.release()
        assert orchestrator.tick() is None  # a follower now
        flaky.failing = None
        assert orchestrator.lease.try_acquire() and orchestrator.on_acquired()
        assert orchestrator.tick() == {"flaky": {"done": 1}}
    messages = lines(caplog)
    assert len(messages) == 1 and "Orchestrator tick failed (flaky)" in messages[0], messages


def test_the_keeper_survives_any_exception_and_leads_again(monkeypatch, caplog):
    orchestrator = Orchestrator("keeper@test", [Counting()])
    keeper = LeaseKeeper(orchestrator, poll=0.01)
    real = orchestrator.on_acquired
    failures = []

    def broken():
        if len(failures) < 3:
            failures.append(1)
            raise OperationalError("could not connect to server")
        return real()

    monkeypatch.setattr(orchestrator, "on_acquired", broken)
    with caplog.at_level(logging.INFO, logger="distributed_tasks"):
        keeper.start()
        try:
            poll_until(keeper.elected.is_set, timeout=15, message="the keeper to lead")
            assert keeper.is_alive() and orchestrator.is_leader()
        finally:
            keeper.stop()
    messages = lines(caplog)
    assert sum("Orchestrator lease failed" in m for m in messages) == 1
    assert sum("Orchestrator lease works again" in m for m in messages) == 1


def test_a_renewal_redis_does_not_answer_is_an_outage_whose_end_is_logged(monkeypatch, caplog):
    """The leader's renewal times out (its host cut off from Redis): it gives the lease
    up and logs the outage; the first call Redis answers again logs the recovery, even
    though that call (an acquisition another holder refuses) fails nothing."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from distributed_tasks import lease as lease_module

    orchestrator = Orchestrator("renewal@test", [Counting()])
    keeper = LeaseKeeper(orchestrator, poll=0.01)
    lease = orchestrator.lease
    real, timeouts = lease._script, []

    def cut_once(source, *keys_, args):
        if source == lease_module.RENEW and not timeouts:
            timeouts.append(1)
            raise RedisTimeoutError("Timeout reading from socket")
        return real(source, *keys_, args=args)

    with caplog.at_level(logging.INFO, logger="distributed_tasks"):
        keeper.start()
        try:
            poll_until(keeper.elected.is_set, timeout=15, message="the keeper to lead")
            monkeypatch.setattr(lease, "_script", cut_once)
            poll_until(
                lambda: any("Orchestrator lease works again" in m for m in lines(caplog)),
                timeout=15,
                message="the recovery logged",
            )
        finally:
            keeper.stop()
    assert timeouts and "lost the orchestrator lease" in caplog.text
    messages = lines(caplog)
    assert sum("Orchestrator lease failed" in m for m in messages) == 1, messages
    assert "TimeoutError: Timeout reading from socket" in messages[0]
    assert sum("Orchestrator lease works again" in m for m in messages) == 1, messages


def test_a_leader_paused_inside_a_fenced_write_does_not_block_the_next_one():
    """The leader holds the leadership row's lock, then stops (SIGSTOP, a stalled VM):
    PostgreSQL and MariaDB end its session after LEASE_TTL / 2 idle, so the next leader
    registers."""
    import threading
    import time

    from django.db import connections

    from distributed_tasks import fencing
    from distributed_tasks.conf import get_settings
    from distributed_tasks.resilience import DB_ERRORS

    assert fencing.claim_epoch(1, "paused") is None
    holding, released = threading.Event(), threading.Event()

    def paused_leader() -> None:
        try:
            with fencing.fenced(1):
                holding.set()
                released.wait(30)  # idle inside the transaction, as if stopped
        except DB_ERRORS:
            pass  # its session was ended under it
        finally:
            connections.close_all()

    thread = threading.Thread(target=paused_leader, daemon=True)
    thread.start()
    assert holding.wait(10)
    began = time.monotonic()
    try:
        assert fencing.claim_epoch(2, "next") is None  # waits for the lock, then registers
        waited = time.monotonic() - began
    finally:
        released.set()
        thread.join(10)
    assert waited < get_settings().LEASE_TTL  # ended at LEASE_TTL / 2, not when it resumes
    assert fencing.leadership().epoch == 2
