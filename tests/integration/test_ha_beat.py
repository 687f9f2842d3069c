"""The HA beat continues the project's CELERY_BEAT_SCHEDULE from the database.

A follower that started hours ago holds entries last run hours ago: elected after a
Redis flush, it must not send at once what the previous leader has just sent.
"""

import datetime as dt

import pytest
from django.db import ProgrammingError

from distributed_tasks import fencing, keys
from distributed_tasks.celery import get_app
from distributed_tasks.fencing import beat_sent
from distributed_tasks.orchestrator.scheduler import DistributedScheduler
from tests.support import poll_until

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "dt-test-hourly"
ENTRY = {"task": "tests.ha_beat_probe", "schedule": 3600.0, "options": {"queue": QUEUE}}


@pytest.fixture
def beats():
    """Make schedulers of one hourly entry, last run two hours ago (a beat up for hours)."""
    made: list[DistributedScheduler] = []

    def make(holder: str) -> DistributedScheduler:
        cls = type("Scheduler", (DistributedScheduler,), {"holder": holder})
        beat = cls(app=get_app(), max_interval=1.0)
        made.append(beat)
        beat.merge_inplace({"hourly": ENTRY})
        beat.schedule["hourly"].last_run_at = beat.app.now() - dt.timedelta(hours=2)
        return beat

    yield make
    for beat in made:
        beat.close()


def lead_one_tick(beat: DistributedScheduler) -> None:
    poll_until(beat.orchestrator.is_leader, timeout=10, message=f"{beat.holder} to lead")
    beat.tick()


def test_a_new_leader_after_a_redis_flush_does_not_send_again(beats, redis):
    first = beats("beat-a@test")
    lead_one_tick(first)
    assert redis.llen(QUEUE) == 1  # two hours late: sent at once
    sent = first.schedule["hourly"].last_run_at
    assert beat_sent() == {"hourly": sent.isoformat()}
    first.close()
    redis.flushdb()  # the lease, the epoch and any state kept in Redis go

    second = beats("beat-b@test")
    lead_one_tick(second)
    assert redis.llen(QUEUE) == 0  # the database says it went out a moment ago
    assert second.schedule["hourly"].last_run_at == sent


def test_an_entry_sent_before_the_upgrade_continues_from_redis(beats, redis):
    """Releases before migration 0010 kept the sends in Redis only."""
    earlier = get_app().now() - dt.timedelta(minutes=10)
    redis.hset(keys.beat_key(), "hourly", earlier.isoformat())
    beat = beats("beat-a@test")
    lead_one_tick(beat)
    assert redis.llen(QUEUE) == 0
    assert beat.schedule["hourly"].last_run_at == earlier


def test_a_schedule_that_cannot_be_read_stops_the_sends_not_the_duties(beats, redis, monkeypatch):
    """Code ahead of its migration (no beat_sent column): the leader's duties go on, and
    nothing is sent that its predecessor may have just sent."""

    def unreadable():
        raise ProgrammingError('column "beat_sent" does not exist')

    monkeypatch.setattr(fencing, "beat_sent", unreadable)
    beat = beats("beat-a@test")
    lead_one_tick(beat)
    assert beat.orchestrator.ticks == 1  # the duties ran
    assert redis.llen(QUEUE) == 0  # two hours late, but its last send is unknown
    monkeypatch.undo()
    beat.resume.ok()  # past its backoff
    beat.tick()
    assert redis.llen(QUEUE) == 1


def test_a_stored_send_that_is_not_a_time_costs_only_its_own_entry(beats, redis, caplog):
    """Review: every stored send was parsed, so one bad value (a removed entry's, a hand
    edit) failed the resume and held every entry's sends back."""
    from distributed_tasks.models import Leadership

    recent = get_app().now() - dt.timedelta(minutes=10)
    values = {"removed": "yesterday", "hourly": recent.isoformat(), "odd": 12}
    Leadership.objects.create(id=1, beat_sent=values)
    redis.hset(keys.beat_key(), "hourly", "garbage")  # an older release's, as bad
    beat = beats("beat-a@test")
    lead_one_tick(beat)
    assert beat.resume.failures == 0
    assert redis.llen(QUEUE) == 0  # the good database value still counts
    assert beat.schedule["hourly"].last_run_at == recent
    assert "'garbage', which is not an ISO time" in caplog.text
    assert "yesterday" not in caplog.text  # not an entry of this schedule: not read


def test_a_stored_send_without_a_time_zone_is_taken_as_utc(beats, redis):
    recent = (get_app().now() - dt.timedelta(minutes=10)).astimezone(dt.UTC)
    redis.hset(keys.beat_key(), "hourly", recent.replace(tzinfo=None).isoformat())
    beat = beats("beat-a@test")
    lead_one_tick(beat)
    assert redis.llen(QUEUE) == 0
    assert beat.schedule["hourly"].last_run_at == recent
