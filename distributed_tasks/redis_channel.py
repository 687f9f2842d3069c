"""One ``redis.Redis`` per kombu Redis channel in a node, instead of one per operation.

kombu's Redis transport builds a new ``redis.Redis`` object around the channel's
connection pool for each synchronous operation (``Channel._create_client``, reached
through ``conn_or_acquire``): with ``acks_late`` that is twice per run in a node's main
process, once to record the message as delivered and once to ack it. With redis-py 8 the
object alone costs about 65 us of CPU to build (its retry policy, event dispatcher and
observability hooks), a tenth of the main process's CPU per run. The object holds no
connection and no state of the operation: it is a facade over the pool, which it
borrows a connection from for each command, and redis-py documents it as safe to share
between threads. So each channel keeps the first one it builds for as long as its pool
is the same object; the asynchronous client (the BRPOP loop) is kombu's own, unchanged.

Applied by ``dt_worker`` before the worker starts (pool processes inherit it): a node's
process runs only its own consumer and the runs, so nothing else sees the difference. A
kombu whose channel no longer has this shape is left alone.
"""

from __future__ import annotations

import functools
from typing import Any

_CACHED = "_dt_sync_client"


def reuse_clients() -> bool:
    """Make kombu's Redis channels reuse one synchronous client; False if kombu's shape
    changed (nothing done then). Idempotent."""
    try:
        from kombu.transport.redis import Channel
    except ImportError:  # no redis-py: no Redis transport to speed up
        return False
    build = getattr(Channel, "_create_client", None)
    if not callable(build):
        return False
    if getattr(build, "reuses_clients", False):
        return True

    @functools.wraps(build)
    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return build(self, asynchronous=True)
        client = self.__dict__.get(_CACHED)
        if client is None or client.connection_pool is not self.pool:
            client = self.__dict__[_CACHED] = build(self)
        return client

    _create_client.reuses_clients = True  # type: ignore[attr-defined]
    Channel._create_client = _create_client
    return True
