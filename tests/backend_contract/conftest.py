"""Two real nodes for the django.tasks contract, shared by the tests of a module.

``dj1`` serves task lists default and builds with two pool processes; ``dj2`` serves
default and priority with one, so a run on queue "priority" always waits behind the
run that occupies ``dj2``.
"""

from __future__ import annotations

import pytest

from distributed_tasks.compat import task_backends
from tests.cluster.conftest import release  # noqa: F401 - a fixture of this package too
from tests.support import poll_until

NODES = ("dj1@contract", "dj2@contract")


@pytest.fixture(scope="module")
def contract_cluster(cluster_factory):
    cluster_factory.start_worker(
        NODES[0], concurrency=2, args=("--task-list", "default", "--task-list", "builds")
    )
    cluster_factory.start_worker(
        NODES[1], concurrency=1, args=("--task-list", "default", "--task-list", "priority")
    )
    return cluster_factory


@pytest.fixture
def nodes(contract_cluster):
    contract_cluster.wait_live(*NODES)
    return contract_cluster


@pytest.fixture
def backend():
    return task_backends["default"]


def wait_finished(result, timeout: float = 30.0):
    """Refresh ``result`` until it is SUCCESSFUL or FAILED."""

    def check():
        result.refresh()
        return result.is_finished

    poll_until(check, timeout=timeout, message=f"task result {result.id} to finish")
    return result


def worker_logs(cluster) -> str:
    return "".join(cluster.log(node, tail=1_000_000) for node in NODES)
