"""Structured run fields on log records (distributed_tasks.logs)."""

from __future__ import annotations

import json
import logging

import pytest

from distributed_tasks import logs
from distributed_tasks.messages import RunMessage

MSG = RunMessage(
    run_id="r1", attempt=2, node="n1", task_list="reports", name="daily", function="tests.tasks.add"
)
FIELDS = {
    "run_id": "r1",
    "task_name": "daily",
    "task_list": "reports",
    "node": "n1",
    "attempt": 2,
    "function": "tests.tasks.add",
}


@pytest.fixture
def records():
    caught: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record):
            caught.append(record)

    handler = Catch()
    handler.addFilter(logs.RunContextFilter())
    log = logging.getLogger("distributed_tasks.test_logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield log, caught
    log.removeHandler(handler)


def test_run_extra_names_the_run_and_never_clashes_with_logrecord(records):
    log, caught = records
    log.info("x", extra=logs.run_extra(MSG, "retry", countdown=1.5))
    (record,) = caught
    assert {k: getattr(record, k) for k in FIELDS} == FIELDS
    assert (record.action, record.countdown, record.name) == (
        "retry",
        1.5,
        "distributed_tasks.test_logs",
    )


def test_adapter_merges_run_fields_with_call_extra(records):
    log, caught = records
    logs.run_logger(log, MSG).warning("y", extra={"action": "fenced", "attempt": 3})
    (record,) = caught
    assert (record.run_id, record.action, record.attempt) == ("r1", "fenced", 3)


def test_filter_adds_current_run_to_any_record_only_inside_bound(records):
    log, caught = records
    with logs.bound(MSG):
        log.info("inside")
        assert logs.current()["task_name"] == "daily"
    log.info("outside")
    assert caught[0].run_id == "r1" and not hasattr(caught[1], "run_id")
    assert logs.current() is None


def test_json_formatter_writes_extra_fields_and_exceptions(records):
    log, caught = records
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed %s", "daily", extra=logs.run_extra(MSG, "outcome"))
    line = json.loads(logs.JsonFormatter().format(caught[0]))
    assert line["message"] == "failed daily" and line["level"] == "ERROR"
    assert {k: line[k] for k in FIELDS} == FIELDS
    assert line["action"] == "outcome" and "ValueError: boom" in line["exc_info"]


def test_our_loggers_name_the_bound_run_without_any_handler_filter():
    from distributed_tasks import observability
    from distributed_tasks.celery import TASK_NAME

    caught: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record):
            caught.append(record)

    log = logging.getLogger("distributed_tasks.runner")
    handler = Catch()  # no RunContextFilter here
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    task = type("Task", (), {"name": TASK_NAME})()
    try:
        observability._bind(task_id="t1", task=task, args=[MSG.to_body()])
        log.info("stale")
        observability._unbind(task_id="t1")
        log.info("after")
    finally:
        log.removeHandler(handler)
    assert {k: getattr(caught[0], k) for k in FIELDS} == FIELDS
    assert not hasattr(caught[1], "run_id")
