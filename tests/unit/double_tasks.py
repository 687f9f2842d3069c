"""Registered functions for the testing doubles' own tests (``test_testing``, ``test_inline``).

``CALLS`` records what callbacks and hooks saw; each test module clears it around
every test.
"""

from __future__ import annotations

from distributed_tasks import AlreadyRunning, DistributedTask, distributed_task, start_async

CALLS: list = []


@distributed_task
def double(x: int) -> int:
    return x * 2


@distributed_task
def remember(name: str, result: object) -> None:
    CALLS.append((name, result))


@distributed_task
def explode(name: str, result: object) -> None:
    raise RuntimeError(f"cannot store {name}")


@distributed_task
def boom(message: str) -> None:
    raise ValueError(message)


@distributed_task
def pair() -> tuple:
    return (1, 2)


@distributed_task
def not_json() -> set:
    return {1}


@distributed_task
def leave() -> None:
    raise SystemExit(3)


@distributed_task
def flaky(fails: int) -> int:
    """Fails its first ``fails`` executions, then returns how many it took."""
    CALLS.append("flaky")
    if len(CALLS) <= fails:
        raise ConnectionError(f"execution {len(CALLS)} failed")
    return len(CALLS)


@distributed_task
def restart_self(name: str) -> str:
    try:
        start_async(restart_self, [name], name=name)
    except AlreadyRunning as exc:
        return f"refused while {exc.state}"
    return "started twice"


class Hooks(DistributedTask):
    def run(self, mode: str) -> str:
        if mode == "raise":
            raise KeyError(mode)
        return mode

    def on_success(self, run, result):
        CALLS.append(("success", run.name, result))

    def on_failure(self, run, exc):
        CALLS.append(("failure", run.name, type(exc).__name__))
