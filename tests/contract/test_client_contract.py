"""One body per behaviour, run against the fake, the inline client and the real client.

Procrastinate and Oban keep their in-memory engines honest this way: whatever a
test double promises here, the real ``ClusterClient`` does too (with Redis,
PostgreSQL and an idle live node), so a project's tests against the double
hold against the cluster.
"""

from __future__ import annotations

import functools
import uuid

import pytest

from distributed_tasks import (
    AlreadyRunning,
    InvalidName,
    InvalidOption,
    NameReserved,
    NotCancellable,
    NotRegistered,
    NotSerializable,
    PayloadTooLarge,
    State,
    TaskHandle,
    TaskNotFound,
)
from tests import tasks
from tests.contract.probes import while_active
from tests.contract.subjects import CLUSTER, FAKE


def test_start_returns_a_handle_with_the_name(subject):
    handle = subject.client.start_async(tasks.add, [1, 2], name="sum-1")
    assert (handle.name, handle.task_list, handle.attempt, handle.existing) == (
        "sum-1",
        "default",
        1,
        False,
    )
    assert uuid.UUID(hex=handle.run_id).hex == handle.run_id
    assert isinstance(handle.node, str) and handle.node
    status = subject.client.get_status("sum-1")
    assert (status.state, status.run_id, status.node) == (
        subject.settled,
        handle.run_id,
        handle.node,
    )
    assert subject.recorded() == 1


def test_a_start_without_a_name_gets_a_uuid4_hex(subject):
    handle = subject.client.start_async(tasks.add, [1, 2])
    assert uuid.UUID(hex=handle.name).version == 4
    assert uuid.UUID(hex=handle.name).hex == handle.name
    assert subject.client.get_status(handle.name).run_id == handle.run_id


def test_a_second_start_of_an_active_name_raises_already_running(subject):
    client = subject.client

    def body():
        active = client.get_status("dup")
        assert active.is_active
        with pytest.raises(AlreadyRunning) as info:
            client.start_async(tasks.add, [3, 4], name="dup")
        refusal = info.value
        assert (refusal.name, refusal.run_id, refusal.node, refusal.state) == (
            "dup",
            active.run_id,
            active.node,
            active.state.value,
        )
        assert "on_conflict='return_existing'" in str(refusal)
        assert client.get_status("dup").run_id == active.run_id

    holder = while_active(client, "dup", body)
    assert subject.recorded() == 1
    assert client.get_status("dup").run_id == holder.run_id


def test_return_existing_hands_back_the_active_run(subject):
    client = subject.client

    def body():
        active = client.get_status("dup")
        again = client.start_async(tasks.add, [1, 2], name="dup", on_conflict="return_existing")
        assert (again.name, again.run_id, again.node, again.existing) == (
            "dup",
            active.run_id,
            active.node,
            True,
        )

    while_active(client, "dup", body)
    assert subject.recorded() == 1


def test_the_same_name_in_another_task_list_is_independent(subject):
    client = subject.client
    other: list[TaskHandle] = []

    def body():
        other.append(client.start_async(tasks.add, [1, 2], name="n", task_list="b"))

    held = while_active(client, "n", body, task_list="a")
    assert client.get_status("n", "b").run_id == other[0].run_id
    assert client.get_status("n", "a").run_id == held.run_id
    assert client.get_status("n").state == State.NOT_FOUND
    assert subject.recorded() == 2


DEEP = functools.reduce(lambda value, _: [value], range(150), 0)
BAD_STARTS = [
    pytest.param(("os.system", ["true"], {}), NotRegistered, "not a registered", id="path"),
    pytest.param(
        (tasks.add, [1, 2], {"callback": "os.remove"}), NotRegistered, "os.remove", id="callback"
    ),
    pytest.param((tasks.add, [{1, 2}], {}), NotSerializable, "cannot be encoded", id="set"),
    pytest.param((tasks.add, "12", {}), NotSerializable, "list or tuple", id="args-str"),
    pytest.param(
        (tasks.add, ["x" * 300_000], {}), PayloadTooLarge, "MAX_PAYLOAD_BYTES", id="payload"
    ),
    pytest.param((tasks.add, [1, 2], {"on_conflict": "maybe"}), InvalidOption, "on_conflict"),
    pytest.param((tasks.add, [1, 2], {"reuse": "never"}), InvalidOption, "reuse="),
    pytest.param((tasks.add, [1, 2], {"timeout": 0}), InvalidOption, "timeout must be"),
    pytest.param((tasks.add, [1, 2], {"max_attempts": 1.5}), InvalidOption, "whole number"),
    pytest.param((tasks.add, [1, 2], {"task_list": ""}), InvalidName, "task list"),
    pytest.param((tasks.add, {1, 2}, {}), NotSerializable, "list or tuple", id="args-set"),
    pytest.param((tasks.add, ["\ud800"], {}), NotSerializable, "surrogate", id="surrogate"),
    pytest.param((tasks.add, [DEEP], {}), NotSerializable, "nested more than 100", id="deep"),
    pytest.param((tasks.add, [1, 2], {"countdown": float("nan")}), InvalidOption, "countdown"),
    pytest.param((tasks.add, [1, 2], {"max_attempts": 2**40}), InvalidOption, "at most"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_STARTS)
def test_bad_input_raises_the_same_error_and_records_nothing(subject, call, error, message):
    func, args, options = call
    with pytest.raises(error, match=message):
        subject.client.start_async(func, args, name="bad", **options)
    assert subject.recorded() == 0
    assert subject.client.get_status("bad").state == State.NOT_FOUND


@pytest.mark.parametrize("name", ["", "x" * 201, "bell\x07", "line\nbreak", 42])
def test_bad_names_raise_invalid_name_and_record_nothing(subject, name):
    with pytest.raises(InvalidName, match="name"):
        subject.client.start_async(tasks.add, [1, 2], name=name)
    with pytest.raises(InvalidName):
        subject.client.get_status(name)
    assert subject.recorded() == 0


def test_get_status_of_an_unknown_name_is_not_found(subject):
    status = subject.client.get_status("never-started")
    assert (status.name, status.state, status.run_id, status.result) == (
        "never-started",
        State.NOT_FOUND,
        None,
        None,
    )
    assert not status.is_active and not status.is_finished


def test_start_many_reports_each_entry(subject):
    client = subject.client
    results: list = []

    def body():
        calls = [{"func": tasks.add, "args": [i, i], "name": f"batch-{i}"} for i in range(5)]
        calls.append({"func": tasks.add, "args": [9, 9], "name": "batch-4"})
        results.extend(client.start_many(calls))

    while_active(client, "batch-2", body)
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["TaskHandle"] * 2 + ["AlreadyRunning"] + ["TaskHandle"] * 2 + [
        "AlreadyRunning"
    ]
    assert results[5].run_id == results[4].run_id  # the duplicate inside the batch
    assert [r.name for r in results] == [f"batch-{i}" for i in range(5)] + ["batch-4"]
    assert subject.recorded() == 5  # the holder and four new runs
    assert client.get_status("batch-0").state == subject.settled


def test_start_many_validates_every_entry_before_recording_any(subject):
    with pytest.raises(NotSerializable):
        subject.client.start_many(
            [
                {"func": tasks.add, "args": [1, 1], "name": "ok"},
                {"func": tasks.add, "args": [object()], "name": "bad"},
            ]
        )
    assert subject.recorded() == 0
    assert subject.client.get_status("ok").state == State.NOT_FOUND
    assert subject.client.start_many([]) == []


def test_a_finished_name_follows_the_reuse_policy(subject):
    client = subject.client
    first = client.start_async(tasks.add, [1, 2], name="again")
    if client.get_status("again").is_active:
        client.cancel("again")  # the queued clients end it the only way they can
    finished = client.get_status("again")
    assert finished.is_finished and finished.run_id == first.run_id
    with pytest.raises(NameReserved, match="reuse policy") as info:
        client.start_async(tasks.add, [1, 2], name="again", reuse="reject")
    assert info.value.run_id == first.run_id
    second = client.start_async(tasks.add, [1, 2], name="again", reuse="allow")
    assert second.run_id != first.run_id
    assert client.get_status("again").run_id == second.run_id


@pytest.mark.parametrize("subject", [FAKE, CLUSTER], indirect=True)
def test_cancel_of_a_finished_run_says_it_finished(subject):
    client = subject.client
    handle = client.start_async(tasks.add, [1, 2], name="over")
    client.cancel("over")
    with pytest.raises(NotCancellable, match="already finished FAILED at ") as info:
        client.cancel("over")
    assert (info.value.state, info.value.run_id) == ("FAILED", handle.run_id)


def test_cancel_of_an_unknown_name_raises_task_not_found(subject):
    with pytest.raises(TaskNotFound, match="never-started"):
        subject.client.cancel("never-started")


@pytest.mark.parametrize("subject", [FAKE, CLUSTER], indirect=True)
def test_cancel_ends_a_queued_run_and_frees_the_name(subject):
    client = subject.client
    handle = client.start_async(tasks.add, [1, 2], name="unwanted")
    status = client.cancel("unwanted")
    assert (status.state, status.reason, status.run_id) == (
        State.FAILED,
        "cancelled",
        handle.run_id,
    )
    assert client.get_status("unwanted").state == State.FAILED
    assert client.start_async(tasks.add, [1, 2], name="unwanted").run_id != handle.run_id
    with pytest.raises(TaskNotFound):
        client.cancel("ghost")
