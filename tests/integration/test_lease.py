"""The orchestrator lease on a real Redis: ownership, expiry, fencing epochs, no clocks."""

import time

import pytest

from distributed_tasks import keys
from distributed_tasks.lease import Lease, current_leader


@pytest.fixture
def lease_pair():
    a, b = Lease("beat-a", ttl=0.5), Lease("beat-b", ttl=0.5)
    yield a, b
    a.release()
    b.release()


def test_one_holder_at_a_time_with_rising_epochs(lease_pair, poll):
    a, b = lease_pair
    assert a.try_acquire() and a.is_held()
    assert not b.try_acquire() and not b.is_held()
    leader = current_leader()
    assert (leader.holder, leader.epoch) == ("beat-a", a.epoch)
    a.release()
    assert current_leader() is None
    assert b.try_acquire()
    assert b.epoch == a.epoch + 1


def test_lease_expires_without_renewal(lease_pair, poll):
    a, b = lease_pair
    a.try_acquire()
    poll(lambda: b.try_acquire(), timeout=3, message="b to acquire after expiry")
    assert b.epoch > a.epoch
    assert not a.is_held()


def test_renewal_keeps_it(lease_pair):
    a, b = lease_pair
    a.try_acquire()
    deadline = time.monotonic() + 1.5  # three TTLs
    while time.monotonic() < deadline:
        assert a.renew()
        assert not b.try_acquire()
        time.sleep(a.ttl / 3)
    assert a.is_held()


def test_a_thief_cannot_renew_or_release_anothers_lease(lease_pair, redis):
    a, b = lease_pair
    a.try_acquire()
    b._value = '{"holder": "beat-b", "token": "forged", "epoch": 99}'
    b._valid_until = time.monotonic() + 10
    assert not b.renew()
    b.release()
    assert current_leader().holder == "beat-a"
    assert a.renew()


def test_stale_holder_cannot_renew_after_a_new_leader(lease_pair, poll):
    a, b = lease_pair
    a.try_acquire()
    poll(lambda: b.try_acquire(), timeout=3, message="takeover")
    assert not a.renew()
    assert current_leader().holder == "beat-b"


def test_renewal_after_local_expiry_is_refused_and_frees_the_lease(lease_pair, monkeypatch):
    a, b = lease_pair
    a.try_acquire()
    later = time.monotonic() + 60  # the process was paused (SIGSTOP, GC, swap)
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert not a.is_held()
    assert not a.renew()
    assert current_leader() is None  # given up at once, not left to expire
    assert b.try_acquire()


def test_wall_clock_jumps_change_nothing(lease_pair, monkeypatch):
    a, _ = lease_pair
    a.try_acquire()
    monkeypatch.setattr(time, "time", lambda: 0.0)
    assert a.is_held() and a.renew()


def test_epoch_can_be_raised_past_what_the_database_saw(lease_pair, redis):
    a, _ = lease_pair
    a.try_acquire()
    first = a.epoch
    assert a.raise_epoch(first + 10) == a.epoch == first + 10
    assert int(redis.get(keys.epoch_key())) == a.epoch
    # Readers of the lease see the raised epoch; the holder still owns, renews, releases it.
    assert (current_leader().holder, current_leader().epoch) == ("beat-a", first + 10)
    assert a.verify() and a.renew()
    assert a.raise_epoch(first) == first + 10  # never lowered
    a.release()
    assert current_leader() is None
