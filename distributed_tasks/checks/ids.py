"""Check ids (``distributed_tasks.E0xx`` errors, ``W0xx`` warnings), as module constants
so users can silence one by id, and the error every settings check builds."""

from __future__ import annotations

from django.core import checks

from distributed_tasks.conf import SETTING_NAME

E001 = "distributed_tasks.E001"  # DISTRIBUTED_TASKS is not a dict
E002 = "distributed_tasks.E002"  # a value has the wrong type or range
E003 = "distributed_tasks.E003"  # a URL has an unsupported scheme
E004 = "distributed_tasks.E004"  # HEARTBEAT_INTERVAL must be below NODE_TIMEOUT
E005 = "distributed_tasks.E005"  # DATABASE_ALIAS / CACHE_ALIAS names nothing
E006 = "distributed_tasks.E006"  # CELERY_APP / BACKEND cannot be imported
E007 = "distributed_tasks.E007"  # a PERIODIC entry cannot work
E010 = "distributed_tasks.E010"  # the Celery app accepts content other than JSON
E014 = "distributed_tasks.E014"  # the Celery broker would be a Redis Cluster
E015 = "distributed_tasks.E015"  # USE_TZ is False
E016 = "distributed_tasks.E016"  # DATABASE_ALIAS has AUTOCOMMIT False
W001 = "distributed_tasks.W001"  # unknown key
W002 = "distributed_tasks.W002"  # LEASE_TTL leaves no room to renew
W003 = "distributed_tasks.W003"  # SQLite without WAL, immediate transactions and a timeout


def error(msg: str, hint: str, id: str) -> checks.CheckMessage:
    """An error about ``DISTRIBUTED_TASKS``: what is wrong, and the hint that names the fix."""
    return checks.Error(msg, hint=hint, obj=SETTING_NAME, id=id)
