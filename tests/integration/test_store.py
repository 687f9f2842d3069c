"""Fencing in the database: each transition matches one (run, attempt, node, state) only."""

import uuid

import pytest
from django.db import IntegrityError

from distributed_tasks import AlreadyRunning, State, inserts
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store
from distributed_tasks.types import Outcome, Reason
from tests.support import TRICKY

pytestmark = pytest.mark.django_db


def new_run(name="n", node="w1@h", **extra) -> TaskRun:
    run = TaskRun(
        id=uuid.uuid4(), name=name, active_name=name, function="tests.tasks.add", node=node, **extra
    )
    get_store().insert(run)
    return run


def message(run: TaskRun, **override) -> RunMessage:
    fields = {
        "run_id": run.run_id,
        "attempt": run.attempt,
        "node": run.node,
        "task_list": run.task_list,
        "name": run.name,
        "function": run.function,
    }
    return RunMessage(**{**fields, **override})


def test_unique_active_name_maps_to_already_running():
    first = new_run()
    with pytest.raises(AlreadyRunning) as info:
        new_run()
    assert (info.value.run_id, info.value.node) == (first.run_id, "w1@h")


def test_finished_runs_free_the_name_but_keep_their_row():
    first = new_run()
    store = get_store()
    assert store.mark_running(message(first), "inc")
    assert store.mark_finished(message(first), Outcome.done(3))
    second = new_run()
    assert TaskRun.objects.filter(name="n").count() == 2
    assert store.latest("default", "n").run_id == second.run_id
    assert store.active("default", "n").run_id == second.run_id


def test_constraint_holds_without_the_store():
    new_run()
    with pytest.raises(IntegrityError):
        TaskRun.objects.create(name="n", active_name="n", function="f")


def test_mark_running_is_fenced_by_attempt_node_and_state():
    run = new_run()
    store = get_store()
    assert not store.mark_running(message(run, attempt=2), "inc")
    assert not store.mark_running(message(run, node="w2@h"), "inc")
    assert store.mark_running(message(run), "inc")
    assert not store.mark_running(message(run), "inc")  # a duplicate delivery
    run.refresh_from_db()
    assert (run.state, run.executions, run.incarnation) == (State.RUNNING, 1, "inc")


def test_mark_finished_needs_running_at_the_same_attempt():
    run = new_run()
    store = get_store()
    assert not store.mark_finished(message(run), Outcome.done(1))  # never started
    store.mark_running(message(run), "inc")
    assert not store.mark_finished(message(run, attempt=2), Outcome.done(1))
    assert store.mark_finished(message(run), Outcome.done({"a": 1}))
    assert not store.mark_finished(message(run), Outcome.done(2))
    run.refresh_from_db()
    assert (run.state, run.result, run.active_name) == (State.DONE, {"a": 1}, None)
    assert run.finished_at and run.duration is not None


def test_mark_lost_ends_queued_or_running_once():
    run = new_run()
    store = get_store()
    outcome = Outcome.failed(Reason.WORKER_LOST, message="gone")
    assert store.mark_lost(message(run), outcome)
    assert not store.mark_lost(message(run), outcome)
    run.refresh_from_db()
    assert (run.state, run.reason, run.error) == (State.FAILED, "worker_lost", "gone")


def test_failed_outcome_keeps_type_message_and_traceback():
    try:
        {}["missing"]
    except KeyError as exc:
        outcome = Outcome.failed(Reason.EXCEPTION, exc)
    assert (outcome.error_type, outcome.error) == ("KeyError", "'missing'")
    assert "Traceback" in outcome.traceback and "KeyError" in outcome.traceback


def test_find_and_all_are_the_task_records():
    a = new_run(name="a", task_list="files")
    new_run(name="b", task_list="files")
    new_run(name="c")
    assert TaskRun.find("files", "a").run_id == a.run_id
    assert sorted(r.name for r in TaskRun.all("files")) == ["a", "b"]
    from distributed_tasks import TaskNotFound

    with pytest.raises(TaskNotFound, match="'zzz'"):
        TaskRun.find("files", "zzz")


def test_a_batch_stores_every_value_as_the_orm_does():
    """The batch INSERT (one JSON parameter on PostgreSQL) against Django's bulk_create."""
    tricky = TRICKY
    ours = [inserts.new_row(id=uuid.uuid4(), name=f"a{i}", active_name=f"a{i}", **tricky)
            for i in range(3)]  # fmt: skip
    assert get_store().insert_many(ours) == [None] * 3
    TaskRun.objects.bulk_create(
        [TaskRun(id=uuid.uuid4(), name=f"b{i}", active_name=f"b{i}", **tricky) for i in range(3)]
    )
    columns = [
        f.attname
        for f in TaskRun._meta.concrete_fields
        if f.attname not in {"id", "name", "active_name"}
    ]
    stored = {r.name: [getattr(r, c) for c in columns] for r in TaskRun.objects.all()}
    assert stored["a0"] == stored["b0"]
    assert stored["a0"][columns.index("args")] == tricky["args"]
    assert len({tuple(map(repr, v)) for v in stored.values()}) == 1


@pytest.mark.django_db(transaction=True)
def test_a_values_insert_in_several_statements_is_all_or_nothing():
    """Outside a transaction the store's batch insert opens none: where the rows take
    several statements (the portable VALUES path), they still commit all or none."""
    from dataclasses import replace

    from django.db import connection

    new_run(name="taken")
    compiled = replace(inserts.CompiledInsert.compile(connection), batch=2)
    rows = [inserts.new_row(name=n, active_name=n, function="f") for n in [*"abcd", "taken"]]
    with pytest.raises(IntegrityError):
        compiled.execute(rows, connection)
    assert list(TaskRun.objects.values_list("name", flat=True)) == ["taken"]


def test_a_single_insert_of_a_taken_name_answers_the_run_that_holds_it():
    held = new_run(name="held")
    row = inserts.new_row(id=uuid.uuid4(), name="held", active_name="held", function="f")
    (refused,) = get_store().insert_many([row])
    assert isinstance(refused, AlreadyRunning) and refused.run_id == held.run_id
    assert TaskRun.objects.filter(name="held").count() == 1


def test_a_single_insert_tries_again_when_the_holder_ended_in_between(monkeypatch):
    """The name was taken at the INSERT, free at the read: the run ended in between."""
    store = get_store()
    held = new_run(name="ending")
    active = type(store).active

    def ends_first(self, task_list, name):
        TaskRun.objects.filter(id=held.run_id).update(active_name=None, state=State.DONE)
        monkeypatch.setattr(type(store), "active", active)
        return None

    monkeypatch.setattr(type(store), "active", ends_first)
    row = inserts.new_row(id=uuid.uuid4(), name="ending", active_name="ending", function="f")
    assert store.insert_many([row]) == [None]
    assert TaskRun.objects.get(name="ending", active_name="ending").id == row["id"]


def test_a_retry_whose_name_was_taken_meanwhile_answers_the_run_that_holds_it():
    """``retry`` claimed the name in Redis, but a start that inserts first (database_first)
    took it in the database in between: the retry is refused with that run."""
    store = get_store()
    failed = new_run(name="again", orchestrator_epoch=4)
    assert store.mark_running(message(failed), "inc")
    assert store.mark_finished(message(failed), Outcome.failed(Reason.EXCEPTION, ValueError()))
    failed.refresh_from_db()
    holder = new_run(name="again")
    with pytest.raises(AlreadyRunning) as info:
        store.reactivate(failed, node="w2@h")
    assert info.value.run_id == holder.run_id
    holder.delete()
    assert store.reactivate(failed, node="w2@h")
    failed.refresh_from_db()
    assert (failed.state, failed.attempt, failed.orchestrator_epoch) == (State.QUEUED, 2, None)
