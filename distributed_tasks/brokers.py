"""What differs between the brokers a node queue can live on: Redis and RabbitMQ.

Publishing, consuming and acking are Celery's and behave the same on both. Four
things do not, and this module is the one place that knows them:

* **Queue depth.** A passive declare answers on both, but an empty queue is no key
  at all on Redis, and a 404 closes the channel on AMQP.
* **A lost node's queue.** Both purge it. RabbitMQ also keeps a queue forever, so the
  queue is deleted when it has no consumer and nothing in it (a node that came back
  under the same name keeps its queue: the broker refuses the delete).
* **Losing Redis.** When the broker *is* the Redis of ``REDIS_URL``, a flush or a
  restart loses the waiting messages with the claims, so the leader's resync
  publishes the QUEUED runs again; a separate broker keeps them.

* **Priorities.** A run's priority (Django's -100..100, higher first) becomes one of
  ``PRIORITY_LEVELS`` message priorities. RabbitMQ serves the highest number first
  (node queues are declared with ``x-max-priority``); kombu's Redis transport keeps
  one list per level and serves the *lowest* number first, so the scale is inverted.

Message lifetime needs nothing per broker: a message carries its run's id and the
runner ignores one whose run moved on, so a stale message is harmless on both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlparse

from kombu.exceptions import ChannelError

from distributed_tasks import keys
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import SENTINEL_SCHEMES, Endpoints
from distributed_tasks.outage import BROKER_ERRORS, REDIS_ERRORS

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})
_CHANNEL_ERRORS: tuple[type[Exception], ...] = (ChannelError,)
with contextlib.suppress(ImportError):
    from amqp.exceptions import ChannelError as _AmqpChannelError

    _CHANNEL_ERRORS = (ChannelError, _AmqpChannelError)


# Message priority levels of node queues: RabbitMQ's x-max-priority is PRIORITY_LEVELS - 1,
# and the Redis transport keeps a list per level (its priority_steps).
PRIORITY_LEVELS = 10


def priority_level(priority: int) -> int:
    """A run's priority (-100..100) as a level from 0 (lowest) to PRIORITY_LEVELS - 1."""
    return round((max(-100, min(100, priority)) + 100) * (PRIORITY_LEVELS - 1) / 200)


class Broker:
    """Node-queue operations of the Celery app's broker (the Redis transport's behaviour)."""

    name = "redis"

    def __init__(self, app) -> None:
        self.app = app

    def message_priority(self, priority: int) -> int:
        """The message priority of a run: on Redis 0 is served first, so the scale flips."""
        return PRIORITY_LEVELS - 1 - priority_level(priority)

    def depths(self, nodes: Iterable[str]) -> dict[str, int | None]:
        """Messages waiting in each node's queue, by passive declare (never creates one).

        A queue the broker does not know holds nothing (0). When the broker does not
        answer every depth is None: depths are a hint, never a reason to fail.
        """
        names = list(nodes)
        if (redis := self._own_redis()) is not None:
            return self._list_lengths(redis, names)
        depths: dict[str, int | None] = dict.fromkeys(names)
        try:
            with self.app.connection_for_read() as conn:
                channel = conn.channel()
                try:
                    for name in names:
                        try:
                            ok = channel.queue_declare(queue=keys.queue_name(name), passive=True)
                            depths[name] = int(ok.message_count)
                        except _CHANNEL_ERRORS:
                            depths[name] = 0
                            if not getattr(channel, "is_open", True):  # AMQP closes it on a 404
                                channel = conn.channel()
                finally:
                    with contextlib.suppress(*BROKER_ERRORS, *_CHANNEL_ERRORS):
                        channel.close()
        except BROKER_ERRORS:
            return dict.fromkeys(names)
        return depths

    def depth(self, node: str) -> int | None:
        return self.depths([node])[node]

    def _own_redis(self) -> Any | None:
        """Our own client of a plain Redis broker, or None (RabbitMQ, Sentinel, Cluster).

        Read through it, not kombu: a node's main process reads depths from threads
        (a metrics scrape), and a pool process forked while a thread held a kombu pool's
        lock would wait for ever at its first broker call; our clients are fork-safe.
        """
        from distributed_tasks import envelope

        # Where runs are LPUSHed directly (our own app on a plain Redis), the lists are
        # known; a project's CELERY_APP may set a key prefix or other priority steps.
        return envelope.client()

    @staticmethod
    def _list_lengths(redis: Any, names: list[str]) -> dict[str, int | None]:
        """LLEN of every priority list of each node's queue, in one round trip."""
        lists = {name: keys.queue_keys(name, PRIORITY_LEVELS) for name in names}
        pipe = redis.pipeline(transaction=False)
        for queue in lists.values():
            for key in queue:
                pipe.llen(key)
        try:
            lengths = iter(pipe.execute())
        except REDIS_ERRORS:
            return dict.fromkeys(names)
        return {name: sum(next(lengths) for _ in queue) for name, queue in lists.items()}

    def purge(self, node: str) -> int:
        """Drop every message waiting for ``node`` (declared dead); how many were dropped."""
        with self.app.connection_for_write() as conn:
            try:
                return conn.default_channel.queue_purge(keys.queue_name(node)) or 0
            except _CHANNEL_ERRORS:  # AMQP: the queue never existed
                return 0

    @property
    def shares_redis(self) -> bool:
        """True when the broker is the Redis of ``REDIS_URL``: its messages die with it."""
        conf = get_settings()
        return conf.BROKER_URL in (None, conf.REDIS_URL)


class AmqpBroker(Broker):
    """RabbitMQ: queues outlive their consumers, so a lost node's idle queue is deleted."""

    name = "amqp"

    def message_priority(self, priority: int) -> int:
        return priority_level(priority)

    def purge(self, node: str) -> int:
        purged = super().purge(node)
        # Refused (and the channel closed) while a consumer is attached or a message
        # arrived: a node of that name is back, and the queue is its own again.
        with (
            self.app.connection_for_write() as conn,
            conn.channel() as channel,
            contextlib.suppress(*_CHANNEL_ERRORS),
        ):
            channel.queue_delete(keys.queue_name(node), if_unused=True, if_empty=True)
        return purged

    @property
    def shares_redis(self) -> bool:
        return False


def forget_failed_ack(message: Any) -> None:
    """Free the prefetch slot of a delivery whose ack never reached the broker.

    kombu's Redis QoS forgets a delivery only once its ack reached Redis, so an ack that
    fails (the broker, or a Sentinel's master, went away) holds its slot for ever, and a
    consumer whose slots are all held stops fetching: the node would heartbeat and never
    run anything again (celery/celery#6348). The message stays in Redis' unacked index;
    kombu restores it after the visibility timeout, and the runner drops it as stale.
    """
    from kombu.transport import virtual

    qos = getattr(message.channel, "qos", None)
    if isinstance(qos, virtual.QoS) and not message.acknowledged:
        with contextlib.suppress(KeyError):
            virtual.QoS.ack(qos, message.delivery_tag)  # the bookkeeping only


def celery_conf(url: str, transport_options: Mapping[str, Any]) -> dict[str, Any]:
    """The Celery settings that reach ``url``, over the given transport options.

    A ``sentinel://host:port[,host:port...]/<service>[/<db>]`` URL (the form REDIS_URL
    takes) becomes kombu's: one ``sentinel://`` URL per Sentinel, joined by ``;``, and
    the service as the transport's ``master_name``. kombu's own form passes unchanged.
    """
    options = dict(transport_options)
    if urlparse(url).scheme in SENTINEL_SCHEMES and ";" not in url:
        ends = Endpoints.parse(url, 26379)
        auth = f"{quote(ends.username or '')}:{quote(ends.password)}@" if ends.password else ""
        url = ";".join(f"sentinel://{auth}{host}:{port}/{ends.db}" for host, port in ends.hosts)
        options["master_name"] = ends.service
    return {"broker_url": url, "broker_transport_options": options}


def get_broker() -> Broker:
    """The broker of the Celery app in use, chosen by its URL's scheme."""
    from distributed_tasks.celery import get_app

    app = get_app()
    scheme = urlparse(str(app.conf.broker_url or "")).scheme
    return AmqpBroker(app) if scheme in AMQP_SCHEMES else Broker(app)
