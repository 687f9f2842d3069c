"""The type and range of each ``DISTRIBUTED_TASKS`` value: one validator per key.

A validator returns None for a good value, or the problem as the end of a sentence
(``must be a number greater than 0``), which ``check_settings`` puts in its message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from distributed_tasks.conf import DEFAULTS

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_REDIS_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES, "sentinel", "sentinels")
_BROKER_SCHEMES = (*_REDIS_SCHEMES, "amqp", "amqps", "pyamqp", "memory")


def _number(*, minimum: float = 0, integer: bool = False, optional: bool = False):
    def validate(value: Any) -> str | None:
        if value is None and optional:
            return None
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value <= minimum:
            noun = "a whole number" if integer else "a number"
            return f"must be {noun} greater than {minimum:g}"
        return None

    return validate


def _string(*, optional: bool = False):
    def validate(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            return "must be a non-empty string"
        return None

    return validate


def _url(schemes: tuple[str, ...], *, optional: bool = False):
    def validate(value: Any) -> str | None:
        problem = _string(optional=optional)(value)
        if problem or value is None:
            return problem
        scheme = urlparse(value).scheme
        if scheme not in schemes:
            return f"has scheme {scheme!r}; expected one of {', '.join(schemes)}"
        return None

    return validate


def _dict(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a dict"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


VALIDATORS: dict[str, Callable[[Any], str | None]] = {
    "REDIS_URL": _url(_REDIS_SCHEMES),
    "BROKER_URL": _url(_BROKER_SCHEMES, optional=True),
    "CELERY_APP": _string(optional=True),
    "CACHE_ALIAS": _string(optional=True),
    "DATABASE_ALIAS": _string(),
    "NODE_NAME": _string(optional=True),
    "NODE_TIMEOUT": _number(),
    "HEARTBEAT_INTERVAL": _number(),
    "LEASE_TTL": _number(),
    "CLEANUP_TIMEOUT": _number(minimum=-1e-9),
    "HISTORY_RETENTION": _number(),
    "BALANCE_FACTOR": _number(minimum=1),
    "REBALANCE_AFTER": _number(minimum=-1e-9),
    "STEAL_INTERVAL": _number(minimum=-1e-9),
    "RUNNING_STATUS_AFTER": _number(minimum=-1e-9),
    "MAX_PAYLOAD_BYTES": _number(integer=True),
    "DEFAULT_TIMEOUT": _number(optional=True),
    "PERIODIC": _dict,
    "BACKEND": _string(),
    "STORE": _string(),
    "KEY_PREFIX": _string(),
    "TICK_INTERVAL": _number(),
    "RING_CACHE_TTL": _number(minimum=-1e-9),
    "BATCH_SIZE": _number(integer=True),
    "METRICS": _bool,
    "METRICS_TOKEN": _string(optional=True),
    "TRACING": _bool,
    "REMOTE_CONTROL": _bool,
    "CANCEL_GRACE": _number(minimum=-1e-9),
}
assert set(VALIDATORS) == set(DEFAULTS), "every setting needs a validator"
