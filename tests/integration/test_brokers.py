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


def test_a_node_channel_reuses_one_redis_client_for_its_acks(monkeypatch, redis):
    """dt_worker makes kombu build one synchronous redis.Redis per channel (not one per
    delivery and per ack); the channel still works, and the BRPOP client is kombu's own."""
    from kombu.transport.redis import Channel

    from distributed_tasks import redis_channel

    built, original = [], Channel._create_client

    def counted(self, asynchronous=False):
        built.append(asynchronous)
        return original(self, asynchronous)

    monkeypatch.setattr(Channel, "_create_client", counted)  # restored after the test
    assert redis_channel.reuse_clients() and redis_channel.reuse_clients()  # idempotent
    with Connection(settings.REDIS_URL) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 10, False)
        channel.queue_declare(QUEUE)
        producer = Producer(channel)
        for n in range(3):
            producer.publish({"n": n}, exchange="", routing_key=QUEUE)
        messages = [channel.basic_get(QUEUE) for _ in range(3)]
        assert redis.hlen(channel.unacked_key) == 3  # recorded as delivered
        for message in messages:
            message.ack()
        assert [m.decode()["n"] for m in messages] == [0, 1, 2]
        assert redis.hlen(channel.unacked_key) == 0  # and acked
        assert built.count(False) == 1  # one client for 3 publishes, deliveries and acks
        before = built.count(True)
        assert channel._create_client(asynchronous=True) is not channel._create_client()
        assert (built.count(False), built.count(True)) == (1, before + 1)  # kombu's own
        kept = channel._create_client()
        channel._disconnect_pools()  # as after a connection error: a new pool
        again = channel._create_client()
        assert again is not kept and again.connection_pool is channel.pool
        assert again.ping() and channel._create_client() is again


def test_an_amqp_error_reading_queue_depths_is_the_broker_away(monkeypatch):
    """py-amqp raises its own errors (RabbitMQ's connection lost), neither KombuError nor
    OSError, where kombu does not wrap them (a channel's queue_declare): depths are then
    unknown (None, a hint), where the driver's exception came out of the lifeline's and
    health's reads."""
    from amqp.exceptions import RecoverableConnectionError

    from distributed_tasks import envelope

    def lost(self, *args, **kwargs):
        raise RecoverableConnectionError("Socket was disconnected")

    monkeypatch.setattr(envelope, "client", lambda: None)  # through kombu, as on RabbitMQ
    monkeypatch.setattr(Connection, "channel", lost)
    assert get_broker().depths(["a@h", "b@h"]) == {"a@h": None, "b@h": None}
