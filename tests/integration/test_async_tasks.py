"""``async def`` functions, task classes and callbacks, executed by the worker's own code.

The run is executed in this process with ``runner.execute``, as a pool process would
(the time limit on a coroutine is proven on real nodes in tests/backend_contract).
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from distributed_tasks import (
    DistributedTask,
    RunInfo,
    State,
    cancel,
    cancel_requested,
    cancellation,
    distributed_task,
    get_status,
    keys,
    progress,
    report_progress,
    runner,
    start_async,
)
from distributed_tasks.connection import get_redis
from distributed_tasks.models import TaskRun
from distributed_tasks.store import message_for

pytestmark = pytest.mark.django_db(transaction=True)


@distributed_task
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@distributed_task
async def remember(name: str, result: int) -> None:
    await asyncio.sleep(0)
    get_redis().rpush(f"async-callback:{name}", result)


class AsyncHooked(DistributedTask):
    """Async ``run``; the hooks note which one ran."""

    async def run(self, fail: bool = False) -> str:
        await asyncio.sleep(0)
        if fail:
            raise LookupError("async failure")
        return "done"

    def on_success(self, run: RunInfo, result: str) -> None:
        get_redis().rpush(f"async-hooks:{run.name}", f"success:{result}")

    def on_failure(self, run: RunInfo, exc: BaseException) -> None:
        get_redis().rpush(f"async-hooks:{run.name}", f"failure:{type(exc).__name__}")


def execute(handle) -> None:
    runner.execute(message_for(TaskRun.objects.get(id=handle.run_id)).to_body())


def test_async_function_and_callback(node, redis):
    execute(start_async(double, [21], name="double", callback=remember))
    status = get_status("double")
    assert (status.state, status.result) == (State.DONE, 42)
    assert redis.lrange("async-callback:double", 0, -1) == [b"42"]


@pytest.mark.parametrize(
    ("fail", "state", "hook"),
    [(False, State.DONE, b"success:done"), (True, State.FAILED, b"failure:LookupError")],
)
def test_async_task_class_with_hooks(node, redis, fail, state, hook):
    name = f"hooked-{fail}"
    execute(start_async(AsyncHooked, kwargs={"fail": fail}, name=name))
    status = get_status(name)
    assert status.state == state
    assert redis.lrange(f"async-hooks:{name}", 0, -1) == [hook]
    if fail:
        assert (status.error_type, status.error) == ("LookupError", "async failure")


def cancel_and_close(name: str) -> None:
    try:
        cancel(name, by="ana")
    finally:
        connections.close_all()  # this thread's, which asgiref keeps


@distributed_task
async def async_progress_and_cancel(name: str) -> str:
    """Reports progress and checks for a cancel where both must read or write the row:
    inside the event loop, where Django refuses any query (the run failed with
    SynchronousOnlyOperation)."""
    report_progress(0.5, "half way")  # progress.ROW_INTERVAL is 0: the row is written now
    await sync_to_async(cancel_and_close)(name)
    get_redis().delete(keys.run_key("default", name))  # Redis lost it: only the row has it
    while not cancel_requested():
        await asyncio.sleep(0.01)
    return "saw it"


def test_an_async_task_reports_progress_and_sees_a_cancel_through_its_row(node, redis, monkeypatch):
    monkeypatch.setattr(progress, "ROW_INTERVAL", 0.0)
    monkeypatch.setattr(cancellation, "CHECK_INTERVAL", 0.0)
    monkeypatch.setattr(cancellation, "ROW_INTERVAL", 0.0)
    handle = start_async(async_progress_and_cancel, ["loop"], name="loop")
    execute(handle)
    row = TaskRun.objects.get(id=handle.run_id)
    assert (row.state, row.reason, row.cancel_requested_by) == (State.FAILED, "cancelled", "ana")
    assert (row.progress, row.progress_message) == (0.5, "half way")
