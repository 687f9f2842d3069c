"""The start walk against real Redis and PostgreSQL, with a node that consumes nothing."""

import json
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from distributed_tasks import (
    AlreadyRunning,
    ClusterUnavailable,
    InvalidName,
    NameReserved,
    NotRegistered,
    NotSerializable,
    PayloadTooLarge,
    State,
    claims,
    get_status,
    keys,
    start_async,
    start_many,
)
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.support import queued

pytestmark = pytest.mark.django_db(transaction=True)


def queued_messages(redis, node="idle@test"):
    return [json.loads(raw) for raw in queued(redis, node)]


def bodies(redis, node="idle@test"):
    out = []
    for message in queued_messages(redis, node):
        import base64

        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        out.append(args[0])
    return out


def nothing_written(redis, name):
    assert not TaskRun.objects.filter(name=name).exists()
    assert claims.read("default", name) == {}
    assert queued_messages(redis) == []


def test_start_records_claims_and_publishes(node, redis):
    handle = start_async(tasks.add, [1, 2], name="sum-1")
    assert (handle.name, handle.node, handle.attempt, handle.existing) == (
        "sum-1",
        node.name,
        1,
        False,
    )
    run = TaskRun.objects.get(name="sum-1")
    assert (run.state, run.active_name, run.node, run.run_id) == (
        "QUEUED",
        "sum-1",
        node.name,
        handle.run_id,
    )
    assert (run.function, run.args) == ("tests.tasks.add", [1, 2])
    assert claims.read("default", "sum-1")["state"] == "QUEUED"
    (body,) = bodies(redis)
    assert (body["run_id"], body["attempt"], body["node"]) == (handle.run_id, 1, node.name)
    status = get_status("sum-1")
    assert (status.state, status.run_id, status.node) == (State.QUEUED, handle.run_id, node.name)


def test_second_start_of_an_active_name_is_refused(node, redis):
    first = start_async(tasks.add, [1, 2], name="dup")
    with pytest.raises(AlreadyRunning) as info:
        start_async(tasks.add, [3, 4], name="dup")
    assert (info.value.run_id, info.value.node, info.value.state) == (
        first.run_id,
        node.name,
        "QUEUED",
    )
    assert "already QUEUED" in str(info.value)
    assert TaskRun.objects.filter(name="dup").count() == 1
    assert len(queued_messages(redis)) == 1


def test_return_existing_hands_back_the_active_run(node):
    first = start_async(tasks.add, [1, 2], name="dup")
    again = start_async(tasks.add, [1, 2], name="dup", on_conflict="return_existing")
    assert (again.run_id, again.node, again.existing) == (first.run_id, first.node, True)


def test_same_name_in_another_task_list_is_independent(node):
    start_async(tasks.add, [1, 2], name="n", task_list="a")
    start_async(tasks.add, [1, 2], name="n", task_list="b")
    assert TaskRun.objects.filter(name="n").count() == 2
    assert get_status("n", "a").state == State.QUEUED
    assert get_status("n").state == State.NOT_FOUND


def test_no_node_serving_the_task_list_says_which_serve_others(heavy):
    """Live nodes that all serve other task lists: the error says so, not "no heartbeat"."""
    with pytest.raises(ClusterUnavailable) as info:
        start_async(tasks.add, [1, 2], name="report", task_list="reports")
    assert str(info.value) == (
        "No live node serves task list 'reports'; the live nodes (heavy@test) serve others: "
        "start one with `manage.py dt_worker --task-list reports`."
    )


def test_no_live_node_is_cluster_unavailable(redis):
    with pytest.raises(ClusterUnavailable, match="No live node"):
        start_async(tasks.add, [1, 2], name="lonely")
    nothing_written(redis, "lonely")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: start_async("os.system", ["true"], name="bad"), NotRegistered),
        (lambda: start_async(tasks.add, [1, 2], name="bad", callback="os.remove"), NotRegistered),
        (lambda: start_async(tasks.add, [{1, 2}], name="bad"), NotSerializable),
        (lambda: start_async(tasks.add, ["x" * 300_000], name="bad"), PayloadTooLarge),
    ],
)
def test_bad_input_writes_nothing(node, redis, call, error):
    with pytest.raises(error):
        call()
    nothing_written(redis, "bad")


@pytest.mark.parametrize("name", ["", "x" * 201, "bell\x07", "line\nbreak"])
def test_bad_names_write_nothing(node, redis, name):
    with pytest.raises(InvalidName):
        start_async(tasks.add, [1, 2], name=name)
    assert TaskRun.objects.count() == 0
    assert queued_messages(redis) == []


def test_database_backstops_a_lost_claim(node, redis):
    first = start_async(tasks.add, [1, 2], name="backstop")
    redis.delete(keys.run_key("default", "backstop"))
    with pytest.raises(AlreadyRunning) as info, transaction.atomic():  # claims first
        start_async(tasks.add, [1, 2], name="backstop")
    assert info.value.run_id == first.run_id
    # The refused start released its own claim and put the real one back.
    assert claims.read("default", "backstop")["run_id"] == first.run_id
    assert TaskRun.objects.filter(name="backstop").count() == 1


def test_a_single_start_refused_by_the_database_writes_nothing_to_redis(node, redis):
    first = start_async(tasks.add, [1, 2], name="backstop")
    redis.delete(keys.run_key("default", "backstop"))
    loads = redis.hgetall(keys.loads_key())
    with pytest.raises(AlreadyRunning) as info:
        start_async(tasks.add, [1, 2], name="backstop")
    assert info.value.run_id == first.run_id
    assert claims.read("default", "backstop") == {}  # get_status warms it on a miss
    assert redis.hgetall(keys.loads_key()) == loads
    assert [b["run_id"] for b in bodies(redis)] == [first.run_id]
    assert get_status("backstop").run_id == first.run_id


def finish(name, state, ago=0.0):
    TaskRun.objects.filter(name=name).update(
        state=state, active_name=None, finished_at=timezone.now() - timedelta(seconds=ago)
    )
    run = TaskRun.objects.get(name=name)
    ttl = claims.ttl_ms(run.state, run.finished_at.timestamp(), time.time())
    claims.update("default", name, run.run_id, run.attempt, claims.fields_for_run(run), ttl=ttl)


def test_a_status_reads_the_same_from_the_cache_and_from_the_database(node, redis):
    """A DONE run has no error: None from either, not "" from the row."""
    start_async(tasks.add, [1, 2], name="same")
    finish("same", "DONE")
    cached = get_status("same")
    redis.delete(keys.run_key("default", "same"))
    stored = get_status("same")
    assert (cached.error, cached.error_type, cached.reason) == (None, None, None)
    assert stored == cached


@pytest.mark.parametrize(
    ("state", "reuse", "allowed"),
    [
        ("DONE", "allow", True),
        ("FAILED", "allow", True),
        ("DONE", "reject", False),
        ("FAILED", "reject", False),
        ("DONE", "allow_failed_only", False),
        ("FAILED", "allow_failed_only", True),
    ],
)
@pytest.mark.parametrize("flushed", [False, True], ids=["cached", "flushed"])
def test_reuse_policy_of_finished_names(node, redis, state, reuse, allowed, flushed):
    start_async(tasks.add, [1, 2], name="again")
    finish("again", state)
    if flushed:
        redis.flushdb()
        node_beat = node  # the heartbeat re-registers the node within a second
        from distributed_tasks.nodes import live_nodes
        from tests.support import poll_until

        poll_until(lambda: node_beat.name in live_nodes().nodes, message="node back")
    if allowed:
        assert start_async(tasks.add, [1, 2], name="again", reuse=reuse).name == "again"
        assert TaskRun.objects.filter(name="again").count() == 2
    else:
        with pytest.raises(NameReserved, match="reuse policy"):
            start_async(tasks.add, [1, 2], name="again", reuse=reuse)
        assert TaskRun.objects.filter(name="again").count() == 1


def test_reuse_window_ends_after_cleanup_timeout(node):
    start_async(tasks.add, [1, 2], name="old")
    finish("old", "DONE", ago=120)
    assert start_async(tasks.add, [1, 2], name="old", reuse="reject").name == "old"


def test_stale_claim_without_a_row_is_replaced(node, redis):
    stale = {
        "state": "QUEUED",
        "run_id": "deadbeef" * 4,
        "node": node.name,
        "attempt": 1,
        "queued_at": time.time() - 600,
    }
    claims.claim("default", "orphan", stale, reuse="allow")
    handle = start_async(tasks.add, [1, 2], name="orphan")
    assert claims.read("default", "orphan")["run_id"] == handle.run_id


def _fresh_claim(node, name: str) -> str:
    run_id = "c0ffee" * 5 + "00"
    fresh = {"state": "QUEUED", "run_id": run_id, "node": node.name, "attempt": 1,
             "queued_at": time.time()}  # fmt: skip
    claims.claim("default", name, fresh, reuse="allow")
    return run_id


def test_fresh_claim_without_a_row_is_respected_by_a_start_that_claims_first(node):
    """A start inside a transaction claims before its INSERT: an in-flight claim refuses it."""
    _fresh_claim(node, "in-flight")
    with pytest.raises(AlreadyRunning), transaction.atomic():
        start_async(tasks.add, [1, 2], name="in-flight")


def test_a_single_start_is_decided_by_the_database_not_by_a_claim_without_a_row(node, redis):
    """database_first.py: the row decides; the claim's start, if it ever inserts, is refused."""
    _fresh_claim(node, "in-flight")
    handle = start_async(tasks.add, [1, 2], name="in-flight")
    assert TaskRun.objects.get(name="in-flight").run_id == handle.run_id
    assert claims.read("default", "in-flight")["run_id"] == handle.run_id
    assert [b["run_id"] for b in bodies(redis)] == [handle.run_id]


def test_get_status_of_unknown_names_is_not_found():
    status = get_status("never-started")
    assert (status.state, status.run_id) == (State.NOT_FOUND, None)


def test_get_status_falls_back_to_the_database_and_warms_the_cache(node, redis):
    handle = start_async(tasks.add, [1, 2], name="cold")
    redis.delete(keys.run_key("default", "cold"))
    status = get_status("cold")
    assert (status.state, status.run_id) == (State.QUEUED, handle.run_id)
    assert claims.read("default", "cold")["run_id"] == handle.run_id


def test_finished_names_report_for_cleanup_timeout_then_not_found(node, redis):
    start_async(tasks.add, [1, 2], name="short")
    finish("short", "DONE", ago=30)
    assert get_status("short").state == State.DONE
    finish("short", "DONE", ago=61)
    assert get_status("short").state == State.NOT_FOUND
    redis.flushdb()
    assert get_status("short").state == State.NOT_FOUND  # also from the database


@override_settings(DISTRIBUTED_TASKS={"REDIS_URL": settings.REDIS_URL, "CLEANUP_TIMEOUT": 0.3})
def test_cleanup_timeout_is_a_setting(node, poll):
    start_async(tasks.add, [1, 2], name="quick")
    finish("quick", "FAILED")
    assert get_status("quick").state == State.FAILED
    poll(lambda: get_status("quick").state == State.NOT_FOUND, timeout=3, message="expiry")


def test_publish_waits_for_the_callers_commit(node, redis):
    with transaction.atomic():
        handle = start_async(tasks.add, [1, 2], name="in-tx")
        assert queued_messages(redis) == []
    (body,) = bodies(redis)
    assert body["run_id"] == handle.run_id


def test_rolled_back_start_leaves_a_claim_that_a_later_start_replaces(node, redis, monkeypatch):
    with pytest.raises(RuntimeError), transaction.atomic():
        start_async(tasks.add, [1, 2], name="rolled-back")
        raise RuntimeError("the view failed")
    assert not TaskRun.objects.filter(name="rolled-back").exists()
    assert queued_messages(redis) == []
    monkeypatch.setattr(claims, "CLAIM_GRACE", 0.0)
    assert start_async(tasks.add, [1, 2], name="rolled-back").name == "rolled-back"


@pytest.mark.parametrize(
    "odd",
    [
        {"run_id": "not-a-uuid", "queued_at": "1"},
        {"run_id": "ab" * 16, "queued_at": "soon", "attempt": "one"},
        {"run_id": "ab" * 16},  # no time at all
        {"run_id": "ab" * 16, "queued_at": "nan"},
        {"queued_at": "1"},  # no run id
        {"run_id": "ab" * 16, "queued_at": "1", "started_at": "1e20"},  # past year 9999
    ],
)
@pytest.mark.parametrize("walk", ["database first", "claim first"])
def test_a_claim_not_written_by_a_start_is_replaced_not_raised(node, redis, odd, walk):
    """Review: a name key holding values that no start writes (a hand edit, a foreign
    writer) made every start of the name raise ValueError or ValidationError, and its
    status read raise too; the database holds no run of it."""
    key = keys.run_key("default", "odd")
    redis.hset(key, mapping={"state": "QUEUED", "task_list": "default", "name": "odd", **odd})
    redis.hset(key, "progress", "half")  # a cached field that is not a number
    assert get_status("odd").state == "NOT_FOUND"  # the database's answer
    if walk == "claim first":  # a batch claims in Redis before its INSERT
        (handle,) = start_many([{"func": tasks.add, "args": [1, 2], "name": "odd"}])
    else:
        handle = start_async(tasks.add, [1, 2], name="odd")
    assert get_status("odd").run_id == handle.run_id


def test_a_message_without_a_timeout_carries_none_whatever_the_entry_task_s_limits(
    node, redis, monkeypatch
):
    """Review: with ``task_time_limit``/``task_soft_time_limit`` (or an annotation) on the
    entry task, apply_async put those limits in the message of a run with no timeout; the
    worker found them disagreeing with the row and dropped every such run as forged."""
    from distributed_tasks import envelope, runner
    from distributed_tasks.celery import TASK_NAME, get_app

    monkeypatch.setattr(envelope, "client", lambda: None)  # through apply_async (CELERY_APP)
    entry = get_app().tasks[TASK_NAME]
    monkeypatch.setattr(entry, "time_limit", 60)
    monkeypatch.setattr(entry, "soft_time_limit", 50)
    monkeypatch.setattr(entry, "_exec_options", None)  # Celery caches them per task
    start_many([{"func": tasks.add, "args": [1, 2], "name": "limited"}])
    (message,) = queued_messages(redis)
    assert message["headers"]["timelimit"] == [None, None]
    (body,) = bodies(redis)
    outcome = runner.execute(body, limits=tuple(message["headers"]["timelimit"]))
    assert (outcome.state, outcome.result) == (State.DONE, 3)


def test_start_many_reports_each_entry(node, redis):
    start_async(tasks.add, [0, 0], name="batch-2")
    results = start_many(
        [{"func": tasks.add, "args": [i, i], "name": f"batch-{i}"} for i in range(5)]
    )
    assert [type(r).__name__ for r in results] == [
        "TaskHandle",
        "TaskHandle",
        "AlreadyRunning",
        "TaskHandle",
        "TaskHandle",
    ]
    assert TaskRun.objects.count() == 5
    assert len(queued_messages(redis)) == 5


def test_start_many_with_a_duplicate_inside_the_batch(node):
    results = start_many([{"func": tasks.add, "args": [1, 1], "name": "twice"}] * 2)
    assert isinstance(results[1], AlreadyRunning)
    assert results[1].run_id == results[0].run_id


def test_one_batch_claim_answers_each_kind_of_entry(node, redis):
    """A batch claims in one script call: each entry gets its own answer, and only the
    runs that start keep a load count."""
    active = start_async(tasks.add, [0, 0], name="active")
    start_async(tasks.add, [0, 0], name="done")
    finish("done", "DONE")
    orphan = {"state": "QUEUED", "run_id": "deadbeef" * 4, "node": node.name, "attempt": 1,
              "queued_at": time.time() - 600}  # fmt: skip
    claims.claim("default", "orphan", orphan, reuse="allow")
    odd = 'ünï "quoted" \\ {tag} 🙂'
    redis.hdel(keys.loads_key(), node.name)
    results = start_many(
        [
            {"func": tasks.add, "args": [1, 1], "name": "active"},
            {"func": tasks.add, "args": [1, 1], "name": "done", "reuse": "reject"},
            {"func": tasks.add, "args": [1, 1], "name": "orphan"},
            {"func": tasks.add, "args": [1, 1], "name": odd},
            {"func": tasks.add, "args": [1, 1], "name": odd},
            {"func": tasks.add, "args": [1, 1], "name": "active", "on_conflict": "return_existing"},
        ]
    )
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["AlreadyRunning", "NameReserved", "TaskHandle", "TaskHandle",
                     "AlreadyRunning", "TaskHandle"]  # fmt: skip
    assert results[0].run_id == results[5].run_id == active.run_id and results[5].existing
    assert results[4].run_id == results[3].run_id
    assert claims.read("default", "orphan")["run_id"] == results[2].run_id
    assert claims.read("default", odd)["run_id"] == results[3].run_id
    assert get_status(odd).state == State.QUEUED
    assert int(redis.hget(keys.loads_key(), node.name)) == 2  # orphan and odd


def test_start_many_validates_everything_first(node, redis):
    with pytest.raises(NotSerializable):
        start_many(
            [
                {"func": tasks.add, "args": [1, 1], "name": "ok"},
                {"func": tasks.add, "args": [object()], "name": "bad"},
            ]
        )
    assert TaskRun.objects.count() == 0
    assert queued_messages(redis) == []


def test_cancel_ends_a_queued_run_and_frees_the_name(node):
    from distributed_tasks import cancel

    start_async(tasks.add, [1, 2], name="unwanted")
    status = cancel("unwanted")
    assert (status.state, status.reason) == (State.FAILED, "cancelled")
    run = TaskRun.objects.get(name="unwanted")
    assert (run.state, run.reason, run.active_name) == ("FAILED", "cancelled", None)
    assert start_async(tasks.add, [1, 2], name="unwanted").name == "unwanted"


def test_a_cancel_rolled_back_with_its_transaction_changes_nothing(node, redis):
    """The cache, the run's own check and the signals follow the caller's commit: a
    rolled-back cancel neither shows FAILED for a run that stays QUEUED nor stops a
    RUNNING one."""
    from distributed_tasks import cancel, keys, signals

    start_async(tasks.add, [1, 2], name="kept")
    start_async(tasks.add, [1, 2], name="busy")
    TaskRun.objects.filter(name="busy").update(state="RUNNING")
    redis.hset(keys.run_key("default", "busy"), "state", "RUNNING")
    sent = []
    for signal in (signals.run_finished, signals.run_cancel_requested):
        signal.connect(lambda sender, **kw: sent.append(kw), weak=False, dispatch_uid="t")
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            assert cancel("kept").state == State.FAILED  # as the transaction sees it
            assert cancel("busy", by="erin").cancel_requested_by == "erin"
            raise RuntimeError("the caller's transaction rolls back")
        assert get_status("kept").state == State.QUEUED
        assert get_status("busy").cancel_requested_at is None
        assert sent == []
        with transaction.atomic():
            cancel("kept")
            assert sent == []  # not before the commit
        assert get_status("kept").state == State.FAILED and len(sent) == 1
    finally:
        for signal in (signals.run_finished, signals.run_cancel_requested):
            signal.disconnect(dispatch_uid="t")


def test_cancel_asks_a_running_run_and_refuses_finished_and_unknown_runs(node, redis):
    from distributed_tasks import NotCancellable, TaskNotFound, cancel, keys, signals

    with pytest.raises(TaskNotFound, match="never ran"):
        cancel("nothing")
    handle = start_async(tasks.add, [1, 2], name="busy")
    TaskRun.objects.filter(name="busy").update(state="RUNNING")
    redis.hset(keys.run_key("default", "busy"), "state", "RUNNING")
    asked = []
    signals.run_cancel_requested.connect(
        lambda sender, **kw: asked.append(kw), weak=False, dispatch_uid="t"
    )
    try:
        status = cancel("busy", by="carol", force=True, grace=3)
        again = cancel("busy", by="dave")  # the first asker and time stay
    finally:
        signals.run_cancel_requested.disconnect(dispatch_uid="t")
    assert (status.state, status.cancel_requested_by) == (State.RUNNING, "carol")
    assert (again.cancel_requested_by, again.cancel_requested_at) == (
        "carol",
        status.cancel_requested_at,
    )
    row = TaskRun.objects.get(name="busy")
    assert (row.state, row.cancel_requested_by) == ("RUNNING", "carol")
    assert 2.9 < (row.cancel_deadline - row.cancel_requested_at).total_seconds() < 3.1
    deadlines = redis.hgetall(keys.node_cancel_key(handle.node))
    assert list(deadlines) == [f"{handle.run_id}:1".encode()]
    assert [(a["by"], a["force"]) for a in asked] == [("carol", True), ("carol", False)]
    finished_at = timezone.now()
    TaskRun.objects.filter(name="busy").update(
        state="DONE", active_name=None, finished_at=finished_at
    )
    with pytest.raises(NotCancellable, match="already finished DONE at ") as info:
        cancel("busy")
    assert f"DONE at {finished_at:%Y-%m-%d %H:%M:%S} UTC (run " in str(info.value)
    assert "never ran" not in str(info.value)
    assert (info.value.state, info.value.finished_at) == ("DONE", finished_at)


def test_retry_runs_a_failed_run_again_as_its_next_attempt(node, redis):
    from distributed_tasks import InvalidState, retry

    first = start_async(tasks.add, [1, 2], name="again-please")
    finish("again-please", "FAILED")
    handle = retry("again-please")
    assert (handle.run_id, handle.attempt, handle.node) == (first.run_id, 2, node.name)
    run = TaskRun.objects.get(name="again-please")
    assert (run.state, run.attempt, run.active_name, run.max_attempts) == (
        "QUEUED",
        2,
        "again-please",
        1,
    )
    assert f"{first.run_id}:2" in {json.loads(b)["headers"]["id"] for b in queued(redis, node.name)}
    with pytest.raises(AlreadyRunning):
        retry("again-please")
    TaskRun.objects.filter(name="again-please").update(state="DONE", active_name=None)
    with pytest.raises(InvalidState, match="only FAILED runs can be retried"):
        retry("again-please")


def test_retry_inside_a_transaction_publishes_after_the_commit(node, redis, monkeypatch):
    """Review item 10: the admin action under ATOMIC_REQUESTS published before its commit
    (the worker could not see the new attempt); a failed write kept the claim."""
    from django.db import OperationalError

    from distributed_tasks import retry
    from distributed_tasks.store import OrmStore

    start_async(tasks.add, [1, 2], name="in-txn")
    finish("in-txn", "FAILED")
    redis.delete(*keys.queue_keys(node.name))
    with transaction.atomic():
        retry("in-txn")
        assert queued(redis, node.name) == []
    assert len(queued(redis, node.name)) == 1
    finish("in-txn", "FAILED")
    monkeypatch.setattr(
        OrmStore, "reactivate", lambda *a, **k: (_ for _ in ()).throw(OperationalError("gone"))
    )
    with pytest.raises(OperationalError):
        retry("in-txn")
    assert claims.read("default", "in-txn").get("state") != "QUEUED"  # the claim went back


def test_retry_of_unknown_names(node):
    from distributed_tasks import TaskNotFound, retry

    with pytest.raises(TaskNotFound):
        retry("never-ran")


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "10", True, 86401])
def test_cancel_refuses_a_grace_that_is_not_seconds(node, grace):
    from distributed_tasks import InvalidOption, cancel

    start_async(tasks.add, [1, 2], name="graceful")
    with pytest.raises(InvalidOption, match="grace must be a number of seconds from 0 to 86400"):
        cancel("graceful", force=True, grace=grace)
    assert TaskRun.objects.get(name="graceful").state == State.QUEUED


def test_who_asked_is_stored_whatever_it_holds(node, redis):
    from distributed_tasks import cancel, keys

    start_async(tasks.add, [1, 2], name="asked")
    TaskRun.objects.filter(name="asked").update(state="RUNNING")
    redis.hset(keys.run_key("default", "asked"), "state", "RUNNING")
    status = cancel("asked", by="nul \x00 " + "x" * 300)
    row = TaskRun.objects.get(name="asked")
    assert (
        row.cancel_requested_by.startswith("nul \\x00 xx") and len(row.cancel_requested_by) == 255
    )
    assert status.cancel_requested_by == row.cancel_requested_by


def test_a_single_start_replaces_the_status_a_finished_run_left_whatever_its_clock(node, redis):
    """The status is replaced by state, never by comparing the queued_at of two hosts."""
    start_async(tasks.add, [1, 2], name="skewed")
    finish("skewed", "DONE")
    run_key = keys.run_key("default", "skewed")
    redis.hset(run_key, mapping={"state": "DONE", "queued_at": time.time() + 3600})
    handle = start_async(tasks.add, [1, 2], name="skewed")
    assert claims.read("default", "skewed")["run_id"] == handle.run_id
    assert get_status("skewed").state == State.QUEUED


def test_a_status_from_the_database_is_the_active_runs_whatever_the_clocks(node, redis):
    """Review: a cache miss read the run with the latest queued_at, a producer host's
    clock: a finished run stamped by a host whose clock ran an hour ahead hid the active
    run that followed it, and retry() took that finished run for the newest."""
    from distributed_tasks import retry

    start_async(tasks.add, [1, 2], name="skewed")
    finish("skewed", "FAILED")
    TaskRun.objects.filter(name="skewed").update(queued_at=timezone.now() + timedelta(hours=1))
    handle = start_async(tasks.add, [1, 2], name="skewed")
    redis.delete(keys.run_key("default", "skewed"))
    status = get_status("skewed")
    assert (status.state, status.run_id) == (State.QUEUED, handle.run_id)
    with pytest.raises(AlreadyRunning):
        retry("skewed")


def test_names_that_differ_only_in_case_or_trailing_spaces_are_distinct(node, redis):
    """MySQL/MariaDB's default collations made "Build" and "build" (and "trail" and
    "trail ") one name to the unique active name: a start of one was refused with the
    other's run, and a status read from the database found the other's run. Migration
    0009 gives those columns an exact collation there; elsewhere names were exact."""
    names = ["Build", "build", "BUILD", "trail", "trail ", "é", "e"]
    handles = {name: start_async(tasks.add, [1, 2], name=name) for name in names}
    assert len({h.run_id for h in handles.values()}) == len(names)
    redis.flushdb()  # statuses from the database
    for name, handle in handles.items():
        assert get_status(name).run_id == handle.run_id
