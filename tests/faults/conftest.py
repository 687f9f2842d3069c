"""One node and one orchestrator per module; the node reaches its database through a proxy.

The test process and the orchestrator reach the database directly, so a test can cut
the node off (``db_proxy.stop()``) and still watch and act. PostgreSQL by default;
``DT_TEST_DB=mariadb`` runs the same scenarios on MariaDB.
"""

import pytest
from django.conf import settings

from distributed_tasks import State, start_async
from distributed_tasks.health import queue_depths
from tests import tasks
from tests.cluster.conftest import finished
from tests.proxy import TcpProxy
from tests.support import database_port_variable, poll_until

NODE = "f1@faults"
BEAT = "beat-faults"


@pytest.fixture(scope="module")
def db_proxy():
    db = settings.DATABASES["default"]
    variable = database_port_variable()
    if variable is None:
        pytest.skip("the fault suite takes a database server away through a proxy: not SQLite")
    proxy = TcpProxy(db.get("HOST") or "127.0.0.1", int(db["PORT"])).start()
    proxy.variable = variable
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def faulty(cluster_factory, db_proxy):
    """The module's node (database through the proxy) and orchestrator."""
    cluster_factory.start_worker(NODE, concurrency=2, **{db_proxy.variable: str(db_proxy.port)})
    cluster_factory.start_beat(BEAT)
    return cluster_factory


@pytest.fixture
def serving(faulty, db_proxy):
    """The node live (restarted if a test stopped it), a leader elected."""
    faulty.revive()
    faulty.wait_live(NODE)
    faulty.wait_leader()
    return faulty


def serves_again(cluster, name: str, node: str = NODE) -> None:
    """The same node process runs a new run of ``name`` to DONE; its queue is left empty."""
    pid = cluster.procs[node].pid
    start_async(tasks.add, [20, 22], name=name)
    status = poll_until(finished(name), timeout=30, message=f"{name} to run")
    assert (status.state, status.result) == (State.DONE, 42)
    assert cluster.running(node) and cluster.procs[node].pid == pid
    assert queue_depths([node]) == {node: 0}
