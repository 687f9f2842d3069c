"""The dispatcher and the periodic run, on real Redis and PostgreSQL, with a chosen clock."""

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from distributed_tasks import claims, keys, runner
from distributed_tasks.exceptions import InvalidConfiguration
from distributed_tasks.models import PeriodicTaskState, TaskRun
from distributed_tasks.orchestrator import Orchestrator
from distributed_tasks.orchestrator.dispatcher import next_slot, slot_of
from distributed_tasks.periodic import PeriodicRun, PeriodicSpec, spec_from_settings, validate
from distributed_tasks.registry import RunInfo
from distributed_tasks.store import get_store, message_for
from tests.support import ROOT, poll_until, queued

pytestmark = pytest.mark.django_db(transaction=True)

T0 = dt.datetime(2026, 11, 24, 12, 0, 0, 300_000, tzinfo=dt.UTC)
ONE = dt.timedelta(seconds=1)


def declare(**tasks):
    conf = {**settings.DISTRIBUTED_TASKS, "PERIODIC": tasks}
    return override_settings(DISTRIBUTED_TASKS=conf)


def leading(holder: str):
    """A newly elected leader and a function that ticks its dispatcher at a chosen time."""
    from distributed_tasks.nodes import live_nodes
    from distributed_tasks.orchestrator import TickContext

    orchestrator = Orchestrator(holder)
    assert orchestrator.lease.try_acquire() and orchestrator.on_acquired()
    dispatcher = orchestrator.duty("dispatcher")

    def tick(now: dt.datetime) -> dict[str, int]:
        view = live_nodes()
        return dispatcher.run(TickContext(orchestrator.epoch, holder, view, now, 100, False))

    return orchestrator, tick


@pytest.fixture
def leader_tick(node, redis):
    """Tick the dispatcher as the elected leader at a chosen time."""
    redis.set(keys.intact_key(), "test")
    orchestrator, tick = leading("leader@test")
    yield tick
    orchestrator.lease.release()


def runs(name):
    return list(TaskRun.objects.filter(name=f"periodic:{name}").order_by("queued_at"))


def test_slots_are_aligned_to_the_clock():
    assert slot_of(T0, 10) == dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=dt.UTC)
    assert next_slot(T0, 10) == dt.datetime(2026, 11, 24, 12, 0, 10, tzinfo=dt.UTC)
    assert slot_of(T0, 0.5) == T0.replace(microsecond=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"interval": 0}, "interval must be greater than 0"),
        ({"interval": "10"}, "interval must be a number"),
        ({"timeout": -1}, "timeout must be a number greater than 0"),
        ({"timeout": float("nan")}, "timeout must be a number greater than 0"),
        ({"timeout": 1e12}, "and at most 3.1536e"),
        ({"args": {"x": object()}}, "args must be JSON-serializable"),
        ({"enabled": "yes"}, "instant and enabled must be True or False"),
    ],
)
def test_declarations_are_validated(change, message):
    spec = PeriodicSpec(name="x", task="tests.tasks.Counter", interval=1)
    with pytest.raises(InvalidConfiguration, match=message):
        validate(dataclasses.replace(spec, **change))


def test_settings_entries_need_task_and_interval_and_known_keys():
    with pytest.raises(InvalidConfiguration, match="at least 'task' and 'interval'"):
        spec_from_settings("x", {"task": "tests.tasks.Counter"})
    with pytest.raises(InvalidConfiguration, match="unknown keys"):
        spec_from_settings("x", {"task": "tests.tasks.Counter", "interval": 1, "every": 2})


def test_sync_creates_rows_and_dispatches_each_slot_once(leader_tick):
    with declare(counter={"task": "tests.tasks.Counter", "interval": 10}):
        assert leader_tick(T0)["created"] == 1
        row = PeriodicTaskState.objects.get()
        assert row.next_run_at == next_slot(T0, 10)  # not instant: the next slot boundary
        assert "dispatched" not in leader_tick(T0)
        first = T0 + dt.timedelta(seconds=10)
        assert leader_tick(first)["dispatched"] == 1
        assert "dispatched" not in leader_tick(first + dt.timedelta(seconds=1))
    (run,) = runs("counter")
    assert run.args == ["counter", slot_of(first, 10).isoformat()]
    row.refresh_from_db()
    assert (row.last_slot, row.last_run_id.hex, row.next_run_at) == (
        slot_of(first, 10),
        run.run_id,
        next_slot(first, 10),
    )


def test_instant_runs_at_once(leader_tick):
    with declare(now={"task": "tests.tasks.Counter", "interval": 60, "instant": True}):
        report = leader_tick(T0)
    assert report["created"] == 1 and report["dispatched"] == 1


def test_a_busy_previous_run_makes_the_slot_skip(leader_tick):
    with declare(busy={"task": "tests.tasks.Counter", "interval": 1, "instant": True}):
        leader_tick(T0)
        report = leader_tick(T0 + dt.timedelta(seconds=1))
    assert report == {"skipped": 1}
    row = PeriodicTaskState.objects.get()
    assert (row.skips, row.last_outcome) == (1, "SKIPPED")
    assert len(runs("busy")) == 1


def test_a_leader_gap_gives_one_catch_up_run_not_a_burst(leader_tick):
    with declare(gap={"task": "tests.tasks.Counter", "interval": 1}):
        leader_tick(T0)
        assert leader_tick(T0 + dt.timedelta(seconds=30))["dispatched"] == 1
    assert len(runs("gap")) == 1


def test_disabled_tasks_never_run_and_runtime_switches_persist(leader_tick):
    with declare(
        off={"task": "tests.tasks.Counter", "interval": 1, "enabled": False},
        on={"task": "tests.tasks.Counter", "interval": 1},
    ):
        leader_tick(T0)
        PeriodicTaskState.objects.filter(name="on").update(enabled=False)  # the admin
        leader_tick(T0 + dt.timedelta(seconds=11))  # a re-sync keeps the admin's choice
        leader_tick(T0 + dt.timedelta(seconds=12))
    assert runs("off") == [] and runs("on") == []
    assert not PeriodicTaskState.objects.get(name="on").enabled


def test_a_changed_interval_in_code_is_picked_up(leader_tick):
    with declare(p={"task": "tests.tasks.Counter", "interval": 10}):
        leader_tick(T0)
    with declare(p={"task": "tests.tasks.Counter", "interval": 60}):
        report = leader_tick(T0 + dt.timedelta(seconds=11))
    assert report["updated"] == 1
    row = PeriodicTaskState.objects.get()
    assert (row.interval, row.next_run_at) == (60, next_slot(T0 + dt.timedelta(seconds=11), 60))


def test_undeclared_tasks_stop(leader_tick):
    with declare(temp={"task": "tests.tasks.Counter", "interval": 1}):
        leader_tick(T0)
    with declare():
        assert leader_tick(T0 + dt.timedelta(seconds=11))["undeclared"] == 1
    assert not PeriodicTaskState.objects.get().enabled


def test_nodes_restricts_where_it_runs(leader_tick, node):
    with declare(pinned={"task": "tests.tasks.FirstNodeOnly", "interval": 1, "instant": True}):
        leader_tick(T0)
    (run,) = runs("pinned")
    assert run.node == node.name


def test_nodes_that_raises_fails_its_slot_and_not_the_tick(leader_tick, node):
    """The task's own nodes() raising: the slot is recorded FAILED with the error, and the
    other due tasks of the tick are still dispatched (the tick raised and backed off)."""
    broken = {"task": "tests.tasks.NodesRaises", "interval": 1, "instant": True}
    fine = {"task": "tests.tasks.Counter", "interval": 1, "instant": True}
    with declare(broken=broken, fine=fine):
        report = leader_tick(T0)
    assert (report["invalid"], report["dispatched"]) == (1, 1)
    row = PeriodicTaskState.objects.get(name="broken")
    assert (row.failures, row.last_outcome) == (1, "FAILED")
    assert row.last_error == "tests.tasks.NodesRaises.nodes() raised KeyError: 'a bug in nodes()'"
    assert runs("broken") == [] and len(runs("fine")) == 1


def killed_while_dispatching(where: str, now: dt.datetime, redis, **periodic) -> None:
    """A leader process SIGKILLed at ``where`` in its dispatch (tests/dying_leader.py); its
    lease then expires (deleted here rather than waited for)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DT_TEST_DB_NAME": settings.DATABASES["default"]["NAME"],
        "DT_TEST_PERIODIC": json.dumps(periodic),
    }
    argv = [sys.executable, "-m", "tests.dying_leader", "dying@test", now.isoformat(), where]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    redis.delete(keys.lease_key())


def test_a_leader_killed_between_a_slots_claim_and_its_run_leaves_the_slot_to_the_next(
    node, redis, monkeypatch
):
    """SIGKILL once the slot is claimed and the run's name claimed in Redis, before its
    row: the slot's claim dies with the transaction, so the next leader dispatches the
    slot (once the dead start's Redis claim is stale) instead of taking it as done."""
    redis.set(keys.intact_key(), "test")
    lost = {"task": "tests.tasks.Counter", "interval": 60, "instant": True}
    killed_while_dispatching("insert", T0, redis, lost=lost)
    row = PeriodicTaskState.objects.get(name="lost")
    assert (row.last_slot, runs("lost")) == (None, [])
    assert claims.read("default", "periodic:lost")  # the dead start's claim
    with declare(lost=lost):
        orchestrator, tick = leading("next@test")
        later = T0 + dt.timedelta(seconds=1)
        assert tick(later)["pending"] == 1  # the claim may be a start about to insert
        row.refresh_from_db()
        assert row.last_slot is None and "waits: " in row.last_error
        monkeypatch.setattr(claims, "CLAIM_GRACE", 0.0)  # instead of waiting 10 s
        assert tick(later + dt.timedelta(seconds=1)) == {"dispatched": 1}  # synced already
        orchestrator.lease.release()
    (run,) = runs("lost")
    row.refresh_from_db()
    assert (row.last_slot, row.last_run_id.hex) == (later + dt.timedelta(seconds=1), run.run_id)


def test_a_waiting_slot_is_tried_again_a_tick_later_not_at_once(node, redis):
    """A slot that waits keeps its due next_run_at: the dispatcher gives it its own retry
    time, so the beat (which sleeps until next_due) does not loop on it without a pause,
    and the other tasks' due slots are dispatched meanwhile."""
    redis.set(keys.intact_key(), "test")
    held = {"state": "QUEUED", "run_id": "c0ffee" * 5 + "00", "node": node.name,
            "attempt": 1, "queued_at": time.time()}  # fmt: skip
    claims.claim("default", "periodic:held", held, reuse="allow")  # a start with no row yet
    counter = {"task": "tests.tasks.Counter", "interval": 60, "instant": True}
    with declare(held=counter, free=counter):
        orchestrator, tick = leading("leader@test")
        dispatcher = orchestrator.duty("dispatcher")
        assert tick(T0) == {"created": 2, "pending": 1, "dispatched": 1}
        assert dispatcher.next_due == T0 + dt.timedelta(seconds=1)  # not T0: no busy loop
        assert tick(T0 + dt.timedelta(seconds=0.5)) == {}  # not tried before its time
        assert tick(T0 + dt.timedelta(seconds=1))["pending"] == 1
        orchestrator.lease.release()
    assert [r.name for r in TaskRun.objects.all()] == ["periodic:free"]


def test_no_live_node_right_after_redis_answers_again_waits_instead_of_skipping(redis):
    """Nobody reached Redis for a while (a gap): until nodes had NODE_TIMEOUT to beat
    again, an empty node list is no reason to skip the slot; later it is."""
    redis.set(keys.intact_key(), "test")
    seconds, micros = redis.time()
    redis.set(keys.pulse_key(), seconds * 1000 + micros // 1000 - 60_000)  # a minute ago
    counter = {"task": "tests.tasks.Counter", "interval": 60, "instant": True}
    with declare(counter=counter):
        orchestrator, tick = leading("leader@test")
        assert tick(T0) == {"created": 1, "unavailable": 1}
        redis.delete(keys.gap_key())  # long ago: no gap within NODE_TIMEOUT
        assert tick(T0 + dt.timedelta(seconds=1)) == {"no_node": 1}
        orchestrator.lease.release()
    assert PeriodicTaskState.objects.get(name="counter").skips == 1


def test_a_leader_killed_before_publishing_a_slots_run_leaves_it_to_the_next(node, redis):
    """SIGKILL once the slot and its run committed, before the message went out: the next
    leader publishes that run (the slot is dispatched once, not lost, not twice)."""
    redis.set(keys.intact_key(), "test")
    lost = {"task": "tests.tasks.Counter", "interval": 3600, "instant": True}
    killed_while_dispatching("publish", timezone.now(), redis, lost=lost)
    (run,) = runs("lost")
    row = PeriodicTaskState.objects.get(name="lost")
    assert (run.state, row.last_run_id.hex) == ("QUEUED", run.run_id)
    assert queued(redis, node.name) == []
    with declare(lost=lost):
        orchestrator, _tick = leading("next@test")

        def published():
            orchestrator.tick()
            return queued(redis, node.name)

        (message,) = poll_until(published, timeout=15, message="the slot's run published")
        orchestrator.lease.release()
    assert json.loads(message)["headers"]["id"] == f"{run.run_id}:1"
    assert runs("lost") == [run]


def test_a_start_the_client_refuses_fails_its_slot_and_not_the_others(leader_tick):
    """A value the declaration's checks let through (here a timeout edited in the table)
    that the start refuses: the slot is spent and FAILED, the tick goes on, and the next
    ticks do not try it again and again ahead of the other tasks."""
    every = {"task": "tests.tasks.Counter", "interval": 1}
    with declare(bad=every, fine=every):
        leader_tick(T0)
        PeriodicTaskState.objects.filter(name="bad").update(timeout=1e12)
        report = leader_tick(T0 + dt.timedelta(seconds=1))
        assert (report["invalid"], report["dispatched"]) == (1, 1)
        assert "invalid" not in leader_tick(T0 + dt.timedelta(seconds=1.5))
    row = PeriodicTaskState.objects.get(name="bad")
    assert (row.failures, row.last_outcome, row.last_slot) == (1, "FAILED", slot_of(T0, 1) + ONE)
    assert "not run: timeout must be a finite number greater than 0 and at most" in row.last_error
    assert runs("bad") == []


def test_a_skipped_slot_sends_run_refused_after_its_transaction(leader_tick):
    from django.db import connection

    from distributed_tasks import signals

    seen = []

    def refused(**kwargs):
        seen.append((kwargs["name"], connection.in_atomic_block))

    signals.run_refused.connect(refused, weak=False, dispatch_uid="test-skip")
    try:
        with declare(busy={"task": "tests.tasks.Counter", "interval": 1, "instant": True}):
            leader_tick(T0)
            assert leader_tick(T0 + ONE) == {"skipped": 1}
    finally:
        signals.run_refused.disconnect(dispatch_uid="test-skip")
    assert seen == [("periodic:busy", False)]


def test_a_slot_whose_transaction_fails_after_its_start_gives_its_claim_back(
    leader_tick, redis, monkeypatch
):
    """The commit (or the write after the start) fails: the run's row and message go with
    the transaction, and so do its name's claim and load count, so the next tick
    dispatches the slot at once instead of waiting CLAIM_GRACE behind a claim."""
    from django.db import OperationalError

    from distributed_tasks.orchestrator.dispatcher import Dispatcher

    real = Dispatcher._start

    def fails_after(self, *args):
        real(self, *args)
        raise OperationalError("the commit failed")

    with declare(lost={"task": "tests.tasks.Counter", "interval": 60, "instant": True}):
        monkeypatch.setattr(Dispatcher, "_start", fails_after)
        with pytest.raises(OperationalError):
            leader_tick(T0)
        assert (runs("lost"), claims.read("default", "periodic:lost")) == ([], {})
        assert int(redis.hget(keys.loads_key(), "idle@test") or 0) == 0
        monkeypatch.undo()
        assert leader_tick(T0 + ONE)["dispatched"] == 1
    assert len(runs("lost")) == 1


def test_a_publish_that_fails_after_the_commit_keeps_the_committed_run_s_claim(
    leader_tick, redis, monkeypatch
):
    """The slot and its run committed; the publish after the commit raised something no
    one expected: the run is the cluster's (the next leader publishes it), so its name's
    claim and status stay in Redis."""
    from distributed_tasks.client import ClusterClient

    def broken(self, starts, deferred=False):
        raise RuntimeError("a bug in the broker's client")

    monkeypatch.setattr(ClusterClient, "_send", broken)
    sent = {"task": "tests.tasks.Counter", "interval": 60, "instant": True}
    with declare(sent=sent), pytest.raises(RuntimeError):
        leader_tick(T0)
    (run,) = runs("sent")
    assert claims.read("default", "periodic:sent")["run_id"] == run.run_id


def test_nodes_runs_outside_the_leaders_transaction(leader_tick, node):
    """User code must not hold the fenced transaction (and the leadership row's lock),
    which PostgreSQL ends after LEASE_TTL/2 idle."""
    from tests.tasks import NodesSeesTransaction

    NodesSeesTransaction.calls.clear()
    with declare(seen={"task": "tests.tasks.NodesSeesTransaction", "interval": 1, "instant": True}):
        assert leader_tick(T0)["dispatched"] == 1
    assert NodesSeesTransaction.calls == [False]
    assert len(runs("seen")) == 1


def execute(run: TaskRun):
    get_store()  # the run executes here, as a worker would
    return runner.execute(message_for(run).to_body())


def test_state_is_created_by_init_then_carried_from_run_to_run(leader_tick, redis):
    spec = {"task": "tests.tasks.Counter", "interval": 1, "instant": True, "args": {"start": 5}}
    with declare(c=spec):
        leader_tick(T0)
        execute(runs("c")[-1])
        assert PeriodicTaskState.objects.get().state == {"count": 6}
        leader_tick(T0 + dt.timedelta(seconds=1))
        execute(runs("c")[-1])
    row = PeriodicTaskState.objects.get()
    assert (row.state, row.runs, row.last_outcome) == ({"count": 7}, 2, "DONE")
    assert claims.read("default", "periodic:c")["state"] == "DONE"


def test_an_attempt_the_leader_moved_on_does_not_write_the_state(leader_tick):
    """Review item 8: a late success of an attempt fenced out overwrote the state."""
    with declare(c={"task": "tests.tasks.Counter", "interval": 1, "instant": True}):
        leader_tick(T0)
    (run,) = runs("c")
    assert get_store().mark_running(message_for(run), "inc") is not None
    TaskRun.objects.filter(id=run.id).update(attempt=2, state="QUEUED")  # lifeline moved it
    task = PeriodicRun()
    task.new_state = {"count": 99}
    old = RunInfo(
        run_id=run.run_id,
        name=run.name,
        task_list=run.task_list,
        attempt=1,
        node=run.node,
        function=run.function,
        args=run.args,
    )
    task.on_success(old, {})
    row = PeriodicTaskState.objects.get()
    assert (row.state, row.runs) == (None, 0)


def test_a_failing_execute_keeps_the_previous_state(leader_tick):
    with declare(b={"task": "tests.tasks.Broken", "interval": 1, "instant": True}):
        PeriodicTaskState.objects.create(
            name="b",
            task="tests.tasks.Broken",
            interval=1,
            instant=True,
            state={"kept": True},
            next_run_at=T0,
        )
        leader_tick(T0)
        outcome = execute(runs("b")[-1])
    assert outcome.error_type == "RuntimeError"
    row = PeriodicTaskState.objects.get()
    assert (row.state, row.failures, row.last_outcome) == ({"kept": True}, 1, "FAILED")
    assert "periodic failure" in row.last_error


def test_only_declared_classes_are_loaded(leader_tick):
    PeriodicTaskState.objects.create(
        name="rogue", task="os.system", interval=1, instant=True, next_run_at=T0, declared={"x": 1}
    )
    with declare(rogue={"task": "tests.tasks.Counter", "interval": 1, "instant": True}):
        PeriodicTaskState.objects.filter(name="rogue").update(task="os.system")
        report = leader_tick(T0)
    assert report.get("invalid", 0) + report.get("dispatched", 0) >= 1
    assert not TaskRun.objects.filter(function="os.system").exists()


@pytest.fixture
def second_alias():
    """DATABASE_ALIAS names a second connection to the test database."""
    from django.db import connections
    from django.db.utils import load_backend

    from distributed_tasks.conf import reset_caches

    target = connections["default"].settings_dict
    connections["second"] = load_backend(target["ENGINE"]).DatabaseWrapper({**target}, "second")
    conf = {**settings.DISTRIBUTED_TASKS, "DATABASE_ALIAS": "second"}
    try:
        with override_settings(DISTRIBUTED_TASKS=conf):
            reset_caches()
            yield connections["second"]
    finally:
        connections["second"].close()
        del connections["second"]
        reset_caches()


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"), reason="shared")
def test_the_slot_claim_is_written_on_the_fenced_alias(second_alias, leader_tick):
    """Review item 9: with another DATABASE_ALIAS the claim went to "default", outside
    the leader's fenced transaction."""
    from django.test.utils import CaptureQueriesContext

    task = {"task": "tests.tasks.Counter", "interval": 60, "instant": True}
    with declare(now=task), CaptureQueriesContext(second_alias) as captured:
        assert leader_tick(T0)["dispatched"] == 1
    sql = [q["sql"] for q in captured.captured_queries]
    assert any(q.startswith("UPDATE") and "last_slot" in q.split(" WHERE ")[0] for q in sql)


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"), reason="shared")
def test_the_periodic_metrics_are_read_on_the_database_alias(second_alias):
    """They were read on "default" whatever DATABASE_ALIAS said (review)."""
    from django.test.utils import CaptureQueriesContext

    from distributed_tasks.scrape import ClusterCollector

    PeriodicTaskState.objects.create(name="counted", task="tests.tasks.Counter", interval=1, runs=3)
    families = []
    with CaptureQueriesContext(second_alias) as on_alias:
        families = list(ClusterCollector._periodic(lambda name, doc, labels: Family(name)))
    assert any("distributed_tasks_periodictaskstate" in q["sql"] for q in on_alias.captured_queries)
    runs = next(f for f in families if f.name == "dt_periodic_runs")
    assert runs.samples == [(["counted"], 3)]


class Family:
    """Stands for a prometheus metric family: what ``_periodic`` adds to it."""

    def __init__(self, name: str) -> None:
        self.name, self.samples = name, []

    def add_metric(self, labels: list[str], value: float) -> None:
        self.samples.append((labels, value))
