"""Redis Cluster for claims, statuses, nodes and the lease: 3 masters, 3 replicas.

The cluster is private to the module (``redis-server --cluster-enabled yes`` on free
ports, ``redis-cli --cluster create``). The Celery broker stays a plain Redis: Celery's
Redis transport does not speak Cluster. The last test SIGKILLs the master that holds
the lease under load; its replica takes over (cluster-node-timeout 1 s).
"""

import pytest
from django.conf import settings

from distributed_tasks import keys
from distributed_tasks.connection import get_redis
from tests.engines import servers
from tests.engines.conftest import Engine
from tests.engines.scenarios import *  # noqa: F403 - the core scenarios, run on this engine
from tests.engines.scenarios import assert_fault_under_load_loses_nothing

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def redis_cluster():
    group, ports = servers.redis_cluster(masters=3, replicas=1)
    yield group, ports
    group.stop()


@pytest.fixture(scope="module")
def engine(redis_cluster):
    _group, ports = redis_cluster
    hosts = ",".join(f"{servers.HOST}:{port}" for port in ports[:3])
    return Engine(redis_url=f"redis+cluster://{hosts}", broker_url=settings.REDIS_URL)


def test_keys_of_one_script_share_a_slot_and_the_tags_spread():
    client = get_redis()
    slot = client.keyslot
    assert slot(keys.run_key("default", "a")) == slot(keys.run_key("default", "a"))
    assert slot(keys.lease_key()) == slot(keys.epoch_key()) == slot(keys.beat_key())
    assert slot(keys.members_key()) == slot(keys.node_key("w1")) == slot(keys.loads_key())
    names = {client.get_node_from_key(keys.run_key("default", f"n{i}")).port for i in range(30)}
    assert len(names) == 3  # names spread over every master


def test_a_master_killed_under_load_loses_no_run_and_runs_none_twice(full, redis_cluster):
    group, _ports = redis_cluster
    victim = get_redis().get_node_from_key(keys.lease_key()).port

    def kill_the_lease_master() -> None:
        group.kill(victim)

    recovered, converged = assert_fault_under_load_loses_nothing(
        kill_the_lease_master, "ckill", runs=40
    )
    print(
        f"\nRedis Cluster, master :{victim} killed: starts accepted again after "
        f"{recovered:.2f} s, every status DONE after {converged:.2f} s"
    )
    assert victim not in servers.master_ports(next(p for p in group.procs if p != victim))
