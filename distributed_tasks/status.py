"""Reading the status of a name: the Redis cache first, the database when it misses.

A finished name reports DONE/FAILED for ``CLEANUP_TIMEOUT`` and then NOT_FOUND, by
the cache's TTL and by the same rule at read time (the cache may have been
written late, or Redis may be down). A miss warms the cache from the database,
only where Redis holds nothing, so it never hides a newer write of a worker.
"""

from __future__ import annotations

import contextlib
import logging
import time

from django.utils import timezone

from distributed_tasks import claims
from distributed_tasks.conf import get_settings
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.store import get_store
from distributed_tasks.types import TaskStatus
from distributed_tasks.validation import check_name

logger = logging.getLogger("distributed_tasks.status")


def read(name: str, task_list: str = "default") -> TaskStatus:
    check_name(name)
    check_name(task_list, "task list")
    try:
        fields = claims.read(task_list, name)
    except REDIS_ERRORS as exc:
        logger.warning("Redis unavailable for get_status (%s); reading the database", exc)
        fields = None
    if fields and "state" in fields:
        # Fields not written by us (a time past year 9999 overflows): the database holds
        # the truth.
        try:
            status = claims.decode(fields, name, task_list)
        except (ValueError, OverflowError, OSError) as exc:
            logger.warning(
                "The cached status of %r (task list %r) cannot be read (%s); reading the database",
                name,
                task_list,
                exc,
            )
            return _from_database(name, task_list, warm=False)
        if expired(status):
            return TaskStatus.not_found(name, task_list)
        if fields.get("result_in_db") and status.run_id:
            run = get_store().get(status.run_id)
            status = claims.with_result(status, run.result if run else None)
        return status
    return _from_database(name, task_list, warm=fields is not None)


def stored(name: str, task_list: str = "default") -> TaskStatus:
    """The status the database holds, as this connection sees it (inside a caller's
    transaction, its own uncommitted writes): the cache is not warmed from it."""
    return _from_database(name, task_list, warm=False)


def expired(status: TaskStatus) -> bool:
    """A finished status older than CLEANUP_TIMEOUT no longer holds its name."""
    if status.finished_at is None:
        return False
    age = (timezone.now() - status.finished_at).total_seconds()
    return age > get_settings().CLEANUP_TIMEOUT


def _from_database(name: str, task_list: str, *, warm: bool) -> TaskStatus:
    run = get_store().newest(task_list, name)
    if run is None:
        return TaskStatus.not_found(name, task_list)
    fields = claims.fields_for_run(run)
    status = claims.with_result(claims.decode(fields, name, task_list), run.result)
    if expired(status):
        return TaskStatus.not_found(name, task_list)
    if warm:
        finished = run.finished_at.timestamp() if run.finished_at else None
        with contextlib.suppress(*REDIS_ERRORS):
            claims.fill(
                task_list, name, fields, ttl=claims.ttl_ms(run.state, finished, time.time())
            )
    return status
