import pytest

from tests.support import poll_until

NODES = ("w1@cluster", "w2@cluster", "w3@cluster")


@pytest.fixture(scope="module")
def cluster(cluster_factory):
    """Three real dt_worker processes (prefork, 2 children each) for the module."""
    for node in NODES:
        cluster_factory.start_worker(node, concurrency=2)
    return cluster_factory


@pytest.fixture
def nodes(cluster):
    """The module's cluster, with every node live again after this test's Redis flush."""
    cluster.wait_live(*NODES)
    return cluster


@pytest.fixture
def release(redis):
    """Release every ``wait_for`` run a test started, so no worker stays busy after it."""
    keys: list[str] = []

    def add(key: str) -> str:
        keys.append(key)
        return key

    yield add
    for key in keys:
        redis.set(key, 1)


def finished(name: str, task_list: str = "default"):
    from distributed_tasks import get_status

    def check():
        status = get_status(name, task_list)
        return status if status.is_finished else None

    return check


def wait_finished(name: str, timeout: float = 30.0):
    return poll_until(finished(name), timeout=timeout, message=f"{name} to finish")


BEATS = ("beat-1", "beat-2")


@pytest.fixture(scope="module")
def full_cluster(cluster_factory):
    """Three nodes and two orchestrators, for the fault tests of a module."""
    for node in NODES:
        cluster_factory.start_worker(node, concurrency=2)
    for beat in BEATS:
        cluster_factory.start_beat(beat)
    return cluster_factory


@pytest.fixture
def full(full_cluster):
    """Every node and beat running (restarting what the last test killed), a leader elected."""
    full_cluster.revive()
    full_cluster.wait_live(*NODES)
    full_cluster.wait_leader()
    return full_cluster
