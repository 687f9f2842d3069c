"""Redis Sentinel for claims, statuses, nodes and the lease; kombu's sentinel transport.

One master, one replica and three Sentinels (``redis-server --sentinel``: the machine
has no separate binary), private to the module. ``REDIS_URL`` is ``sentinel://...``
and redis-py follows the master. The last test SIGKILLs the master under load; the
Sentinels promote the replica.

The cluster's Celery broker is the suite's plain Redis here: a Celery 5.7 worker
whose broker is a Sentinel-managed master stops consuming when that master dies
(its acks fail, kombu's Redis QoS keeps the prefetch slots, celery/celery#6348), so
a failover under load would stall on the broker, not on anything of ours. Publishing
and reading queues through a ``sentinel://`` BROKER_URL is tested on its own.
"""

import pytest
from celery import Celery
from django.conf import settings

from distributed_tasks import keys
from distributed_tasks.brokers import Broker, celery_conf
from tests.engines import servers
from tests.engines.conftest import Engine
from tests.engines.scenarios import (  # noqa: F401 - the core scenarios, run on this engine
    assert_fault_under_load_loses_nothing,
    test_200_concurrent_starts_of_one_name_make_one_run,
    test_leader_sigkill_fails_over_with_a_higher_epoch_and_no_slot_twice,
    test_running_runs_of_a_killed_node_end_failed_node_lost,
    test_status_moves_queued_running_done,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sentinel_group():
    group, master, sentinels = servers.sentinel_group()
    yield group, master, sentinels
    group.stop()


@pytest.fixture(scope="module")
def engine(sentinel_group):
    _group, _master, sentinels = sentinel_group
    hosts = ",".join(f"{servers.HOST}:{port}" for port in sentinels)
    return Engine(redis_url=f"sentinel://{hosts}/mymaster/0", broker_url=settings.REDIS_URL)


def test_a_sentinel_broker_url_reaches_the_master_through_kombu(sentinel_group):
    _group, _master, sentinels = sentinel_group
    hosts = ",".join(f"{servers.HOST}:{port}" for port in sentinels)
    app = Celery("sentinel-probe", set_as_current=False)
    app.conf.update(celery_conf(f"sentinel://{hosts}/mymaster/1", {}))
    node = "probe@sentinel"
    try:
        with app.connection_for_write() as conn:
            conn.Producer().publish({"probe": 1}, exchange="", routing_key=keys.queue_name(node))
        broker = Broker(app)
        assert broker.depth(node) == 1
        assert broker.purge(node) == 1
        assert broker.depth(node) == 0
    finally:
        app.close()


def test_the_master_killed_under_load_loses_no_run_and_runs_none_twice(full, sentinel_group):
    group, master, sentinels = sentinel_group

    def kill_the_master() -> None:
        group.kill(master)

    recovered, converged = assert_fault_under_load_loses_nothing(kill_the_master, "skill", runs=40)
    print(
        f"\nRedis Sentinel, master :{master} killed: starts accepted again after "
        f"{recovered:.2f} s, every status DONE after {converged:.2f} s"
    )
    assert servers.sentinel_master(sentinels[0]) != master
