"""A pool process lost while a duplicate delivery of the same attempt runs in another
pool process of the node ends nothing (review item 11): the one that runs it records
its outcome; before, the main process ended the attempt the other one was executing."""

from types import SimpleNamespace

import pytest
from celery.exceptions import WorkerLostError
from celery.worker import state as worker_state
from celery.worker.request import Request

from distributed_tasks import lost as lost_runs
from distributed_tasks.celery import RunRequest


@pytest.fixture
def lost(monkeypatch):
    calls = []
    monkeypatch.setattr(Request, "on_failure", lambda *args, **kwargs: None)
    monkeypatch.setattr(lost_runs, "record_lost", lambda *args, **kwargs: calls.append(args))
    return calls


def request(task_id: str) -> RunRequest:
    req = RunRequest.__new__(RunRequest)
    req.id, req._args = task_id, [{"run_id": "r"}]
    return req


def test_a_lost_duplicate_does_not_end_the_attempt_another_process_runs(lost):
    died, running = request("r:1"), request("r:1")
    worker_state.active_requests.update({died, running})
    try:
        died.on_failure(SimpleNamespace(exception=WorkerLostError("killed")))
        assert lost == []
    finally:
        worker_state.active_requests.difference_update({died, running})
    died.on_failure(SimpleNamespace(exception=WorkerLostError("killed")))
    assert len(lost) == 1  # alone, its loss is recorded
