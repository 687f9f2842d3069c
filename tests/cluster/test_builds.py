"""The seed's example end to end: HTTP in, a real dt_worker compiles, the artefact comes back.

The same controller as tests/integration/test_builds.py, with nothing faked: the
POST claims a name in Redis, records a ``TaskRun`` in PostgreSQL and publishes to
a node's queue; a worker runs ``compile`` and its callback stores the artefact in
Redis; the GET polls ``get_status`` until it can serve it.
"""

from __future__ import annotations

import socket

import pytest
from django.conf import settings
from django.test import override_settings

from distributed_tasks import State, get_status
from distributed_tasks.models import TaskRun
from testproject.builds import tasks
from tests.cluster.conftest import NODES
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def compile_app(client, application_id: int) -> str:
    response = client.post(f"/applications/{application_id}/compile")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "building"
    return body["id"]


def wait_for(client, url: str, done, what: str):
    """Poll ``url`` until ``done(response)``; the deadline fails the test."""

    def answered():
        response = client.get(url)
        return response if done(response) else None

    return poll_until(answered, timeout=30, message=what)


def wait_built(client, application_id: int, request_id: str):
    url = f"/applications/{application_id}/compile/{request_id}"
    return wait_for(
        client,
        url,
        lambda r: r.json().get("status") != "building",
        f"compile {request_id} to finish",
    )


def test_a_compile_runs_on_a_node_and_serves_its_artefact(nodes, client, redis):
    request_id = compile_app(client, 7)
    # compile takes a second on the worker, so the first poll finds it building.
    first = client.get(f"/applications/7/compile/{request_id}")
    assert first.json() == {"id": request_id, "status": "building", "data": None}
    response = wait_built(client, 7, request_id)
    assert response.status_code == 200
    assert response.json() == {
        "application_id": 7,
        "compiled_artefact": "app-7.tar.gz",
        "host": socket.gethostname(),
    }
    status = get_status(request_id)
    assert status.state == State.DONE and status.node in NODES
    run = TaskRun.objects.get(name=request_id)
    assert (run.function, run.args, run.callback) == (
        "testproject.builds.tasks.compile",
        [7],
        "testproject.builds.tasks.store_artefact",
    )
    assert 0 < redis.ttl(tasks.artefact_key(request_id)) <= tasks.ARTEFACT_TTL


def test_each_request_is_its_own_run(nodes, client):
    ids = [compile_app(client, 8) for _ in range(3)] + [compile_app(client, 9)]
    assert len(set(ids)) == 4
    artefacts = [wait_built(client, 9 if i == 3 else 8, rid).json() for i, rid in enumerate(ids)]
    assert [a["compiled_artefact"] for a in artefacts] == ["app-8.tar.gz"] * 3 + ["app-9.tar.gz"]
    assert TaskRun.objects.filter(name__in=ids, state=State.DONE).count() == 4


def test_a_finished_compile_is_forgotten_after_cleanup_timeout(nodes, client):
    request_id = compile_app(client, 10)
    assert wait_built(client, 10, request_id).status_code == 200
    quick = {**settings.DISTRIBUTED_TASKS, "CLEANUP_TIMEOUT": 0.5}
    with override_settings(DISTRIBUTED_TASKS=quick):
        gone = wait_for(
            client,
            f"/applications/10/compile/{request_id}",
            lambda r: r.status_code == 404,
            "the finished name to expire",
        )
    assert gone.json()["status"] == "not_found"


def test_an_unknown_request_is_404_on_the_real_cluster(nodes, client):
    response = client.get(f"/applications/7/compile/{'0' * 32}")
    assert (response.status_code, response.json()["status"]) == (404, "not_found")
