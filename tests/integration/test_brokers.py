"""brokers.py on the suite's Redis: what differs per broker, and the failed-ack repair."""

import pytest
from django.conf import settings
from kombu import Connection, Producer
from redis.exceptions import ConnectionError as RedisConnectionError

from distributed_tasks.brokers import Broker, forget_failed_ack, get_broker
from tests.proxy import TcpProxy

QUEUE = "dt.test.failed-ack"


def test_the_redis_broker_shares_redis_by_default():
    broker = get_broker()
    assert type(broker) is Broker and broker.shares_redis


def test_a_failed_ack_frees_its_prefetch_slot_so_the_consumer_fetches_again():
    """Redis goes away between delivery and ack (a failover, a restart): without the
    repair kombu keeps the slot and a consumer at its prefetch limit stops for ever."""
    port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy("127.0.0.1", port).start()
    try:
        with Connection(proxy.url(settings.REDIS_URL)) as conn:
            channel = conn.channel()
            channel.basic_qos(0, 1, False)
            channel.queue_declare(QUEUE)
            Producer(channel).publish({"n": 1}, exchange="", routing_key=QUEUE)
            message = channel.basic_get(QUEUE)
            assert not channel.qos.can_consume()  # the one slot is held until the ack
            proxy.stop()
            with pytest.raises(RedisConnectionError):
                message.ack()
            assert not channel.qos.can_consume()  # kombu kept the slot
            forget_failed_ack(message)
            assert channel.qos.can_consume()
    finally:
        proxy.stop()
