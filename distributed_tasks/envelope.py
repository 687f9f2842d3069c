"""Publishing straight into the Redis transport's lists, without ``Task.apply_async``.

``apply_async`` costs more CPU than the rest of a start: it rebuilds routing, options
and a protocol-2 message from scratch for every call, and kombu's Redis transport then
makes a new client object for each LPUSH. A run message always has the same shape,
so when our own app publishes to a plain Redis broker this module writes the very
envelope kombu would (protocol 2 headers, base64 body, the priority list
``<queue>\\x06\\x16<level>``) with one LPUSH per list, all of a batch in one
pipeline on a client kept for the process. ``tests/integration/test_envelope.py``
checks that a real node executes it and that it matches kombu's own, field by field.

Celery's ``before_task_publish`` and ``after_task_publish`` are sent as Celery sends
them, when they have receivers (tracing puts its ``traceparent`` into the headers).
Anything unusual takes Celery's path (``celery.publish``): the project's own Celery app
(``CELERY_APP``, which may set a key prefix or serializer of its own) and another
transport (RabbitMQ, Sentinel).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from celery import signals as celery_signals

from distributed_tasks import keys
from distributed_tasks.brokers import PRIORITY_LEVELS, priority_level
from distributed_tasks.celery import HARD_LIMIT_GRACE, TASK_NAME
from distributed_tasks.conf import get_settings
from distributed_tasks.messages import RunMessage

DIRECT_SCHEMES = frozenset({"redis", "rediss"})
SEP = "\x06\x16"  # kombu's Redis transport: queue name, separator, priority level
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@functools.cache
def _client(broker_url: str) -> Any:
    from distributed_tasks.connection import client_for, get_redis

    conf = get_settings()
    shared = not conf.CACHE_ALIAS and broker_url == conf.REDIS_URL
    return get_redis() if shared else client_for(broker_url)


def client() -> Any | None:
    """The Redis client to LPUSH run messages with, or None: publish through Celery."""
    conf = get_settings()
    if conf.CELERY_APP or urlparse(conf.broker_url).scheme not in DIRECT_SCHEMES:
        return None
    return _client(conf.broker_url)


@functools.cache
def _origin(pid: int) -> str:
    """Celery's ``origin`` header (``anon_nodename``) and the ``reply_to`` of this process."""
    return f"gen{pid}@{socket.gethostname()}"


@functools.cache
def _reply_to(pid: int) -> str:
    return str(uuid.uuid4())


def _limits(timeout: float | None) -> list[float | None]:
    return [timeout + HARD_LIMIT_GRACE, timeout] if timeout else [None, None]


def encode(msg: RunMessage, countdown: float | None) -> tuple[str, str]:
    """``(list key, envelope)`` of ``msg`` as kombu's Redis transport would push it."""
    pid = os.getpid()
    task_id = msg.task_id
    argsrepr = f"[{msg.name!r}]"
    eta = None
    if countdown:
        eta = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=countdown)).isoformat()
    payload = ([msg.to_body()], {}, _EMBED)
    level = PRIORITY_LEVELS - 1 - priority_level(msg.priority)  # Redis serves 0 first
    queue = keys.queue_name(msg.node)
    headers = {
        "lang": "py",
        "task": TASK_NAME,
        "id": task_id,
        "shadow": None,
        "eta": eta,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": _limits(msg.timeout),
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": argsrepr,
        "kwargsrepr": "{}",
        "origin": _origin(pid),
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id,
        "reply_to": _reply_to(pid),
        "argsrepr": argsrepr,
        "kwargsrepr": "{}",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": level,
    }
    if celery_signals.before_task_publish.receivers:
        celery_signals.before_task_publish.send(
            sender=TASK_NAME, body=payload, exchange="", routing_key=queue, declare=[],
            headers=headers, properties=properties, retry_policy=None,
        )  # fmt: skip
    properties["body_encoding"] = "base64"
    properties["delivery_tag"] = str(uuid.uuid4())
    envelope = {
        "body": base64.b64encode(_dumps(payload).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    key = f"{queue}{SEP}{level}" if level else queue
    return key, _dumps(envelope)


def push(
    redis: Any, messages: Sequence[tuple[RunMessage, float | None]], *, first: bool = False
) -> None:
    """LPUSH every message: one command per list, all in one round trip.

    ``LPUSH key a b c`` leaves the list as three LPUSHes in that order would (the worker
    pops ``a`` first), with one command and one reply instead of one per message.
    ``first``: RPUSH instead, so the worker (which pops from the right) takes the messages
    before those already waiting at their priority level: a run that waited elsewhere
    keeps its turn (stealing.overtake), and a level's order is never changed otherwise.
    """
    add = "rpush" if first else "lpush"
    lists: dict[str, list[str]] = {}
    for msg, countdown in messages:
        key, envelope = encode(msg, countdown)
        lists.setdefault(key, []).append(envelope)
    if len(lists) == 1:
        ((key, envelopes),) = lists.items()
        getattr(redis, add)(key, *envelopes)
    else:
        pipe = redis.pipeline(transaction=False)
        for key, envelopes in lists.items():
            getattr(pipe, add)(key, *envelopes)
        pipe.execute()
    published(messages)


def published(messages: Sequence[tuple[RunMessage, float | None]]) -> None:
    """Celery's ``after_task_publish`` for messages this module pushed, when it has receivers."""
    if celery_signals.after_task_publish.receivers:
        for msg, _ in messages:
            celery_signals.after_task_publish.send(
                sender=TASK_NAME, body=([msg.to_body()], {}, _EMBED), exchange="",
                routing_key=keys.queue_name(msg.node),
            )  # fmt: skip
