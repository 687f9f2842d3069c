"""The process-wide Redis client.

With ``CACHE_ALIAS`` the client comes from that django-redis cache (one pool for
the cache and us); otherwise from ``REDIS_URL``. Scripts are registered once per
client. redis-py pools notice a fork and reconnect, so prefork children are safe.
"""

from __future__ import annotations

import functools
from typing import Any

import redis

from distributed_tasks.conf import get_settings

SOCKET_TIMEOUT = 5.0


@functools.cache
def get_redis() -> redis.Redis:
    conf = get_settings()
    if conf.CACHE_ALIAS:
        from django_redis import get_redis_connection

        return get_redis_connection(conf.CACHE_ALIAS)
    return redis.Redis.from_url(
        conf.REDIS_URL,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        health_check_interval=30,
    )


def private_redis() -> redis.Redis:
    """A client on a connection pool of its own, for a thread that must never wait on a
    lock the main thread might hold (the lease keeper, when a signal interrupts it)."""
    pool = get_redis().connection_pool
    return redis.Redis(
        connection_pool=type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
    )


def reset() -> None:
    """Forget the client (settings changed); the next call builds a new one."""
    get_redis.cache_clear()
    from distributed_tasks import scripts

    scripts.reset()


def text(value: Any) -> Any:
    """Redis replies as ``str`` whether or not the pool decodes responses."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [text(v) for v in value]
    return value


def as_dict(flat: Any) -> dict[str, str]:
    """A ``[k1, v1, k2, v2]`` Lua reply or an HGETALL reply as a ``str`` dict."""
    if isinstance(flat, dict):
        return {text(k): text(v) for k, v in flat.items()}
    items = text(flat or [])
    return dict(zip(items[::2], items[1::2], strict=True))
