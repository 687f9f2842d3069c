"""The module-level API: thin functions over the configured client.

``DISTRIBUTED_TASKS["BACKEND"]`` names the client class (the real cluster by
default); ``distributed_tasks.testing`` swaps in a fake or an inline client the
way the seed swaps its implementation for a Mox mock.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.module_loading import import_string

from distributed_tasks.conf import get_settings
from distributed_tasks.types import TaskHandle, TaskStatus


@functools.cache
def _client_for(path: str) -> Any:
    return import_string(path)()


_override: list[Any] = []


def get_client() -> Any:
    """The active client: a test override if one is installed, else ``BACKEND``."""
    if _override:
        return _override[-1]
    return _client_for(get_settings().BACKEND)


def start_async(
    func: Any,
    args: Any = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    callback: Any = None,
    task_list: str = "default",
    on_conflict: str = "fail",
    reuse: str = "allow",
    timeout: float | None = None,
    max_attempts: int | None = None,
    retry_backoff: float | None = None,
    countdown: float | None = None,
    data: Mapping[str, Any] | None = None,
    priority: int = 0,
) -> TaskHandle:
    """Start ``func`` on one node of the cluster under a unique ``name``.

    Raises ``AlreadyRunning`` if a run of the name is active (unless
    ``on_conflict="return_existing"``), and ``ClusterUnavailable`` when no node can
    take it. See the README for every option.
    """
    return get_client().start_async(
        func,
        args,
        kwargs,
        name=name,
        callback=callback,
        task_list=task_list,
        on_conflict=on_conflict,
        reuse=reuse,
        timeout=timeout,
        max_attempts=max_attempts,
        retry_backoff=retry_backoff,
        countdown=countdown,
        data=data,
        priority=priority,
    )


def start_many(calls: Iterable[Mapping[str, Any]]) -> list[TaskHandle | Exception]:
    """Start a batch in a few round trips; see ``ClusterClient.start_many``."""
    return get_client().start_many(calls)


def get_status(name: str, task_list: str = "default") -> TaskStatus:
    """The newest run of ``name``: QUEUED, RUNNING, DONE, FAILED or NOT_FOUND."""
    return get_client().get_status(name, task_list)


def cancel(
    name: str,
    task_list: str = "default",
    *,
    force: bool = False,
    by: str = "",
    grace: float | None = None,
) -> TaskStatus:
    """Cancel the newest run of ``name``: a QUEUED one ends FAILED(cancelled) at once, a
    RUNNING one is asked to stop (``cancel_requested()``) and, with ``force``, killed
    after ``grace`` seconds (default CANCEL_GRACE); ``by`` says who asked. A finished
    run raises ``NotCancellable``, a name never recorded ``TaskNotFound``."""
    return get_client().cancel(name, task_list, force=force, by=by, grace=grace)


def retry(name: str, task_list: str = "default") -> TaskHandle:
    """Run the newest FAILED run of ``name`` again as its next attempt (see lifecycle.retry)."""
    return get_client().retry(name, task_list)


astart_async = sync_to_async(start_async)
astart_many = sync_to_async(start_many)
aget_status = sync_to_async(get_status)
