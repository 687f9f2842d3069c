"""Hooks of runs ended outside their pool process run on the hook thread (``hooks.py``):
a slow one no longer holds up the node's main process (or the leader's tick) that
recorded the end, and one that raises ``SystemExit`` does not stop the hooks after it."""

import pytest

from distributed_tasks import State, hooks, lost
from distributed_tasks.store import get_store
from tests import tasks
from tests.integration.test_runner import queue, row

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_slow_hook_of_a_lost_run_does_not_hold_up_the_process_that_ended_it(redis):
    tasks.HOOK_GATE.clear()
    exiting, slow, after = (
        queue(f"tests.tasks.{cls}", ["exit"]) for cls in ("ExitingHook", "SlowHook", "Hooked")
    )
    try:
        for msg in (exiting, slow, after):
            assert get_store().mark_running(msg, "") is not None
            lost.record_lost([msg.to_body()], lost.LostBy.CRASH)
        # Every run ended while the slow hook waits; the hook after it waits its turn.
        assert [row(msg).state for msg in (exiting, slow, after)] == [State.FAILED] * 3
        assert redis.lrange(f"hooks:{slow.name}", 0, -1) == []
        assert redis.lrange(f"hooks:{after.name}", 0, -1) == []
    finally:
        tasks.HOOK_GATE.set()
    assert hooks.drain(10)
    assert redis.lrange(f"hooks:{slow.name}", 0, -1) == [b"failure:RuntimeError"]
    assert redis.lrange(f"hooks:{after.name}", 0, -1) == [b"failure:RuntimeError"]


def test_drain_says_when_hooks_are_still_running():
    tasks.HOOK_GATE.clear()
    hooks.call_soon(lambda: tasks.HOOK_GATE.wait(10))
    try:
        assert not hooks.drain(0.05)
    finally:
        tasks.HOOK_GATE.set()
    assert hooks.drain(10)
