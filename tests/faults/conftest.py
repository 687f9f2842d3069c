"""One node and one orchestrator per module; the node reaches PostgreSQL through a proxy.

The test process and the orchestrator reach PostgreSQL directly, so a test can cut
the node off (``pg_proxy.cut()``) and still watch and act.
"""

import pytest
from django.conf import settings

from tests.faults.proxy import TcpProxy

NODE = "f1@faults"
BEAT = "beat-faults"


@pytest.fixture(scope="module")
def pg_proxy():
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the fault suite takes PostgreSQL away through a proxy")
    proxy = TcpProxy(db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432))
    proxy.restore()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def faulty(cluster_factory, pg_proxy):
    """The module's node (database through the proxy) and orchestrator."""
    cluster_factory.start_worker(NODE, concurrency=2, DT_PG_PORT=str(pg_proxy.port))
    cluster_factory.start_beat(BEAT)
    return cluster_factory


@pytest.fixture
def serving(faulty, pg_proxy):
    """The node live (restarted if a test stopped it), the proxy up, a leader elected."""
    pg_proxy.restore()
    faulty.revive()
    faulty.wait_live(NODE)
    faulty.wait_leader()
    return faulty
