"""A node rides out Redis going away (issue 11 item 6, the worker's half).

The node reaches Redis (its heartbeat, the status cache and the broker) through a
proxy the test stops for a few heartbeats: the heartbeat thread logs one line when
beats start failing and one when they work again, resumes by itself, and the node
serves runs again once its consumer has reconnected.
"""

import pytest
from django.conf import settings

from distributed_tasks.nodes import live_nodes
from tests.faults.conftest import serves_again
from tests.proxy import TcpProxy
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

NODE = "r1@faults"


@pytest.fixture(scope="module")
def redis_proxy():
    port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy("127.0.0.1", port).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def node_behind_proxy(cluster_factory, redis_proxy):
    url = redis_proxy.url(settings.REDIS_URL)
    cluster_factory.start_worker(NODE, concurrency=1, DT_TEST_REDIS_URL=url)
    cluster_factory.wait_live(NODE)
    return cluster_factory


def heartbeat_age() -> float | None:
    view = live_nodes()
    return view.age(NODE) if NODE in view.nodes else None


def test_the_heartbeat_rides_out_redis_going_away(node_behind_proxy, redis_proxy):
    cluster = node_behind_proxy
    failing, back = f"Heartbeat of node {NODE} failed", f"Heartbeat of node {NODE} works again"
    redis_proxy.stop()
    try:
        # Three heartbeats missed (still short of NODE_TIMEOUT, so the node stays a member).
        poll_until(lambda: (heartbeat_age() or 0) >= 3, timeout=10, message="missed heartbeats")
    finally:
        redis_proxy.start()
    poll_until(lambda: (age := heartbeat_age()) is not None and age < 1, message="a new beat")
    log = cluster.log(NODE, tail=200_000)
    assert log.count(failing) == 1, log  # one line per change of state, not one per beat
    poll_until(lambda: back in cluster.log(NODE, tail=200_000), message="the recovery line")
    serves_again(cluster, "after-redis-away", node=NODE)
