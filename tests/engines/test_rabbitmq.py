"""RabbitMQ as the Celery broker: node queues on AMQP, claims and the lease on Redis.

The module makes a vhost of its own (``rabbitmqctl add_vhost``) on the machine's
RabbitMQ (127.0.0.1:5672, guest/guest) and deletes it at the end, so nothing it
declares meets another suite's queues.
"""

import os
import signal
import uuid

import pytest
from django.conf import settings

from distributed_tasks import State, get_status, keys, start_async
from distributed_tasks.brokers import AmqpBroker, get_broker
from distributed_tasks.client import ClusterClient
from tests import tasks
from tests.cluster.conftest import BEATS, NODES, wait_finished
from tests.engines.conftest import Engine, require, run
from tests.engines.scenarios import *  # noqa: F403 - the core scenarios, run on this engine
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

AMQP = os.environ.get("DT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")


@pytest.fixture(scope="module")
def engine():
    ctl = require("rabbitmqctl")
    vhost = f"dt-test-{uuid.uuid4().hex[:8]}"
    run(ctl, "add_vhost", vhost)
    try:
        run(ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield Engine(redis_url=settings.REDIS_URL, broker_url=f"{AMQP}/{vhost}")
    finally:
        run(ctl, "delete_vhost", vhost)


def test_node_queues_are_amqp_queues_and_depths_read_from_them(full):
    broker = get_broker()
    assert isinstance(broker, AmqpBroker)
    assert broker.depths(NODES) == dict.fromkeys(NODES, 0)
    assert broker.depth("never-started@engine") == 0  # a 404, not an error
    handle = start_async(tasks.add, [2, 3], name="amqp-add")
    assert wait_finished("amqp-add").result == 5
    assert handle.node in NODES


def test_a_lost_nodes_queue_is_purged_and_deleted(full, redis):
    victim = NODES[0]
    full.kill(victim, signal.SIGKILL)
    broker = get_broker()
    with broker.app.connection_for_write() as conn:  # a message nobody will consume
        conn.Producer().publish({}, exchange="", routing_key=keys.queue_name(victim))
    poll_until(lambda: broker.depth(victim) == 1, timeout=5, message="the stray message")
    poll_until(
        lambda: not queue_exists(broker, victim),
        timeout=15,
        message=f"{victim}'s queue to be deleted once the node is lost",
    )
    full.revive(victim)
    full.wait_live(victim)
    name = f"back-{uuid.uuid4().hex}"
    # Pinned, as placement may pick another node with a free slot.
    ClusterClient().start_on(victim, tasks.where, name=name)  # its queue declared again
    assert (wait_finished(name).state, wait_finished(name).result) == (State.DONE, victim)


def test_node_queues_are_declared_with_message_priorities(full, engine):
    """RabbitMQ orders a queue by priority only if it was declared with x-max-priority."""
    vhost = engine.broker_url.rsplit("/", 1)[1]
    listing = run(require("rabbitmqctl"), "list_queues", "-q", "-p", vhost, "name", "arguments")
    for node in NODES:
        line = next(x for x in listing.splitlines() if x.startswith(keys.queue_name(node)))
        assert "x-max-priority" in line and "9" in line.split("x-max-priority", 1)[1], line


def test_a_busy_nodes_waiting_runs_start_highest_priority_first(full, redis):
    """A node's two pool processes busy; RabbitMQ hands it the waiting runs by priority.

    One blocker ends first and the other holds its process until the journal is complete,
    so the waiting runs go one at a time through a single free pool process.
    """
    from tests.backend_contract import tasks as contract

    node, client = NODES[0], ClusterClient()
    # Alone: an idle node would take the waiting runs over at once (work stealing), and a
    # leader would move them to one: the order seen would no longer be this queue's.
    for other in (*BEATS, *NODES[1:]):
        full.stop(other)
    first, last = (f"release:{uuid.uuid4().hex}" for _ in range(2))
    journal = f"journal:{uuid.uuid4().hex}"
    blockers = [client.start_on(node, tasks.wait_for, [key]) for key in (first, last)]
    try:
        poll_until(
            lambda: all(get_status(b.name).state == State.RUNNING for b in blockers),
            timeout=20,
            message="both pool processes busy",
        )
        order = [("low-1", -50), ("high-1", 50), ("low-2", -50), ("high-2", 50), ("mid", 0)]
        for label, priority in order:
            client.start_on(node, contract.note.func, [journal, label], priority=priority)
        redis.set(first, 1)
        poll_until(lambda: redis.llen(journal) == len(order), timeout=30, message="the runs")
    finally:
        redis.set(first, 1)
        redis.set(last, 1)
    assert redis.lrange(journal, 0, -1) == [b"high-1", b"high-2", b"mid", b"low-1", b"low-2"]


def queue_exists(broker, node: str) -> bool:
    from amqp.exceptions import NotFound

    with broker.app.connection_for_read() as conn, conn.channel() as channel:
        try:
            channel.queue_declare(keys.queue_name(node), passive=True)
        except NotFound:
            return False
    return True
