"""Hooks of runs ended outside their pool process run on the hook thread (``hooks.py``):
a slow one no longer holds up the node's main process (or the leader's tick) that
recorded the end, and the thread goes on after a hook that raises ``SystemExit`` or a
connection that cannot be closed. ``PeriodicRun``'s own bookkeeping stays inline."""

import logging

import pytest

from distributed_tasks import State, hooks, lost
from distributed_tasks.periodic import PeriodicRun
from distributed_tasks.registry import path_of
from distributed_tasks.store import get_store
from tests import tasks
from tests.integration.test_runner import queue, row
from tests.support import poll_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_slow_hook_of_a_lost_run_does_not_hold_up_the_process_that_ended_it(redis):
    tasks.HOOK_GATE.clear()
    slow, after = (queue(f"tests.tasks.{cls}", ["exit"]) for cls in ("SlowHook", "Hooked"))
    try:
        for msg in (slow, after):
            assert get_store().mark_running(msg, "") is not None
            lost.record_lost([msg.to_body()], lost.LostBy.CRASH)
        # Both runs ended while the slow hook waits; the hook after it waits its turn.
        assert [row(msg).state for msg in (slow, after)] == [State.FAILED] * 2
        assert redis.lrange(f"hooks:{slow.name}", 0, -1) == []
        assert redis.lrange(f"hooks:{after.name}", 0, -1) == []
    finally:
        tasks.HOOK_GATE.set()
    assert hooks.drain(10)
    assert redis.lrange(f"hooks:{slow.name}", 0, -1) == [b"failure:RuntimeError"]
    assert redis.lrange(f"hooks:{after.name}", 0, -1) == [b"failure:RuntimeError"]


def test_the_hook_thread_goes_on_after_system_exit_and_a_failed_close(monkeypatch):
    ran = []

    def exits():
        raise SystemExit(1)

    def unclosable():
        raise RuntimeError("the database dropped this connection")

    monkeypatch.setattr(hooks.connections, "close_all", unclosable)
    for hook in (exits, lambda: ran.append("after")):
        hooks.call_soon(hook)
    assert hooks.drain(10)
    assert ran == ["after"]


def test_drain_says_when_hooks_are_still_running():
    tasks.HOOK_GATE.clear()
    hooks.call_soon(lambda: tasks.HOOK_GATE.wait(10))
    try:
        assert not hooks.drain(0.05)
    finally:
        tasks.HOOK_GATE.set()
    assert hooks.drain(10)


def test_a_periodic_runs_bookkeeping_is_called_inline(monkeypatch):
    """The leader's dispatcher may start the next slot later in the same tick: the
    failure must be counted before that."""
    msg = queue(path_of(PeriodicRun), ["no-such-periodic-task", ""])
    called = []
    monkeypatch.setattr(PeriodicRun, "on_failure", lambda self, run, exc: called.append(exc))
    monkeypatch.setattr(hooks, "call_soon", lambda *args: pytest.fail("queued, not inline"))
    lost.call_hook(msg, "on_failure", RuntimeError("its node was lost"))
    assert [str(exc) for exc in called] == ["its node was lost"]


def test_a_slow_hook_is_named_once_with_the_hooks_waiting_behind_it(monkeypatch, caplog):
    """One hook that never returns holds up the hooks after it: an operator hears of it,
    also of the hooks queued before it had run for ``SLOW`` seconds."""
    monkeypatch.setattr(hooks, "SLOW", 0.2)
    tasks.HOOK_GATE.clear()
    caplog.set_level(logging.WARNING, logger="distributed_tasks.runner")
    try:
        hooks.call_soon(lambda: tasks.HOOK_GATE.wait(10), "the on_failure hook of run 7")
        hooks.call_soon(lambda: None, "the on_timeout hook of run 8")
        poll_until(lambda: "hook thread" in caplog.text, message="the slow hook's warning")
        hooks.call_soon(lambda: None, "the on_timeout hook of run 9")
        monkeypatch.setattr(hooks, "DRAIN", 0.05)
        hooks._drain_at_exit()
        assert "(the on_failure hook of run 7 is still running)" in caplog.text
    finally:
        tasks.HOOK_GATE.set()
    assert hooks.drain(10)
    slow = [r.getMessage() for r in caplog.records if "hook thread" in r.getMessage()]
    assert len(slow) == 1, slow  # once, though another hook was queued after it
    assert slow[0].startswith("The on_failure hook of run 7 has run for ")
    assert "(1 waiting now;" in slow[0]
    assert hooks._running is None


def test_a_hook_that_keeps_up_is_not_reported(monkeypatch, caplog):
    timers = []
    watch = hooks._watch
    monkeypatch.setattr(hooks, "_watch", lambda job: timers.append(watch(job)) or timers[-1])
    caplog.set_level(logging.WARNING, logger="distributed_tasks.runner")
    ran = []
    for i in range(3):
        hooks.call_soon(lambda i=i: ran.append(i), f"hook {i}")
    assert hooks.drain(10)
    assert ran == [0, 1, 2]
    assert len(timers) == 3 and all(timer.finished.is_set() for timer in timers)  # disarmed
    assert "hook thread" not in caplog.text
