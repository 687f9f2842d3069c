import logging

import pytest

from distributed_tasks import messages
from distributed_tasks.messages import MalformedMessage, RunMessage

VALID = {
    "run_id": "a" * 32,
    "attempt": 1,
    "node": "n",
    "task_list": "d",
    "name": "n",
    "function": "f",
}


def test_round_trip():
    msg = RunMessage(
        run_id="ab" * 16,
        attempt=2,
        node="w@h",
        task_list="default",
        name="n",
        function="tests.tasks.add",
        args=[1, 2],
        kwargs={"x": 1},
        timeout=3.0,
    )
    assert RunMessage.from_body(msg.to_body()) == msg
    assert msg.task_id == f"{'ab' * 16}:2"
    assert msg.for_attempt(3, "w2@h").task_id == f"{'ab' * 16}:3"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        {"run_id": "a"},
        {
            "run_id": "a",
            "attempt": "1",
            "node": "n",
            "task_list": "d",
            "name": "n",
            "function": "f",
        },
        {
            "run_id": "a",
            "attempt": 1,
            "node": "n",
            "task_list": "d",
            "name": "n",
            "function": "f",
            "evil": "x",
        },
        {  # a bool is an int to Python, not to PostgreSQL (attempt = true fails there)
            "run_id": "a",
            "attempt": True,
            "node": "n",
            "task_list": "d",
            "name": "n",
            "function": "f",
        },
    ],
)
def test_malformed_bodies_are_refused(body):
    with pytest.raises(MalformedMessage):
        RunMessage.from_body(body)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"run_id": "abc"}, "run_id"),  # the database's ValidationError escaped (review)
        ({"attempt": 0}, "attempt"),
        ({"attempt": 2**63}, "attempt"),  # SQLite's OverflowError escaped (review)
        ({"args": {}}, "args"),
    ],
)
def test_a_wrong_field_is_named(change, field):
    with pytest.raises(MalformedMessage, match=f"wrong fields: {field} "):
        RunMessage.from_body({**VALID, **change})


@pytest.mark.parametrize(
    ("limits", "ok"),
    [
        ((None, None), True),
        ([12.0, 10], True),
        (["x", None], False),
        ([None, {}], False),
        ([float("nan"), None], False),
        ([float("inf"), None], False),
        ([-1, None], False),
        ([True, None], False),
        ([1.0], False),
        ("ab", False),
    ],
)
def test_only_time_limits_the_pool_can_take_reach_it(limits, ok):
    """A foreign ``timelimit`` header stopped the node: the pool's timer takes float() of
    it in the worker's main process (review). Such a message keeps the task's limits,
    and its soft limit is the task's too."""
    from distributed_tasks import soft_limits
    from distributed_tasks.celery import _limits_ok

    assert _limits_ok(limits) is ok
    soft_limits.of(limits)  # never raises


def test_a_field_this_release_does_not_know_is_ignored_and_logged_once(caplog, monkeypatch):
    """A newer release's field during a rolling upgrade: dropped as malformed, the run
    never ran. The run executes what its row holds, so the field is left out."""
    monkeypatch.setattr(messages, "_unknown_seen", set())
    with caplog.at_level(logging.WARNING, logger="distributed_tasks.messages"):
        for _ in range(2):
            msg = RunMessage.from_body({**VALID, "deadline_at": 12.0})
    assert msg == RunMessage.from_body(VALID)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "does not know (deadline_at): they are ignored" in line
