"""``async def`` functions, task classes and callbacks, executed by the worker's own code.

The run is executed in this process with ``runner.execute``, as a pool process would
(the time limit on a coroutine is proven on real nodes in tests/backend_contract).
"""

from __future__ import annotations

import asyncio

import pytest

from distributed_tasks import (
    DistributedTask,
    RunInfo,
    State,
    distributed_task,
    get_status,
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
