"""Each orchestrator duty, one tick at a time, on real Redis and PostgreSQL."""

import datetime as dt
import json
import uuid

import pytest
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from distributed_tasks import (
    cancel,
    claims,
    fencing,
    get_status,
    keys,
    retry,
    signals,
    start_async,
)
from distributed_tasks.health import check_health
from distributed_tasks.models import Leadership, TaskRun
from distributed_tasks.nodes import Heartbeat, NodeInfo, live_nodes
from distributed_tasks.orchestrator import Orchestrator
from distributed_tasks.store import get_store
from tests import tasks
from tests.support import queued

pytestmark = pytest.mark.django_db(transaction=True)


def lead(holder="leader@test") -> Orchestrator:
    orchestrator = Orchestrator(holder)
    assert orchestrator.lease.try_acquire()
    assert orchestrator.on_acquired()
    return orchestrator


def relead(orchestrator):
    """A flush took the lease with it: the leader must win it again (with a new epoch)."""
    orchestrator.lease.release()
    assert orchestrator.lease.try_acquire() and orchestrator.on_acquired()


def settle(orchestrator, redis):
    """First tick: the resync marker is absent on a fresh Redis; finish the rebuild."""
    orchestrator.tick()
    assert redis.exists(keys.intact_key())
    orchestrator._redis_lost_at = None
    orchestrator.tick()  # announces the live nodes (node_joined)


def row(name, node, state="QUEUED", **extra) -> TaskRun:
    fields = {"function": "tests.tasks.add", "args": [1, 2], **extra}
    run = TaskRun(id=uuid.uuid4(), name=name, active_name=name, node=node, state=state, **fields)
    get_store().insert(run)
    return run


def messages(redis, node):
    return [json.loads(m) for m in queued(redis, node)]


def test_a_follower_does_nothing(node):
    follower = Orchestrator("follower@test")
    assert not follower.is_leader()
    assert follower.tick() is None


def test_election_registers_the_epoch_and_fences_older_leaders(redis):
    first = lead("first@test")
    first.lease.release()
    second = lead("second@test")
    assert second.epoch > first.epoch
    assert Leadership.objects.get().epoch == second.epoch
    with pytest.raises(fencing.Fenced, match="refused"), fencing.fenced(first.epoch):
        pass


def test_epoch_survives_a_redis_flush(redis):
    first = lead("first@test")
    first.lease.release()
    redis.flushdb()  # the epoch counter restarts at 1
    second = lead("second@test")
    assert second.epoch == first.epoch + 1
    assert Leadership.objects.get().holder == "second@test"
    # dt_nodes, dt_check and the cluster page read the lease: they see the same epoch.
    assert check_health().leader.epoch == second.epoch


def test_lifeline_moves_retries_and_fails_runs_of_a_dead_node(node, redis, dead_node):
    orchestrator = lead()
    settle(orchestrator, redis)
    dead_node("gone@test")
    redis.hset(keys.node_cancel_key("gone@test"), "some-run:1", 1.0)  # a forced cancel due
    queued = row("queued", "gone@test")
    last = row("last-chance", "gone@test", state="RUNNING", executions=1)
    retry = row("retry", "gone@test", state="RUNNING", executions=1, max_attempts=2)
    finished = []
    signals.run_finished.connect(
        lambda **kw: finished.append(kw["message"].name), weak=False, dispatch_uid="t"
    )
    try:
        report = orchestrator.tick()
    finally:
        signals.run_finished.disconnect(dispatch_uid="t")
    assert report["lifeline"] == {"moved": 1, "failed": 1, "retried": 1, "nodes_lost": 1}
    queued.refresh_from_db(), last.refresh_from_db(), retry.refresh_from_db()
    assert (queued.state, queued.node, queued.attempt) == ("QUEUED", node.name, 2)
    assert (last.state, last.reason, last.orchestrator_epoch) == (
        "FAILED",
        "node_lost",
        orchestrator.epoch,
    )
    assert "gone@test stopped heartbeating" in last.error
    assert (retry.state, retry.node, retry.attempt, retry.reason, retry.error) == (
        "QUEUED",
        node.name,
        2,
        "",
        "",
    )
    assert [(a["attempt"], a["state"], a["reason"]) for a in retry.attempts] == [
        (1, "FAILED", "node_lost")
    ]
    assert [(a["node"], a["state"]) for a in queued.attempts] == [("gone@test", "MOVED")]
    assert "error" not in claims.read("default", "retry")
    assert finished == ["last-chance"]
    sent = {m["headers"]["id"] for m in messages(redis, node.name)}
    assert sent == {f"{queued.run_id}:2", f"{retry.run_id}:2"}
    assert claims.read("default", "last-chance")["state"] == "FAILED"
    assert not redis.exists(keys.node_cancel_key("gone@test"))  # forgotten with its node
    assert orchestrator.tick()["lifeline"] == {}  # nothing left to do


def test_lifeline_ends_runs_of_a_restarted_node(node, redis):
    orchestrator = lead()
    settle(orchestrator, redis)
    old = row("old-incarnation", node.name, state="RUNNING", executions=1, incarnation="gone")
    current = row("current", node.name, state="RUNNING", executions=1, incarnation=node.incarnation)
    orchestrator.tick()
    old.refresh_from_db(), current.refresh_from_db()
    assert (old.state, old.reason) == ("FAILED", "node_lost")
    assert "restarted" in old.error
    assert current.state == "RUNNING"


def test_lifeline_waits_for_an_old_incarnation_to_stop_beating(node, redis, poll):
    """Two processes beat under one name: neither one's runs are taken for lost (review 3)."""
    orchestrator = lead()
    settle(orchestrator, redis)
    twin = Heartbeat(NodeInfo(name=node.name))
    twin.start()
    try:
        poll(lambda: twin.beats > 0, message="twin beats")
        mine = row("mine", node.name, state="RUNNING", executions=1, incarnation=node.incarnation)
        theirs = row("theirs", node.name, state="RUNNING", executions=1,
                     incarnation=twin.info.incarnation)  # fmt: skip
        orchestrator.tick()
    finally:
        twin.stop(leave=False)
    assert {r.state for r in TaskRun.objects.filter(id__in=[mine.id, theirs.id])} == {"RUNNING"}


@override_settings(
    DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, "NODE_TIMEOUT": 0.5, "HEARTBEAT_INTERVAL": 0.1}
)
def test_node_events_are_sent_once(redis, poll):
    orchestrator = lead()
    settle(orchestrator, redis)
    events = []
    for signal in (signals.node_joined, signals.node_lost):
        signal.connect(
            lambda signal, node, **kw: events.append((signal, node)),
            weak=False,
            dispatch_uid=f"t{id(signal)}",
        )
    beat = Heartbeat(NodeInfo(name="short@test"))
    beat.start()
    try:
        poll(lambda: "short@test" in live_nodes().nodes, message="node live")
        orchestrator.tick(), orchestrator.tick()
        beat.stop(leave=False)
        poll(lambda: "short@test" in live_nodes().stale, timeout=3, message="node stale")
        orchestrator.tick(), orchestrator.tick()
    finally:
        beat.stop(leave=False)
        for signal in (signals.node_joined, signals.node_lost):
            signal.disconnect(dispatch_uid=f"t{id(signal)}")
    assert events == [(signals.node_joined, "short@test"), (signals.node_lost, "short@test")]
    assert "short@test" not in live_nodes().stale


def test_a_lost_node_whose_queue_cannot_be_purged_is_still_reported_lost(
    node, redis, dead_node, monkeypatch
):
    """The node is forgotten before its queue is purged: a broker error there raised out
    of the tick, and node_lost was never sent for it (review of the orchestrator)."""
    from distributed_tasks.brokers import Broker

    orchestrator = lead()
    settle(orchestrator, redis)
    dead_node("gone@test")
    lost = []
    signals.node_lost.connect(lambda node, **kw: lost.append(node), weak=False, dispatch_uid="l")

    def refused(self, name):
        raise ConnectionResetError("the broker went away")

    monkeypatch.setattr(Broker, "purge", refused)
    try:
        assert orchestrator.tick()["lifeline"] == {"nodes_lost": 1}
    finally:
        signals.node_lost.disconnect(dispatch_uid="l")
    assert lost == ["gone@test"]


def test_lifeline_waits_while_redis_recovers_from_a_flush(node, redis, poll):
    orchestrator = lead()
    settle(orchestrator, redis)
    run = row("survivor", "idle@test", state="RUNNING", executions=1, incarnation=node.incarnation)
    redis.flushdb()
    relead(orchestrator)
    report = orchestrator.tick()
    assert report["lifeline"] == {"skipped": 1}
    run.refresh_from_db()
    assert run.state == "RUNNING"


def test_resync_rebuilds_redis_after_a_flush(node, redis):
    orchestrator = lead()
    settle(orchestrator, redis)
    waiting = row("waiting", node.name)
    running = row("running", node.name, state="RUNNING", executions=1, incarnation=node.incarnation)
    redis.flushdb()
    relead(orchestrator)
    report = orchestrator.tick()["resync"]
    assert report["statuses_restored"] == 2
    assert report["republished"] == 1
    assert report["rebuilds_completed"] == 1
    assert claims.read("default", "waiting")["run_id"] == waiting.run_id
    assert claims.read("default", "running")["state"] == "RUNNING"
    assert [m["headers"]["id"] for m in messages(redis, node.name)] == [f"{waiting.run_id}:1"]
    assert redis.hget(keys.loads_key(), node.name) == b"2"
    assert running.run_id


def test_the_rebuild_after_a_flush_publishes_no_parked_run(node, redis):
    """A run parked for a task list no node serves has no node: its message went to a
    queue named for no node, which nothing consumes (review of the orchestrator)."""
    orchestrator = lead()
    settle(orchestrator, redis)
    row("parked", "", task_list="gpu")
    redis.flushdb()
    relead(orchestrator)
    report = orchestrator.tick()["resync"]
    assert (report["statuses_restored"], report.get("republished", 0)) == (1, 0)
    assert claims.read("gpu", "parked")["state"] == "QUEUED"
    assert queued(redis, "") == []


def test_resync_republishes_a_queued_run_whose_message_is_gone(node, redis):
    orchestrator = lead()
    settle(orchestrator, redis)
    old = timezone.now() - dt.timedelta(minutes=5)
    orphan = row("orphan", node.name, run_after=old, queued_at=old)
    report = orchestrator.tick()["resync"]
    assert report["orphans_republished"] == 1
    assert [m["headers"]["id"] for m in messages(redis, node.name)] == [f"{orphan.run_id}:1"]
    assert "orphans_republished" not in orchestrator.tick()["resync"]  # the queue holds it


def test_old_runs_waiting_on_busy_nodes_do_not_hide_an_orphan(node, heavy, redis):
    """Review: the orphan pass read the oldest batch of QUEUED runs and then skipped those
    whose node's queue held messages. With a batch of old runs waiting behind a busy
    node, an orphan on an idle node was never reached."""
    conf = {**settings.DISTRIBUTED_TASKS, "BATCH_SIZE": 2}
    with override_settings(DISTRIBUTED_TASKS=conf):
        orchestrator = lead()
        settle(orchestrator, redis)
        older = timezone.now() - dt.timedelta(minutes=10)
        for i in range(3):
            row(f"waiting-{i}", heavy.name, task_list="ci", run_after=older, queued_at=older)
        redis.lpush(keys.queue_keys(heavy.name)[0], "a message the node has not taken yet")
        old = timezone.now() - dt.timedelta(minutes=5)
        orphan = row("orphan", node.name, run_after=old, queued_at=old)
        report = orchestrator.tick()["resync"]
    assert report["orphans_republished"] == 1
    assert [m["headers"]["id"] for m in messages(redis, node.name)] == [f"{orphan.run_id}:1"]
    assert len(queued(redis, heavy.name)) == 1  # nothing added behind the busy node's


def test_a_new_leader_publishes_at_once_the_runs_the_last_one_queued(node, redis, monkeypatch):
    """The last leader may have died between committing a run and publishing it: a
    periodic slot would hold its task's name, skipping every slot, for ORPHAN_AFTER."""
    from distributed_tasks.brokers import Broker
    from distributed_tasks.periodic import PeriodicRun
    from distributed_tasks.registry import path_of

    first = lead("first@test")
    settle(first, redis)
    now = timezone.now()
    due = now - dt.timedelta(seconds=2)
    periodic = {"function": path_of(PeriodicRun), "args": ["lost", "x"]}
    slot = row("periodic:lost", node.name, queued_at=due, run_after=due, **periodic)
    moved = row("moved", node.name, orchestrator_epoch=first.epoch, run_after=due)
    later = now + dt.timedelta(hours=1)
    row("backoff", node.name, orchestrator_epoch=first.epoch, run_after=later)  # not due
    old = now - dt.timedelta(minutes=5)  # ORPHAN_AFTER's, not this pass's
    row("old", node.name, orchestrator_epoch=first.epoch, run_after=old, queued_at=old)
    row("producer's", node.name, run_after=due)  # a producer's run: ORPHAN_AFTER applies
    first.lease.release()  # dies without publishing any of them
    second = lead("second@test")
    # The broker does not answer: nothing can be judged, the next tick looks again.
    monkeypatch.setattr(Broker, "depths", lambda self, nodes: dict.fromkeys(nodes))
    assert "inherited_republished" not in second.tick()["resync"]
    monkeypatch.undo()
    row("periodic:mine", node.name, run_after=due, **periodic)  # this leader's own slot
    assert second.tick()["resync"]["inherited_republished"] == 2
    ids = sorted(m["headers"]["id"] for m in messages(redis, node.name))
    assert ids == sorted(f"{r.run_id}:1" for r in (slot, moved))
    redis.delete(*keys.queue_keys(node.name))  # the messages went missing again
    report = second.tick()["resync"]
    assert "inherited_republished" not in report  # once per leadership
    assert report["orphans_republished"] == 1  # "old", by the rule for older runs
    redis.delete(*keys.queue_keys(node.name))
    relead(second)  # each election looks again: "periodic:mine" is now a former epoch's
    assert second.tick()["resync"]["inherited_republished"] == 3


def finished_under_a_running_claim(node, attempt) -> None:
    """Run "done" FAILED in the database while its name's key still says RUNNING."""
    done = row("done", node.name)
    TaskRun.objects.filter(id=done.id).update(
        state="FAILED", active_name=None, finished_at=timezone.now()
    )
    claims.claim(
        "default",
        "done",
        {"state": "RUNNING", "run_id": done.run_id, "attempt": attempt, "queued_at": 1.0},
        reuse="allow",
    )


def test_resync_releases_claims_no_row_backs(node, redis, monkeypatch):
    orchestrator = lead()
    settle(orchestrator, redis)
    monkeypatch.setattr(claims, "CLAIM_GRACE", 0.0)
    claims.claim(
        "default",
        "ghost",
        {"state": "QUEUED", "run_id": "ab" * 16, "queued_at": 1.0},
        reuse="allow",
    )
    finished_under_a_running_claim(node, attempt=1)
    report = orchestrator.tick()["resync"]
    assert report["stale_claims_released"] == 1
    assert report["finished_statuses_restored"] == 1
    assert claims.read("default", "ghost") == {}
    assert claims.read("default", "done")["state"] == "FAILED"


def test_claims_with_values_not_ours_do_not_stop_the_resync(node, redis, monkeypatch):
    """Review: a claim whose attempt or queued time was not a number, or whose run id was
    not one, aborted the resync's pass over every claim; one with no run id was kept for
    ever, and of several keys holding one bad id only one was looked at."""
    orchestrator = lead()
    settle(orchestrator, redis)
    monkeypatch.setattr(claims, "CLAIM_GRACE", 0.0)
    odd = {"state": "QUEUED", "task_list": "default"}
    for name in ("bad-id", "same-bad-id"):
        redis.hset(keys.run_key("default", name), mapping={**odd, "run_id": "not-a-uuid"})
    redis.hset(keys.run_key("default", "no-id"), mapping={**odd, "queued_at": "1"})
    redis.hset(keys.run_key("default", "bad-time"),
               mapping={**odd, "run_id": "cd" * 16, "queued_at": "soon"})  # fmt: skip
    waiting = row("waiting", node.name)  # active, its id written with dashes
    dashed = str(uuid.UUID(waiting.run_id))
    redis.hset(keys.run_key("default", "waiting"), mapping={**odd, "run_id": dashed})
    finished_under_a_running_claim(node, attempt="one")
    report = orchestrator.tick()["resync"]
    assert (report["stale_claims_released"], report["finished_statuses_restored"]) == (4, 1)
    for name in ("bad-id", "same-bad-id", "no-id", "bad-time"):
        assert not redis.exists(keys.run_key("default", name))
    assert claims.read("default", "done")["state"] == "FAILED"
    assert redis.hget(keys.run_key("default", "waiting"), "run_id") == dashed.encode()  # kept


def test_a_rolled_back_retry_leaves_no_queued_status_behind(node, redis, monkeypatch):
    """retry() claims the name for the next attempt before the row's UPDATE: rolled back,
    the claim says QUEUED (attempt 2) over a run that stays FAILED (attempt 1). The
    resync puts the FAILED status back once the claim stayed ahead for CLAIM_GRACE."""
    orchestrator = lead()
    settle(orchestrator, redis)
    start_async(tasks.add, [1, 2], name="flaky")
    cancel("flaky")  # FAILED(cancelled), attempt 1
    with pytest.raises(RuntimeError), transaction.atomic():
        retry("flaky")
        raise RuntimeError("the caller's transaction rolls back")
    assert get_status("flaky").state == "QUEUED"  # what the claim says
    monkeypatch.setattr(claims, "CLAIM_GRACE", 0.0)
    orchestrator.tick()  # seen ahead of its finished row: an in-flight retry may commit
    report = orchestrator.tick()["resync"]
    assert report["finished_statuses_restored"] == 1
    status = get_status("flaky")
    assert (status.state, status.reason, status.attempt) == ("FAILED", "cancelled", 1)
    assert retry("flaky").attempt == 2  # the name is usable as before


def test_reaper_reaps_done_and_failed_names_and_old_history(node, redis):
    orchestrator = lead()
    settle(orchestrator, redis)
    now = timezone.now()
    for name, state, age in [
        ("done", "DONE", 120),
        ("failed", "FAILED", 120),
        ("fresh", "DONE", 5),
        ("ancient", "DONE", 8 * 24 * 3600),
    ]:
        run = row(name, node.name)
        TaskRun.objects.filter(id=run.id).update(
            state=state, active_name=None, finished_at=now - dt.timedelta(seconds=age)
        )
        run.refresh_from_db()
        claims.update("default", name, run.run_id, 1, claims.fields_for_run(run), ttl=600_000)
    report = orchestrator.tick()["reaper"]
    assert report == {"names_reaped": 2, "history_deleted": 1}
    assert claims.read("default", "done") == {} and claims.read("default", "failed") == {}
    assert claims.read("default", "fresh")["state"] == "DONE"
    assert not TaskRun.objects.filter(name="ancient").exists()
    assert orchestrator.tick()["reaper"] == {"names_reaped": 0, "history_deleted": 0}


def test_the_reaper_counts_a_bounded_slice_of_the_history_backlog():
    """Review item 13: it counted every row past retention on each tick."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from distributed_tasks.orchestrator.reaper import Reaper

    old = timezone.now() - dt.timedelta(days=400)
    for i in range(3):
        row(f"ancient-{i}", "gone@test")
    TaskRun.objects.update(state="DONE", active_name=None, finished_at=old)
    with CaptureQueriesContext(connection) as captured:
        plan = Reaper().plan(timezone.now(), batch=2)
    assert plan.history_rows == 2
    (count,) = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert "LIMIT 2" in count.upper()


def test_a_node_missing_from_membership_is_not_dead_before_node_timeout(node, redis, poll):
    """After Redis lost its data a node has no membership entry until its next heartbeat:
    that absence alone is not a death; absence for NODE_TIMEOUT is."""
    conf = {**settings.DISTRIBUTED_TASKS, "NODE_TIMEOUT": 1.0, "HEARTBEAT_INTERVAL": 0.2}
    with override_settings(DISTRIBUTED_TASKS=conf):
        orchestrator = lead()
        settle(orchestrator, redis)
        run = row("unseen", "unseen@test", state="RUNNING", executions=1)
        assert "failed" not in orchestrator.tick()["lifeline"]
        lost_after_node_timeout(orchestrator, run, poll, "the absence to last NODE_TIMEOUT")


def lost_after_node_timeout(orchestrator, run, poll, waiting_for: str) -> None:
    """``run`` is RUNNING still, and ends FAILED(node_lost) once NODE_TIMEOUT passed."""
    run.refresh_from_db()
    assert run.state == "RUNNING"
    poll(lambda: orchestrator.tick()["lifeline"].get("failed") == 1, timeout=5,
         message=waiting_for)  # fmt: skip
    run.refresh_from_db()
    assert (run.state, run.reason) == ("FAILED", "node_lost")


def redis_ms(redis) -> int:
    seconds, micros = redis.time()
    return seconds * 1000 + micros // 1000


def test_a_silence_nobody_could_break_is_no_death(node, redis, poll):
    """Redis away for everyone (the leader's ticks and every heartbeat) longer than
    NODE_TIMEOUT: once it answers, a node that has not beaten again yet is not dead, its
    run not ended (nor executed twice); silent for NODE_TIMEOUT after the gap, it is."""
    conf = {**settings.DISTRIBUTED_TASKS, "NODE_TIMEOUT": 1.0, "HEARTBEAT_INTERVAL": 0.2}
    with override_settings(DISTRIBUTED_TASKS=conf):
        orchestrator = lead()
        settle(orchestrator, redis)
        now = redis_ms(redis)
        redis.zadd(keys.members_key(), {"paused@test": now - 8_000})  # beat last 8 s ago
        redis.set(keys.pulse_key(), now - 7_900)  # ...and then nobody reached Redis
        run = row("held", "paused@test", state="RUNNING", executions=1)
        assert "failed" not in orchestrator.tick()["lifeline"]
        start, end = map(int, redis.get(keys.gap_key()).split(b":"))
        assert start == now - 7_900 and end >= now
        assert "paused@test" not in live_nodes().stale
        lost_after_node_timeout(orchestrator, run, poll, "NODE_TIMEOUT of silence after the gap")


def test_a_redis_that_flaps_extends_the_gap(redis):
    """Redis answered for a moment between two outages, too briefly for every node to beat:
    the two gaps are one, so a node that missed that moment is not stale."""
    now = redis_ms(redis)
    redis.zadd(keys.members_key(), {"paused@test": now - 10_000})
    redis.set(keys.gap_key(), f"{now - 9_900}:{now - 5_000}")  # the first outage
    redis.set(keys.pulse_key(), now - 4_800)  # answered briefly, then away again
    assert "paused@test" not in live_nodes().stale
    start, end = map(int, redis.get(keys.gap_key()).split(b":"))
    assert start == now - 9_900 and end >= now


@pytest.mark.parametrize(
    ("gap", "pulse"),
    [
        ("no colon", "x"),
        ("a:b", "1.5e"),
        (":", ""),
        ("0:1e400", "1e400"),  # Lua reads both as infinity
        ("0:9e15", "9e15"),  # after Redis's own clock
        ("nan:nan", "nan"),
        ("-inf:inf", "-5"),
    ],
)
def test_a_gap_or_pulse_that_is_not_ours_reads_as_none(redis, gap, pulse):
    """Review: a gap without a colon (a hand edit, a foreign writer) made every heartbeat
    and cluster read fail with a script error; an infinite or future gap excused every
    silence for good, and such a pulse was never written again."""
    now = redis_ms(redis)
    redis.zadd(keys.members_key(), {"gone@test": now - 10_000})
    redis.set(keys.gap_key(), gap)
    redis.set(keys.pulse_key(), pulse)
    assert "gone@test" in live_nodes().stale  # no gap excuses the silence
    assert now <= int(redis.get(keys.pulse_key())) <= redis_ms(redis)


def test_a_silence_while_others_reached_redis_is_a_death(node, redis):
    """The same silence while the node heartbeats of others (or the leader) reached
    Redis: no gap, the node is dead at once."""
    orchestrator = lead()
    settle(orchestrator, redis)
    redis.zadd(keys.members_key(), {"gone@test": redis_ms(redis) - 8_000})
    run = row("held", "gone@test", state="RUNNING", executions=1)
    assert orchestrator.tick()["lifeline"]["failed"] == 1
    assert not redis.exists(keys.gap_key())
    run.refresh_from_db()
    assert (run.state, run.reason) == ("FAILED", "node_lost")


def test_a_leader_whose_lease_vanished_does_not_act(node, redis):
    orchestrator = lead()
    settle(orchestrator, redis)
    redis.delete(keys.lease_key())  # a flush, a restart: no rival, but no lease either
    assert orchestrator.is_leader()  # locally still valid...
    assert orchestrator.tick() is None  # ...but it checks Redis before acting


def test_a_retry_no_live_node_can_take_waits_queued_on_no_node(heavy, redis, dead_node, poll):
    """Review item 12: it stayed RUNNING on the dead node for ever (waiting_for_a_node)."""
    orchestrator = lead()
    settle(orchestrator, redis)
    run = row("orphan", dead_node("gone@test"), state="RUNNING", executions=1, max_attempts=2)
    retried = []

    def on_retried(sender, message, previous, outcome, **kwargs):
        retried.append((message.attempt, message.node, previous.attempt, outcome.reason))

    signals.run_retried.connect(on_retried, weak=False)
    try:
        assert orchestrator.tick()["lifeline"] == {"parked": 1, "nodes_lost": 1}
    finally:
        signals.run_retried.disconnect(on_retried)
    # The signal a failure's next attempt sends (it raised TypeError, swallowed on commit).
    assert retried == [(2, "", 1, "node_lost")]
    run.refresh_from_db()
    assert (run.state, run.node, run.attempt) == ("QUEUED", "", 2)
    assert claims.read("default", "orphan")["state"] == "QUEUED"
    late = Heartbeat(NodeInfo(name="late@test"))  # a node serving "default" appears
    late.start()
    try:
        poll(lambda: "late@test" in live_nodes().nodes, message="late node live")
        assert orchestrator.tick()["lifeline"] == {"moved": 1, "nodes_joined": 1}
    finally:
        late.stop(leave=True)
    run.refresh_from_db()
    assert (run.state, run.node, run.attempt) == ("QUEUED", "late@test", 3)
    assert len(queued(redis, "late@test")) == 1


def test_runs_no_live_node_can_take_do_not_hold_up_the_rest_of_the_batch(heavy, redis, dead_node):
    """Review: QUEUED runs whose task list no live node serves came first in every tick's
    batch (oldest first) and could not move, so with a batch of them the runs of dead
    nodes behind them (a RUNNING one too) were never reached and stayed RUNNING."""
    conf = {**settings.DISTRIBUTED_TASKS, "BATCH_SIZE": 2}
    with override_settings(DISTRIBUTED_TASKS=conf):
        orchestrator = lead()
        settle(orchestrator, redis)
        gone = dead_node("gone@test")
        for i in range(3):
            row(f"waiting-{i}", gone)  # task list "default": no live node serves it
        running = row("running", gone, state="RUNNING", executions=1, task_list="ci")
        queued = row("queued", gone, task_list="ci")
        report = orchestrator.tick()["lifeline"]
    assert report == {"failed": 1, "moved": 1}
    running.refresh_from_db(), queued.refresh_from_db()
    assert (running.state, running.reason) == ("FAILED", "node_lost")
    assert (queued.state, queued.node, queued.attempt) == ("QUEUED", "heavy@test", 2)
    waiting = TaskRun.objects.filter(name__startswith="waiting-")
    # They wait under the dead node's name for a node that serves "default".
    assert set(waiting.values_list("node", "state")) == {(gone, "QUEUED")}


def test_a_former_leader_is_fenced_out(node, redis, dead_node):
    old = lead("old@test")
    settle(old, redis)
    old_epoch = old.epoch
    redis.delete(keys.lease_key())  # its lease expired while it was paused
    new = lead("new@test")
    ghost = row("ghost-run", dead_node("gone@test"), state="RUNNING", executions=1)
    old.lease._value = json.dumps({"forged": True})  # it still believes it leads
    old._ready_epoch = old.lease.epoch = old_epoch
    old.lease._valid_until = float("inf")
    old.lease.verify = lambda: True  # it still sees its lease, e.g. through a partition
    report = old.tick()
    assert "lifeline" not in report  # refused at its first database write
    assert not old.is_leader()
    ghost.refresh_from_db()
    assert ghost.state == "RUNNING"  # the old leader changed nothing
    new.tick()
    ghost.refresh_from_db()
    assert (ghost.state, ghost.orchestrator_epoch) == ("FAILED", new.epoch)
