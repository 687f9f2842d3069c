"""Run a test body while a name is active, with any client.

A queued client (the fake; the real one with an idle node) keeps a started run
active, so the body can simply run after the start. The inline client finishes
a run before ``start_async`` returns, so the body has to run *inside* it: the
registered ``hold`` task calls it. Either way the body sees the name held by an
active run, and one test body serves every client.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from distributed_tasks import TaskHandle, distributed_task

_bodies: dict[str, Callable[[], None]] = {}


@distributed_task
def hold(probe: str) -> None:
    """Calls the body registered under ``probe`` (only ever runs in this process)."""
    _bodies.pop(probe)()


def while_active(client: Any, name: str, body: Callable[[], None], **options: Any) -> TaskHandle:
    """Start ``hold`` as ``name`` and call ``body()`` while that run is active.

    A failure inside an inline run is recorded as the run's FAILED outcome; it is
    re-raised here so the test fails with the body's own assertion.
    """
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            body()
        except BaseException as exc:
            failures.append(exc)
            raise

    probe = uuid.uuid4().hex
    _bodies[probe] = guarded
    try:
        handle = client.start_async(hold, [probe], name=name, **options)
        pending = _bodies.pop(probe, None)
        if pending is not None:  # not executed: the run is queued and holds the name now
            pending()
    finally:
        _bodies.pop(probe, None)
    if failures:
        raise failures[0]
    return handle
