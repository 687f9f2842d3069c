"""Redis Sentinel for everything Redis does here, the Celery broker included.

One master, one replica and three Sentinels (``redis-server --sentinel``: the machine
has no separate binary), private to the module. ``REDIS_URL`` and ``BROKER_URL`` are
both ``sentinel://...``: redis-py and kombu's sentinel transport follow the master.
The last test SIGKILLs the master under load; the Sentinels promote the replica. The
acks that fail meanwhile no longer stall the nodes (``brokers.forget_failed_ack``).
"""

import pytest

from tests.engines import servers
from tests.engines.conftest import Engine
from tests.engines.scenarios import *  # noqa: F403 - the core scenarios, run on this engine
from tests.engines.scenarios import assert_fault_under_load_loses_nothing

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
    url = f"sentinel://{hosts}/mymaster/0"
    return Engine(redis_url=url, broker_url=url)


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
