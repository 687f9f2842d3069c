"""The seed's controller tests, written against the fake as the seed's were against Mox.

``dt_fake`` stands where ``DistributedTasksMock`` stood: the view's start is
recorded instead of sent to the cluster, and ``get_status`` answers as each test
scripts it. The artefact lives in the real Redis, as in the seed. No worker and
no database take part; tests/cluster/test_builds.py runs the same flow for real.
"""

from __future__ import annotations

import json
import uuid
import zlib

import pytest
from django.test import Client

from distributed_tasks import ClusterUnavailable, State
from testproject.builds import tasks

APPLICATION_ID = 7
REQUEST_ID = "11111111111111111111111111111111"
POLL = f"/applications/{APPLICATION_ID}/compile/{REQUEST_ID}"


@pytest.fixture
def artefact(redis):
    """Store an artefact as the callback does (zlib-compressed JSON, EX 60); removed after."""
    key = tasks.artefact_key(REQUEST_ID)
    redis.delete(key)

    def store(value: dict) -> None:
        assert redis.set(key, zlib.compress(json.dumps(value).encode()), ex=60)

    yield store
    redis.delete(key)


def test_starts_a_distributed_task(client, dt_fake):
    response = client.post(f"/applications/{APPLICATION_ID}/compile")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "building" and set(body) == {"id", "status"}
    assert uuid.UUID(hex=body["id"]).hex == body["id"]
    dt_fake.assert_started(
        tasks.compile,
        name=body["id"],
        args=[APPLICATION_ID],
        kwargs={},
        callback=tasks.store_artefact,
        times=1,
    )


@pytest.mark.parametrize("state", [State.QUEUED, State.RUNNING])
def test_can_poll_a_running_task(client, dt_fake, state):
    dt_fake.script_status(lambda name, task_list: state)
    response = client.get(POLL)
    assert response.status_code == 200
    assert response.json() == {"id": REQUEST_ID, "status": "building", "data": None}
    assert dt_fake.status_requests == [(REQUEST_ID, "default")]


def test_fetches_a_compiled_artefact(client, dt_fake, artefact):
    dt_fake.script_status(lambda name, task_list: State.DONE)
    artefact({"compiled_artefact": "some_data"})
    response = client.get(POLL)
    assert response.status_code == 200
    assert response.json() == {"compiled_artefact": "some_data"}


def test_reports_a_failed_build(client, dt_fake):
    dt_fake.set_status(REQUEST_ID, State.FAILED, error="no compiler", error_type="ValueError")
    response = client.get(POLL)
    assert response.status_code == 200
    assert response.json() == {"id": REQUEST_ID, "status": "failed", "error": "no compiler"}


def test_an_unknown_request_is_404(client, dt_fake):
    response = client.get(POLL)
    assert response.status_code == 404
    body = response.json()
    assert (body["id"], body["status"]) == (REQUEST_ID, "not_found")
    assert "never started" in body["error"]


def test_a_done_build_whose_artefact_expired_is_410(client, dt_fake):
    dt_fake.set_status(REQUEST_ID, State.DONE, result={"compiled_artefact": "gone"})
    response = client.get(POLL)
    assert response.status_code == 410
    assert response.json()["status"] == "expired"


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("post", "/applications/abc/compile", "positive whole number"),
        ("post", "/applications/0/compile", "positive whole number"),
        ("post", "/applications/1e3/compile", "positive whole number"),
        ("get", f"/applications/x/compile/{REQUEST_ID}", "positive whole number"),
        ("get", "/applications/7/compile/not-a-request", "32 hex digits"),
        ("get", f"/applications/7/compile/{'AB' * 16}", "32 hex digits"),
    ],
)
def test_bad_ids_get_a_json_400_and_touch_nothing(client, dt_fake, method, path, message):
    response = getattr(client, method)(path)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert dt_fake.starts == [] and dt_fake.status_requests == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("get", "/applications/7/compile", "POST"), ("post", POLL, "GET, HEAD")],
)
def test_other_methods_get_a_json_405(client, dt_fake, method, path, allow):
    response = getattr(client, method)(path)
    assert (response.status_code, response["Allow"]) == (405, allow)
    assert "not allowed" in response.json()["error"]
    assert dt_fake.starts == []


def test_no_live_node_is_a_json_503(client, dt_fake):
    dt_fake.refuse_starts(ClusterUnavailable("No live node can take the run."))
    response = client.post(f"/applications/{APPLICATION_ID}/compile")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "error": "No live node can take the run."}


def test_the_json_api_takes_posts_without_a_csrf_token(dt_fake):
    response = Client(enforce_csrf_checks=True).post(f"/applications/{APPLICATION_ID}/compile")
    assert response.status_code == 200
    dt_fake.assert_started(tasks.compile, args=[APPLICATION_ID])


def test_the_whole_flow_runs_inline_without_workers(client, dt_inline, redis):
    """The inline client runs compile and its callback during the POST (compile takes 1 s)."""
    request_id = client.post(f"/applications/{APPLICATION_ID}/compile").json()["id"]
    try:
        response = client.get(f"/applications/{APPLICATION_ID}/compile/{request_id}")
        assert response.status_code == 200
        body = response.json()
        assert (body["application_id"], body["compiled_artefact"]) == (7, "app-7.tar.gz")
        assert 0 < redis.ttl(tasks.artefact_key(request_id)) <= tasks.ARTEFACT_TTL
    finally:
        redis.delete(tasks.artefact_key(request_id))
