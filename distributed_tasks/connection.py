"""The process-wide Redis client.

With ``CACHE_ALIAS`` the client comes from that django-redis cache (one pool for
the cache and us); otherwise from ``REDIS_URL``, which names one of three engines:

* ``redis://``, ``rediss://``, ``unix://``: one server (redis-py's own URL);
* ``redis+cluster://host:port[,host:port...]``: a Redis Cluster, any of whose nodes
  the URL lists (``rediss+cluster://`` with TLS). Every Lua script and transaction
  touches the keys of one hash tag, so each runs on one slot;
* ``sentinel://host:port[,host:port...]/<service>[/<db>]``: the master that these
  Sentinels name for ``<service>``, followed across a failover.

Scripts are registered once per client. redis-py pools notice a fork and
reconnect, so prefork children are safe, given ``_reinit_locks_in_child``: every
client made here has its pools' locks replaced in a forked child (see there why).
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from distributed_tasks.conf import get_settings
from distributed_tasks.outage import REDIS_ERRORS

SOCKET_TIMEOUT = 5.0
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SENTINEL_SCHEMES = ("sentinel", "sentinels")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A multi-host URL (cluster or sentinel) taken apart."""

    hosts: tuple[tuple[str, int], ...]
    path: tuple[str, ...]
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str, default_port: int) -> Endpoints:
        parsed = urlparse(url)
        auth, _, hostlist = parsed.netloc.rpartition("@")
        user, _, password = auth.partition(":")
        hosts = []
        for item in filter(None, hostlist.split(",")):
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
            hosts.append((host.strip("[]"), int(port or default_port)))
        return cls(
            hosts=tuple(hosts),
            path=tuple(filter(None, parsed.path.split("/"))),
            username=unquote(user) or None,
            password=unquote(password) or None,
            tls=parsed.scheme.startswith("rediss") or parsed.scheme == "sentinels",
        )

    @property
    def service(self) -> str:
        """The Sentinel service (master group) name: the URL path's first part."""
        return self.path[0] if self.path else "mymaster"

    @property
    def db(self) -> int:
        return int(self.path[1]) if len(self.path) > 1 else 0


def client_for(url: str) -> Any:
    """A client for ``url`` (one server, a Redis Cluster or a Sentinel-managed master)."""
    timeouts = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT}
    scheme = urlparse(url).scheme
    if scheme in CLUSTER_SCHEMES:
        ends = Endpoints.parse(url, 6379)
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in ends.hosts],
            username=ends.username,
            password=ends.password,
            ssl=ends.tls,
            **timeouts,
        )
        return fork_safe(cluster)
    if scheme in SENTINEL_SCHEMES:
        ends = Endpoints.parse(url, 26379)
        auth = {"username": ends.username, "password": ends.password, "ssl": ends.tls}
        sentinel = Sentinel(list(ends.hosts), sentinel_kwargs={**timeouts}, **timeouts)
        return fork_safe(sentinel.master_for(ends.service, db=ends.db, **auth))
    return fork_safe(redis.Redis.from_url(url, health_check_interval=30, **timeouts))


@functools.cache
def get_redis() -> Any:
    conf = get_settings()
    if conf.CACHE_ALIAS:
        from django_redis import get_redis_connection

        return fork_safe(get_redis_connection(conf.CACHE_ALIAS))
    return client_for(conf.REDIS_URL)


def private_redis() -> Any:
    """A client on a connection pool of its own, for a thread that must never wait on a
    lock the main thread might hold (the lease keeper, when a signal interrupts it)."""
    conf = get_settings()
    if not conf.CACHE_ALIAS:
        return client_for(conf.REDIS_URL)
    pool = get_redis().connection_pool
    own = type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
    return fork_safe(redis.Redis(connection_pool=own))


# Fork safety. Recent redis-py (8.1 does) resets a pool it finds inherited across a fork while
# holding the pool's own lock: the parent's copy of it. When the parent forked while
# one of its threads held that lock (a node's heartbeat, its forced-cancel watcher or
# a metrics scrape, in the middle of taking or returning a connection), the child
# waits for it forever at its first command: a prefork pool process then hangs in
# its run, which stays RUNNING with a live node reporting it as executing (issue 17).
# In the child only the forking thread survives, so no one can hold a lock there:
# replacing each lock with a new one is safe, and costs nothing in the parent.
_fork_safe_clients: weakref.WeakSet[Any] = weakref.WeakSet()
_RLOCK = type(threading.RLock())
_LOCKS = (_RLOCK, type(threading.Lock()))


def fork_safe(client: Any) -> Any:
    """Register ``client`` so that a forked child gets fresh locks for its pools."""
    _fork_safe_clients.add(client)
    return client


def _locks_of(client: Any) -> Iterator[tuple[Any, str]]:
    """``(owner, attribute)`` of each lock a child could need to reach Redis via ``client``."""
    holders = [client, getattr(client, "nodes_manager", None)]  # a cluster and its map
    pools = [getattr(client, "connection_pool", None)]
    manager = holders[1]
    for node in list(getattr(manager, "nodes_cache", {}).values()) if manager else ():
        if node.redis_connection is not None:
            pools.append(node.redis_connection.connection_pool)
    sentinels = getattr(getattr(pools[0], "sentinel_manager", None), "sentinels", ())
    pools += [s.connection_pool for s in sentinels]  # asked for the master when connecting
    owners = [o for o in (*holders, *pools) if o is not None]
    # Each client and pool dispatches events (a returned connection, say) under a lock
    # of its event dispatcher, taken inside the pool's own: renewed too.
    owners += [d for o in owners if (d := getattr(o, "_event_dispatcher", None)) is not None]
    for owner in owners:
        # Every lock the object holds, not a list of names: redis-py adds locks over time.
        for name, value in list(getattr(owner, "__dict__", {}).items()):
            if isinstance(value, _LOCKS):
                yield owner, name


def _reinit_locks_in_child() -> None:
    """Give every registered client's pools new locks (``os.register_at_fork``).

    A lock shared by two owners (a cluster and its nodes manager) stays shared.
    """
    fresh: dict[int, tuple[Any, Any]] = {}  # id(old) -> (old, new): old kept alive
    renewed: set[int] = set()  # a pool reached twice keeps its first new lock
    for client in list(_fork_safe_clients):
        for owner, name in _locks_of(client):
            old = getattr(owner, name)
            if id(old) in renewed:
                continue
            if id(old) not in fresh:
                new = threading.RLock() if isinstance(old, _RLOCK) else threading.Lock()
                fresh[id(old)] = (old, new)
                renewed.add(id(new))
            setattr(owner, name, fresh[id(old)][1])


os.register_at_fork(after_in_child=_reinit_locks_in_child)


def scan_step(cursor: Any, *, match: str, count: int) -> tuple[Any, list]:
    """One step of a SCAN that spans calls; the cursor is 0 before and after a full pass.

    On a Redis Cluster each primary has a cursor of its own, so the cursor is a
    ``{node: cursor}`` dict. A node that stops answering (a failover) is dropped from
    the pass: its keys, now on the promoted replica, are scanned on the next one.
    """
    client = get_redis()
    if not isinstance(client, RedisCluster):
        return client.scan(cursor, match=match, count=count)
    cursors: Any  # {node name: cursor} on a cluster
    if not cursor:
        cursors, found = client.scan(0, match=match, count=count)  # every primary
    else:
        cursors, found = {}, []
        for name, at in cursor.items():
            node = client.get_node(node_name=name)
            if node is None:  # no longer a node of the cluster
                continue
            try:
                step, keys = client.scan(at, match=match, count=count, target_nodes=node)
            except REDIS_ERRORS:
                continue
            cursors.update(step)
            found += keys
    return {name: at for name, at in cursors.items() if at} or 0, found


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
